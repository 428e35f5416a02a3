#include "graph/batch_scheduler.h"

#include <algorithm>

#include "runtime/error.h"

namespace q3n::graph {

BatchScheduler::BatchScheduler(Engine& engine, SchedulerOptions options, TokenFn on_token, FinishFn on_finish)
    : engine_(engine), options_(std::move(options)), on_token_(std::move(on_token)), on_finish_(std::move(on_finish)) {
  if (options_.max_batch == 0 || options_.max_batch > engine.slots())
    throw Error("internal: the scheduler needs 1.." + std::to_string(engine.slots()) + " sequences in flight");
  options_.prefill_budget = std::max(options_.prefill_budget, 1u);
  for (uint32_t s = options_.max_batch; s-- > 0;) free_slots_.push_back(s);
}

bool BatchScheduler::fits(const GenerationRequest& r) const {
  // The last generated token is never fed back, so it needs no position.
  return !r.prompt.empty() && r.prompt.size() + std::max(r.max_tokens, 1u) - 1 <= engine_.context();
}

void BatchScheduler::add(GenerationRequest request) {
  if (!fits(request)) throw Error("internal: a request that does not fit the context was queued");
  queue_.push_back(std::move(request));
}

template <class F>
auto BatchScheduler::timed(F&& f) {
  const auto start = std::chrono::steady_clock::now();
  auto result = f();
  stats_.busy_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

void BatchScheduler::admit() {
  while (admitting_ && !queue_.empty() && !free_slots_.empty()) {
    Sequence s;
    s.request = std::move(queue_.front());
    queue_.pop_front();
    s.slot = free_slots_.back();
    free_slots_.pop_back();
    engine_.reset(s.slot);
    s.pieces = engine_.prompt_pieces(s.request.prompt.size());
    stats_.prompt_tokens += s.request.prompt.size();
    running_.push_back(std::move(s));
    if (running_.back().request.max_tokens == 0) finish(running_.size() - 1, FinishReason::Length);
  }
}

bool BatchScheduler::accept(Sequence& s, int32_t token) {
  if (options_.stop_ids.count(token)) return false;
  ++s.generated;
  ++stats_.generated_tokens;
  if (on_token_(s.request.tag, token)) return false;
  s.next_token = token;
  return true;
}

void BatchScheduler::finish(size_t index, FinishReason reason) {
  Sequence& s = running_[index];
  on_finish_(s.request.tag, reason, uint32_t(s.request.prompt.size()), s.generated);
  free_slots_.push_back(s.slot);
  running_.erase(running_.begin() + ptrdiff_t(index));
}

void BatchScheduler::abandon_running() {
  for (const Sequence& s : running_) free_slots_.push_back(s.slot);
  running_.clear();
}

bool BatchScheduler::step() {
  admit();
  if (running_.empty()) return admitting_ && !queue_.empty();
  ++stats_.iterations;
  // Which sequences are generating now: those that finished their prompt in an earlier
  // iteration (one that finishes it below samples its first token there).
  std::vector<size_t> decoding;
  for (size_t i = 0; i < running_.size(); ++i)
    if (running_[i].prefilled()) decoding.push_back(i);

  // Prompt pieces, oldest sequence first, within the budget.
  std::vector<std::pair<size_t, FinishReason>> ended;
  uint32_t budget = options_.prefill_budget;
  bool ran_piece = false;
  for (size_t i = 0; i < running_.size(); ++i) {
    Sequence& s = running_[i];
    while (!s.prefilled()) {
      const uint32_t n = s.pieces[s.next_piece];
      if (ran_piece && n > budget) break;
      const bool last = s.next_piece + 1 == s.pieces.size();
      const std::span<const int32_t> ids(s.request.prompt.data() + s.fed, n);
      const int32_t token = timed([&] { return engine_.feed_piece(s.slot, ids, last ? &s.request.sampling : nullptr); });
      ++s.next_piece;
      s.fed += n;
      budget -= std::min(budget, n);
      ran_piece = true;
      if (last && !accept(s, token)) ended.emplace_back(i, FinishReason::Stop);
      else if (last && s.generated >= s.request.max_tokens) ended.emplace_back(i, FinishReason::Length);
    }
    if (budget == 0) break;
  }

  // One decode step for every generating sequence.
  if (!decoding.empty()) {
    std::vector<uint32_t> slots;
    std::vector<int32_t> ids;
    std::vector<ops::SamplingParams> params;
    for (size_t i : decoding) {
      slots.push_back(running_[i].slot);
      ids.push_back(running_[i].next_token);
      params.push_back(running_[i].request.sampling);
    }
    const auto sampled = timed([&] { return engine_.decode(slots, ids, params); });
    stats_.decode_rows += slots.size();
    for (size_t j = 0; j < decoding.size(); ++j) {
      Sequence& s = running_[decoding[j]];
      if (!accept(s, sampled[j])) ended.emplace_back(decoding[j], FinishReason::Stop);
      else if (s.generated >= s.request.max_tokens) ended.emplace_back(decoding[j], FinishReason::Length);
    }
  }
  // Finish from the back so the indices stay valid.
  std::sort(ended.begin(), ended.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  for (const auto& [index, reason] : ended) finish(index, reason);
  return true;
}

}  // namespace q3n::graph
