#version 460
// Grouped expert matrix-vector products for decode steps and small batches, where each expert
// holds a few rows (assignments): one workgroup per (ROWS output rows, active-expert slot) walks
// its expert's rows CHUNK at a time, reading the ROWS weight rows once per pass (from memory the
// first time, from cache after). Same operands and results as moe_expert.comp:
//   SWIGLU = 1: h[assignment, n] = silu(x . gate_n) * (x . up_n), x rows by token
//   SWIGLU = 0: y[assignment, n] = h[assignment] . down_n
// Invocations stride over K in units of 8 elements (VEC8 = 1, as in linear_gemv.comp) or single
// elements (VEC8 = 0). An assignment's sums are reduced in the same order whichever other rows
// its expert holds: its result does not depend on the rest of the step (batch invariance).
#include "common.glsl"
#extension GL_EXT_control_flow_attributes : require

layout(constant_id = 3) const uint WEIGHT_DTYPE = DTYPE_BF16;
layout(constant_id = 4) const uint SWIGLU = 1;
layout(constant_id = 5) const uint ROWS = 4;   // output rows per workgroup
layout(constant_id = 6) const uint CHUNK = 1;  // expert rows per pass
layout(constant_id = 7) const uint VEC8 = 1;

#include "moe_expert_push.glsl"

const uint MATRICES = SWIGLU != 0u ? 2u : 1u;  // gate and up, or down
// Per-subgroup partial sums, [MATRICES * ROWS * CHUNK][subgroups].
shared float partial[2 * ROWS * CHUNK * gl_WorkGroupSize.x];

void main() {
  const uint slot = gl_WorkGroupID.y;
  if (slot >= p.live.v[0]) return;  // uniform per workgroup
  const uint e = p.live.v[1u + slot];
  const uint first = p.offsets.v[e], expert_rows = p.offsets.v[e + 1u] - first;
  const uint col0 = gl_WorkGroupID.x * ROWS;
  if (col0 >= p.n) return;
  const uint cols = min(ROWS, p.n - col0);
  const uint weight_rows = SWIGLU != 0u ? 2u * p.n : p.n;
  const uint gate_row0 = e * weight_rows + col0;  // up rows follow the gate rows, p.n later
  const uint tid = gl_LocalInvocationID.x, threads = gl_WorkGroupSize.x;

  for (uint m0 = 0; m0 < expert_rows; m0 += CHUNK) {
    const uint count = min(CHUNK, expert_rows - m0);  // rows in this pass (uniform)
    uint src[CHUNK];  // first element of each row's input
    [[unroll]] for (uint c = 0; c < CHUNK; ++c) {
      const uint assignment = c < count ? p.sorted.v[first + m0 + c] : 0u;
      src[c] = (SWIGLU != 0u ? assignment / p.top_k : assignment) * p.k;
    }
    float acc[2][ROWS][CHUNK];  // [gate/up][output row][expert row]
    [[unroll]] for (uint m = 0; m < 2; ++m)
      [[unroll]] for (uint r = 0; r < ROWS; ++r)
        [[unroll]] for (uint c = 0; c < CHUNK; ++c) acc[m][r][c] = 0.0;

    if (VEC8 != 0u) {
      for (uint u = tid; u < (p.k >> 3); u += threads) {
        vec4 xa[CHUNK], xb[CHUNK];
        [[unroll]] for (uint c = 0; c < CHUNK; ++c) {
          if (c >= count) continue;
          const uint at = (src[c] + u * 8u) >> 2;
          xa[c] = F32x4Buf(p.x).v[at];
          xb[c] = F32x4Buf(p.x).v[at + 1u];
        }
        [[unroll]] for (uint m = 0; m < MATRICES; ++m)
          [[unroll]] for (uint r = 0; r < ROWS; ++r) {
            if (r >= cols) continue;
            float w[8];
            load_weight_unit(p.weight, WEIGHT_DTYPE, gate_row0 + m * p.n + r, p.k, u, w);
            const vec4 wa = vec4(w[0], w[1], w[2], w[3]), wb = vec4(w[4], w[5], w[6], w[7]);
            [[unroll]] for (uint c = 0; c < CHUNK; ++c) {
              if (c >= count) continue;
              acc[m][r][c] += dot(wa, xa[c]) + dot(wb, xb[c]);
            }
          }
      }
    } else {
      for (uint i = tid; i < p.k; i += threads) {
        float xv[CHUNK];
        [[unroll]] for (uint c = 0; c < CHUNK; ++c) xv[c] = c < count ? p.x.v[src[c] + i] : 0.0;
        [[unroll]] for (uint m = 0; m < MATRICES; ++m)
          [[unroll]] for (uint r = 0; r < ROWS; ++r) {
            if (r >= cols) continue;
            const float w = load_weight(p.weight, WEIGHT_DTYPE, (gate_row0 + m * p.n + r) * p.k + i);
            [[unroll]] for (uint c = 0; c < CHUNK; ++c) acc[m][r][c] += w * xv[c];
          }
      }
    }

    // One reduction for every sum of the pass (as in linear_gemv.comp).
    [[unroll]] for (uint m = 0; m < MATRICES; ++m)
      [[unroll]] for (uint r = 0; r < ROWS; ++r)
        [[unroll]] for (uint c = 0; c < CHUNK; ++c) {
          if (r >= cols || c >= count) continue;  // uniform
          const float s = subgroupAdd(acc[m][r][c]);
          if (subgroupElect()) partial[((m * ROWS + r) * CHUNK + c) * gl_NumSubgroups + gl_SubgroupID] = s;
        }
    barrier();
    if (tid < ROWS * CHUNK) {
      const uint r = tid / CHUNK, c = tid % CHUNK;
      if (r < cols && c < count) {
        float sums[2] = float[2](0.0, 0.0);
        for (uint m = 0; m < MATRICES; ++m)
          for (uint s = 0; s < gl_NumSubgroups; ++s) sums[m] += partial[((m * ROWS + r) * CHUNK + c) * gl_NumSubgroups + s];
        const uint assignment = p.sorted.v[first + m0 + c];
        p.y.v[assignment * p.n + col0 + r] = SWIGLU != 0u ? silu(sums[0]) * sums[1] : sums[0];
      }
    }
    barrier();
  }
}
