// `q3n bench (-m DIR | --synthetic CONFIG) [-p 512,4096] [-n 128] [-b 1,8,32] [-d 32768,...]
// [--weights F] [--kv T] [--reps R] [--json] [--profile]`: llama-bench-style throughput.
//  - ppP: prompt processing of P tokens in one sequence (chunked prefill), tokens/s;
//  - tgN@B: N decode steps of B sequences at once, generated tokens/s summed over sequences;
//  - with -d D (one sequence, once each: long contexts are expensive to fill): ppD, filling D
//    tokens of context from empty; then ppP@dD, P more tokens after them; then tgN@dD, N decode
//    steps after those;
//  - for every decode test, the bandwidth bound: the bytes a step must move (graph/traffic.h)
//    over the copy bandwidth measured with shaders/copy.comp in this same run.
// Prompts are random token ids. Decode steps sample greedily, or as --temp/--top-k/--top-p/--min-p
// say (what a user's generation_config.json asks of `q3n run`, e.g. Qwen3-Next's temperature 0.7,
// top-k 20, top-p 0.8). Each test warms up (kWarmUpSeconds), then runs `reps` times; the mean is
// reported.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <numeric>
#include <random>

#include "cli/commands.h"
#include "cli/model_session.h"
#include "cli/stopwatch.h"
#include "graph/state.h"
#include "graph/traffic.h"
#include "runtime/error.h"
#include "runtime/ops/copy.h"

