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

// A residual add and zero-centred (or plain) RMSNorm after a product that writes a residual
// branch (LinearArgs::norm_tail, MoeArgs::norm_tail): residual += the product's output, out =
// RMSNorm(residual). Where the product's kernel has a norm tail (shaders/norm_tail.glsl) its last
// workgroup does this; elsewhere the product is followed by a barrier and record_rms_norm. The
// two give the same bits (shaders/rms_norm_row.glsl), so which one runs never shows in a result.
struct NormTail {
  BufferRange residual;  // f32 [rows, n], read and written
  BufferRange weight;    // f32 [n]
  BufferRange out;       // f32 [rows, n]
  // u32 [kNormTailCounters], zero before the product and left zero by it (its workgroups count
  // themselves done in them). Not shared by products that may run at once.
  BufferRange counters;
  float eps = 1e-6f;
  bool zero_centred = true;
};
// Counters a norm tail may use: one per row of a step that takes it.
constexpr uint32_t kNormTailCounters = 16;
// The NORM_TAIL specialisation constant of the kernels that have one.
inline uint32_t norm_tail_mode(const NormTail& t) { return t.zero_centred ? 1u : 2u; }
// The norm tail as a dispatch of its own, after a barrier: `addend` is the product's output.
void record_norm_after(PipelineLibrary& pipelines, CommandBuffer& commands, const BufferRange& addend,
                       const NormTail& tail, uint32_t rows, uint32_t n);
// Checks the tail's buffers against rows x n (internal errors).
void require_norm_tail(const NormTail& tail, uint32_t rows, uint32_t n);

}  // namespace q3n::ops
