#version 460
// Grouped expert GEMM: for every active expert e, the rows assigned to it times its weights.
//   SWIGLU = 1 (gate/up): x rows gathered by token (assignment / top_k), W_e = [gate; up] of
//            [2N, K]; writes h[assignment, n] = silu(x . gate_n) * (x . up_n)
//   SWIGLU = 0 (down):    h rows by assignment, W_e [N, K]; writes y[assignment, n]
// Workgroup (column tile of 64, row tile of TM, active-expert slot); tiles past an expert's
// rows or slots past the active count exit at once. K goes through shared memory BK at a time.
#include "common.glsl"

layout(constant_id = 3) const uint WEIGHT_DTYPE = DTYPE_BF16;
layout(constant_id = 4) const uint SWIGLU = 1;
layout(constant_id = 5) const uint TM = 4;  // rows per tile, a multiple of 4
const uint BN = 64, BK = 32, THREADS = 256;
const uint ROWS_PER_THREAD = TM / 4u;

#include "moe_expert_push.glsl"

shared float x_tile[TM][BK + 1];
shared float gate_tile[BN][BK + 1];
shared float up_tile[BN][BK + 1];

void main() {
  const uint slot = gl_WorkGroupID.z;
  if (slot >= p.live.v[0]) return;
  const uint e = p.live.v[1u + slot];
  const uint first = p.offsets.v[e], rows = p.offsets.v[e + 1u] - first;
  const uint m0 = gl_WorkGroupID.y * TM;
  if (m0 >= rows) return;
  const uint n0 = gl_WorkGroupID.x * BN;
  const uint tid = gl_LocalInvocationID.x;
  const uint col = tid % BN, row_group = tid / BN;  // rows row_group + 4 i
  const uint weight_rows = SWIGLU != 0u ? 2u * p.n : p.n;
  const uint expert_base = e * weight_rows * p.k;

  float acc_gate[ROWS_PER_THREAD], acc_up[ROWS_PER_THREAD];
  for (uint i = 0; i < ROWS_PER_THREAD; ++i) acc_gate[i] = acc_up[i] = 0.0;

  for (uint k0 = 0; k0 < p.k; k0 += BK) {
    for (uint idx = tid; idx < TM * BK; idx += THREADS) {
      const uint r = idx / BK, c = idx % BK, kk = k0 + c;
      float v = 0.0;
      if (m0 + r < rows && kk < p.k) {
        const uint assignment = p.sorted.v[first + m0 + r];
        const uint src = SWIGLU != 0u ? assignment / p.top_k : assignment;
        v = p.x.v[src * p.k + kk];
      }
      x_tile[r][c] = v;
    }
    if (WEIGHT_DTYPE == DTYPE_Q8 || WEIGHT_DTYPE == DTYPE_Q4) {
      // BK = 32 is exactly one block of each row: one eighth of a block per invocation.
      for (uint unit = tid; unit < BN * 4u; unit += THREADS) {
        const uint r = unit >> 2, part = unit & 3u, nn = n0 + r;
        float wg[8], wu[8];
        for (uint j = 0; j < 8; ++j) wg[j] = wu[j] = 0.0;
        if (nn < p.n) {
          const uint gate_row = e * weight_rows + nn;
          dequantize_eighth(p.weight, WEIGHT_DTYPE, quantized_block_word(WEIGHT_DTYPE, gate_row, p.k, k0 >> 3), part, wg);
          if (SWIGLU != 0u)
            dequantize_eighth(p.weight, WEIGHT_DTYPE, quantized_block_word(WEIGHT_DTYPE, gate_row + p.n, p.k, k0 >> 3),
                              part, wu);
        }
        for (uint j = 0; j < 8; ++j) {
          gate_tile[r][part * 8u + j] = wg[j];
          if (SWIGLU != 0u) up_tile[r][part * 8u + j] = wu[j];
        }
      }
    } else {
      for (uint idx = tid; idx < BN * BK; idx += THREADS) {
        const uint r = idx / BK, c = idx % BK, kk = k0 + c, nn = n0 + r;
        const bool inside = nn < p.n && kk < p.k;
        gate_tile[r][c] = inside ? load_weight(p.weight, WEIGHT_DTYPE, expert_base + nn * p.k + kk) : 0.0;
        if (SWIGLU != 0u)
          up_tile[r][c] = inside ? load_weight(p.weight, WEIGHT_DTYPE, expert_base + (p.n + nn) * p.k + kk) : 0.0;
      }
    }
    barrier();
    for (uint c = 0; c < BK; ++c) {
      const float w_gate = gate_tile[col][c];
      const float w_up = SWIGLU != 0u ? up_tile[col][c] : 0.0;
      for (uint i = 0; i < ROWS_PER_THREAD; ++i) {
        const float xv = x_tile[row_group + 4u * i][c];
        acc_gate[i] += xv * w_gate;
        acc_up[i] += xv * w_up;
      }
    }
    barrier();
  }
  const uint nn = n0 + col;
  if (nn >= p.n) return;
  for (uint i = 0; i < ROWS_PER_THREAD; ++i) {
    const uint r = row_group + 4u * i;
    if (m0 + r >= rows) continue;
    const uint assignment = p.sorted.v[first + m0 + r];
    p.y.v[assignment * p.n + nn] = SWIGLU != 0u ? silu(acc_gate[i]) * acc_up[i] : acc_gate[i];
  }
}
