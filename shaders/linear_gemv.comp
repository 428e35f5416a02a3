#version 460
// y[t, n] = sum_k x[t, k] * W[n, k] for few tokens (decode): one workgroup per output row n,
// all tokens at once, so each weight element is read from memory once and used T times.
// Weights are read in place in their stored dtype; accumulation is fp32. Quantised weights are read
// an eighth of a block (8 elements) per invocation step, so a 2048-wide row keeps 256 invocations
// busy and neighbouring invocations read neighbouring words.
#include "common.glsl"

layout(constant_id = 3) const uint WEIGHT_DTYPE = DTYPE_BF16;
layout(constant_id = 4) const uint MAX_TOKENS = 8;

layout(push_constant) uniform Push {
  F32Buf x;       // [tokens, k]
  U32Buf weight;  // [n, k]
  F32Buf y;       // [tokens, n]
  uint k;
  uint n;
  uint tokens;    // <= MAX_TOKENS
} p;

shared float partial[gl_WorkGroupSize.x];

void main() {
  // 2-D grid: rows beyond maxComputeWorkGroupCount[0] (65535) wrap into y.
  const uint row = gl_WorkGroupID.x + gl_WorkGroupID.y * gl_NumWorkGroups.x;
  if (row >= p.n) return;  // uniform per workgroup
  float acc[MAX_TOKENS];
  for (uint t = 0; t < MAX_TOKENS; ++t) acc[t] = 0.0;
  if (WEIGHT_DTYPE == DTYPE_Q8 || WEIGHT_DTYPE == DTYPE_Q4) {
    for (uint u = gl_LocalInvocationID.x; u < (p.k >> 3); u += gl_WorkGroupSize.x) {
      float w[8];
      dequantize_eighth(p.weight, WEIGHT_DTYPE, quantized_block_word(WEIGHT_DTYPE, row, p.k, u), u & 3u, w);
      for (uint t = 0; t < MAX_TOKENS; ++t) {
        if (t >= p.tokens) break;
        acc[t] += dot8(w, F32x4Buf(p.x), t * p.k + u * 8u);
      }
    }
  } else {
    const uint base = row * p.k;
    for (uint i = gl_LocalInvocationID.x; i < p.k; i += gl_WorkGroupSize.x) {
      const float w = load_weight(p.weight, WEIGHT_DTYPE, base + i);
      for (uint t = 0; t < MAX_TOKENS; ++t)
        if (t < p.tokens) acc[t] += w * p.x.v[t * p.k + i];
    }
  }
  for (uint t = 0; t < p.tokens; ++t) {
    float total;
    Q3N_WORKGROUP_SUM(acc[t], partial, total);
    if (gl_LocalInvocationID.x == 0) p.y.v[t * p.n + row] = total;
  }
}
