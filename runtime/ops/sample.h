// Host side of shaders/sample.comp: argmax or temperature / top-k / top-p / min-p sampling on
// the GPU with a counter-based RNG; only token ids come back.
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/command.h"
#include "runtime/pipeline.h"

namespace q3n::ops {

struct SamplingParams {
  float temperature = 0.0f;  // <= 0: greedy
  uint32_t top_k = 0;        // 0: off
  float top_p = 1.0f;        // 1: off
  float min_p = 0.0f;        // 0: off
  uint64_t seed = 0;
};

// The 8-word record sample.comp reads for one sequence; `counter` makes each draw distinct.
std::vector<uint32_t> sampling_record(const SamplingParams& params, uint32_t counter);

struct SampleArgs {
  BufferRange logits;  // f32 [batch, vocab]
  BufferRange params;  // u32 [batch, 8] from sampling_record()
  BufferRange ids;     // u32 [batch]
  uint32_t batch = 1, vocab = 0;
};

void record_sample(PipelineLibrary& pipelines, CommandBuffer& commands, const SampleArgs& args);

}  // namespace q3n::ops
