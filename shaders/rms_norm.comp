#version 460
// RMSNorm over the last dimension, one workgroup per row (spec §3.2):
//   h   = x (+ residual, when FUSED_ADD)     -- the residual stream after the add
//   out = h * rsqrt(mean(h^2) + eps) * (weight_offset + w)
// weight_offset = 1 gives the zero-centred norm of Qwen3-Next, 0 a plain RMSNorm.
// With FUSED_ADD the sum h is also written back to `residual` (in place). With GATED the result
// is further multiplied by silu(gate) elementwise: the DeltaNet output norm (spec §3.5) with
// weight_offset 0, applied per value head (rows = tokens x heads, n = dv).
// The arithmetic is rms_norm_row.glsl's, which the products' norm tails share (same bits).
#include "common.glsl"

layout(constant_id = 3) const uint FUSED_ADD = 0;
layout(constant_id = 4) const uint GATED = 0;

const uint NORM_ROW_USED = 1u;
#include "rms_norm_row.glsl"

layout(push_constant) uniform Push {
  NormF32 x;
  NormF32 weight;    // fp32 [n]
  NormF32 dst;
  NormF32 residual;  // [rows, n], read and written when FUSED_ADD
  NormF32 gate;      // [rows, n], read when GATED
  uint n;
  uint rows;
  float eps;
  float weight_offset;
} p;

void main() {
  const uint row = gl_WorkGroupID.x;
  if (row >= p.rows) return;  // uniform per workgroup
  rms_norm_row(NormRow(p.x, p.residual, p.weight, p.gate, p.dst, row * p.n, p.n, p.eps, p.weight_offset,
                       FUSED_ADD != 0u, GATED != 0u));
}
