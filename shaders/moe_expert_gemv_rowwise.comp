#version 460
// Grouped expert matrix-vector products on CPU devices (lavapipe): one output column per
// invocation for one live expert (grid: column groups x active-expert slots), walking the whole
// weight row for each of the expert's rows, CHUNK rows per pass. No shared memory, barrier or
// subgroup operation (see linear_gemv_rowwise.comp for why). Same operands and results as
// moe_expert_gemv.comp:
//   SWIGLU = 1: h[assignment, n] = silu(x . gate_n) * (x . up_n), x rows by token
//   SWIGLU = 0: y[assignment, n] = h[assignment] . down_n
// An assignment's sums run over K in the same order whichever other rows its expert holds
// (batch invariance), in units of 8 (VEC8 = 1) or single elements (VEC8 = 0). The Q3N_TEXEL
// variant (VEC8 = 1 only) reads the weights and x through texel views (texel_reads.glsl).
#include "common.glsl"
#extension GL_EXT_control_flow_attributes : require

layout(constant_id = 3) const uint WEIGHT_DTYPE = DTYPE_BF16;
layout(constant_id = 4) const uint SWIGLU = 1;
layout(constant_id = 5) const uint CHUNK = 1;  // expert rows per pass
layout(constant_id = 6) const uint VEC8 = 1;

#include "moe_expert_push.glsl"
#ifdef Q3N_TEXEL
#include "texel_reads.glsl"
#endif

const uint MATRICES = SWIGLU != 0u ? 2u : 1u;  // gate and up, or down

void main() {
  const uint slot = gl_WorkGroupID.y;
  if (slot >= p.live.v[0]) return;
  const uint e = p.live.v[1u + slot];
  const uint col = gl_GlobalInvocationID.x;
  if (col >= p.n) return;  // no barrier follows
  const uint first = p.offsets.v[e], expert_rows = p.offsets.v[e + 1u] - first;
  const uint gate_row = e * (SWIGLU != 0u ? 2u * p.n : p.n) + col;  // the up row is p.n later

  for (uint m0 = 0; m0 < expert_rows; m0 += CHUNK) {
    const uint count = min(CHUNK, expert_rows - m0);
    uint src[CHUNK];  // first element of each row's input
    [[unroll]] for (uint c = 0; c < CHUNK; ++c) {
      const uint assignment = c < count ? p.sorted.v[first + m0 + c] : 0u;
      src[c] = (SWIGLU != 0u ? assignment / p.top_k : assignment) * p.k;
    }
    float acc[2][CHUNK];  // [gate/up][expert row]
    [[unroll]] for (uint m = 0; m < 2; ++m)
      [[unroll]] for (uint c = 0; c < CHUNK; ++c) acc[m][c] = 0.0;
    if (VEC8 != 0u) {
      for (uint u = 0; u < (p.k >> 3); ++u)
        [[unroll]] for (uint m = 0; m < MATRICES; ++m) {
          float w[8];
#ifdef Q3N_TEXEL
          texel_weight_unit(p.weight_texel, WEIGHT_DTYPE, gate_row + m * p.n, p.k, u, w);
          [[unroll]] for (uint c = 0; c < CHUNK; ++c)
            if (c < count) acc[m][c] += texel_dot8(w, p.x_texel, src[c] + u * 8u);
#else
          load_weight_unit(p.weight, WEIGHT_DTYPE, gate_row + m * p.n, p.k, u, w);
          [[unroll]] for (uint c = 0; c < CHUNK; ++c)
            if (c < count) acc[m][c] += dot8(w, F32x4Buf(p.x), src[c] + u * 8u);
#endif
        }
    } else {
      for (uint i = 0; i < p.k; ++i)
        [[unroll]] for (uint m = 0; m < MATRICES; ++m) {
          const float w = load_weight(p.weight, WEIGHT_DTYPE, (gate_row + m * p.n) * p.k + i);
          [[unroll]] for (uint c = 0; c < CHUNK; ++c)
            if (c < count) acc[m][c] += w * p.x.v[src[c] + i];
        }
    }
    [[unroll]] for (uint c = 0; c < CHUNK; ++c) {
      if (c >= count) continue;
      const uint assignment = p.sorted.v[first + m0 + c];
      p.y.v[assignment * p.n + col] = SWIGLU != 0u ? silu(acc[0][c]) * acc[1][c] : acc[0][c];
    }
  }
}
