// Runs a model: owns the device weights, the per-sequence state slots and one recorded Program
// per step shape, and turns token ids into logits or sampled ids. Prompts are processed in
// chunks that carry conv/recurrent state and the KV cache from one chunk to the next.
#pragma once

#include <map>
#include <memory>
#include <span>
#include <vector>

#include "graph/model_graph.h"
#include "graph/program.h"
#include "graph/state.h"
#include "graph/weights.h"
#include "runtime/ops/sample.h"

namespace q3n::graph {

struct EngineOptions {
  uint32_t context = 4096;        // KV-cache positions per sequence
  uint32_t slots = 1;             // sequences in flight
  uint32_t prefill_chunk = 512;   // tokens per prefill step
  bool profile = false;
};

class Engine {
 public:
  Engine(Runtime& runtime, const ModelConfig& config, const Checkpoint& checkpoint, const EngineOptions& options);
  // With weights already on the device (converted, quantised or synthetic).
  Engine(Runtime& runtime, const ModelConfig& config, DeviceWeights weights, const EngineOptions& options);

  // Starts a new sequence in `slot` (position 0, zeroed state).
  void reset(uint32_t slot);
  uint32_t position(uint32_t slot) const { return positions_.at(slot); }

  // Feeds tokens to one sequence. Returns the logits of every token ([n, vocab], AllLogits) or
  // of the last one ([vocab], otherwise).
  std::vector<float> feed_logits(uint32_t slot, std::span<const int32_t> ids, bool all_logits);
  // Feeds tokens to one sequence and samples the token that follows the last one.
  int32_t feed_and_sample(uint32_t slot, std::span<const int32_t> ids, const ops::SamplingParams& params);
  // One token for each of several sequences (decode); returns each one's sampled next token.
  std::vector<int32_t> decode(std::span<const uint32_t> slots, std::span<const int32_t> ids,
                              const ops::SamplingParams& params);

  const ModelConfig& config() const { return config_; }
  const DeviceWeights& weights() const { return weights_; }
  const SequenceState& state() const { return state_; }
  // The program of a shape, built and recorded on first use.
  Program& program(const StepShape& shape);
  // GPU seconds per operator kind, summed over steps since the last call (profile only).
  std::map<std::string, double> take_profile();

 private:
  struct Step {
    StepIO io;
    std::unique_ptr<Program> program;
  };
  void run_step(const StepShape& shape, std::span<const uint32_t> slots, std::span<const int32_t> ids,
                const ops::SamplingParams* params);
  void check_ids(std::span<const int32_t> ids) const;
  void check_room(uint32_t slot, size_t tokens) const;

  Runtime& runtime_;
  ModelConfig config_;
  EngineOptions options_;
  DeviceWeights weights_;
  SequenceState state_;
  std::vector<uint32_t> positions_;
  std::map<StepShape, Step> steps_;
  uint32_t sample_counter_ = 0;
};

}  // namespace q3n::graph
