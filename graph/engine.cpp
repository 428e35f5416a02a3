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

uint32_t default_prefill_chunk(const Device& device) { return std::min(2048u, max_chunk(device)); }

uint64_t handoff_bytes(const ModelConfig& c, const StepShape& shape) { return 2ull * shape.rows() * c.hidden_size * 4; }

StepIO allocate_step_io(Runtime& rt, const ModelConfig& c, const StepShape& shape, const LayerSpan& layers) {
  StepIO io;
  io.ids = rt.allocator.allocate(uint64_t(shape.rows()) * 4, MemoryKind::Upload, "token ids");
  io.seqs = rt.allocator.allocate(uint64_t(shape.sequences()) * 8, MemoryKind::Upload, "sequence table");
  io.sampling = rt.allocator.allocate(uint64_t(shape.sampled_rows()) * 32, MemoryKind::Upload, "sampling parameters");
  if (layers.heads(c) && (shape.head == Head::LastLogits || shape.head == Head::AllLogits))
    io.logits = rt.allocator.allocate(uint64_t(shape.logit_rows()) * c.vocab_size * 4, MemoryKind::Readback, "logits");
  io.sampled = rt.allocator.allocate(uint64_t(shape.sampled_rows()) * 4, MemoryKind::Readback, "sampled ids");
  if (shape.verify) {
    io.row_seqs = rt.allocator.allocate(uint64_t(shape.rows()) * 8, MemoryKind::Upload, "verify row table");
    io.accepted = rt.allocator.allocate(uint64_t(shape.sequences()) * 4, MemoryKind::Readback, "accepted counts");
    uint64_t linear_layers = 0;
    for (uint32_t L = layers.first; L < layers.last_of(c); ++L)
      linear_layers += c.layer_types[L] == LayerType::LinearAttention;
    if (linear_layers)
      io.commit_table = rt.allocator.allocate(linear_layers * kCommitTableBytesPerLayer, MemoryKind::Upload,
                                              "verify commit address table");
  }
  io.status = rt.allocator.allocate(uint64_t(c.num_hidden_layers + 1) * 4, MemoryKind::Upload, "step status");
  if (shape.hidden || shape.mtp)
    io.final_hidden =
        rt.allocator.allocate(uint64_t(shape.rows()) * c.hidden_size * 4, MemoryKind::Readback, "final hidden state");
  if (!layers.embeds() || shape.mtp)
    io.hidden_in = rt.allocator.allocate(handoff_bytes(c, shape), MemoryKind::Upload, "hidden state in");
  if (!layers.heads(c))
    io.hidden_out = rt.allocator.allocate(handoff_bytes(c, shape), MemoryKind::Readback, "hidden state out");
  return io;
}

namespace {
std::vector<EngineDevice> one_device(Runtime& runtime, DeviceWeights weights) {
  std::vector<EngineDevice> devices;
  devices.push_back({&runtime, std::move(weights), LayerSpan{}});
  return devices;
}
}  // namespace

Engine::Engine(Runtime& runtime, const ModelConfig& config, const Checkpoint& checkpoint, const EngineOptions& options)
    : Engine(runtime, config, DeviceWeights(runtime, config, checkpoint, WeightOptions{}), options) {}

Engine::Engine(Runtime& runtime, const ModelConfig& config, DeviceWeights weights, const EngineOptions& options)
    : Engine(one_device(runtime, std::move(weights)), config, options) {}

