#version 460
// Grouped expert GEMM on cooperative-matrix units: the same operands and results as
// moe_expert.comp, for devices with 16x16x16 fp16 matrices (precision in coopmat.glsl).
//   SWIGLU = 1 (gate/up): h[assignment, n] = silu(x . gate_n) * (x . up_n), x rows by token
//   SWIGLU = 0 (down):    y[assignment, n] = h[assignment] . down_n
// Workgroup (column tile, row tile of TM, live-expert slot), 8 subgroups. Gate/up: a column tile
// is 128 columns, each with its gate and its up row (two 128-row weight tiles); down: 256 columns,
// their weight rows split over the same two tiles (so a K slice moves as many bytes as gate/up's).
// Subgroup s owns columns 16s .. 16s + 15 of each weight tile for all TM rows. The grid comes from
// moe_group.comp, so every workgroup but the tail of the busiest expert's rows has work.
//
// Prefill gives an expert ~10 rows, so the kernel moves weights, not arithmetic: each K slice of
// 64 brings two tiles of 128 weight rows through shared memory (for q4, 10 KiB per slice),
// fetched into registers as raw words while the matrix units work on the previous slice and
// decoded to fp16 only when stored (Q4 in fp16 arithmetic: coopmat.glsl) — wide slices keep many
// bytes in flight per barrier, raw words keep the registers (and so the workgroups per
// multiprocessor) that floats would cost.
#include "common.glsl"
#include "coopmat.glsl"

layout(constant_id = 3) const uint WEIGHT_DTYPE = DTYPE_BF16;
layout(constant_id = 4) const uint SWIGLU = 1;
layout(constant_id = 5) const uint TM = 16;    // rows per tile: 16 or 32
layout(constant_id = 6) const uint SPLIT = 1;  // activations as hi + lo fp16 halves (coopmat.glsl)
const uint MAX_TM = 32, BN = 128;
const uint SK = 64;                  // K values per slice
const uint SK_UNITS = SK / 8u;       // 8-value units per row of a slice
const uint SK_STRIDE = SK_UNITS + 1u;  // uvec4 per shared row: 144 bytes, so rows start in different banks
const uint W_UNITS = BN * SK_UNITS;  // units per weight tile and slice
const uint MAX_W = 8, MAX_X = 2;     // units per invocation and slice (the host guarantees >= 128 invocations)
const uint C_STRIDE = BN + 4;        // fp32 result row, in floats (a multiple of 4)
const uint COLUMNS = SWIGLU != 0u ? BN : 2u * BN;  // output columns per workgroup

#include "moe_expert_push.glsl"

shared uvec4 x_hi[MAX_TM * SK_STRIDE], x_lo[MAX_TM * SK_STRIDE];
// The weight tiles (down: its first and second 128 weight rows); after the K loop each holds the
// fp32 results of its columns (TM x C_STRIDE floats).
shared uvec4 gate_tile[BN * SK_STRIDE], up_tile[BN * SK_STRIDE];
shared uint source_row[MAX_TM];  // x row of each tile row

