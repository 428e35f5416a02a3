#include "cli/batch_job.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <unordered_map>
#include <unordered_set>

#include "cli/process_group.h"
#include "cli/stopwatch.h"
#include "graph/batch_scheduler.h"
#include "loader/batch_file.h"
#include "loader/chat.h"
#include "loader/tokenizer.h"
#include "runtime/device.h"
#include "runtime/error.h"
#include "runtime/instance.h"

namespace q3n::cli {

namespace {

// SIGINT / SIGTERM: the first stops admitting requests (running ones finish), the second
// abandons the running ones. Either way the output file stays valid.
std::atomic<int> g_signals{0};
extern "C" void on_signal(int) { g_signals.fetch_add(1); }

class SignalGuard {
 public:
  SignalGuard() {
    g_signals = 0;
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int_);
    sigaction(SIGTERM, &sa, &old_term_);
  }
  ~SignalGuard() {
    sigaction(SIGINT, &old_int_, nullptr);
    sigaction(SIGTERM, &old_term_, nullptr);
  }

 private:
  struct sigaction old_int_ {
  }, old_term_{};
};

std::string duration_text(double seconds) {
  char buf[32];
  const long s = long(seconds + 0.5);
  if (s >= 3600)
    std::snprintf(buf, sizeof buf, "%ldh%02ldm", s / 3600, s / 60 % 60);
  else
    std::snprintf(buf, sizeof buf, "%ldm%02lds", s / 60, s % 60);
  return buf;
}

// Requests done / total, output tok/s and ETA on stderr: redrawn in place on a terminal,
// a plain line every 10 s otherwise.
class ProgressLine {
 public:
  explicit ProgressLine(size_t total)
      : total_(total), tty_(::isatty(STDERR_FILENO)), start_(Clock::now()), last_(start_) {}
  void update(size_t done, size_t errors, uint64_t generated, bool force = false) {
    if (!force && seconds_since(last_) < (tty_ ? 0.25 : 10.0)) return;
    last_ = Clock::now();
    const double elapsed = seconds_since(start_);
    const double rate = elapsed > 0 ? generated / elapsed : 0;
    const double eta = done > 0 && total_ > done ? elapsed * double(total_ - done) / double(done) : 0;
    std::fprintf(stderr, "%s[q3n] batch: %zu/%zu requests, %zu errors, %.1f output tok/s, ETA %s%s", tty_ ? "\r" : "",
                 done, total_, errors, rate, done ? duration_text(eta).c_str() : "?", tty_ ? "   " : "\n");
    drawn_ = tty_;
  }
  void end_line() {
    if (drawn_) std::fputc('\n', stderr);
    drawn_ = false;
  }

