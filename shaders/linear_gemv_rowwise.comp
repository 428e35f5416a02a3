#version 460
// y[t, n] = sum_k x[t, k] * W[n, k] for decode steps on CPU devices (lavapipe; any driver that runs
// a workgroup's invocations as the SIMD lanes of one core): one output row per invocation, walked
// from start to end, CHUNK tokens per pass so each weight read serves CHUNK tokens. No shared
// memory, no barrier, no subgroup operation: a CPU driver emulates those (a barrier switches
// coroutines once per SIMD batch of the workgroup) at more cost than the products themselves.
// The lanes of a SIMD batch read neighbouring rows, and each lane streams its row in order.
//
// A token's sum runs over K in the same order whatever the token count (batch invariance), in
// units of 8 elements (VEC8 = 1, as in linear_gemv.comp) or single elements (VEC8 = 0).
// The Q3N_TEXEL variant (VEC8 = 1 only) reads W and x through texel views (texel_reads.glsl).
#include "common.glsl"
#extension GL_EXT_control_flow_attributes : require

layout(constant_id = 3) const uint WEIGHT_DTYPE = DTYPE_BF16;
layout(constant_id = 4) const uint CHUNK = 4;  // tokens per pass over the row
layout(constant_id = 5) const uint VEC8 = 1;

#include "linear_push.glsl"
#ifdef Q3N_TEXEL
#include "texel_reads.glsl"
#endif

void main() {
  // 2-D grid: rows beyond maxComputeWorkGroupCount[0] workgroups wrap into y.
  const uint row = gl_GlobalInvocationID.x + gl_WorkGroupID.y * gl_NumWorkGroups.x * gl_WorkGroupSize.x;
  if (row >= p.n) return;  // no barrier follows

  for (uint t0 = 0; t0 < p.tokens; t0 += CHUNK) {
    const uint count = min(CHUNK, p.tokens - t0);
    float acc[CHUNK];
    [[unroll]] for (uint c = 0; c < CHUNK; ++c) acc[c] = 0.0;
    if (VEC8 != 0u) {
      for (uint u = 0; u < (p.k >> 3); ++u) {
        float w[8];
#ifdef Q3N_TEXEL
        texel_weight_unit(p.weight_texel, WEIGHT_DTYPE, row, p.k, u, w);
        [[unroll]] for (uint c = 0; c < CHUNK; ++c)
          if (c < count) acc[c] += texel_dot8(w, p.x_texel, (t0 + c) * p.k + u * 8u);
#else
        load_weight_unit(p.weight, WEIGHT_DTYPE, row, p.k, u, w);
        [[unroll]] for (uint c = 0; c < CHUNK; ++c)
          if (c < count) acc[c] += dot8(w, F32x4Buf(p.x), (t0 + c) * p.k + u * 8u);
#endif
      }
    } else {
      for (uint i = 0; i < p.k; ++i) {
        const float w = load_weight(p.weight, WEIGHT_DTYPE, row * p.k + i);
        [[unroll]] for (uint c = 0; c < CHUNK; ++c)
          if (c < count) acc[c] += w * p.x.v[(t0 + c) * p.k + i];
      }
    }
    [[unroll]] for (uint c = 0; c < CHUNK; ++c)
      if (c < count) p.y.v[(t0 + c) * p.n + row] = acc[c];
  }
}
