// Host side of shaders/linear_gemv.comp and linear_gemm.comp: y = x W^T with W [n, k] read in
// place. Few tokens (<= kGemvMaxTokens) take the GEMV path, more take the tiled GEMM:
// linear_gemm_coopmat.comp where the pipelines use cooperative matrices and the weights are 16-bit
// or quantised, else the fp32 linear_gemm.comp. With the CPU shapes (PipelineLibrary::cpu_shapes)
// linear_gemv_rowwise.comp replaces the GEMV and the fp32 GEMM.
#pragma once

#include "runtime/command.h"
#include "runtime/ops/weight_type.h"
#include "runtime/pipeline.h"

namespace q3n::ops {

// Steps of up to this many tokens take the GEMV, whatever the weight type: every row is then
// reduced in the same order for any row count a decode step can have (batch invariance). The
// GEMV reads each weight from memory once and from cache once per further 8 tokens; decode steps
// of up to 128 sequences stay on it.
constexpr uint32_t kGemvMaxTokens = 128;

// linear_gemv.comp's workgroup for a matrix of n rows and `units` K-steps per row (K / 8 for
// rows read 8 elements at a time): output rows per workgroup (4 or 1) and invocations (32-256).
struct GemvShape {
  uint32_t rows, threads;
};
GemvShape gemv_shape(uint32_t n, uint32_t units);

struct LinearArgs {
  BufferRange x;       // f32 [tokens, k]
  BufferRange weight;  // [n, k] in `type`
  BufferRange y;       // f32 [tokens, n]
  WeightType type = WeightType::BF16;
  uint32_t tokens = 0, k = 0, n = 0;
};

void record_linear(PipelineLibrary& pipelines, CommandBuffer& commands, const LinearArgs& args);

}  // namespace q3n::ops
