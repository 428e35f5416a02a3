// Continuous batching over an Engine: up to `max_batch` sequences hold a slot each; a finished
// one frees its slot and the next queued request takes it at the next iteration. Each
// iteration runs prompt pieces of the sequences still reading their prompt (at most
// `prefill_budget` tokens, at least one piece) and one decode step for every sequence that is
// generating; the iteration's last piece rides in that decode step (Engine::decode_with_piece),
// the others run as steps of their own. Every request sees exactly the arithmetic `q3n run`
// would give it alone (same prompt pieces, rows that do not depend on their neighbours, RNG
// keyed by seed and position), so its tokens do not depend on what else is in the batch.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <set>
#include <vector>

#include "graph/engine.h"

namespace q3n::graph {

struct GenerationRequest {
  uint64_t tag = 0;  // the caller's handle, passed back in the callbacks
  std::vector<int32_t> prompt;
  uint32_t max_tokens = 0;
  ops::SamplingParams sampling;
};

enum class FinishReason { Stop, Length };

struct SchedulerOptions {
  uint32_t max_batch = 1;         // sequences in flight (<= the engine's slots)
  uint32_t prefill_budget = 512;  // prompt tokens per iteration
  std::set<int32_t> stop_ids;     // tokens that end a sequence (not emitted)
  // Speculative decoding with the engine's MTP head (EngineOptions::mtp): drafts per step, 0 for
  // none. Each prompt is then fed whole in one iteration (the head runs over it too), and no
  // prompt piece rides in a decode step.
  uint32_t mtp_drafts = 0;
  // Sequences speculate only while all the generating ones' rows fit this many verify steps
  // (Engine::max_verify_rows each); otherwise every one decodes plainly from then on (the head's
  // KV cache is not kept up to date by plain steps). One step: a speculative iteration of many
  // sequences costs about as many model steps as it has verify steps, plus the head's, which
  // MTP's 1 + acceptance tokens per step do not repay (80B-A3B on the H200, bench/NOTES.md).
  uint32_t mtp_verify_steps = 1;
};

struct SchedulerStats {
  uint64_t prompt_tokens = 0, generated_tokens = 0, iterations = 0, decode_rows = 0;
  uint64_t mixed_steps = 0;  // decode steps that carried a prompt piece
  // Speculative decoding: sequence steps (one per sequence verified), drafts made and accepted.
  uint64_t spec_steps = 0, spec_drafted = 0, spec_accepted = 0;
  double busy_seconds = 0;  // wall time inside engine steps (submitted and waited for)
};

class BatchScheduler {
 public:
  // on_token(tag, id): a generated token; return true to end the request now (a stop string).
  using TokenFn = std::function<bool(uint64_t tag, int32_t id)>;
  using FinishFn = std::function<void(uint64_t tag, FinishReason reason, uint32_t prompt_tokens, uint32_t generated)>;

  BatchScheduler(Engine& engine, SchedulerOptions options, TokenFn on_token, FinishFn on_finish);

  // The request must fit: prompt + max_tokens - 1 positions <= the engine's context
  // (fits() says so; add() throws otherwise).
  bool fits(const GenerationRequest& r) const;
  void add(GenerationRequest request);
  // One iteration. Returns false when nothing is queued or running.
  bool step();
  // Admit no more queued requests; those already running finish.
  void stop_admitting() { admitting_ = false; }
  // Forget every running request without finishing it (they get no callback).
  void abandon_running();

  size_t queued() const { return queue_.size(); }
  size_t running() const { return running_.size(); }
  const SchedulerStats& stats() const { return stats_; }

 private:
  struct Sequence {
    GenerationRequest request;
    uint32_t slot = 0;
    std::vector<uint32_t> pieces;  // of the prompt, in order
    size_t next_piece = 0, fed = 0;
    int32_t next_token = -1;      // sampled, to be fed by the next decode step
    std::vector<int32_t> drafts;  // the MTP head's guesses at the tokens after next_token
    uint32_t generated = 0;
    bool prefilled() const { return next_piece == pieces.size(); }
  };
  using Ended = std::vector<std::pair<size_t, FinishReason>>;  // index into running_, why
  void admit();
  // Handles a sampled token the way `q3n run` does; returns false when the sequence ended.
  bool accept(Sequence& s, int32_t token);
  // accept(), and the end of the sequence (a stop, or max_tokens reached) noted in `ended`.
  bool take(size_t index, int32_t token, Ended& ended);
  // The slots, next tokens and sampling parameters of these sequences (indices into running_).
  struct DecodeInput {
    std::vector<uint32_t> slots;
    std::vector<int32_t> ids;
    std::vector<ops::SamplingParams> params;
  };
  DecodeInput decode_input(const std::vector<size_t>& sequences) const;
  // One iteration's prompts and decode steps, plain or speculative (options_.mtp_drafts).
  void plain_step(const std::vector<size_t>& decoding, Ended& ended);
  void speculative_step(const std::vector<size_t>& decoding, Ended& ended);
  void finish(size_t index, FinishReason reason);
  template <class F>
  auto timed(F&& f);

  Engine& engine_;
  SchedulerOptions options_;
  TokenFn on_token_;
  FinishFn on_finish_;
  std::deque<GenerationRequest> queue_;
  std::vector<Sequence> running_;  // in admission order
  std::vector<uint32_t> free_slots_;
  bool admitting_ = true;
  SchedulerStats stats_;
};

}  // namespace q3n::graph
