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

bool BatchScheduler::take(size_t index, int32_t token, Ended& ended) {
  Sequence& s = running_[index];
  if (!accept(s, token)) {
    ended.emplace_back(index, FinishReason::Stop);
    return false;
  }
  if (s.generated >= s.request.max_tokens) {
    ended.emplace_back(index, FinishReason::Length);
    return false;
  }
  return true;
}

BatchScheduler::DecodeInput BatchScheduler::decode_input(const std::vector<size_t>& sequences) const {
  DecodeInput in;
  for (size_t i : sequences) {
    in.slots.push_back(running_[i].slot);
    in.ids.push_back(running_[i].next_token);
    in.params.push_back(running_[i].request.sampling);
  }
  return in;
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
  Ended ended;
  if (options_.mtp_drafts)
    speculative_step(decoding, ended);
  else
    plain_step(decoding, ended);
  // Finish from the back so the indices stay valid.
  std::sort(ended.begin(), ended.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  for (const auto& [index, reason] : ended) finish(index, reason);
  return true;
}

void BatchScheduler::plain_step(const std::vector<size_t>& decoding, Ended& ended) {
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
    if (piece.params) take(i, token, ended);
  };
  // Every piece runs as its own step, except that the last one rides with the decode step.
  const size_t alone = decoding.empty() ? pieces.size() : pieces.size() - std::min<size_t>(pieces.size(), 1);
  for (size_t k = 0; k < alone; ++k) {
    const Engine::PromptPiece piece = next_piece(pieces[k]);
    piece_done(pieces[k], piece, timed([&] { return engine_.feed_piece(piece.slot, piece.ids, piece.params); }));
  }

  if (!decoding.empty()) {
    const auto [slots, ids, params] = decode_input(decoding);
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
    for (size_t j = 0; j < decoding.size(); ++j) take(decoding[j], sampled[j], ended);
  }
}

void BatchScheduler::speculative_step(const std::vector<size_t>& decoding, Ended& ended) {
  const uint32_t K = options_.mtp_drafts;
  // Whole prompts, oldest sequence first, within the budget (at least one). The head runs over
  // each and drafts after it; a prompt without room for the head's drafts runs plainly, and so
  // does the rest of its sequence.
  uint32_t budget = options_.prefill_budget;
  bool fed_any = false;
  for (size_t i = 0; i < running_.size(); ++i) {
    Sequence& s = running_[i];
    if (s.prefilled()) continue;
    const size_t n = s.request.prompt.size();
    if (fed_any && n > budget) break;
    fed_any = true;
    budget -= uint32_t(std::min<size_t>(budget, n));
    int32_t token = -1;
    if (engine_.mtp_room(s.slot, K, n)) {
      const Engine::Speculation spec =
          timed([&] { return engine_.mtp_prompt(s.slot, s.request.prompt, s.request.sampling, K); });
      s.drafts = spec.drafts;
      token = spec.emitted.at(0);
    } else {
      token = timed([&] { return engine_.feed_and_sample(s.slot, s.request.prompt, s.request.sampling); });
    }
    s.next_piece = s.pieces.size();
    s.fed = n;
    take(i, token, ended);
  }

  // Sequences with drafts and room verify them; the rest (near the end of the context) decode.
  // Too many to verify in the allowed steps: all decode plainly, for good.
  std::vector<size_t> speculating, plain;
  for (size_t i : decoding) {
    Sequence& s = running_[i];
    if (s.drafts.size() == K && engine_.mtp_room(s.slot, K))
      speculating.push_back(i);
    else
      plain.push_back(i);
  }
  const uint64_t verify_rows = uint64_t(options_.mtp_verify_steps) * (engine_.max_verify_rows() / (K + 1)) * (K + 1);
  if (uint64_t(speculating.size()) * (K + 1) > verify_rows) {
    plain.insert(plain.end(), speculating.begin(), speculating.end());
    speculating.clear();
  }
  for (size_t i : plain) running_[i].drafts.clear();
  if (!speculating.empty()) {
    const auto [slots, lasts, params] = decode_input(speculating);
    std::vector<std::vector<int32_t>> drafts;
    for (size_t i : speculating) drafts.push_back(running_[i].drafts);
    const std::vector<Engine::Speculation> out = timed([&] { return engine_.mtp_steps(slots, lasts, drafts, params); });
    for (size_t j = 0; j < speculating.size(); ++j) {
      stats_.spec_steps += 1;
      stats_.spec_drafted += K;
      stats_.spec_accepted += out[j].emitted.size() - 1;
      stats_.decode_rows += K + 1;
      bool going = true;
      for (const int32_t token : out[j].emitted)
        if (!(going = take(speculating[j], token, ended))) break;
      if (going) running_[speculating[j]].drafts = out[j].drafts;
    }
  }
  if (!plain.empty()) {
    const auto [slots, ids, params] = decode_input(plain);
    const std::vector<int32_t> sampled = timed([&] { return engine_.decode(slots, ids, params); });
    stats_.decode_rows += slots.size();
    for (size_t j = 0; j < plain.size(); ++j) take(plain[j], sampled[j], ended);
  }
}

}  // namespace q3n::graph
