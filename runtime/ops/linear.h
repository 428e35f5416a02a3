// Host side of shaders/linear_gemv.comp and linear_gemm.comp: y = x W^T with W [n, k] read in
// place. Few tokens (<= kGemvMaxTokens) take the GEMV path, more take the tiled GEMM:
// linear_gemm_coopmat.comp where the pipelines use cooperative matrices and the weights are 16-bit
// or quantised, else the fp32 linear_gemm.comp.
#pragma once

#include "runtime/command.h"
#include "runtime/ops/weight_type.h"
#include "runtime/pipeline.h"

namespace q3n::ops {

// Steps of up to this many tokens take the GEMV, whatever the weight type: every row is then
// reduced in the same order for any row count a decode step can have (batch invariance), and
// the tiled GEMM's 64-token tiles would be mostly empty anyway.
constexpr uint32_t kGemvMaxTokens = 32;
constexpr uint32_t kGemvSmallTokens = 8;  // the GEMV variant with a smaller register budget

struct LinearArgs {
  BufferRange x;       // f32 [tokens, k]
  BufferRange weight;  // [n, k] in `type`
  BufferRange y;       // f32 [tokens, n]
  WeightType type = WeightType::BF16;
  uint32_t tokens = 0, k = 0, n = 0;
};

void record_linear(PipelineLibrary& pipelines, CommandBuffer& commands, const LinearArgs& args);

}  // namespace q3n::ops
