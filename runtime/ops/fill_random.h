// Host side of shaders/fill_random.comp: deterministic random values in [lo, hi] written on the
// GPU into a tensor of any storage type (synthetic models).
#pragma once

#include "runtime/command.h"
#include "runtime/ops/weight_type.h"
#include "runtime/pipeline.h"

namespace q3n::ops {

struct FillRandomArgs {
  BufferRange dst;
  WeightType type = WeightType::BF16;
  uint64_t elements = 0;  // a multiple of 32 for Q8/Q4, of 2 for F16/BF16
  uint32_t seed = 0;
  float lo = -1, hi = 1;
};

void record_fill_random(PipelineLibrary& pipelines, CommandBuffer& commands, const FillRandomArgs& args);

}  // namespace q3n::ops
