#version 460
// Grouped expert matrix-vector products for decode and small batches (at most MAX_ROWS tokens
// in the step, so an expert holds at most MAX_ROWS assignments): one workgroup per (output row n, active-expert
// slot), its invocations striding over K. Same operands and results as moe_expert.comp:
//   SWIGLU = 1: h[assignment, n] = silu(x . gate_n) * (x . up_n), x rows by token
//   SWIGLU = 0: y[assignment, n] = h[assignment] . down_n
// The tiled kernel gives an expert with one row ~10 workgroups; this gives it N, so a decode
// step's few experts spread over the whole GPU. Quantised rows are read an eighth of a block per
// invocation step, as in linear_gemv.comp.
#include "common.glsl"

layout(constant_id = 3) const uint WEIGHT_DTYPE = DTYPE_BF16;
layout(constant_id = 4) const uint SWIGLU = 1;
layout(constant_id = 5) const uint MAX_ROWS = 8;

layout(push_constant) uniform Push {
  F32Buf x;        // SWIGLU: [tokens, K]; else [assignments, K]
  U32Buf weight;   // [experts, (SWIGLU ? 2N : N), K]
  U32Buf offsets;  // [experts + 1]
  U32Buf sorted;   // [assignments]
  U32Buf live;     // [1 + experts]
  F32Buf y;        // [assignments, N]
  uint k;
  uint n;
  uint top_k;
} p;

shared float partial[gl_WorkGroupSize.x];

void main() {
  const uint slot = gl_WorkGroupID.y;
  if (slot >= p.live.v[0]) return;  // uniform per workgroup
  const uint e = p.live.v[1u + slot];
  const uint first = p.offsets.v[e];
  const uint rows = min(p.offsets.v[e + 1u] - first, MAX_ROWS);
  const uint col = gl_WorkGroupID.x;
  const uint weight_rows = SWIGLU != 0u ? 2u * p.n : p.n;
  const uint gate_row = e * weight_rows + col, up_row = gate_row + p.n;

  uint src[MAX_ROWS];
  float acc_gate[MAX_ROWS], acc_up[MAX_ROWS];
  for (uint r = 0; r < MAX_ROWS; ++r) {
    const uint assignment = r < rows ? p.sorted.v[first + r] : 0u;
    src[r] = (SWIGLU != 0u ? assignment / p.top_k : assignment) * p.k;
    acc_gate[r] = acc_up[r] = 0.0;
  }
  if (WEIGHT_DTYPE == DTYPE_Q8 || WEIGHT_DTYPE == DTYPE_Q4) {
    for (uint u = gl_LocalInvocationID.x; u < (p.k >> 3); u += gl_WorkGroupSize.x) {
      float wg[8], wu[8];
      dequantize_eighth(p.weight, WEIGHT_DTYPE, quantized_block_word(WEIGHT_DTYPE, gate_row, p.k, u), u & 3u, wg);
      if (SWIGLU != 0u)
        dequantize_eighth(p.weight, WEIGHT_DTYPE, quantized_block_word(WEIGHT_DTYPE, up_row, p.k, u), u & 3u, wu);
      for (uint r = 0; r < MAX_ROWS; ++r) {
        if (r >= rows) break;
        acc_gate[r] += dot8(wg, F32x4Buf(p.x), src[r] + u * 8u);
        if (SWIGLU != 0u) acc_up[r] += dot8(wu, F32x4Buf(p.x), src[r] + u * 8u);
      }
    }
  } else {
    for (uint i = gl_LocalInvocationID.x; i < p.k; i += gl_WorkGroupSize.x) {
      const float wg = load_weight(p.weight, WEIGHT_DTYPE, gate_row * p.k + i);
      const float wu = SWIGLU != 0u ? load_weight(p.weight, WEIGHT_DTYPE, up_row * p.k + i) : 0.0;
      for (uint r = 0; r < MAX_ROWS; ++r) {
        if (r >= rows) break;
        const float xv = p.x.v[src[r] + i];
        acc_gate[r] += xv * wg;
        acc_up[r] += xv * wu;
      }
    }
  }
  for (uint r = 0; r < rows; ++r) {  // `rows` is uniform: every invocation reaches the barriers
    float gate, up = 0.0;
    Q3N_WORKGROUP_SUM(acc_gate[r], partial, gate);
    if (SWIGLU != 0u) Q3N_WORKGROUP_SUM(acc_up[r], partial, up);
    if (gl_LocalInvocationID.x == 0u)
      p.y.v[p.sorted.v[first + r] * p.n + col] = SWIGLU != 0u ? silu(gate) * up : gate;
  }
}