 private:
  size_t total_;
  bool tty_, drawn_ = false;
  Clock::time_point start_, last_;
};

// One running request's output so far.
struct Pending {
  std::string custom_id;
  std::vector<std::string> stop;
  std::vector<int32_t> ids;
  std::string text;
  std::unique_ptr<StreamDecoder> decoder;
  bool stop_string = false;
};

// Rank `rank` of `ranks` computes the requests of these input lines.
bool owned_line(size_t line_number, int rank, int ranks) { return (line_number - 1) % size_t(ranks) == size_t(rank); }

// Every record done so far: the output and the part files of a split job (of any process
// count). Rank 0 first cuts torn last lines off all of them; the others read after it.
BatchProgress recover_job_output(const std::filesystem::path& output, const ProcessGroup& group) {
  const auto read_all = [&] {
    BatchProgress progress = recover_batch_output(output);
    for (const auto& part : batch_parts(output)) progress.add(recover_batch_output(part));
    return progress;
  };
  BatchProgress progress;
  if (group.rank() == 0) progress = read_all();
  group.barrier();
  if (group.rank() != 0) progress = read_all();
  group.barrier();  // every rank has read before any appends
  return progress;
}

// With several ranks and no --device: rank i of a host takes that host's GPU i mod count.
ModelOptions with_rank_device(ModelOptions model, const ProcessGroup& group) {
  if (group.size() == 1 || !model.device.empty() || !model.devices.empty() || std::getenv("Q3N_DEVICE")) return model;
  Instance instance;
  std::vector<uint32_t> gpus;
  for (const DeviceInfo& d : list_devices(instance))
    if (d.type != VK_PHYSICAL_DEVICE_TYPE_CPU && d.missing_requirement().empty()) gpus.push_back(d.index);
  if (!gpus.empty()) model.device = std::to_string(gpus[size_t(group.local_rank()) % gpus.size()]);
  return model;
}

// A request's prompt as token ids (empty with `error` set when it has none).
std::vector<int32_t> prompt_ids(const BatchRequest& r, const Tokenizer* tokenizer, const BatchJobOptions& o,
                                ChatTemplateKind chat_kind, std::string& error) {
  if (r.prompt_ids) return *r.prompt_ids;
  if (!tokenizer) {
    error = "--synthetic has no tokenizer: give the prompt as \"prompt_ids\"";
    return {};
  }
  if (r.messages) return tokenizer->encode(render_chat(*r.messages, chat_kind));
  if (o.chat) {
    std::vector<ChatMessage> messages;
    if (!o.system.empty()) messages.push_back({"system", o.system});
    messages.push_back({"user", *r.prompt});
    return tokenizer->encode(render_chat(messages, chat_kind));
  }
  return tokenizer->encode(*r.prompt);
}

// The input's requests (non-blank lines; those of line numbers `rank` mod `ranks`) and the most
// positions one of them needs (prompt + max_tokens), over every readable request of every rank,
// done before or not, so that every rank and a resumed job size their context alike. With
// `find_longest` false (--ctx given) the prompts are not tokenised.
struct InputSummary {
  size_t requests = 0;
  uint64_t longest = 0;
};
InputSummary summarise_input(const std::string& path, const Tokenizer* tokenizer, const BatchJobOptions& o,
                             ChatTemplateKind chat_kind, int rank, int ranks, bool find_longest) {
  std::ifstream in(path, std::ios::binary);
  InputSummary summary;
  size_t line_number = 0;
  for (std::string line; std::getline(in, line);) {
    ++line_number;
    if (is_blank_line(line)) continue;
    summary.requests += owned_line(line_number, rank, ranks);
    if (!find_longest) continue;
    const BatchLine parsed = parse_batch_line(line, line_number);
    if (!parsed.request) continue;
    std::string error;
    const uint64_t prompt = prompt_ids(*parsed.request, tokenizer, o, chat_kind, error).size();
    if (prompt) summary.longest = std::max(summary.longest, prompt + parsed.request->max_tokens.value_or(o.max_tokens));
  }
  return summary;
}

int run_ranked_batch_job(const ModelOptions& model_options, const BatchJobOptions& o, const ProcessGroup& group) {
  const ModelOptions model = with_rank_device(model_options, group);
  const bool split = group.size() > 1;
  std::ifstream input(o.input, std::ios::binary);
  if (!input) throw Error("cannot read the batch input " + o.input);
  if (std::filesystem::exists(o.output) && std::filesystem::equivalent(o.input, o.output))
    throw Error("--output must not be the --input file");
  const bool synthetic = !model.synthetic.empty();
  const std::filesystem::path dir =
      synthetic ? std::filesystem::path(model.synthetic).parent_path() : std::filesystem::path(model.model);
  std::unique_ptr<Tokenizer> tokenizer;
  if (!synthetic) tokenizer = std::make_unique<Tokenizer>(dir / "tokenizer.json");
  const ChatTemplateKind chat_kind = detect_chat_template(dir);
  const InputSummary input_summary =
      summarise_input(o.input, tokenizer.get(), o, chat_kind, group.rank(), group.size(), model.context == 0);
  const size_t total = input_summary.requests;
  BatchProgress previous = recover_job_output(o.output, group);
  if (previous.dropped_torn_line)
    std::fprintf(stderr, "[q3n] %s ended in a torn line (an interrupted write): dropped, its request is redone\n",
                 o.output.c_str());
  if (previous.records)
    std::fprintf(stderr, "[q3n] %s already holds %zu records: those requests are skipped\n", o.output.c_str(),
                 previous.records);

  // Without --ctx: the context the longest request needs (at least the default), within the
  // model's positions and what fits in memory beside the weights.
  ModelSession session =
      open_model(model, {.context = model.context,
                         .min_context = uint32_t(std::min<uint64_t>(input_summary.longest, UINT32_MAX)),
                         .slots = o.max_batch,
                         .fit_slots = true,
                         .fit_context = true});
  graph::Engine& engine = *session.engine;
  if (!model.context)
    std::fprintf(stderr, "[q3n] context: %u positions per sequence (the longest request needs %llu; --ctx sets it)\n",
                 engine.context(), (unsigned long long)input_summary.longest);
  const GenerationDefaults defaults = load_generation_defaults(dir, session.config);
  const ops::SamplingParams default_sampling = o.sampling.over(defaults);

  if (split)
    std::fprintf(stderr, "[q3n] rank %d of %d: %zu requests (every %d-th line), results in %s, device %s\n",
                 group.rank(), group.size(), total, group.size(), batch_part_path(o.output, group.rank()).c_str(),
                 session.device_names().c_str());
  BatchOutput out(split ? batch_part_path(o.output, group.rank()) : std::filesystem::path(o.output), o.sync_seconds);
  std::unordered_map<uint64_t, Pending> pending;
  size_t done = previous.records, errors = previous.failed_lines.size(), new_errors = 0, computed = 0;
  auto write_error = [&](const std::optional<std::string>& id, size_t line, const std::string& message) {
    out.append(batch_error_record(id, line, message));
    ++done, ++errors, ++new_errors;
  };

  graph::SchedulerOptions so;
  so.max_batch = engine.slots();
  so.prefill_budget = o.prefill_budget ? o.prefill_budget : engine.prefill_chunk();
  so.stop_ids.insert(defaults.stop_token_ids.begin(), defaults.stop_token_ids.end());
  if (model.mtp) check_draft(engine, o.draft);
  so.mtp_drafts = model.mtp ? o.draft : 0;
  auto on_token = [&](uint64_t tag, int32_t id) {
    Pending& p = pending.at(tag);
    p.ids.push_back(id);
    if (!p.decoder) return false;
    const size_t before = p.text.size();
    p.text += p.decoder->push(id);
    for (const std::string& stop : p.stop) {
      const size_t from = before >= stop.size() ? before - stop.size() + 1 : 0;
      const size_t at = p.text.find(stop, from);
      if (at == std::string::npos) continue;
      p.text.resize(at);  // the stop string itself is not part of the result (as OpenAI's API)
      p.stop_string = true;
      return true;
    }
    return false;
  };
  auto on_finish = [&](uint64_t tag, graph::FinishReason reason, uint32_t prompt_tokens, uint32_t generated) {
    Pending& p = pending.at(tag);
    if (p.decoder && !p.stop_string) p.text += p.decoder->flush();
    const bool ids = o.ids || synthetic;
    out.append(batch_result_record(p.custom_id, p.text, reason == graph::FinishReason::Stop, prompt_tokens, generated,
                                   ids ? &p.ids : nullptr));
    pending.erase(tag);
    ++done, ++computed;
  };
  graph::BatchScheduler scheduler(engine, so, on_token, on_finish);

  // Turns one input line into a queued request, an error record, or nothing (done before).
  std::unordered_set<std::string> seen_ids;
  size_t line_number = 0;
  uint64_t next_tag = 0;
  auto read_line = [&](const std::string& text) {
    ++line_number;
    if (is_blank_line(text)) return;
    BatchLine parsed = parse_batch_line(text, line_number);
    const bool duplicate = parsed.custom_id && !seen_ids.insert(*parsed.custom_id).second;
    if (!owned_line(line_number, group.rank(), group.size()))
      return;  // after the duplicate check: all ranks see all ids
    if (previous.done_line(line_number)) return;
    if (duplicate)
      return write_error(parsed.custom_id, line_number,
                         "duplicate custom_id \"" + *parsed.custom_id + "\" (an earlier line has it)");
    if (!parsed.request) return write_error(parsed.custom_id, line_number, parsed.error);
    const BatchRequest& r = *parsed.request;
    if (previous.done(r)) return;
    graph::GenerationRequest g;
    g.tag = next_tag++;
    g.max_tokens = r.max_tokens.value_or(o.max_tokens);
    std::string error;
    g.prompt = prompt_ids(r, tokenizer.get(), o, chat_kind, error);
    if (!error.empty()) return write_error(r.custom_id, line_number, error);
    if (g.prompt.empty()) return write_error(r.custom_id, line_number, "the prompt is empty");
    try {
      engine.check_ids(g.prompt);
    } catch (const Error& e) {
      return write_error(r.custom_id, line_number, e.what());
    }
    if (!scheduler.fits(g)) {
      const bool at_model_limit = session.config.max_position_embeddings > 0 &&
                                  engine.context() >= uint32_t(session.config.max_position_embeddings);
      return write_error(r.custom_id, line_number,
                         "the prompt (" + std::to_string(g.prompt.size()) + " tokens) and max_tokens (" +
                             std::to_string(g.max_tokens) + ") need more than " +
                             (at_model_limit ? "the model's " + std::to_string(engine.context()) +
                                                   " positions (max_position_embeddings); shorten the prompt or lower "
                                                   "max_tokens"
                                             : "the context of " + std::to_string(engine.context()) +
                                                   " positions; raise --ctx or lower max_tokens"));
    }
    ops::SamplingParams& s = g.sampling;
    s.temperature = r.temperature.value_or(default_sampling.temperature);
    s.top_k = r.top_k.value_or(default_sampling.top_k);
    s.top_p = r.top_p.value_or(default_sampling.top_p);
    s.min_p = r.min_p.value_or(default_sampling.min_p);
    s.seed = r.seed.value_or(o.seed.value_or(seed_from_custom_id(r.custom_id)));
    Pending p;
    p.custom_id = r.custom_id;
    p.stop = r.stop;
    if (tokenizer) p.decoder = std::make_unique<StreamDecoder>(*tokenizer);
    pending.emplace(g.tag, std::move(p));
    scheduler.add(std::move(g));
  };

  SignalGuard signals;
  ProgressLine progress(total);
  const auto start = Clock::now();
  bool input_done = false, announced = false;
  std::string text;
  while (true) {
    while (!input_done && g_signals == 0 && scheduler.queued() < scheduler.running() + engine.slots()) {
      if (std::getline(input, text))
        read_line(text);
      else
        input_done = true;
    }
    if (g_signals >= 1 && !announced) {
      scheduler.stop_admitting();
      progress.end_line();
      std::fprintf(stderr, "[q3n] interrupted: finishing the %zu running requests (interrupt again to abandon them)\n",
                   scheduler.running());
      announced = true;
    }
    if (g_signals >= 2) {
      progress.end_line();
      std::fprintf(stderr, "[q3n] abandoned %zu running requests; rerun the same command to finish the job\n",
                   scheduler.running());
      scheduler.abandon_running();
      break;
    }
    const bool busy = scheduler.step();
    progress.update(done, errors, scheduler.stats().generated_tokens);
    if (!busy && (input_done || g_signals > 0)) break;
  }
  out.sync();
  progress.update(done, errors, scheduler.stats().generated_tokens, true);
  progress.end_line();

  const double wall = seconds_since(start);
  const graph::SchedulerStats& st = scheduler.stats();
  std::fprintf(stderr,
               "[q3n] batch: %zu requests computed, %zu skipped (already in the output), %zu errors (%zu new); "
               "%llu prompt + %llu generated tokens in %.2f s: %.2f requests/s, %.1f output tok/s, %.1f total tok/s; "
               "engine busy %.0f%% of the time, %zu sequences at once\n",
               computed, previous.records, errors, new_errors, (unsigned long long)st.prompt_tokens,
               (unsigned long long)st.generated_tokens, wall, wall > 0 ? computed / wall : 0.0,
               wall > 0 ? st.generated_tokens / wall : 0.0,
               wall > 0 ? (st.prompt_tokens + st.generated_tokens) / wall : 0.0,
               wall > 0 ? 100 * st.busy_seconds / wall : 0.0, size_t(engine.slots()));
  std::fprintf(stderr,
               "[q3n] batch: %llu iterations, %llu decode rows (%.1f per iteration), %llu decode steps with a prompt "
               "piece riding along; %llu step programs recorded (%.2f s of the engine's time)\n",
               (unsigned long long)st.iterations, (unsigned long long)st.decode_rows,
               st.iterations ? double(st.decode_rows) / st.iterations : 0.0, (unsigned long long)st.mixed_steps,
               (unsigned long long)engine.programs_recorded(), engine.record_seconds());
  if (model.mtp && st.spec_steps)
    std::fprintf(stderr, "[q3n] MTP: %llu sequence steps of %u drafts, %.1f%% accepted, %.2f tokens per step\n",
                 (unsigned long long)st.spec_steps, o.draft, 100.0 * st.spec_accepted / st.spec_drafted,
                 double(st.spec_steps + st.spec_accepted) / st.spec_steps);
  if (model.profile) std::fprintf(stderr, "%s", format_profile(engine.take_profile()).c_str());

  // Every rank's part is synced: rank 0 merges the parts (of this run and of any earlier one).
  group.barrier();
  if (group.rank() == 0) {
    const auto parts = batch_parts(o.output);
    if (!parts.empty()) {
      const size_t added = merge_batch_parts(o.output, parts);
      std::fprintf(stderr, "[q3n] merged %zu records from %zu part files into %s\n", added, parts.size(),
                   o.output.c_str());
    }
  }
  return group.max_over_ranks(g_signals > 0 ? 130 : errors ? 3 : 0);
}

}  // namespace

int run_batch_job(const ModelOptions& model, const BatchJobOptions& o) {
  ProcessGroup group;
  if (group.size() == 1) return run_ranked_batch_job(model, o, group);
  // One rank's error must end the job, not leave the others waiting at a barrier.
  try {
    return run_ranked_batch_job(model, o, group);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "q3n: rank %d of %d: %s\n", group.rank(), group.size(), e.what());
    group.abort(1);
    return 1;
  }
}

}  // namespace q3n::cli
