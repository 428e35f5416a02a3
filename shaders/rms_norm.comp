#version 460
// RMSNorm over the last dimension, one workgroup per row (spec §3.2):
//   h   = x (+ residual, when FUSED_ADD)     -- the residual stream after the add
//   out = h * rsqrt(mean(h^2) + eps) * (weight_offset + w)
// weight_offset = 1 gives the zero-centred norm of Qwen3-Next, 0 a plain RMSNorm.
// With FUSED_ADD the sum h is also written back to `residual` (in place). With GATED the result
// is further multiplied by silu(gate) elementwise: the DeltaNet output norm (spec §3.5) with
// weight_offset 0, applied per value head (rows = tokens x heads, n = dv).
#include "common.glsl"

layout(constant_id = 3) const uint FUSED_ADD = 0;
layout(constant_id = 4) const uint GATED = 0;

layout(push_constant) uniform Push {
  F32Buf x;
  F32Buf weight;    // fp32 [n]
  F32Buf dst;
  F32Buf residual;  // [rows, n], read and written when FUSED_ADD
  F32Buf gate;      // [rows, n], read when GATED
  uint n;
  uint rows;
  float eps;
  float weight_offset;
} p;

shared float partial[gl_WorkGroupSize.x];

void main() {
  const uint row = gl_WorkGroupID.x;
  if (row >= p.rows) return;
  const uint base = row * p.n;
  float sum_sq = 0.0;
  for (uint i = gl_LocalInvocationID.x; i < p.n; i += gl_WorkGroupSize.x) {
    float h = p.x.v[base + i];
    if (FUSED_ADD != 0u) {
      h += p.residual.v[base + i];
      p.residual.v[base + i] = h;
    }
    sum_sq += h * h;
  }
  float total;
  Q3N_WORKGROUP_SUM(sum_sq, partial, total);
  const float scale = inversesqrt(total / float(p.n) + p.eps);
  for (uint i = gl_LocalInvocationID.x; i < p.n; i += gl_WorkGroupSize.x) {
    const float h = FUSED_ADD != 0u ? p.residual.v[base + i] : p.x.v[base + i];
    float y = h * scale * (p.weight_offset + p.weight.v[i]);
    if (GATED != 0u) y *= silu(p.gate.v[base + i]);
    p.dst.v[base + i] = y;
  }
}
