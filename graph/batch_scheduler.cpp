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

  // Prompt pieces for this iteration, oldest sequence first, within the budget (at least one).
  std::vector<size_t> pieces;  // index into running_ of each piece's sequence, in feeding order
  uint32_t budget = options_.prefill_budget;
  for (size_t i = 0; i < running_.size() && budget > 0; ++i) {
    const Sequence& s = running_[i];
    for (size_t p = s.next_piece; p < s.pieces.size(); ++p) {
      if (!pieces.empty() && s.pieces[p] > budget) break;
      pieces.push_back(i);
      budget -= std::min(budget, s.pieces[p]);
    }
  }

  std::vector<std::pair<size_t, FinishReason>> ended;
  // The next piece of sequence i: its ids, and its sampling parameters when it is the last.
  auto next_piece = [&](size_t i) {
    Sequence& s = running_[i];
    const uint32_t n = s.pieces[s.next_piece];
    const bool last = s.next_piece + 1 == s.pieces.size();
    return Engine::PromptPiece{s.slot, std::span<const int32_t>(s.request.prompt.data() + s.fed, n),
                               last ? &s.request.sampling : nullptr};
  };
  auto piece_done = [&](size_t i, const Engine::PromptPiece& piece, int32_t token) {
    Sequence& s = running_[i];
    ++s.next_piece;
    s.fed += piece.ids.size();
    if (!piece.params) return;
    if (!accept(s, token))
      ended.emplace_back(i, FinishReason::Stop);
    else if (s.generated >= s.request.max_tokens)
      ended.emplace_back(i, FinishReason::Length);
  };
  // Every piece runs as its own step, except that the last one rides with the decode step.
  const size_t alone = decoding.empty() ? pieces.size() : pieces.size() - std::min<size_t>(pieces.size(), 1);
  for (size_t k = 0; k < alone; ++k) {
    const Engine::PromptPiece piece = next_piece(pieces[k]);
    piece_done(pieces[k], piece, timed([&] { return engine_.feed_piece(piece.slot, piece.ids, piece.params); }));
  }

  if (!decoding.empty()) {
    std::vector<uint32_t> slots;
    std::vector<int32_t> ids;
    std::vector<ops::SamplingParams> params;
    for (size_t i : decoding) {
      slots.push_back(running_[i].slot);
      ids.push_back(running_[i].next_token);
      params.push_back(running_[i].request.sampling);
    }
    std::vector<int32_t> sampled;
    if (alone < pieces.size()) {
      const Engine::PromptPiece piece = next_piece(pieces.back());
      int32_t token = -1;
      sampled = timed([&] { return engine_.decode_with_piece(slots, ids, params, piece, token); });
      ++stats_.mixed_steps;
      piece_done(pieces.back(), piece, token);
    } else {
      sampled = timed([&] { return engine_.decode(slots, ids, params); });
    }
    stats_.decode_rows += slots.size();
    for (size_t j = 0; j < decoding.size(); ++j) {
      Sequence& s = running_[decoding[j]];
      if (!accept(s, sampled[j]))
        ended.emplace_back(decoding[j], FinishReason::Stop);
      else if (s.generated >= s.request.max_tokens)
        ended.emplace_back(decoding[j], FinishReason::Length);
    }
  }
  // Finish from the back so the indices stay valid.
  std::sort(ended.begin(), ended.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  for (const auto& [index, reason] : ended) finish(index, reason);
  return true;
}

}  // namespace q3n::graph
