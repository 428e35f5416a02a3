#include "cli/model_session.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <vector>

#include "cli/progress.h"
#include "graph/support_check.h"
#include "loader/tensor_schema.h"
#include "runtime/error.h"

namespace q3n::cli {

void add_model_options(CLI::App& cmd, ModelOptions& o) {
  auto* model = cmd.add_option("-m,--model", o.model, "Checkpoint folder (config.json, *.safetensors, tokenizer.json)");
  auto* synthetic = cmd.add_option("--synthetic", o.synthetic,
                                   "config.json of a model to run with deterministic random weights generated "
                                   "on the GPU (no checkpoint; benchmarks)")
                        ->check(CLI::ExistingFile);
  model->excludes(synthetic);
  cmd.add_option("--weights", o.weights, "Weight format on the device: bf16, q8 or q4 (default: as stored)")
      ->check(CLI::IsMember({"bf16", "q8", "q4", "stored"}));
  cmd.add_option("--cache", o.cache,
                 "Folder to keep the converted/quantised weights in, so the next start with the same "
                 "checkpoint and --weights reads them instead of converting again");
  cmd.add_option("--device", o.device, "Device index or name substring (default: Q3N_DEVICE or the best GPU)");
  cmd.add_flag("--no-coopmat", o.no_coopmat,
               "Use the portable fp32 kernels even where the device has cooperative matrices (fp16 matrix "
               "units; inputs of magnitude over 65504 need this)");
  cmd.add_option("--matrix-activations", o.matrix_activations,
                 "How the matrix products take activations on the matrix units: fp16 (rounded, as other engines "
                 "do) or split (two fp16 halves, ~21 bits, twice the matrix work); prefill attention on the "
                 "matrix units always takes fp16")
      ->check(CLI::IsMember({"fp16", "split"}));
  cmd.add_option("--ctx", o.context, "Context length: KV-cache positions per sequence")->check(CLI::PositiveNumber);
  cmd.add_option(
         "--kv", o.kv,
         "KV-cache storage: f16 (default; half the memory of f32, kjv-demo's logits within a mean KL of 2e-8 of "
         "f32), bf16 (KL 3e-5), or f32")
      ->check(CLI::IsMember({"f32", "f16", "bf16"}));
  cmd.add_option("--chunk", o.chunk, "Prompt tokens per prefill step")->check(CLI::PositiveNumber);
  cmd.add_option("--decode-rows", o.decode_rows,
                 "Sequences per decode step at most; more are decoded in several steps (1-128; with "
                 "--batch-invariant any value gives the same tokens, only the speed differs)")
      ->check(CLI::Range(1u, graph::Engine::kMaxDecodeRows));
  cmd.add_flag("--batch-invariant", o.batch_invariant,
               "Keep every decode step on the vector kernels, so that a sequence's tokens are bitwise what "
               "`q3n run` computes for it alone whatever else shares its steps (slower at 32-128 sequences: "
               "without it, steps of more than 16 sequences take the matrix units)");
  cmd.add_flag("--profile", o.profile, "Print GPU time per operator kind at the end");
}

void add_sampling_options(CLI::App& cmd, SamplingFlags& f) {
  cmd.add_option("--temp", f.temperature, "Temperature; 0 = greedy (default: generation_config.json)");
  cmd.add_option("--top-k", f.top_k, "Keep the k most likely tokens; 0 = off");
  cmd.add_option("--top-p", f.top_p, "Keep the smallest set with this much probability; 1 = off");
  cmd.add_option("--min-p", f.min_p, "Keep tokens at least this fraction of the most likely; 0 = off");
}

void check_sampling_flags(const SamplingFlags& f) {
  if (f.temperature && *f.temperature < 0) throw Error("--temp must be >= 0");
  if (f.top_p && (*f.top_p <= 0 || *f.top_p > 1)) throw Error("--top-p must be in (0, 1]");
  if (f.min_p && (*f.min_p < 0 || *f.min_p >= 1)) throw Error("--min-p must be in [0, 1)");
}

ops::SamplingParams SamplingFlags::over(const GenerationDefaults& defaults) const {
  ops::SamplingParams p;
  p.temperature = temperature.value_or(float(defaults.temperature));
  p.top_k = top_k.value_or(uint32_t(defaults.top_k));
  p.top_p = top_p.value_or(float(defaults.top_p));
  p.min_p = min_p.value_or(float(defaults.min_p));
  return p;
}

namespace {

constexpr uint64_t kHeadroom = 256ull << 20;  // activations, step buffers, driver

// Whether `weights` bytes and the state of `slots` sequences of `context` positions fit in `free`.
bool state_fits(const ModelSession& s, uint64_t weights, uint32_t slots, uint32_t context, ops::KvType kv,
                uint64_t free) {
  return weights + graph::SequenceState::planned_bytes(s.config, slots, context, kv) + kHeadroom <= free;
}

// Refuses, before any allocation, a model whose weights (`weights` bytes, planned) and state
// cannot fit in device memory. With `fit_slots`, lowers `slots` to what fits instead (at least 1).
void check_memory_fit(const ModelSession& s, graph::WeightFormat format, uint64_t weights, uint32_t context,
                      ops::KvType kv, uint32_t& slots, bool fit_slots) {
  const uint64_t free = s.runtime->device.free_device_memory();
  if (fit_slots && slots > 1) {
    const uint32_t wanted = slots;
    while (slots > 1 && !state_fits(s, weights, slots, context, kv, free)) --slots;
    if (slots < wanted)
      std::fprintf(stderr, "[q3n] %u sequences of %u positions do not fit in %s's %.2f GiB free; running %u at once\n",
                   wanted, context, s.runtime->device.info().name.c_str(), gib(free), slots);
  }
  if (state_fits(s, weights, slots, context, kv, free)) return;
  const uint64_t state = graph::SequenceState::planned_bytes(s.config, slots, context, kv);
  char msg[512];
  std::snprintf(msg, sizeof msg,
                "the model does not fit: it needs %.2f GiB of device memory (weights %.2f GiB as %s, state and "
                "%s KV cache %.2f GiB for %u sequence(s) of %u tokens, 0.25 GiB headroom) but %s has %.2f GiB free; "
                "use %s%sa smaller --ctx, fewer sequences or a device with more memory",
                gib(weights + state + kHeadroom), gib(weights), graph::weight_format_name(format),
                ops::kv_type_name(kv), gib(state), slots, context, s.runtime->device.info().name.c_str(), gib(free),
                kv == ops::KvType::F32 ? "--kv f16, " : "",
                format == graph::WeightFormat::Q4   ? ""
                : format == graph::WeightFormat::Q8 ? "--weights q4, "
                                                    : "--weights q4 or q8, ");
  throw Error(msg);
}

// The largest context up to `wanted` at which `slots` sequences fit beside `weights` bytes, but
// not below default_context() (check_memory_fit then runs fewer sequences or refuses).
uint32_t context_that_fits(const ModelSession& s, uint64_t weights, uint32_t wanted, ops::KvType kv, uint32_t slots) {
  const uint64_t free = s.runtime->device.free_device_memory();
  const auto fits = [&](uint32_t context) { return state_fits(s, weights, slots, context, kv, free); };
  const uint32_t least = std::min(wanted, default_context(s.config));
  if (fits(wanted)) return wanted;
  if (!fits(least)) return least;
  uint32_t lo = least, hi = wanted;  // fits(lo), !fits(hi)
  while (hi - lo > 1) {
    const uint32_t mid = lo + (hi - lo) / 2;
    (fits(mid) ? lo : hi) = mid;
  }
  std::fprintf(stderr,
               "[q3n] %u sequences of %u positions do not fit in %s's %.2f GiB free; the context is %u positions "
               "(requests that need more get an error record; --ctx and --max-batch set both)\n",
               slots, wanted, s.runtime->device.info().name.c_str(), gib(free), lo);
  return lo;
}

}  // namespace

uint32_t default_context(const ModelConfig& config) {
  const uint32_t most = config.max_position_embeddings > 0 ? uint32_t(config.max_position_embeddings) : 4096u;
  return std::min(4096u, most);
}

ModelSession open_model(const ModelOptions& o, const SessionShape& shape) {
  ModelSession s;
  uint32_t slots = shape.slots;
  const bool synthetic = !o.synthetic.empty();
  if (!synthetic && o.model.empty())
    throw Error("no model: give -m DIR (a checkpoint folder) or --synthetic CONFIG.json");
  if (synthetic && !o.cache.empty())
    throw Error("--cache keeps converted checkpoint weights; a --synthetic model has none to keep");
  graph::WeightFormat format = graph::parse_weight_format(o.weights);
  if (synthetic) {
    s.config = load_config_file(o.synthetic);
    graph::check_supported(s.config, o.synthetic);
    if (format == graph::WeightFormat::AsStored) format = graph::WeightFormat::BF16;
  } else {
    s.config = load_config(o.model);
    graph::check_supported(s.config, (std::filesystem::path(o.model) / "config.json").string());
    s.checkpoint = std::make_unique<Checkpoint>(o.model);
    validate_checkpoint(*s.checkpoint, s.config);
  }
  uint32_t context = shape.context ? shape.context : std::max(default_context(s.config), shape.min_context);
  const bool fit_context = shape.fit_context && !shape.context;
  if (fit_context && s.config.max_position_embeddings > 0)
    context = std::min(context, uint32_t(s.config.max_position_embeddings));
  if (s.config.max_position_embeddings > 0 && context > uint32_t(s.config.max_position_embeddings))
    throw Error((shape.context ? "--ctx " : "the needed context of ") + std::to_string(context) +
                " exceeds the model's max_position_embeddings (" + std::to_string(s.config.max_position_embeddings) +
                ")");
  RuntimeOptions ro;
  ro.device = o.device;
  ro.coopmat = !o.no_coopmat;
  if (!o.matrix_activations.empty()) ro.matrix_activations = parse_matrix_activations(o.matrix_activations);
  s.runtime = std::make_unique<Runtime>(ro);
  const uint64_t planned = graph::DeviceWeights::planned_bytes(s.config, s.checkpoint.get(), format);
  const ops::KvType kv = ops::parse_kv_type(o.kv);
  if (fit_context) context = context_that_fits(s, planned, context, kv, slots);
  check_memory_fit(s, format, planned, context, kv, slots, shape.fit_slots);
  graph::WeightOptions wo;
  wo.format = format;
  wo.cache_dir = o.cache;
  const uint64_t load_bytes = synthetic ? planned : s.checkpoint->total_bytes();
  auto weights = [&] {
    ProgressBar progress(synthetic ? "generating weights" : "loading weights", load_bytes);
    wo.progress = [&progress](uint64_t bytes) { progress.advance(bytes); };
    return synthetic ? graph::DeviceWeights(*s.runtime, s.config, o.seed, wo)
                     : graph::DeviceWeights(*s.runtime, s.config, *s.checkpoint, wo);
  }();
  if (!weights.cache_note().empty()) std::fprintf(stderr, "[q3n] %s\n", weights.cache_note().c_str());
  graph::EngineOptions eo;
  eo.context = context;
  eo.kv_type = kv;
  eo.slots = slots;
  eo.prefill_chunk = o.chunk;
  eo.decode_rows = o.decode_rows;
  eo.batch_invariant = o.batch_invariant;
  eo.profile = o.profile;
  s.engine = std::make_unique<graph::Engine>(*s.runtime, s.config, std::move(weights), eo);
  return s;
}

std::string format_profile(const std::map<std::string, double>& seconds) {
  std::vector<std::pair<std::string, double>> rows(seconds.begin(), seconds.end());
  std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
  double total = 0;
  for (const auto& r : rows) total += r.second;
  std::string out = "GPU time by operator:\n";
  char line[160];
  for (const auto& [kind, t] : rows) {
    std::snprintf(line, sizeof line, "  %-14s %10.3f ms  %5.1f%%\n", kind.c_str(), t * 1e3,
                  total > 0 ? 100 * t / total : 0.0);
    out += line;
  }
  std::snprintf(line, sizeof line, "  %-14s %10.3f ms\n", "total", total * 1e3);
  return out + line;
}

}  // namespace q3n::cli
