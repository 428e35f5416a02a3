#version 460
// Grouped expert GEMM on cooperative-matrix units: the same operands and results as
// moe_expert.comp, for devices with 16x16x16 fp16 matrices (precision in coopmat.glsl).
//   SWIGLU = 1 (gate/up): h[assignment, n] = silu(x . gate_n) * (x . up_n), x rows by token
//   SWIGLU = 0 (down):    y[assignment, n] = h[assignment] . down_n
// Workgroup (column tile of 128, row tile of TM, active-expert slot), 8 subgroups; subgroup s
// owns columns 16s .. 16s + 15 of the tile for all TM rows. K goes through shared memory 32 at a
// time, the next slice loaded into registers while the matrix units work on this one.
#include "common.glsl"
#include "coopmat.glsl"

layout(constant_id = 3) const uint WEIGHT_DTYPE = DTYPE_BF16;
layout(constant_id = 4) const uint SWIGLU = 1;
layout(constant_id = 5) const uint TM = 16;  // rows per tile: 16 or 32
const uint MAX_TM = 32, BN = 128;
const uint W_UNITS = BN * (BK / 8u);  // 8-value units per weight tile
const uint MAX_W_PER_THREAD = 4;      // the host guarantees >= 128 invocations
const uint C_STRIDE = BN + 4;         // fp32 result row

#include "moe_expert_push.glsl"

shared uvec4 x_hi[MAX_TM * STRIDE], x_lo[MAX_TM * STRIDE], gate_tile[BN * STRIDE], up_tile[BN * STRIDE];
shared float c_tile[MAX_TM * C_STRIDE];
shared uint source_row[MAX_TM];  // x row of each tile row

void main() {
  const uint slot = gl_WorkGroupID.z;
  if (slot >= p.live.v[0]) return;  // uniform per workgroup
  const uint e = p.live.v[1u + slot];
  const uint first = p.offsets.v[e], rows = p.offsets.v[e + 1u] - first;
  const uint m0 = gl_WorkGroupID.y * TM;
  if (m0 >= rows) return;
  const uint n0 = gl_WorkGroupID.x * BN;
  const uint tid = gl_LocalInvocationID.x, threads = gl_WorkGroupSize.x;
  const uint column = gl_SubgroupID * CM;
  const uint weight_rows = SWIGLU != 0u ? 2u * p.n : p.n;
  const uint tile_rows = min(TM, rows - m0);
  const uint w_per_thread = (W_UNITS + threads - 1u) / threads;
  const bool x_unit = tid < TM * 4u;  // this invocation loads unit tid of the x tile

  if (tid < tile_rows) {
    const uint assignment = p.sorted.v[first + m0 + tid];
    source_row[tid] = SWIGLU != 0u ? assignment / p.top_k : assignment;
  }

  F32_MATRIX gate_hi[MAX_TM / CM], gate_lo[MAX_TM / CM], up_hi[MAX_TM / CM], up_lo[MAX_TM / CM];
  [[unroll]] for (uint i = 0; i < TM / CM; ++i) {
    gate_hi[i] = F32_MATRIX(0.0);
    gate_lo[i] = F32_MATRIX(0.0);
    up_hi[i] = F32_MATRIX(0.0);
    up_lo[i] = F32_MATRIX(0.0);
  }
  barrier();  // source_row

  // Registers holding the next K slice: this invocation's x unit and weight units.
  float xa[8], ga[MAX_W_PER_THREAD][8], ua[MAX_W_PER_THREAD][8];
  for (uint k0 = 0; k0 < p.k + BK; k0 += BK) {
    if (k0 > 0) {  // store the slice fetched last iteration (at k0 - BK)
      if (x_unit) split_store8(xa, x_hi[unit_word(tid)], x_lo[unit_word(tid)]);
      [[unroll]] for (uint i = 0; i < MAX_W_PER_THREAD; ++i) {
        const uint u = tid + i * threads;
        if (i >= w_per_thread || u >= W_UNITS) continue;
        const uint at = unit_word(u);
        gate_tile[at] = pack_f16x8(ga[i]);
        if (SWIGLU != 0u) up_tile[at] = pack_f16x8(ua[i]);
      }
      barrier();
    }
    if (k0 < p.k) {  // fetch slice k0; its loads overlap the products of slice k0 - BK
      if (x_unit) {
        const uint r = unit_row(tid);
        if (r < tile_rows) load_activation8(p.x, source_row[r], p.k, k0 + unit_column(tid), xa);
        else for (uint j = 0; j < 8; ++j) xa[j] = 0.0;
      }
      [[unroll]] for (uint i = 0; i < MAX_W_PER_THREAD; ++i) {
        const uint u = tid + i * threads;
        if (i >= w_per_thread) continue;
        const uint r = unit_row(u), c = k0 + unit_column(u), gate_row = e * weight_rows + n0 + r;
        const bool inside = u < W_UNITS && n0 + r < p.n;
        if (inside) load_weight8(p.weight, WEIGHT_DTYPE, gate_row, p.k, c, ga[i]);
        else for (uint j = 0; j < 8; ++j) ga[i][j] = 0.0;
        if (SWIGLU == 0u) continue;
        if (inside) load_weight8(p.weight, WEIGHT_DTYPE, gate_row + p.n, p.k, c, ua[i]);
        else for (uint j = 0; j < 8; ++j) ua[i][j] = 0.0;
      }
    }
    if (k0 == 0) continue;
    [[unroll]] for (uint kk = 0; kk < BK / 8u; kk += CM / 8u) {  // in uvec4 units
      B_MATRIX gate, up;  // K x N: column n is row n of the weight tile
      LOAD_B(gate, gate_tile, column * STRIDE + kk, STRIDE);
      if (SWIGLU != 0u) LOAD_B(up, up_tile, column * STRIDE + kk, STRIDE);
      [[unroll]] for (uint i = 0; i < TM / CM; ++i) {
        A_MATRIX hi, lo;
        LOAD_A(hi, x_hi, i * CM * STRIDE + kk, STRIDE);
        LOAD_A(lo, x_lo, i * CM * STRIDE + kk, STRIDE);
        gate_hi[i] = MUL_ADD(hi, gate, gate_hi[i]);
        gate_lo[i] = MUL_ADD(lo, gate, gate_lo[i]);
        if (SWIGLU == 0u) continue;
        up_hi[i] = MUL_ADD(hi, up, up_hi[i]);
        up_lo[i] = MUL_ADD(lo, up, up_lo[i]);
      }
    }
    barrier();
  }
  [[unroll]] for (uint i = 0; i < TM / CM; ++i) {
    merge_lo(gate_hi[i], gate_lo[i]);
    if (SWIGLU != 0u) {
      merge_lo(up_hi[i], up_lo[i]);
      for (int j = 0; j < gate_hi[i].length(); ++j) gate_hi[i][j] = silu(gate_hi[i][j]) * up_hi[i][j];
    }
    STORE_C(gate_hi[i], c_tile, i * CM * C_STRIDE + column, C_STRIDE);
  }
  barrier();
  for (uint idx = tid; idx < TM * BN; idx += threads) {
    const uint r = idx / BN, c = idx % BN;
    if (r >= tile_rows || n0 + c >= p.n) continue;
    const uint assignment = p.sorted.v[first + m0 + r];
    p.y.v[assignment * p.n + n0 + c] = c_tile[r * C_STRIDE + c];
  }
}
