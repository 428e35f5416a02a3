#version 460
// RMSNorm over the last dimension, one workgroup per row (spec §3.2):
//   h   = x (+ residual, when FUSED_ADD)     -- the residual stream after the add
//   out = h * rsqrt(mean(h^2) + eps) * (weight_offset + w)
// weight_offset = 1 gives the zero-centred norm of Qwen3-Next, 0 a plain RMSNorm.
// With FUSED_ADD the sum h is also written back to `residual` (in place). With GATED the result
// is further multiplied by silu(gate) elementwise: the DeltaNet output norm (spec §3.5) with
// weight_offset 0, applied per value head (rows = tokens x heads, n = dv).
#include "common.glsl"
#extension GL_EXT_control_flow_attributes : require

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

// A row of at most CACHED elements per invocation (hidden sizes up to 4096 at 256 invocations)
// stays in registers: every load of a pass is issued before any store. Interleaved, each element's
// loads would wait for the previous element's store (the compiler cannot tell the residual stream
// or dst from the inputs), one round trip to memory per element: most of a decode-step norm's
// time on a GPU (bench/NOTES.md, session 19). The same operations in the same order as the loop
// below, so the same bits.
const uint CACHED = 16;

void main() {
  const uint row = gl_WorkGroupID.x;
  if (row >= p.rows) return;
  const uint base = row * p.n, tid = gl_LocalInvocationID.x, threads = gl_WorkGroupSize.x;
  float sum_sq = 0.0;
  if (p.n <= CACHED * threads) {
    float h[CACHED], w[CACHED], z[CACHED];
    [[unroll]] for (uint c = 0; c < CACHED; ++c) {
      const uint i = tid + c * threads;
      h[c] = 0.0;
      if (i >= p.n) continue;
      h[c] = p.x.v[base + i];
      if (FUSED_ADD != 0u) h[c] += p.residual.v[base + i];
      w[c] = p.weight.v[i];
      if (GATED != 0u) z[c] = p.gate.v[base + i];
    }
    [[unroll]] for (uint c = 0; c < CACHED; ++c) {
      const uint i = tid + c * threads;
      if (i >= p.n) continue;
      if (FUSED_ADD != 0u) p.residual.v[base + i] = h[c];
      sum_sq += h[c] * h[c];
    }
    float total;
    Q3N_WORKGROUP_SUM(sum_sq, partial, total);
    const float scale = inversesqrt(total / float(p.n) + p.eps);
    [[unroll]] for (uint c = 0; c < CACHED; ++c) {
      const uint i = tid + c * threads;
      if (i >= p.n) continue;
      float y = h[c] * scale * (p.weight_offset + w[c]);
      if (GATED != 0u) y *= silu(z[c]);
      p.dst.v[base + i] = y;
    }
    return;
  }
  for (uint i = tid; i < p.n; i += threads) {
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
  for (uint i = tid; i < p.n; i += threads) {
    const float h = FUSED_ADD != 0u ? p.residual.v[base + i] : p.x.v[base + i];
    float y = h * scale * (p.weight_offset + p.weight.v[i]);
    if (GATED != 0u) y *= silu(p.gate.v[base + i]);
    p.dst.v[base + i] = y;
  }
}