void main() {
  const uint slot = gl_WorkGroupID.z;
  if (slot >= p.live.v[0]) return;  // uniform per workgroup
  const uint e = p.live.v[1u + slot];
  const uint first = p.offsets.v[e], rows = p.offsets.v[e + 1u] - first;
  const uint m0 = gl_WorkGroupID.y * TM;
  if (m0 >= rows) return;
  const uint n0 = gl_WorkGroupID.x * COLUMNS;
  const uint tid = gl_LocalInvocationID.x, threads = gl_WorkGroupSize.x;
  const uint column = gl_SubgroupID * CM;
  const uint weight_rows = SWIGLU != 0u ? 2u * p.n : p.n;
  const uint tile_rows = min(TM, rows - m0);
  const uint w_per_thread = (W_UNITS + threads - 1u) / threads;
  const uint x_per_thread = (TM * SK_UNITS + threads - 1u) / threads;

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

  // Registers holding the next K slice. Unit u of a tile is row u / SK_UNITS, 8 columns at
  // 8 (u % SK_UNITS): neighbouring invocations read neighbouring words of one row.
  uvec4 xh[MAX_X], xl[MAX_X];
  RawUnit ga[MAX_W], ua[MAX_W];
  for (uint k0 = 0; k0 < p.k + SK; k0 += SK) {
    if (k0 > 0) {  // store the slice fetched last iteration (at k0 - SK)
      [[unroll]] for (uint i = 0; i < MAX_X; ++i) {
        const uint u = tid + i * threads;
        if (i >= x_per_thread || u >= TM * SK_UNITS) continue;
        const uint at = (u / SK_UNITS) * SK_STRIDE + u % SK_UNITS;
        x_hi[at] = xh[i];
        if (SPLIT != 0u) x_lo[at] = xl[i];
      }
      [[unroll]] for (uint i = 0; i < MAX_W; ++i) {
        const uint u = tid + i * threads;
        if (i >= w_per_thread || u >= W_UNITS) continue;
        const uint at = (u / SK_UNITS) * SK_STRIDE + u % SK_UNITS;
        gate_tile[at] = decode_weight_unit(WEIGHT_DTYPE, ga[i]);
        up_tile[at] = decode_weight_unit(WEIGHT_DTYPE, ua[i]);
      }
      barrier();
    }
    if (k0 < p.k) {  // fetch slice k0; its loads overlap the products of slice k0 - SK
      [[unroll]] for (uint i = 0; i < MAX_X; ++i) {
        const uint u = tid + i * threads;
        if (i >= x_per_thread || u >= TM * SK_UNITS) continue;
        const uint r = u / SK_UNITS, c = k0 + (u % SK_UNITS) * 8u;
        float v[8];
        if (r < tile_rows) load_activation8(p.x, source_row[r], p.k, c, v);
        else for (uint j = 0; j < 8; ++j) v[j] = 0.0;
        interleave8(WEIGHT_DTYPE, v);
        if (SPLIT != 0u) split_store8(v, xh[i], xl[i]);
        else xh[i] = round_store8(v);
      }
      [[unroll]] for (uint i = 0; i < MAX_W; ++i) {
        const uint u = tid + i * threads;
        if (i >= w_per_thread) continue;
        const uint r = u / SK_UNITS, c = k0 + (u % SK_UNITS) * 8u, gate_row = e * weight_rows + n0 + r;
        // The second tile's row: the up row of the same column, or (down) the column BN further.
        const uint second = SWIGLU != 0u ? p.n : BN;
        const bool inside = u < W_UNITS && c < p.k;
        ga[i] = RawUnit(uvec4(0u), 0u);
        ua[i] = ga[i];
        if (inside && n0 + r < p.n) ga[i] = fetch_weight_unit(p.weight, WEIGHT_DTYPE, gate_row, p.k, c);
        if (inside && (SWIGLU != 0u || n0 + BN + r < p.n))
          ua[i] = fetch_weight_unit(p.weight, WEIGHT_DTYPE, gate_row + second, p.k, c);
      }
    }
    if (k0 == 0) continue;
    [[unroll]] for (uint kk = 0; kk < SK_UNITS; kk += CM / 8u) {  // in uvec4 units
      B_MATRIX gate, up;  // K x N: column n is row n of the weight tile
      LOAD_B(gate, gate_tile, column * SK_STRIDE + kk, SK_STRIDE);
      LOAD_B(up, up_tile, column * SK_STRIDE + kk, SK_STRIDE);
      [[unroll]] for (uint i = 0; i < TM / CM; ++i) {
        A_MATRIX hi, lo;
        LOAD_A(hi, x_hi, i * CM * SK_STRIDE + kk, SK_STRIDE);
        gate_hi[i] = MUL_ADD(hi, gate, gate_hi[i]);
        up_hi[i] = MUL_ADD(hi, up, up_hi[i]);
        if (SPLIT == 0u) continue;
        LOAD_A(lo, x_lo, i * CM * SK_STRIDE + kk, SK_STRIDE);
        gate_lo[i] = MUL_ADD(lo, gate, gate_lo[i]);
        up_lo[i] = MUL_ADD(lo, up, up_lo[i]);
      }
    }
    barrier();
  }
  // The loop ended with a barrier: the weight tiles are free to hold the results.
  [[unroll]] for (uint i = 0; i < TM / CM; ++i) {
    if (SPLIT != 0u) {
      merge_lo(gate_hi[i], gate_lo[i]);
      merge_lo(up_hi[i], up_lo[i]);
    }
    if (SWIGLU != 0u)
      for (int j = 0; j < gate_hi[i].length(); ++j) gate_hi[i][j] = silu(gate_hi[i][j]) * up_hi[i][j];
    else
      STORE_C(up_hi[i], up_tile, (i * CM * C_STRIDE + column) / 4u, C_STRIDE / 4u);
    STORE_C(gate_hi[i], gate_tile, (i * CM * C_STRIDE + column) / 4u, C_STRIDE / 4u);
  }
  barrier();
  for (uint idx = tid; idx < TM * COLUMNS; idx += threads) {
    const uint r = idx / COLUMNS, c = idx % COLUMNS;
    if (r >= tile_rows || n0 + c >= p.n) continue;
    const uint assignment = p.sorted.v[first + m0 + r], at = r * C_STRIDE + c % BN;
    const uvec4 word = c < BN ? gate_tile[at >> 2] : up_tile[at >> 2];
    p.y.v[assignment * p.n + n0 + c] = uintBitsToFloat(word[at & 3u]);
  }
}
