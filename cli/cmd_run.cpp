// `q3n run -m DIR (-p TEXT | --prompt-file F | --prompt-ids F) [-n N] [sampling] [--chat]`:
// prompt processing in chunks, then token-by-token generation streamed to stdout, stopping at
// the model's stop tokens; speeds on stderr at the end. With --mtp, speculative decoding: the
// model's MTP head drafts --draft tokens and one step of the model verifies them (lossless: the
// same tokens as without, graph::Engine::mtp_step).
#include <cstdio>
#include <deque>
#include <memory>
#include <optional>
#include <set>

#include "cli/commands.h"
#include "cli/input_files.h"
#include "cli/model_session.h"
#include "cli/stopwatch.h"
#include "loader/chat.h"
#include "loader/tokenizer.h"
#include "runtime/cpu_dispatch.h"
#include "runtime/error.h"

namespace q3n::cli {

void add_run_command(CLI::App& app) {
  struct Options {
    ModelOptions model;
    std::string prompt, prompt_file, prompt_ids, system;
    int tokens = 128;
    SamplingFlags sampling;
    uint64_t seed = 0;
    bool chat = false, print_ids = false;
    uint32_t draft = 1;  // what measures best on kjv-demo (bench/NOTES.md, session 15)
    std::string cpu_dispatch = "auto";
  };
  auto o = std::make_shared<Options>();
  auto* cmd = app.add_subcommand("run", "Generate text from a prompt");
  add_model_options(*cmd, o->model);
  auto* p = cmd->add_option("-p,--prompt", o->prompt, "Prompt text");
  auto* pf = cmd->add_option("--prompt-file", o->prompt_file, "Read the prompt text from a file");
  auto* pi = cmd->add_option("--prompt-ids", o->prompt_ids, "Read the prompt as whitespace-separated token ids");
  p->excludes(pf)->excludes(pi);
  pf->excludes(pi);
  cmd->add_option("-n,--tokens", o->tokens, "Tokens to generate at most")->check(CLI::NonNegativeNumber);
  add_sampling_options(*cmd, o->sampling);
  cmd->add_option("--seed", o->seed, "Random seed for sampling");
  cmd->add_flag("--chat", o->chat, "Wrap the prompt in the model's chat template");
  cmd->add_option("--system", o->system, "System message (with --chat)");
  cmd->add_flag("--print-ids", o->print_ids, "Print the generated token ids instead of text");
  auto* mtp = cmd->add_flag("--mtp", o->model.mtp,
                            "Speculative decoding with the checkpoint's MTP head (same output, fewer steps)");
  cmd->add_option("--draft", o->draft, "Draft tokens per step with --mtp")->check(CLI::Range(1, 7))->needs(mtp);
  cmd->add_option("--cpu-dispatch", o->cpu_dispatch,
                  "On lavapipe: run dispatches on its worker threads or inline on one thread (auto: inline "
                  "when the prompt is no longer than -n, as inline decodes ~1.3x faster but reads prompts "
                  "~1.6x slower; LP_NUM_THREADS, if set, wins)")
      ->check(CLI::IsMember({"auto", "threads", "inline"}));
  cmd->callback([o] {
    if (o->prompt.empty() && o->prompt_file.empty() && o->prompt_ids.empty())
      throw Error("no prompt: give -p TEXT, --prompt-file F or --prompt-ids F");
    if (!o->system.empty() && !o->chat) throw Error("--system needs --chat");
    check_sampling_flags(o->sampling);

    if (!o->model.synthetic.empty()) {
      if (o->prompt_ids.empty()) throw Error("--synthetic has no tokenizer: give the prompt as --prompt-ids F");
      o->print_ids = true;
    }
    const std::filesystem::path dir = o->model.synthetic.empty()
                                          ? std::filesystem::path(o->model.model)
                                          : std::filesystem::path(o->model.synthetic).parent_path();
    std::unique_ptr<Tokenizer> tokenizer;
    if (o->prompt_ids.empty() || !o->print_ids) tokenizer = std::make_unique<Tokenizer>(dir / "tokenizer.json");
    std::vector<TokenId> prompt;
    if (!o->prompt_ids.empty()) {
      prompt = parse_token_ids(read_text_file(o->prompt_ids));
    } else {
      std::string text = o->prompt_file.empty() ? o->prompt : read_text_file(o->prompt_file);
      if (o->chat) {
        std::vector<ChatMessage> messages;
        if (!o->system.empty()) messages.push_back({"system", o->system});
        messages.push_back({"user", text});
        text = render_chat(messages, detect_chat_template(dir));
      }
      prompt = tokenizer->encode(text);
    }
    if (prompt.empty()) throw Error("the prompt is empty");

    // Before any Vulkan instance exists: lavapipe reads its thread count when it opens its device.
    const CpuDispatch dispatch = o->cpu_dispatch == "auto"
                                     ? cpu_dispatch_for_one_sequence(prompt.size(), uint64_t(o->tokens))
                                     : parse_cpu_dispatch(o->cpu_dispatch);
    const bool dispatch_applied = apply_cpu_dispatch(dispatch);

    // Without --ctx: the default context (what `q3n batch` uses too), or more if the prompt needs it.
    ModelSession session =
        open_model(o->model, {.context = o->model.context, .min_context = uint32_t(prompt.size() + o->tokens)});
    graph::Engine& engine = *session.engine;
    if (o->model.mtp) check_draft(engine, o->draft);
    const uint32_t context = engine.context();
    const GenerationDefaults defaults = load_generation_defaults(dir, session.config);
    ops::SamplingParams sampling = o->sampling.over(defaults);
    sampling.seed = o->seed;
    const std::set<int> stops(defaults.stop_token_ids.begin(), defaults.stop_token_ids.end());

    std::optional<StreamDecoder> stream;
    if (!o->print_ids) stream.emplace(*tokenizer);
    std::vector<TokenId> generated;
    auto emit = [&](TokenId id) {
      generated.push_back(id);
      if (stream) {
        std::fputs(stream->push(id).c_str(), stdout);
        std::fflush(stdout);
      }
    };

    // Tokens to emit, in order: one per plain decode step, 1 .. draft + 1 per speculative step.
    std::deque<int32_t> ready;
    std::vector<int32_t> drafts;
    uint64_t spec_steps = 0, spec_accepted = 0;
    const uint32_t draft = o->draft;
    const auto prefill_start = Clock::now();
    if (o->tokens > 0 && o->model.mtp) {
      graph::Engine::Speculation s = engine.mtp_prompt(0, prompt, sampling, draft);
      ready.assign(s.emitted.begin(), s.emitted.end());
      drafts = s.drafts;
    } else if (o->tokens > 0) {
      ready.push_back(engine.feed_and_sample(0, prompt, sampling));
    }
    const double prefill_seconds = seconds_since(prefill_start);
    const auto decode_start = Clock::now();
    std::string stopped = "token limit";
    for (int i = 0; i < o->tokens; ++i) {
      const int32_t next = ready.front();
      ready.pop_front();
      if (stops.count(next)) {
        stopped = "stop token";
        break;
      }
      emit(next);
      if (i + 1 == o->tokens) break;
      if (!ready.empty()) continue;
      if (engine.position(0) >= context) {
        stopped = "context full (raise --ctx)";
        break;
      }
      const uint32_t slot = 0;
      // A speculative step needs room for its verified rows and the head's draft positions;
      // near the end of the context plain steps finish the job.
      if (o->model.mtp && engine.mtp_room(slot, draft)) {
        graph::Engine::Speculation s = engine.mtp_step(slot, next, drafts, sampling);
        ready.assign(s.emitted.begin(), s.emitted.end());
        drafts = s.drafts;
        ++spec_steps;
        spec_accepted += s.emitted.size() - 1;
      } else {
        ready.push_back(engine.decode(std::span(&slot, 1), std::span(&next, 1), sampling)[0]);
      }
    }
    const double decode_seconds = seconds_since(decode_start);
    if (stream) std::fputs(stream->flush().c_str(), stdout);
    if (o->print_ids)
      for (size_t i = 0; i < generated.size(); ++i) std::printf(i ? " %d" : "%d", generated[i]);
    std::printf("\n");
    std::fflush(stdout);  // the text ends before the statistics on stderr
    const size_t decoded = generated.empty() ? 0 : generated.size() - 1;  // the first came from the prefill step
    if (o->tokens == 0) {
      std::fprintf(stderr, "[q3n] -n 0: the prompt (%zu tokens) was not run\n", prompt.size());
    } else {
      std::fprintf(stderr,
                   "[q3n] prompt: %zu tokens in %.3f s (%.1f tok/s); generated %zu tokens (%s), decode %.1f tok/s\n",
                   prompt.size(), prefill_seconds, prompt.size() / prefill_seconds, generated.size(), stopped.c_str(),
                   decode_seconds > 0 && decoded ? decoded / decode_seconds : 0.0);
    }
    if (dispatch_applied && dispatch == CpuDispatch::Inline &&
        session.runtime().device.info().type == VK_PHYSICAL_DEVICE_TYPE_CPU)
      std::fprintf(stderr, "[q3n] CPU driver: dispatches ran inline on one thread (--cpu-dispatch)\n");
    if (o->model.mtp && spec_steps)
      std::fprintf(stderr, "[q3n] MTP: %llu steps of %u drafts, %.1f%% accepted, %.2f tokens per step\n",
                   static_cast<unsigned long long>(spec_steps), draft, 100.0 * spec_accepted / (spec_steps * draft),
                   double(spec_steps + spec_accepted) / spec_steps);
    if (o->model.profile) std::fprintf(stderr, "%s", format_profile(engine.take_profile()).c_str());
  });
}

}  // namespace q3n::cli
