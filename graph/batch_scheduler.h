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
};

struct SchedulerStats {
  uint64_t prompt_tokens = 0, generated_tokens = 0, iterations = 0, decode_rows = 0;
  uint64_t mixed_steps = 0;  // decode steps that carried a prompt piece
  double busy_seconds = 0;   // wall time inside engine steps (submitted and waited for)
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
    int32_t next_token = -1;  // sampled, to be fed by the next decode step
    uint32_t generated = 0;
    bool prefilled() const { return next_piece == pieces.size(); }
  };
  void admit();
  // Handles a sampled token the way `q3n run` does; returns false when the sequence ended.
  bool accept(Sequence& s, int32_t token);
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
