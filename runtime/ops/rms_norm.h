// Host side of shaders/rms_norm.comp: zero-centred (or plain) RMSNorm, optionally fused with the
// residual add that precedes it, or gated by silu(z) (the DeltaNet output norm).
#pragma once

#include "runtime/command.h"
#include "runtime/memory.h"
#include "runtime/pipeline.h"

namespace q3n::ops {

struct RmsNormArgs {
  BufferRange x;         // f32 [rows, n]
  BufferRange weight;    // f32 [n]
  BufferRange out;       // f32 [rows, n]; may alias x
  BufferRange residual;  // f32 [rows, n]; when set, residual += x first and the sum is normalised
  uint32_t rows = 0, n = 0;
  float eps = 1e-6f;
  bool zero_centred = true;  // scale by (1 + w) rather than w
  BufferRange gate;          // f32 [rows, n]; when set, the result is multiplied by silu(gate) (spec §3.5)
};

void record_rms_norm(PipelineLibrary& pipelines, CommandBuffer& commands, const RmsNormArgs& args);

}  // namespace q3n::ops
