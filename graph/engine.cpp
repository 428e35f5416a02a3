#include "graph/engine.h"

#include <algorithm>
#include <cstring>

#include "runtime/error.h"

namespace q3n::graph {

namespace {
// lavapipe ends long shader loops early (shaders/common.glsl); the chunked delta rule walks
// chunk/64 chunks per workgroup, so CPU devices get shorter prefill steps.
uint32_t max_chunk(const Device& device) { return device.info().type == VK_PHYSICAL_DEVICE_TYPE_CPU ? 512 : 4096; }
}  // namespace

StepIO allocate_step_io(Runtime& rt, const ModelConfig& c, const StepShape& shape) {
  StepIO io;
  io.ids = rt.allocator.allocate(uint64_t(shape.rows()) * 4, MemoryKind::Upload, "token ids");
  io.seqs = rt.allocator.allocate(uint64_t(shape.batch) * 8, MemoryKind::Upload, "sequence table");
  io.sampling = rt.allocator.allocate(uint64_t(shape.batch) * 32, MemoryKind::Upload, "sampling parameters");
  if (shape.head == Head::LastLogits || shape.head == Head::AllLogits)
    io.logits = rt.allocator.allocate(uint64_t(shape.logit_rows()) * c.vocab_size * 4, MemoryKind::Readback, "logits");
  io.sampled = rt.allocator.allocate(uint64_t(shape.batch) * 4, MemoryKind::Readback, "sampled ids");
  return io;
}

Engine::Engine(Runtime& runtime, const ModelConfig& config, const Checkpoint& checkpoint, const EngineOptions& options)
    : Engine(runtime, config, DeviceWeights(runtime, config, checkpoint, WeightOptions{}), options) {}

Engine::Engine(Runtime& runtime, const ModelConfig& config, DeviceWeights weights, const EngineOptions& options)
    : runtime_(runtime),
      config_(config),
      options_(options),
      weights_(std::move(weights)),
      state_(runtime, config, options.slots, options.context),
      positions_(options.slots, 0) {
  options_.prefill_chunk = std::clamp(options_.prefill_chunk, 1u, max_chunk(runtime.device));
  for (uint32_t s = 0; s < options.slots; ++s) reset(s);
}

void Engine::reset(uint32_t slot) {
  state_.reset(slot);
  positions_.at(slot) = 0;
}

Program& Engine::program(const StepShape& shape) {
  auto it = steps_.find(shape);
  if (it == steps_.end()) {
    Step step{allocate_step_io(runtime_, config_, shape), nullptr};
    Graph graph = build_step_graph(runtime_.device, config_, weights_, state_, shape, step.io);
    const std::string what = "step " + std::to_string(shape.batch) + "x" + std::to_string(shape.tokens);
    step.program = std::make_unique<Program>(runtime_, std::move(graph), what, options_.profile);
    it = steps_.emplace(shape, std::move(step)).first;
  }
  return *it->second.program;
}

void Engine::check_ids(std::span<const int32_t> ids) const {
  for (int32_t id : ids)
    if (id < 0 || id >= config_.vocab_size)
      throw Error("token id " + std::to_string(id) + " is outside the vocabulary (0.." +
                  std::to_string(config_.vocab_size - 1) + ")");
}

void Engine::check_room(uint32_t slot, size_t tokens) const {
  if (positions_.at(slot) + tokens > options_.context)
    throw Error("the sequence needs " + std::to_string(positions_.at(slot) + tokens) + " positions but the context is " +
                std::to_string(options_.context) + "; raise --ctx or shorten the prompt");
}

void Engine::run_step(const StepShape& shape, std::span<const uint32_t> slots, std::span<const int32_t> ids,
                      const ops::SamplingParams* params) {
  Program& prog = program(shape);
  Step& step = steps_.at(shape);
  std::memcpy(step.io.ids.mapped(), ids.data(), ids.size() * 4);
  auto* seqs = static_cast<uint32_t*>(step.io.seqs.mapped());
  auto* sampling = static_cast<uint32_t*>(step.io.sampling.mapped());
  for (uint32_t b = 0; b < shape.batch; ++b) {
    seqs[2 * b] = slots[b];
    seqs[2 * b + 1] = positions_.at(slots[b]);
    if (params) {
      const auto record = ops::sampling_record(*params, sample_counter_++);
      std::memcpy(sampling + 8 * b, record.data(), 32);
    }
  }
  prog.run();
  for (uint32_t b = 0; b < shape.batch; ++b) positions_.at(slots[b]) += shape.tokens;
}

std::vector<float> Engine::feed_logits(uint32_t slot, std::span<const int32_t> ids, bool all_logits) {
  check_ids(ids);
  check_room(slot, ids.size());
  const uint32_t vocab = config_.vocab_size;
  std::vector<float> logits;
  const uint32_t slots[1] = {slot};
  for (size_t start = 0; start < ids.size(); start += options_.prefill_chunk) {
    const uint32_t n = static_cast<uint32_t>(std::min<size_t>(options_.prefill_chunk, ids.size() - start));
    const bool last = start + n == ids.size();
    const Head head = all_logits ? Head::AllLogits : last ? Head::LastLogits : Head::None;
    const StepShape shape{1, n, head};
    run_step(shape, slots, ids.subspan(start, n), nullptr);
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
  const uint32_t slots[1] = {slot};
  int32_t next = -1;
  for (size_t start = 0; start < ids.size(); start += options_.prefill_chunk) {
    const uint32_t n = static_cast<uint32_t>(std::min<size_t>(options_.prefill_chunk, ids.size() - start));
    const bool last = start + n == ids.size();
    const StepShape shape{1, n, last ? Head::Sample : Head::None};
    run_step(shape, slots, ids.subspan(start, n), last ? &params : nullptr);
    if (last) next = static_cast<const int32_t*>(steps_.at(shape).io.sampled.mapped())[0];
  }
  return next;
}

std::vector<int32_t> Engine::decode(std::span<const uint32_t> slots, std::span<const int32_t> ids,
                                    const ops::SamplingParams& params) {
  if (slots.size() != ids.size() || slots.empty()) throw Error("internal: decode needs one token per sequence");
  check_ids(ids);
  for (uint32_t s : slots) check_room(s, 1);
  const StepShape shape{static_cast<uint32_t>(slots.size()), 1, Head::Sample};
  run_step(shape, slots, ids, &params);
  const auto* out = static_cast<const int32_t*>(steps_.at(shape).io.sampled.mapped());
  return std::vector<int32_t>(out, out + slots.size());
}

std::map<std::string, double> Engine::take_profile() {
  std::map<std::string, double> total;
  for (auto& [shape, step] : steps_)
    for (const auto& [kind, seconds] : step.program->take_gpu_seconds()) total[kind] += seconds;
  return total;
}

}  // namespace q3n::graph
