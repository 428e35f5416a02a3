#version 460
// Up to three products of one input in one dispatch, for the CPU shapes:
//   y_m[t, n] = sum_k x[t, k] * W_m[n, k],  m = 0 .. MATRICES - 1
// (a DeltaNet layer's in_proj_qkv, in_proj_z and in_proj_ba; the router and the shared expert's
// gate/up). Each workgroup serves rows of one matrix (the grid is their groups laid end to end),
// and each row is computed exactly as linear_gemv_rowwise.comp's Q3N_TEXEL variant computes it,
// so the outputs are bitwise those of separate dispatches, one dispatch instead of MATRICES: a
// CPU driver charges ~40 µs for each (bench/NOTES.md, session 18). Weights and x are read
// through texel views (texel_reads.glsl); each matrix has its own type and views.
#define Q3N_TEXEL_OWN_BINDINGS
#include "common.glsl"
#include "texel_reads.glsl"
#extension GL_EXT_control_flow_attributes : require

layout(constant_id = 3) const uint DTYPE0 = DTYPE_BF16;
layout(constant_id = 4) const uint DTYPE1 = DTYPE_BF16;
layout(constant_id = 5) const uint DTYPE2 = DTYPE_BF16;
layout(constant_id = 6) const uint CHUNK = 4;  // tokens per pass over a row

layout(set = 0, binding = 0) uniform usamplerBuffer words0;  // each matrix's block as R32_UINT
layout(set = 0, binding = 1) uniform usamplerBuffer quads0;  // and as R32G32B32A32_UINT
layout(set = 0, binding = 2) uniform usamplerBuffer words1;
layout(set = 0, binding = 3) uniform usamplerBuffer quads1;
layout(set = 0, binding = 4) uniform usamplerBuffer words2;
layout(set = 0, binding = 5) uniform usamplerBuffer quads2;
layout(set = 0, binding = 6) uniform samplerBuffer x_quads;  // x's block as R32G32B32A32_SFLOAT

layout(push_constant) uniform Push {
  F32Buf y0;  // [tokens, n0]
  F32Buf y1;  // [tokens, n1]
  F32Buf y2;  // [tokens, n2]
  uint k;
  uint tokens;
  uint n0, n1, n2;
  uint groups0, groups1;  // workgroups of matrices 0 and 1 (those of matrix 2 follow)
  uint first0, first1, first2;  // each matrix's first word in its views
  uint x_first;                 // x's first float in its view
} p;

void main() {
  const uint wg = gl_WorkGroupID.x;
  const uint m = wg < p.groups0 ? 0u : (wg < p.groups0 + p.groups1 ? 1u : 2u);  // uniform per workgroup
  const uint first_group = m == 0u ? 0u : (m == 1u ? p.groups0 : p.groups0 + p.groups1);
  const uint n = m == 0u ? p.n0 : (m == 1u ? p.n1 : p.n2);
  const uint row = (wg - first_group) * gl_WorkGroupSize.x + gl_LocalInvocationID.x;
  if (row >= n) return;  // no barrier follows

  for (uint t0 = 0; t0 < p.tokens; t0 += CHUNK) {
    const uint count = min(CHUNK, p.tokens - t0);
    float acc[CHUNK];
    [[unroll]] for (uint c = 0; c < CHUNK; ++c) acc[c] = 0.0;
    for (uint u = 0; u < (p.k >> 3); ++u) {
      float w[8];
      if (m == 0u)
        texel_weight_unit_of(words0, quads0, p.first0, DTYPE0, row, p.k, u, w);
      else if (m == 1u)
        texel_weight_unit_of(words1, quads1, p.first1, DTYPE1, row, p.k, u, w);
      else
        texel_weight_unit_of(words2, quads2, p.first2, DTYPE2, row, p.k, u, w);
      [[unroll]] for (uint c = 0; c < CHUNK; ++c)
        if (c < count) acc[c] += texel_dot8_of(x_quads, w, p.x_first, (t0 + c) * p.k + u * 8u);
    }
    [[unroll]] for (uint c = 0; c < CHUNK; ++c) {
      if (c >= count) continue;
      if (m == 0u)
        p.y0.v[(t0 + c) * n + row] = acc[c];
      else if (m == 1u)
        p.y1.v[(t0 + c) * n + row] = acc[c];
      else
        p.y2.v[(t0 + c) * n + row] = acc[c];
    }
  }
}