namespace q3n::cli {

namespace {

std::string matrix_kernels(const Runtime& rt, bool batch_invariant) {
  std::string kernels = describe_gemm_kernels(rt.device.coopmat_support(), !rt.pipelines.coopmat());
  if (rt.pipelines.coopmat()) {
    kernels += std::string(", activations ") + matrix_activations_name(rt.pipelines.matrix_activations());
    kernels += batch_invariant ? "; decode steps on the vector kernels (--batch-invariant)"
                               : "; large decode steps too (without --batch-invariant)";
  }
  return kernels;
}

// Device copy bandwidth, (bytes read + bytes written) / time, best of three batches of copies.
// A batch holds up to 10 copies of up to 1 GiB (far past any GPU's L2), but no more copies than fill
// kBatchSeconds: one copy of 1 GiB takes ~0.7 ms on an H100 (10 copies, as before) and ~0.2 s on a
// CPU driver, where 2 x 40 of them made every `q3n bench` spend ~13 s here.
double measure_copy_bandwidth(Runtime& rt) {
  constexpr double kBatchSeconds = 0.02;
  constexpr int kMostCopies = 10;
  const uint64_t free = rt.device.free_device_memory();
  const uint64_t bytes = std::clamp<uint64_t>(free / 8, 16ull << 20, 1ull << 30) / 16 * 16;
  Allocation src = rt.allocator.allocate(bytes, MemoryKind::Device, "bandwidth probe source");
  Allocation dst = rt.allocator.allocate(bytes, MemoryKind::Device, "bandwidth probe destination");
  const auto timed_batch = [&](int copies) {
    CommandBuffer cb = rt.pool.allocate();
    cb.begin();
    for (int i = 0; i < copies; ++i) {
      ops::record_copy(rt.pipelines, cb, src.range(), dst.range(), bytes);
      cb.barrier();
    }
    cb.end();
    const auto start = Clock::now();
    rt.queue.submit_and_wait(cb);
    return seconds_since(start);
  };
  timed_batch(1);  // warms up the pipeline
  const double one = timed_batch(1);
  const int copies = std::clamp(static_cast<int>(std::ceil(kBatchSeconds / std::max(one, 1e-9))), 1, kMostCopies);
  double best = 0;
  for (int attempt = 0; attempt < 3; ++attempt)
    best = std::max(best, 2.0 * double(bytes) * copies / timed_batch(copies));
  return best;
}

struct Result {
  std::string test;
  uint32_t batch = 1, tokens = 0;
  double seconds = 0, tokens_per_second = 0;
  double bound_tokens_per_second = 0;  // decode only
  uint64_t step_bytes = 0;             // decode only
  std::map<std::string, double> profile;
};

std::vector<int32_t> random_ids(size_t n, int vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> d(0, vocab - 1);
  std::vector<int32_t> ids(n);
  for (auto& id : ids) id = d(rng);
  return ids;
}

// Each test warms up at least once (pipelines, recorded programs) and until the GPU has been busy
// this long: a short test measured on clocks still rising from idle read low and erratic (the first
// test of a run, pp16 on the H200: 290-620 tok/s over four runs; bench/NOTES.md, session 25).
constexpr double kWarmUpSeconds = 0.3;

Result prompt_test(graph::Engine& engine, uint32_t tokens, uint32_t reps, bool profile) {
  const auto ids = random_ids(tokens, engine.config().vocab_size, tokens);
  const ops::SamplingParams greedy;
  const auto warm = Clock::now();
  do {  // warm-up (kWarmUpSeconds)
    engine.reset(0);
    engine.feed_and_sample(0, ids, greedy);
  } while (seconds_since(warm) < kWarmUpSeconds);
  engine.take_profile();
  double total = 0;
  for (uint32_t r = 0; r < reps; ++r) {
    engine.reset(0);
    const auto start = Clock::now();
    engine.feed_and_sample(0, ids, greedy);
    total += seconds_since(start);
  }
  Result res{"pp" + std::to_string(tokens), 1, tokens, total / reps, tokens * reps / total};
  if (profile) res.profile = engine.take_profile();
  return res;
}

// Decode: every sequence gets one prompt token, then `steps` steps of `batch` sequences.
double decode_run(graph::Engine& engine, uint32_t batch, uint32_t steps, const ops::SamplingParams& sampling) {
  std::vector<uint32_t> slots(batch);
  std::iota(slots.begin(), slots.end(), 0u);
  std::vector<int32_t> next(batch);
  const auto first = random_ids(batch, engine.config().vocab_size, 7);
  for (uint32_t b = 0; b < batch; ++b) {
    engine.reset(b);
    next[b] = engine.feed_and_sample(b, std::span(&first[b], 1), sampling);
  }
  engine.take_profile();  // time only the decode steps
  const auto start = Clock::now();
  for (uint32_t s = 0; s < steps; ++s) next = engine.decode(slots, next, sampling);
  return seconds_since(start);
}

// The bytes a decode step of `batch` sequences at `position` must move (graph/traffic.h).
uint64_t decode_step_bytes(graph::Engine& engine, uint32_t batch, uint32_t position) {
  uint64_t bytes = 0;  // every device's part of the step (a pipeline split)
  for (size_t d = 0; d < engine.device_count(); ++d) {
    const graph::Program& program = engine.program({batch, 1, graph::Head::Sample}, d);
    bytes += graph::decode_traffic(program.graph(), engine.config(), batch, position, engine.state().kv_type(),
                                   engine.layers(d))
                 .total();
  }
  return bytes;
}

// One sequence at depth D: the fill (ppD), P more prompt tokens (ppP@dD), N decode steps (tgN@dD).
std::vector<Result> depth_tests(graph::Engine& engine, uint32_t depth, uint32_t prompt, uint32_t steps, bool profile,
                                const ops::SamplingParams& sampling) {
  const ops::SamplingParams greedy;
  const auto fill = random_ids(depth, engine.config().vocab_size, depth);
  const auto more = random_ids(prompt, engine.config().vocab_size, depth + 1);
  const std::string at = "@d" + std::to_string(depth);
  std::vector<Result> out;
  auto timed = [&](std::string name, uint32_t tokens, auto&& work) {
    engine.take_profile();
    const auto start = Clock::now();
    work();
    const double s = seconds_since(start);
    out.push_back(Result{std::move(name), 1, tokens, s, tokens / s});
    if (profile) out.back().profile = engine.take_profile();
  };
  engine.reset(0);
  int32_t next = 0;
  timed("pp" + std::to_string(depth), depth, [&] { next = engine.feed_and_sample(0, fill, greedy); });
  if (prompt > 0)
    timed("pp" + std::to_string(prompt) + at, prompt, [&] { next = engine.feed_and_sample(0, more, greedy); });
  if (steps > 0) {
    const uint32_t slot = 0;
    const uint32_t position = engine.position(0);
    timed("tg" + std::to_string(steps) + at, steps, [&] {
      for (uint32_t s = 0; s < steps; ++s) next = engine.decode(std::span(&slot, 1), std::span(&next, 1), sampling)[0];
    });
    out.back().step_bytes = decode_step_bytes(engine, 1, position + steps / 2);
  }
  return out;
}

Result generation_test(graph::Engine& engine, uint32_t steps, uint32_t batch, uint32_t reps, bool profile,
                       const ops::SamplingParams& sampling) {
  const auto warm = Clock::now();
  do decode_run(engine, batch, std::min(steps, 4u), sampling);  // warm-up (kWarmUpSeconds)
  while (seconds_since(warm) < kWarmUpSeconds);
  engine.take_profile();
  double total = 0;
  std::map<std::string, double> prof;
  for (uint32_t r = 0; r < reps; ++r) {
    total += decode_run(engine, batch, steps, sampling);
    if (profile)
      for (const auto& [k, v] : engine.take_profile()) prof[k] += v;
  }
  Result res{"tg" + std::to_string(steps), batch, steps, total / reps, double(batch) * steps * reps / total};
  // The bound at the average context position of the run (1 prompt token + steps / 2).
  res.step_bytes = decode_step_bytes(engine, batch, 1 + steps / 2);
  res.profile = prof;
  return res;
}

// Speculative decoding's costs for one sequence (--mtp): a plain 1-token step, a verify step of
// K + 1 rows, and a whole MTP step (verify, the head's catch-up and K - 1 more drafts), each
// averaged over `steps` steps. With a trained head the acceptance decides the speed-up; a
// synthetic head's random drafts are almost never accepted, so the table also gives the speed-up
// each per-draft acceptance rate a would bring: (1 + a + .. + a^K) x step / MTP step.
struct MtpCost {
  uint32_t drafts = 0;
  double step = 0, verify = 0, mtp_step = 0, tokens_per_step = 0;
  std::map<std::string, double> step_profile, verify_profile, mtp_profile;  // --profile: GPU s per step
};

// A profile divided by the steps it covers.
std::map<std::string, double> per_step(std::map<std::string, double> profile, uint32_t steps) {
  for (auto& [kind, seconds] : profile) seconds /= steps;
  return profile;
}

MtpCost mtp_cost(graph::Engine& engine, uint32_t drafts, uint32_t steps) {
  const ops::SamplingParams greedy;
  const uint32_t slot = 0;
  const auto first = random_ids(1, engine.config().vocab_size, 9);
  MtpCost c{.drafts = drafts};
  const auto timed = [&](auto&& work) {
    engine.reset(slot);
    int32_t next = engine.feed_and_sample(slot, first, greedy);
    work(next, 2u);  // warm-up: the programs are recorded here
    engine.reset(slot);
    next = engine.feed_and_sample(slot, first, greedy);
    engine.take_profile();
    const auto start = Clock::now();
    work(next, steps);
    return seconds_since(start) / steps;
  };
  c.step = timed([&](int32_t next, uint32_t n) {
    for (uint32_t s = 0; s < n; ++s) next = engine.decode(std::span(&slot, 1), std::span(&next, 1), greedy)[0];
  });
  c.step_profile = per_step(engine.take_profile(), steps);
  c.verify = timed([&](int32_t next, uint32_t n) {
    // Random drafts: almost all rejected, so each step advances by one position as plain decoding.
    for (uint32_t s = 0; s < n; ++s) {
      std::vector<int32_t> ids = random_ids(drafts + 1, engine.config().vocab_size, s);
      ids[0] = next;
      next = engine.verify(std::span(&slot, 1), ids, drafts + 1, std::span(&greedy, 1))[0].back();
    }
  });
  c.verify_profile = per_step(engine.take_profile(), steps);
  uint64_t emitted = 0;
  engine.reset(slot);
  graph::Engine::Speculation spec = engine.mtp_prompt(slot, first, greedy, drafts);
  spec = engine.mtp_step(slot, spec.emitted.back(), spec.drafts, greedy);  // warm-up
  engine.take_profile();
  const auto start = Clock::now();
  for (uint32_t s = 0; s < steps; ++s) {
    spec = engine.mtp_step(slot, spec.emitted.back(), spec.drafts, greedy);
    emitted += spec.emitted.size();
  }
  c.mtp_step = seconds_since(start) / steps;
  c.tokens_per_step = double(emitted) / steps;
  c.mtp_profile = per_step(engine.take_profile(), steps);
  return c;
}

void print_mtp_costs(const std::vector<MtpCost>& costs) {
  std::printf("\nMTP speculative decoding, one sequence (times per step):\n\n");
  std::printf(
      "| drafts K | 1-token step | verify K+1 rows | ratio | MTP step | tokens/step here | "
      "speed-up at a = 0.5 / 0.7 / 0.9 |\n");
  std::printf(
      "| -------: | -----------: | --------------: | ----: | -------: | ---------------: | "
      "------------------------------: |\n");
  for (const MtpCost& c : costs) {
    std::string speedups;
    for (double a : {0.5, 0.7, 0.9}) {
      double tokens = 0;
      for (uint32_t i = 0; i <= c.drafts; ++i) tokens += std::pow(a, double(i));
      char cell[16];
      std::snprintf(cell, sizeof cell, "%s%.2fx", speedups.empty() ? "" : " / ", tokens * c.step / c.mtp_step);
      speedups += cell;
    }
    std::printf("| %8u | %9.3f ms | %12.3f ms | %5.2f | %5.3f ms | %16.2f | %31s |\n", c.drafts, c.step * 1e3,
                c.verify * 1e3, c.verify / c.step, c.mtp_step * 1e3, c.tokens_per_step, speedups.c_str());
  }
}

}  // namespace

void add_bench_command(CLI::App& app) {
  struct Options {
    ModelOptions model;
    std::vector<uint32_t> prompts{512};
    uint32_t steps = 128;
    std::vector<uint32_t> batches{1};
    std::vector<uint32_t> depths;
    uint32_t reps = 3;
    bool json = false;
    std::vector<uint32_t> drafts;  // --mtp
    SamplingFlags sampling;        // decode tests; greedy unless set
  };
  auto o = std::make_shared<Options>();
  auto* cmd = app.add_subcommand("bench", "Prompt-processing and generation throughput, with the bandwidth bound");
  add_model_options(*cmd, o->model);
  cmd->add_option("-p,--prompt", o->prompts, "Prompt lengths to time (comma-separated)")
      ->delimiter(',')
      ->check(CLI::PositiveNumber);
  cmd->add_option("-n,--gen", o->steps, "Decode steps per generation test; 0 = none")->check(CLI::NonNegativeNumber);
  cmd->add_option("-b,--batch", o->batches, "Sequences decoded together (comma-separated)")
      ->delimiter(',')
      ->check(CLI::PositiveNumber);
  cmd->add_option("-d,--depth", o->depths,
                  "Context depths (comma-separated): for each, one sequence is filled with that many tokens "
                  "(timed), then the first -p prompt and -n decode steps run after them (once each)")
      ->delimiter(',')
      ->check(CLI::PositiveNumber);
  cmd->add_option("--reps", o->reps, "Timed repetitions per test (after one warm-up)")->check(CLI::PositiveNumber);
  cmd->add_flag("--json", o->json, "Print the results as JSON");
  add_sampling_options(*cmd, o->sampling, "0, greedy; for the decode tests");
  auto* mtp =
      cmd->add_flag("--mtp", o->model.mtp, "Also time MTP speculative decoding (verify and draft steps, one sequence)");
  cmd->add_option("--draft", o->drafts, "Draft tokens per MTP step to time (comma-separated; default 1,2,3)")
      ->delimiter(',')
      ->check(CLI::Range(1, 7))
      ->needs(mtp);
  cmd->callback([o] {
    check_sampling_flags(o->sampling);
    const ops::SamplingParams sampling = o->sampling.over(GenerationDefaults{.temperature = 0.0});
    const uint32_t max_prompt = *std::max_element(o->prompts.begin(), o->prompts.end());
    const uint32_t slots = *std::max_element(o->batches.begin(), o->batches.end());
    const uint32_t depth_prompt = o->prompts.front();
    const uint32_t max_depth = o->depths.empty() ? 0 : *std::max_element(o->depths.begin(), o->depths.end());
    if (o->drafts.empty()) o->drafts = {1, 2, 3};
    const uint32_t max_draft = *std::max_element(o->drafts.begin(), o->drafts.end());
    const uint64_t longest = std::max<uint64_t>(
        {max_prompt, o->steps + 1ull, max_depth ? uint64_t(max_depth) + depth_prompt + o->steps + 1 : 0,
         o->model.mtp ? (o->steps + 4ull) * (max_draft + 1) + max_draft + 1 : 0});
    if (longest > UINT32_MAX) throw Error("-d plus -p plus -n exceeds 2^32 positions");
    const uint32_t context = o->model.context ? o->model.context : uint32_t(longest);
    if (longest > context)
      throw Error("--ctx " + std::to_string(context) + " is shorter than the longest test (" + std::to_string(longest) +
                  " tokens)");
    const auto load_start = Clock::now();
    ModelSession session = open_model(o->model, context, slots);
    const double load_seconds = seconds_since(load_start);
    graph::Engine& engine = *session.engine;
    Runtime& rt = session.runtime();  // a split's first device: the bandwidth measured, the kernels named
    // Measured before and after the tests, the larger kept: a GPU fresh from loading may not
    // have reached its full clocks yet (seen on an H100: 1.6 vs 2.8 TB/s).
    double bandwidth = measure_copy_bandwidth(rt);

    std::vector<Result> results;
    for (uint32_t p : o->prompts) results.push_back(prompt_test(engine, p, o->reps, o->model.profile));
    if (o->steps > 0)
      for (uint32_t b : o->batches)
        results.push_back(generation_test(engine, o->steps, b, o->reps, o->model.profile, sampling));
    for (uint32_t d : o->depths)
      for (Result& r : depth_tests(engine, d, depth_prompt, o->steps, o->model.profile, sampling))
        results.push_back(std::move(r));
    std::vector<MtpCost> mtp_costs;
    if (o->model.mtp && o->steps > 0)
      for (uint32_t k : o->drafts) {
        check_draft(engine, k);
        mtp_costs.push_back(mtp_cost(engine, k, o->steps));
      }
    bandwidth = std::max(bandwidth, measure_copy_bandwidth(rt));
    for (Result& r : results)
      if (r.step_bytes) r.bound_tokens_per_second = double(r.batch) * bandwidth / double(r.step_bytes);

    const std::string model = o->model.synthetic.empty() ? o->model.model : "synthetic " + o->model.synthetic;
    const uint64_t weights = engine.weight_bytes(), state = engine.state_bytes();
    uint64_t device = 0;
    for (const auto& r : session.runtimes) device += r->allocator.reserved_bytes(MemoryKind::Device);
    const ops::KvType kv = engine.state().kv_type();
    const uint64_t kv_per_token = graph::SequenceState::kv_bytes_per_token(engine.config(), kv);
    if (o->json) {
      nlohmann::json j;
      j["model"] = model;
      j["device"] = session.device_names();
      j["weights_format"] = o->model.weights.empty() ? "stored" : o->model.weights;
      j["matrix_kernels"] = matrix_kernels(rt, o->model.batch_invariant);
      j["vector_kernels"] = describe_vector_kernels(rt.pipelines.cpu_shapes(), rt.device.texel_reads());
      j["memory"] = {{"weights_bytes", weights},
                     {"state_bytes", state},
                     {"device_reserved_bytes", device},
                     {"kv_type", ops::kv_type_name(kv)},
                     {"kv_bytes_per_token", kv_per_token}};
      j["copy_bandwidth_bytes_per_second"] = bandwidth;
      j["load_seconds"] = load_seconds;
      j["decode_sampling"] = {{"temperature", sampling.temperature},
                              {"top_k", sampling.top_k},
                              {"top_p", sampling.top_p},
                              {"min_p", sampling.min_p}};
      for (const Result& r : results) {
        nlohmann::json t = {{"test", r.test},
                            {"batch", r.batch},
                            {"tokens", r.tokens},
                            {"seconds", r.seconds},
                            {"tokens_per_second", r.tokens_per_second}};
        if (r.step_bytes) {
          t["step_bytes"] = r.step_bytes;
          t["bound_tokens_per_second"] = r.bound_tokens_per_second;
          t["fraction_of_bound"] = r.tokens_per_second / r.bound_tokens_per_second;
        }
        if (!r.profile.empty()) t["gpu_seconds_by_operator"] = r.profile;
        j["tests"].push_back(t);
      }
      for (const MtpCost& c : mtp_costs)
        j["mtp"].push_back({{"drafts", c.drafts},
                            {"step_seconds", c.step},
                            {"verify_seconds", c.verify},
                            {"mtp_step_seconds", c.mtp_step},
                            {"tokens_per_mtp_step", c.tokens_per_step}});
      std::printf("%s\n", j.dump(1).c_str());
      return;
    }
    std::printf("model: %s (%s weights)\ndevice: %s, queue %s\nmatrix kernels: %s\nvector kernels: %s\n", model.c_str(),
                o->model.weights.empty() ? "stored" : o->model.weights.c_str(), session.device_names().c_str(),
                rt.device.describe_queue().c_str(), matrix_kernels(rt, o->model.batch_invariant).c_str(),
                describe_vector_kernels(rt.pipelines.cpu_shapes(), rt.device.texel_reads()).c_str());
    std::printf(
        "memory: weights %.2f GiB, state + KV cache %.2f GiB (%s KV, %s per token), device memory reserved %.2f "
        "GiB; loaded in %.1f s\n",
        gib(weights), gib(state), ops::kv_type_name(kv), format_bytes(kv_per_token).c_str(), gib(device), load_seconds);
    std::printf("copy bandwidth (shaders/copy.comp, read + write): %.1f GB/s\n", bandwidth / 1e9);
    if (sampling.temperature > 0)
      std::printf("decode tests sample: temperature %g, top-k %u, top-p %g, min-p %g\n", sampling.temperature,
                  sampling.top_k, sampling.top_p, sampling.min_p);
    else
      std::printf("decode tests sample greedily\n");
    std::printf("\n");
    std::printf("| test            | batch |     tok/s | bytes/step |  bound tok/s | of bound |\n");
    std::printf("| --------------- | ----: | --------: | ---------: | -----------: | -------: |\n");
    for (const Result& r : results) {
      if (r.step_bytes)
        std::printf("| %-15s | %5u | %9.1f | %8.2f GB | %12.1f | %7.1f%% |\n", r.test.c_str(), r.batch,
                    r.tokens_per_second, r.step_bytes / 1e9, r.bound_tokens_per_second,
                    100.0 * r.tokens_per_second / r.bound_tokens_per_second);
      else
        std::printf("| %-15s | %5u | %9.1f |            |              |          |\n", r.test.c_str(), r.batch,
                    r.tokens_per_second);
    }
    if (!mtp_costs.empty()) print_mtp_costs(mtp_costs);
    if (o->model.profile)
      for (const MtpCost& c : mtp_costs) {
        std::printf("\nK = %u, 1-token step: %s", c.drafts, format_profile(c.step_profile).c_str());
        std::printf("K = %u, verify step: %s", c.drafts, format_profile(c.verify_profile).c_str());
        std::printf("K = %u, MTP step: %s", c.drafts, format_profile(c.mtp_profile).c_str());
      }
    if (o->model.profile)
      for (const Result& r : results)
        std::printf("\n%s batch %u, %s", r.test.c_str(), r.batch, format_profile(r.profile).c_str());
  });
}

}  // namespace q3n::cli