Engine::Engine(std::vector<EngineDevice> devices, const ModelConfig& config, const EngineOptions& options)
    : config_(config), options_(options), positions_(options.slots, 0) {
  uint32_t next = 0;
  for (EngineDevice& d : devices) {
    if (!d.runtime || d.layers.first != next || d.layers.last_of(config) <= next)
      throw Error("internal: the devices' layer spans must cover the layers in order, each at least one");
    next = d.layers.last_of(config);
    stages_.push_back(
        std::make_unique<Stage>(Stage{*d.runtime, d.layers, std::move(d.weights),
                                      SequenceState(*d.runtime, config, options.slots, options.context, options.kv_type,
                                                    options.kv_chunk_bytes, d.layers, options.mtp),
                                      Allocation()}));
    if (options.prefill_chunk == 0) options_.prefill_chunk = default_prefill_chunk(d.runtime->device);
    options_.prefill_chunk = std::clamp(options_.prefill_chunk, 1u, max_chunk(d.runtime->device));
  }
  if (stages_.empty() || next != uint32_t(config.num_hidden_layers))
    throw Error("internal: the devices' layer spans must cover every layer");
  if (options.mtp && stages_.size() > 1)
    throw Error("--mtp does not run on a pipeline split (--devices) yet; drop one of them");
  if (options.mtp && !stages_.back()->weights.mtp)
    throw Error("internal: an MTP engine needs weights loaded with WeightOptions::mtp");
  // A pipelined decode keeps (devices + 1) programs of different lanes at once.
  options_.max_programs = std::max<uint32_t>(options_.max_programs, 2 * uint32_t(stages_.size()) + 2);
  options_.decode_rows = std::clamp(options_.decode_rows, 1u, kMaxDecodeRows);
  for (uint32_t s = 0; s < options.slots; ++s) reset(s);
}

uint64_t Engine::weight_bytes() const {
  uint64_t sum = 0;
  for (const auto& st : stages_) sum += st->weights.bytes();
  return sum;
}

uint64_t Engine::state_bytes() const {
  uint64_t sum = 0;
  for (const auto& st : stages_) sum += st->state.bytes();
  return sum;
}

