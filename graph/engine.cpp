#include "graph/engine.h"

#include <algorithm>
#include <chrono>
#include <cstring>

#include "runtime/error.h"
#include "runtime/ops/linear.h"
#include "runtime/ops/moe.h"

namespace q3n::graph {

// Batch invariance (EngineOptions::batch_invariant): every decode step size takes the same
// (GEMV-shaped) kernels.
static_assert(Engine::kMaxDecodeRows <= ops::kGemvMaxTokens && Engine::kMaxDecodeRows <= ops::kExpertGemvMaxTokens,
              "decode steps must not reach the tiled GEMMs");
static_assert(EngineOptions{}.decode_rows == Engine::kMaxDecodeRows, "by default a step takes every sequence");

namespace {
// The chunked delta rule walks chunk/64 chunks per workgroup: devices with bounded shader loops
// (runtime/device.h) get shorter prefill steps.
uint32_t max_chunk(const Device& device) { return has_bounded_loops(device) ? kBoundedLoopPositions : 4096; }
}  // namespace

StepIO allocate_step_io(Runtime& rt, const ModelConfig& c, const StepShape& shape) {
  StepIO io;
  io.ids = rt.allocator.allocate(uint64_t(shape.rows()) * 4, MemoryKind::Upload, "token ids");
  io.seqs = rt.allocator.allocate(uint64_t(shape.sequences()) * 8, MemoryKind::Upload, "sequence table");
  io.sampling = rt.allocator.allocate(uint64_t(shape.sequences()) * 32, MemoryKind::Upload, "sampling parameters");
  if (shape.head == Head::LastLogits || shape.head == Head::AllLogits)
    io.logits = rt.allocator.allocate(uint64_t(shape.logit_rows()) * c.vocab_size * 4, MemoryKind::Readback, "logits");
  io.sampled = rt.allocator.allocate(uint64_t(shape.sequences()) * 4, MemoryKind::Readback, "sampled ids");
  io.status = rt.allocator.allocate(uint64_t(std::max(c.num_hidden_layers, 1)) * 4, MemoryKind::Upload, "step status");
  return io;
}

Engine::Engine(Runtime& runtime, const ModelConfig& config, const Checkpoint& checkpoint, const EngineOptions& options)
    : Engine(runtime, config, DeviceWeights(runtime, config, checkpoint, WeightOptions{}), options) {}

Engine::Engine(Runtime& runtime, const ModelConfig& config, DeviceWeights weights, const EngineOptions& options)
    : runtime_(runtime),
      config_(config),
      options_(options),
      weights_(std::move(weights)),
      state_(runtime, config, options.slots, options.context, options.kv_type, options.kv_chunk_bytes),
      positions_(options.slots, 0) {
  options_.prefill_chunk = std::clamp(options_.prefill_chunk, 1u, max_chunk(runtime.device));
  options_.max_programs = std::max(options_.max_programs, 2u);
  options_.decode_rows = std::clamp(options_.decode_rows, 1u, kMaxDecodeRows);
  for (uint32_t s = 0; s < options.slots; ++s) reset(s);
}

StepOptions Engine::step_options() const {
  if (options_.batch_invariant)
    return {.decode_gemv_max_tokens = ops::kGemvMaxTokens,
            .decode_expert_gemv_max_tokens = ops::kExpertGemvMaxTokens,
            .rope_offset = options_.rope_offset};
  return {.decode_gemv_max_tokens = ops::kThroughputGemvMaxTokens,
          .decode_expert_gemv_max_tokens = ops::kThroughputExpertGemvMaxTokens,
          .rope_offset = options_.rope_offset};
}

void Engine::reset(uint32_t slot) {
  state_.reset(slot);
  positions_.at(slot) = 0;
}

std::vector<uint32_t> Engine::prompt_pieces(size_t tokens) const {
  std::vector<uint32_t> pieces;
  const uint32_t chunk = options_.prefill_chunk;
  for (; tokens >= chunk; tokens -= chunk) pieces.push_back(chunk);
  for (uint32_t p = 1u << 30; tokens > 0; p >>= 1)
    if (tokens >= p) pieces.push_back(p), tokens -= p;
  return pieces;
}

Program& Engine::program(const StepShape& shape) {
  auto it = steps_.find(shape);
  if (it == steps_.end()) {
    const auto start = std::chrono::steady_clock::now();
    if (steps_.size() >= options_.max_programs) evict_least_recent();
    Step step{allocate_step_io(runtime_, config_, shape), nullptr};
    Graph graph = build_step_graph(runtime_.device, config_, weights_, state_, shape, step.io, step_options());
    const uint64_t need = std::max<uint64_t>(plan_memory(graph, runtime_.allocator.alignment()).arena_bytes, 4);
    if (need > arena_.size()) {
      // Every recorded program points into the old arena: drop them all (they are re-recorded
      // on their next use) before the larger arena is allocated. Shapes are bounded, so this
      // happens a few times early in a run and then no more.
      for (auto& [s, old] : steps_) keep_profile(*old.program);
      steps_.clear();
      arena_ = Allocation();
      arena_ = runtime_.allocator.allocate(need, MemoryKind::Device, "step scratch arena");
    }
    const std::string what = "step " + (shape.piece ? std::to_string(shape.piece) + "+" : std::string()) +
                             std::to_string(shape.batch) + "x" + std::to_string(shape.tokens);
    ++programs_recorded_;
    step.program = std::make_unique<Program>(runtime_, std::move(graph), what, options_.profile, arena_.range());
    it = steps_.emplace(shape, std::move(step)).first;
    record_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
  it->second.last_used = ++use_clock_;
  return *it->second.program;
}

void Engine::evict_least_recent() {
  auto oldest = std::min_element(steps_.begin(), steps_.end(),
                                 [](const auto& a, const auto& b) { return a.second.last_used < b.second.last_used; });
  if (oldest == steps_.end()) return;
  keep_profile(*oldest->second.program);
  steps_.erase(oldest);
}

void Engine::keep_profile(Program& program) {
  for (const auto& [kind, seconds] : program.take_gpu_seconds()) evicted_profile_[kind] += seconds;
}

void Engine::check_ids(std::span<const int32_t> ids) const {
  for (int32_t id : ids)
    if (id < 0 || id >= config_.vocab_size)
      throw Error("token id " + std::to_string(id) + " is outside the vocabulary (0.." +
                  std::to_string(config_.vocab_size - 1) + ")");
}

void Engine::check_sampled(std::span<const int32_t> ids) const {
  // sample.comp returns an id outside the vocabulary only for a row with a NaN logit.
  for (int32_t id : ids)
    if (id < 0 || id >= config_.vocab_size)
      throw Error(
          "the model produced NaN logits (corrupt weights, or fp16 overflow on the matrix units: try "
          "--no-coopmat); q3n stopped rather than emit a meaningless token");
}

void Engine::check_room(uint32_t slot, size_t tokens) const {
  if (positions_.at(slot) + tokens > options_.context)
    throw Error("the sequence needs " + std::to_string(positions_.at(slot) + tokens) +
                " positions but the context is " + std::to_string(options_.context) +
                "; raise --ctx or shorten the prompt");
}

void Engine::run_step(const StepShape& shape, std::span<const uint32_t> slots, std::span<const int32_t> ids,
                      std::span<const ops::SamplingParams> params) {
  Program& prog = program(shape);
  Step& step = steps_.at(shape);
  std::memcpy(step.io.ids.mapped(), ids.data(), ids.size() * 4);
  auto* seqs = static_cast<uint32_t*>(step.io.seqs.mapped());
  auto* sampling = static_cast<uint32_t*>(step.io.sampling.mapped());
  // Sequence b feeds tokens_of(b) tokens: a mixed step's piece leads the table.
  const auto tokens_of = [&](uint32_t b) { return shape.piece && b == 0 ? shape.piece : shape.tokens; };
  for (uint32_t b = 0; b < shape.sequences(); ++b) {
    seqs[2 * b] = slots[b];
    seqs[2 * b + 1] = positions_.at(slots[b]);
    if (!params.empty()) {
      // The draw is keyed by the request's seed and the sampled token's absolute position, so
      // it does not depend on which sequences ran before or beside it.
      const uint32_t position = positions_.at(slots[b]) + tokens_of(b);
      const auto record = ops::sampling_record(params[params.size() == 1 ? 0 : b], position);
      std::memcpy(sampling + 8 * b, record.data(), 32);
    }
  }
  auto* status = static_cast<uint32_t*>(step.io.status.mapped());
  std::memset(status, 0, size_t(config_.num_hidden_layers) * 4);
  prog.run();
  for (uint32_t b = 0; b < shape.sequences(); ++b) positions_.at(slots[b]) += tokens_of(b);
  for (int L = 0; L < config_.num_hidden_layers; ++L)
    if (status[L])
      throw Error("layer " + std::to_string(L) +
                  ": the MoE router produced NaN or infinite logits (corrupt weights, or fp16 overflow on the "
                  "matrix units: try --no-coopmat); the output would be meaningless, so q3n stopped");
}

int32_t Engine::feed_piece(uint32_t slot, std::span<const int32_t> ids, const ops::SamplingParams* params) {
  if (ids.empty()) throw Error("internal: an empty prompt piece");
  check_ids(ids);
  check_room(slot, ids.size());
  const uint32_t slots[1] = {slot};
  const StepShape shape{1, static_cast<uint32_t>(ids.size()), params ? Head::Sample : Head::None};
  run_step(shape, slots, ids, params ? std::span(params, 1) : std::span<const ops::SamplingParams>());
  if (!params) return -1;
  const int32_t id = static_cast<const int32_t*>(steps_.at(shape).io.sampled.mapped())[0];
  check_sampled(std::span(&id, 1));
  return id;
}

std::vector<float> Engine::feed_logits(uint32_t slot, std::span<const int32_t> ids, bool all_logits) {
  check_ids(ids);
  check_room(slot, ids.size());
  const uint32_t vocab = config_.vocab_size;
  std::vector<float> logits;
  const uint32_t slots[1] = {slot};
  size_t start = 0;
  for (const uint32_t n : prompt_pieces(ids.size())) {
    const bool last = start + n == ids.size();
    const Head head = all_logits ? Head::AllLogits : last ? Head::LastLogits : Head::None;
    const StepShape shape{1, n, head};
    run_step(shape, slots, ids.subspan(start, n), {});
    start += n;
    if (head == Head::None) continue;
    const auto* host = static_cast<const float*>(steps_.at(shape).io.logits.mapped());
    logits.insert(logits.end(), host, host + size_t(shape.logit_rows()) * vocab);
  }
  return logits;
}

int32_t Engine::feed_and_sample(uint32_t slot, std::span<const int32_t> ids, const ops::SamplingParams& params) {
  check_ids(ids);
  check_room(slot, ids.size());
  if (ids.empty()) throw Error("cannot sample after an empty prompt");
  int32_t next = -1;
  size_t start = 0;
  for (const uint32_t n : prompt_pieces(ids.size())) {
    const bool last = start + n == ids.size();
    next = feed_piece(slot, ids.subspan(start, n), last ? &params : nullptr);
    start += n;
  }
  return next;
}

void Engine::check_decode(std::span<const uint32_t> slots, std::span<const int32_t> ids,
                          std::span<const ops::SamplingParams> params, const PromptPiece* piece) const {
  if (slots.size() != ids.size() || slots.empty()) throw Error("internal: decode needs one token per sequence");
  if (params.size() != 1 && params.size() != slots.size())
    throw Error("internal: decode needs one set of sampling parameters, or one per sequence");
  check_ids(ids);
  std::vector<bool> seen(options_.slots, false);
  auto claim = [&](uint32_t s, size_t tokens) {
    if (s >= options_.slots) throw Error("internal: slot " + std::to_string(s) + " does not exist");
    // Two rows of one slot in one step would update the same state concurrently.
    if (seen[s]) throw Error("internal: slot " + std::to_string(s) + " appears twice in one step");
    seen[s] = true;
    check_room(s, tokens);
  };
  if (piece) {
    if (piece->ids.empty()) throw Error("internal: an empty prompt piece");
    check_ids(piece->ids);
    claim(piece->slot, piece->ids.size());
  }
  for (uint32_t s : slots) claim(s, 1);
}

std::vector<int32_t> Engine::decode_with_piece(std::span<const uint32_t> slots, std::span<const int32_t> ids,
                                               std::span<const ops::SamplingParams> params, const PromptPiece& piece,
                                               int32_t& piece_token) {
  check_decode(slots, ids, params, &piece);
  // The piece rides with the first decode_rows rows; any further rows are plain decode steps.
  const size_t n = std::min<size_t>(options_.decode_rows, slots.size());
  const StepShape shape{static_cast<uint32_t>(n), 1, Head::Sample, static_cast<uint32_t>(piece.ids.size())};
  std::vector<uint32_t> step_slots = {piece.slot};
  step_slots.insert(step_slots.end(), slots.begin(), slots.begin() + ptrdiff_t(n));
  std::vector<int32_t> step_ids(piece.ids.begin(), piece.ids.end());
  step_ids.insert(step_ids.end(), ids.begin(), ids.begin() + ptrdiff_t(n));
  // Without sampling parameters the piece's sample is drawn greedily and thrown away.
  std::vector<ops::SamplingParams> step_params = {piece.params ? *piece.params : ops::SamplingParams{}};
  for (size_t b = 0; b < n; ++b) step_params.push_back(params[params.size() == 1 ? 0 : b]);
  run_step(shape, step_slots, step_ids, step_params);
  const auto* out = static_cast<const int32_t*>(steps_.at(shape).io.sampled.mapped());
  piece_token = piece.params ? out[0] : -1;
  std::vector<int32_t> sampled(out + 1, out + 1 + n);
  if (piece.params) check_sampled(std::span(&piece_token, 1));
  check_sampled(sampled);
  if (n < slots.size()) {
    const auto rest = decode_steps(slots.subspan(n), ids.subspan(n), params.size() == 1 ? params : params.subspan(n));
    sampled.insert(sampled.end(), rest.begin(), rest.end());
  }
  return sampled;
}

std::vector<int32_t> Engine::decode(std::span<const uint32_t> slots, std::span<const int32_t> ids,
                                    std::span<const ops::SamplingParams> params) {
  check_decode(slots, ids, params, nullptr);
  return decode_steps(slots, ids, params);
}

std::vector<int32_t> Engine::decode_steps(std::span<const uint32_t> slots, std::span<const int32_t> ids,
                                          std::span<const ops::SamplingParams> params) {
  std::vector<int32_t> sampled;
  sampled.reserve(slots.size());
  for (size_t first = 0; first < slots.size(); first += options_.decode_rows) {
    const size_t n = std::min<size_t>(options_.decode_rows, slots.size() - first);
    const StepShape shape{static_cast<uint32_t>(n), 1, Head::Sample};
    run_step(shape, slots.subspan(first, n), ids.subspan(first, n),
             params.size() == 1 ? params : params.subspan(first, n));
    const auto* out = static_cast<const int32_t*>(steps_.at(shape).io.sampled.mapped());
    sampled.insert(sampled.end(), out, out + n);
  }
  check_sampled(sampled);
  return sampled;
}

std::map<std::string, double> Engine::take_profile() {
  std::map<std::string, double> total = std::move(evicted_profile_);
  evicted_profile_.clear();
  for (auto& [shape, step] : steps_)
    for (const auto& [kind, seconds] : step.program->take_gpu_seconds()) total[kind] += seconds;
  return total;
}

}  // namespace q3n::graph