uint64_t Engine::arena_bytes() const {
  uint64_t sum = 0;
  for (const auto& st : stages_) sum += st->arena.size();
  return sum;
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
  for (auto& st : stages_) st->state.reset(slot);
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

Engine::Step& Engine::step(const StepShape& shape) {
  auto it = steps_.find(shape);
  if (it == steps_.end()) {
    const auto start = std::chrono::steady_clock::now();
    if (steps_.size() >= options_.max_programs) evict_least_recent();
    Step step;
    for (auto& st : stages_) {
      StagePart part{allocate_step_io(st->runtime, config_, shape, st->layers), nullptr};
      StepOptions so = step_options();
      so.layers = st->layers;
      so.gpu_shapes = !st->runtime.pipelines.cpu_shapes();
      Graph graph = build_step_graph(st->runtime.device, config_, st->weights, st->state, shape, part.io, so);
      const uint64_t need = std::max<uint64_t>(plan_memory(graph, st->runtime.allocator.alignment()).arena_bytes, 4);
      if (need > st->arena.size()) {
        // Every recorded program points into the old arena: drop them all (they are re-recorded
        // on their next use) before the larger arena is allocated. Shapes are bounded, so this
        // happens a few times early in a run and then no more.
        for (auto& [s, old] : steps_)
          for (StagePart& p : old.parts) keep_profile(*p.program);
        steps_.clear();
        st->arena = Allocation();
        st->arena = st->runtime.allocator.allocate(need, MemoryKind::Device, "step scratch arena");
      }
      std::string what = "step " + (shape.piece ? std::to_string(shape.piece) + "+" : std::string()) +
                         std::to_string(shape.batch) + "x" + std::to_string(shape.tokens);
      if (stages_.size() > 1) what += " (" + st->layers.describe(config_) + ")";
      part.program =
          std::make_unique<Program>(st->runtime, std::move(graph), what, options_.profile, st->arena.range());
      step.parts.push_back(std::move(part));
    }
    ++programs_recorded_;
    it = steps_.emplace(shape, std::move(step)).first;
    record_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
  it->second.last_used = ++use_clock_;
  return it->second;
}

Program& Engine::program(const StepShape& shape, size_t device) { return *step(shape).parts.at(device).program; }

void Engine::evict_least_recent() {
  auto oldest = std::min_element(steps_.begin(), steps_.end(),
                                 [](const auto& a, const auto& b) { return a.second.last_used < b.second.last_used; });
  if (oldest == steps_.end()) return;
  for (StagePart& p : oldest->second.parts) keep_profile(*p.program);
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

void Engine::prepare(const StepShape& shape, size_t device, std::span<const uint32_t> slots,
                     std::span<const int32_t> ids, std::span<const ops::SamplingParams> params) {
  Step& st = steps_.at(shape);
  StepIO& io = st.parts[device].io;
  if (device == 0) std::memcpy(io.ids.mapped(), ids.data(), ids.size() * 4);
  auto* seqs = static_cast<uint32_t*>(io.seqs.mapped());
  auto* sampling = static_cast<uint32_t*>(io.sampling.mapped());
  if (shape.verify) {
    // Row t of sequence b is fed at position p + t and draws the token of position p + t + 1.
    auto* rows = static_cast<uint32_t*>(io.row_seqs.mapped());
    for (uint32_t b = 0; b < shape.batch; ++b) {
      const uint32_t position = positions_.at(slots[b]);
      seqs[2 * b] = slots[b], seqs[2 * b + 1] = position;
      for (uint32_t t = 0; t < shape.tokens; ++t) {
        const uint32_t r = b * shape.tokens + t;
        rows[2 * r] = slots[b], rows[2 * r + 1] = position + t;
        const auto record = ops::sampling_record(params[params.size() == 1 ? 0 : b], position + t + 1);
        std::memcpy(sampling + 8 * r, record.data(), 32);
      }
    }
    std::memset(io.status.mapped(), 0, size_t(config_.num_hidden_layers + 1) * 4);
    return;
  }
  for (uint32_t b = 0; b < shape.sequences(); ++b) {
    seqs[2 * b] = slots[b];
    seqs[2 * b + 1] = positions_.at(slots[b]);
    if (!params.empty() && device + 1 == stages_.size()) {
      // The draw is keyed by the request's seed and the sampled token's absolute position, so
      // it does not depend on which sequences ran before or beside it.
      const uint32_t position = positions_.at(slots[b]) + tokens_of(shape, b);
      const auto record = ops::sampling_record(params[params.size() == 1 ? 0 : b], position);
      std::memcpy(sampling + 8 * b, record.data(), 32);
    }
  }
  if (device > 0)
    std::memcpy(io.hidden_in.mapped(), st.parts[device - 1].io.hidden_out.mapped(), handoff_bytes(config_, shape));
  std::memset(io.status.mapped(), 0, size_t(config_.num_hidden_layers + 1) * 4);
}

void Engine::check_status(const StepShape& shape, size_t device) const {
  const auto* status = static_cast<const uint32_t*>(steps_.at(shape).parts[device].io.status.mapped());
  for (int L = 0; L <= config_.num_hidden_layers; ++L)
    if (status[L])
      throw Error((L == config_.num_hidden_layers ? std::string("the MTP head") : "layer " + std::to_string(L)) +
                  ": the MoE router produced NaN or infinite logits (corrupt weights, or fp16 overflow on the "
                  "matrix units: try --no-coopmat); the output would be meaningless, so q3n stopped");
}

void Engine::run_step(const StepShape& shape, std::span<const uint32_t> slots, std::span<const int32_t> ids,
                      std::span<const ops::SamplingParams> params) {
  Step& st = step(shape);
  for (size_t d = 0; d < stages_.size(); ++d) {
    prepare(shape, d, slots, ids, params);
    st.parts[d].program->run();
    check_status(shape, d);
  }
  for (uint32_t b = 0; b < shape.sequences(); ++b) positions_.at(slots[b]) += tokens_of(shape, b);
}

int32_t Engine::feed_piece(uint32_t slot, std::span<const int32_t> ids, const ops::SamplingParams* params) {
  if (ids.empty()) throw Error("internal: an empty prompt piece");
  check_ids(ids);
  check_room(slot, ids.size());
  const uint32_t slots[1] = {slot};
  const StepShape shape{1, static_cast<uint32_t>(ids.size()), params ? Head::Sample : Head::None};
  run_step(shape, slots, ids, params ? std::span(params, 1) : std::span<const ops::SamplingParams>());
  if (!params) return -1;
  const int32_t id = static_cast<const int32_t*>(head_io(shape).sampled.mapped())[0];
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
    const auto* host = static_cast<const float*>(head_io(shape).logits.mapped());
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
  std::vector<uint32_t> step_slots = {piece.slot};
  step_slots.insert(step_slots.end(), slots.begin(), slots.begin() + ptrdiff_t(n));
  std::vector<int32_t> step_ids(piece.ids.begin(), piece.ids.end());
  step_ids.insert(step_ids.end(), ids.begin(), ids.begin() + ptrdiff_t(n));
  // Without sampling parameters the piece's sample is drawn greedily and thrown away.
  std::vector<ops::SamplingParams> step_params = {piece.params ? *piece.params : ops::SamplingParams{}};
  for (size_t b = 0; b < n; ++b) step_params.push_back(params[params.size() == 1 ? 0 : b]);
  std::vector<GroupStep> groups = {
      {StepShape{static_cast<uint32_t>(n), 1, Head::Sample, static_cast<uint32_t>(piece.ids.size())}, step_slots,
       step_ids, step_params}};
  add_decode_groups(slots.subspan(n), ids.subspan(n), params.size() == 1 ? params : params.subspan(n), groups);
  run_groups(groups);
  piece_token = piece.params ? groups[0].sampled[0] : -1;
  if (piece.params) check_sampled(std::span(&piece_token, 1));
  std::vector<int32_t> sampled(groups[0].sampled.begin() + 1, groups[0].sampled.end());
  for (size_t g = 1; g < groups.size(); ++g)
    sampled.insert(sampled.end(), groups[g].sampled.begin(), groups[g].sampled.end());
  check_sampled(sampled);
  return sampled;
}

std::vector<int32_t> Engine::decode(std::span<const uint32_t> slots, std::span<const int32_t> ids,
                                    std::span<const ops::SamplingParams> params) {
  check_decode(slots, ids, params, nullptr);
  std::vector<GroupStep> groups;
  add_decode_groups(slots, ids, params, groups);
  run_groups(groups);
  std::vector<int32_t> sampled;
  sampled.reserve(slots.size());
  for (const GroupStep& g : groups) sampled.insert(sampled.end(), g.sampled.begin(), g.sampled.end());
  check_sampled(sampled);
  return sampled;
}

uint32_t Engine::max_verify_rows() const {
  const StepOptions o = step_options();
  return std::min({o.decode_gemv_max_tokens, o.decode_expert_gemv_max_tokens, options_.decode_rows});
}

std::vector<std::vector<int32_t>> Engine::verify(std::span<const uint32_t> slots, std::span<const int32_t> ids,
                                                 uint32_t tokens, std::span<const ops::SamplingParams> params) {
  return run_verify(slots, ids, tokens, params, false);
}

std::vector<std::vector<int32_t>> Engine::run_verify(std::span<const uint32_t> slots, std::span<const int32_t> ids,
                                                     uint32_t tokens, std::span<const ops::SamplingParams> params,
                                                     bool hidden) {
  if (tokens == 0 || slots.empty() || ids.size() != slots.size() * tokens)
    throw Error("internal: a verify step needs `tokens` ids for each sequence");
  if (params.size() != 1 && params.size() != slots.size())
    throw Error("internal: a verify step needs one set of sampling parameters, or one per sequence");
  if (stages_.size() != 1) throw Error("speculative decoding does not run on a pipeline split (--devices) yet");
  if (slots.size() * tokens > max_verify_rows())
    throw Error("internal: a verify step of " + std::to_string(slots.size() * tokens) + " rows passes the " +
                std::to_string(max_verify_rows()) + " rows that keep the decode kernels");
  check_ids(ids);
  std::vector<bool> seen(options_.slots, false);
  for (uint32_t s : slots) {
    if (s >= options_.slots || seen[s]) throw Error("internal: a verify step's slots must exist and differ");
    seen[s] = true;
    check_room(s, tokens);
  }
  StepShape shape{static_cast<uint32_t>(slots.size()), tokens, Head::Sample};
  shape.verify = true;
  shape.hidden = hidden;
  Step& st = step(shape);
  prepare(shape, 0, slots, ids, params);
  st.parts[0].program->run();
  check_status(shape, 0);
  const auto* sampled = static_cast<const int32_t*>(st.parts[0].io.sampled.mapped());
  const auto* count = static_cast<const uint32_t*>(st.parts[0].io.accepted.mapped());
  std::vector<std::vector<int32_t>> emitted(slots.size());
  for (size_t b = 0; b < slots.size(); ++b) {
    if (count[b] < 1 || count[b] > tokens) throw Error("internal: a verify step accepted an impossible count");
    emitted[b].assign(sampled + b * tokens, sampled + b * tokens + count[b]);
    check_sampled(emitted[b]);
    positions_.at(slots[b]) += count[b];
  }
  return emitted;
}

std::vector<int32_t> Engine::run_mtp(std::span<const uint32_t> slots, std::span<const uint32_t> positions,
                                     std::span<const int32_t> next_ids, const float* hidden, std::vector<float>& hm,
                                     std::span<const uint32_t> state_rows) {
  const uint32_t batch = static_cast<uint32_t>(slots.size()), H = config_.hidden_size;
  const uint32_t rows = static_cast<uint32_t>(next_ids.size()) / std::max(batch, 1u);
  if (batch == 0 || positions.size() != batch || rows == 0 || next_ids.size() != size_t(batch) * rows)
    throw Error("internal: an MTP step takes the same number of rows of each sequence");
  if (!state_rows.empty() && (state_rows.size() != batch ||
                              std::any_of(state_rows.begin(), state_rows.end(), [&](uint32_t r) { return r >= rows; })))
    throw Error("internal: an MTP step's state row per sequence must be one of its rows");
  for (const uint32_t position : positions)
    if (position + rows > options_.context) throw Error("internal: MTP rows past the context");
  StepShape shape{batch, rows, Head::Sample};
  shape.mtp = true;
  Step& st = step(shape);
  StepIO& io = st.parts.back().io;
  std::memcpy(io.ids.mapped(), next_ids.data(), next_ids.size() * 4);
  auto* seqs = static_cast<uint32_t*>(io.seqs.mapped());
  for (uint32_t b = 0; b < batch; ++b) seqs[2 * b] = slots[b], seqs[2 * b + 1] = positions[b];
  const auto greedy = ops::sampling_record(ops::SamplingParams{}, 0);
  for (uint32_t r = 0; r < batch * rows; ++r)
    std::memcpy(static_cast<uint32_t*>(io.sampling.mapped()) + 8 * r, greedy.data(), 32);
  std::memcpy(io.hidden_in.mapped(), hidden, size_t(batch) * rows * H * 4);
  std::memset(io.status.mapped(), 0, size_t(config_.num_hidden_layers + 1) * 4);
  st.parts.back().program->run();
  check_status(shape, stages_.size() - 1);
  const auto* out = static_cast<const float*>(io.final_hidden.mapped());
  hm.resize(size_t(batch) * H);
  for (uint32_t b = 0; b < batch; ++b) {
    const uint32_t row = state_rows.empty() ? rows - 1 : state_rows[b];
    std::memcpy(hm.data() + size_t(b) * H, out + (size_t(b) * rows + row) * H, size_t(H) * 4);
  }
  const auto* sampled = static_cast<const int32_t*>(io.sampled.mapped());
  std::vector<int32_t> drafts(sampled, sampled + size_t(batch) * rows);
  // A draft is only a guess: one from a NaN row (outside the vocabulary) becomes 0, which the
  // verify step simply rejects if it is wrong.
  for (int32_t& d : drafts)
    if (d < 0 || d >= config_.vocab_size) d = 0;
  return drafts;
}

void Engine::draft_more(uint32_t slot, uint32_t position, uint32_t drafts, std::vector<float>& hm,
                        std::vector<int32_t>& out) {
  while (out.size() < drafts) {
    const int32_t last = out.back();
    const std::vector<float> hidden = hm;
    out.push_back(run_mtp(slot, position++, std::span(&last, 1), hidden.data(), hm)[0]);
  }
}

Engine::Speculation Engine::mtp_prompt(uint32_t slot, std::span<const int32_t> prompt,
                                       const ops::SamplingParams& params, uint32_t drafts) {
  if (!options_.mtp) throw Error("internal: mtp_prompt on an engine without the MTP head");
  if (prompt.empty()) throw Error("cannot sample after an empty prompt");
  check_ids(prompt);
  check_room(slot, prompt.size());
  const uint32_t slots[1] = {slot};
  Speculation out;
  std::vector<float> hm;
  size_t start = 0;
  for (const uint32_t n : prompt_pieces(prompt.size())) {
    const bool last = start + n == prompt.size();
    StepShape shape{1, n, last ? Head::Sample : Head::None};
    shape.hidden = true;
    const uint32_t position = positions_.at(slot);
    run_step(shape, slots, prompt.subspan(start, n),
             last ? std::span(&params, 1) : std::span<const ops::SamplingParams>());
    const StepIO& io = head_io(shape);
    // Row t of the head pairs the model's state at position t with the token after it: the
    // prompt's next token, and after the last row the sampled one.
    std::vector<int32_t> next(prompt.begin() + ptrdiff_t(start + 1), prompt.begin() + ptrdiff_t(start + n));
    if (last) {
      out.emitted = {static_cast<const int32_t*>(io.sampled.mapped())[0]};
      check_sampled(out.emitted);
      next.push_back(out.emitted[0]);
    } else {
      next.push_back(prompt[start + n]);
    }
    const std::vector<float> hidden(
        static_cast<const float*>(io.final_hidden.mapped()),
        static_cast<const float*>(io.final_hidden.mapped()) + size_t(n) * config_.hidden_size);
    const std::vector<int32_t> d = run_mtp(slot, position, next, hidden.data(), hm);
    if (last) out.drafts = {d.back()};
    start += n;
  }
  if (drafts == 0)
    out.drafts.clear();
  else
    draft_more(slot, positions_.at(slot), drafts, hm, out.drafts);
  return out;
}

Engine::Speculation Engine::mtp_step(uint32_t slot, int32_t last, std::span<const int32_t> drafts,
                                     const ops::SamplingParams& params) {
  if (!options_.mtp) throw Error("internal: mtp_step on an engine without the MTP head");
  const uint32_t position = positions_.at(slot), tokens = static_cast<uint32_t>(drafts.size() + 1);
  std::vector<int32_t> ids = {last};
  ids.insert(ids.end(), drafts.begin(), drafts.end());
  const uint32_t slots[1] = {slot};
  Speculation out;
  out.emitted = run_verify(slots, ids, tokens, std::span(&params, 1), true)[0];
  if (drafts.empty()) return out;
  // The head catches up over the committed rows (row t: the state at position + t and the
  // token emitted after it); rows past them wrote MTP KV entries that later rows overwrite
  // before any attention reads them.
  StepShape verify_shape{1, tokens, Head::Sample};
  verify_shape.verify = true;
  verify_shape.hidden = true;
  const auto* rows = static_cast<const float*>(head_io(verify_shape).final_hidden.mapped());
  const std::vector<float> hidden(rows, rows + out.emitted.size() * config_.hidden_size);
  std::vector<float> hm;
  out.drafts = {run_mtp(slot, position, out.emitted, hidden.data(), hm).back()};
  draft_more(slot, positions_.at(slot), uint32_t(drafts.size()), hm, out.drafts);
  return out;
}

std::vector<Engine::Speculation> Engine::mtp_steps(std::span<const uint32_t> slots, std::span<const int32_t> lasts,
                                                   std::span<const std::vector<int32_t>> drafts,
                                                   std::span<const ops::SamplingParams> params) {
  if (!options_.mtp) throw Error("internal: mtp_steps on an engine without the MTP head");
  const size_t batch = slots.size();
  if (batch == 0 || lasts.size() != batch || drafts.size() != batch || (params.size() != 1 && params.size() != batch))
    throw Error("internal: mtp_steps needs a last token, drafts and sampling parameters per sequence");
  const uint32_t K = static_cast<uint32_t>(drafts[0].size()), tokens = K + 1, H = config_.hidden_size;
  for (size_t b = 0; b < batch; ++b)
    if (drafts[b].size() != K || K == 0 || !mtp_room(slots[b], K))
      throw Error("internal: mtp_steps needs the same number of drafts (at least one) and room in every sequence");
  if (tokens > max_verify_rows()) throw Error("internal: more drafts than a verify step carries");

  // Groups of as many whole sequences as a verify step's rows allow. For each: the verify step
  // (its hidden rows kept), then one head step over the same rows (row t of a sequence at position
  // start + t with the token emitted after it; a sequence that committed fewer rows repeats its
  // last committed row, and those head rows write MTP KV entries past its position, which later
  // head rows overwrite before any attention reads them, as in mtp_step), whose row at the last
  // committed position gives the first draft; then the further drafts, one row each per step.
  const size_t per_step = max_verify_rows() / tokens;
  std::vector<Speculation> out(batch);
  for (size_t first = 0; first < batch; first += per_step) {
    const size_t n = std::min(per_step, batch - first);
    const auto group = slots.subspan(first, n);
    std::vector<uint32_t> positions(n);
    std::vector<int32_t> ids;
    for (size_t b = 0; b < n; ++b) {
      positions[b] = positions_.at(group[b]);
      ids.push_back(lasts[first + b]);
      ids.insert(ids.end(), drafts[first + b].begin(), drafts[first + b].end());
    }
    const auto emitted = run_verify(group, ids, tokens, params.size() == 1 ? params : params.subspan(first, n), true);
    StepShape shape{static_cast<uint32_t>(n), tokens, Head::Sample};
    shape.verify = true;
    shape.hidden = true;
    const auto* verified = static_cast<const float*>(head_io(shape).final_hidden.mapped());
    std::vector<int32_t> next(n * tokens);
    std::vector<float> hidden(n * tokens * H);
    for (size_t b = 0; b < n; ++b)
      for (uint32_t t = 0; t < tokens; ++t) {
        const size_t row = std::min<size_t>(t, emitted[b].size() - 1);
        next[b * tokens + t] = emitted[b][row];
        std::memcpy(hidden.data() + (b * tokens + t) * H, verified + (b * tokens + row) * H, size_t(H) * 4);
      }
    // Each sequence's draft and output state come from its last committed row, not the step's
    // last row.
    std::vector<uint32_t> committed(n);
    for (size_t b = 0; b < n; ++b) committed[b] = uint32_t(emitted[b].size()) - 1;
    std::vector<float> hm;
    const std::vector<int32_t> d = run_mtp(group, positions, next, hidden.data(), hm, committed);
    for (size_t b = 0; b < n; ++b) {
      out[first + b].emitted = emitted[b];
      out[first + b].drafts = {d[b * tokens + committed[b]]};
    }
    std::vector<int32_t> last(n);
    for (uint32_t j = 1; j < K; ++j) {
      for (size_t b = 0; b < n; ++b) {
        positions[b] = positions_.at(group[b]) + j - 1;
        last[b] = out[first + b].drafts.back();
      }
      std::vector<float> next_hm;
      const std::vector<int32_t> more = run_mtp(group, positions, last, hm.data(), next_hm);
      hm = std::move(next_hm);
      for (size_t b = 0; b < n; ++b) out[first + b].drafts.push_back(more[b]);
    }
  }
  return out;
}

void Engine::add_decode_groups(std::span<const uint32_t> slots, std::span<const int32_t> ids,
                               std::span<const ops::SamplingParams> params, std::vector<GroupStep>& groups) const {
  for (size_t first = 0; first < slots.size(); first += options_.decode_rows) {
    const size_t n = std::min<size_t>(options_.decode_rows, slots.size() - first);
    groups.push_back({StepShape{static_cast<uint32_t>(n), 1, Head::Sample}, slots.subspan(first, n),
                      ids.subspan(first, n), params.size() == 1 ? params : params.subspan(first, n)});
  }
}

void Engine::run_groups(std::vector<GroupStep>& groups) {
  const size_t devices = stages_.size();
  const auto take_sampled = [&](GroupStep& g) {
    const auto* out = static_cast<const int32_t*>(head_io(g.shape).sampled.mapped());
    g.sampled.assign(out, out + g.shape.sequences());
  };
  if (devices == 1 || groups.size() == 1) {
    for (GroupStep& g : groups) {
      run_step(g.shape, g.slots, g.ids, g.params);
      take_sampled(g);
    }
    return;
  }
  // Pipeline parallelism: at tick t device d runs group t - d, so with as many groups as devices
  // every device is busy (groups + devices - 1 ticks instead of groups x devices). Group g's
  // steps take lane g mod devices: the groups in flight at once never share host buffers.
  for (size_t g = 0; g < groups.size(); ++g) groups[g].shape.lane = static_cast<uint32_t>(g % devices);
  // Every program first: building one may grow a device's arena and drop the programs recorded
  // before it (Engine::step), so a second pass re-records those at the final size.
  for (int pass = 0; pass < 2; ++pass)
    for (const GroupStep& g : groups) step(g.shape);
  for (const GroupStep& g : groups)
    if (!steps_.count(g.shape)) throw Error("internal: a pipelined step's program was evicted");
  for (size_t tick = 0; tick + 1 < groups.size() + devices; ++tick) {
    std::vector<std::pair<size_t, uint64_t>> running;  // device, submitted value
    for (size_t d = 0; d < devices; ++d) {
      if (tick < d || tick - d >= groups.size()) continue;
      const GroupStep& g = groups[tick - d];
      prepare(g.shape, d, g.slots, g.ids, g.params);
      running.push_back({d, steps_.at(g.shape).parts[d].program->submit()});
    }
    for (const auto& [d, submitted] : running) {
      GroupStep& g = groups[tick - d];
      steps_.at(g.shape).parts[d].program->finish(submitted);
      check_status(g.shape, d);
      if (d + 1 == devices) take_sampled(g);
    }
  }
  for (const GroupStep& g : groups)
    for (uint32_t b = 0; b < g.shape.sequences(); ++b) positions_.at(g.slots[b]) += tokens_of(g.shape, b);
}

std::map<std::string, double> Engine::take_profile() {
  std::map<std::string, double> total = std::move(evicted_profile_);
  evicted_profile_.clear();
  for (auto& [shape, step] : steps_)
    for (StagePart& part : step.parts)
      for (const auto& [kind, seconds] : part.program->take_gpu_seconds()) total[kind] += seconds;
  return total;
}

}  // namespace q3n::graph
