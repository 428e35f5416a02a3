#version 460
// y[t, n] = sum_k x[t, k] * W[n, k] for many tokens, on cooperative-matrix units: the same
// operands and results as linear_gemm.comp, for devices with 16x16x16 fp16 matrices (precision
// in coopmat.glsl). 64x64 output tiles; K through shared memory BK at a time, the next slice
// loaded into registers while the matrix units work on this one. The workgroup is 8 subgroups
// (the host sizes it from the device's fixed subgroup size) in a 4 x 2 grid, each owning 16 rows
// x 32 columns of the tile: 2 matrices, each with a hi and a lo accumulator.
#include "common.glsl"
#include "coopmat.glsl"

layout(constant_id = 3) const uint WEIGHT_DTYPE = DTYPE_BF16;

const uint BM = 64;  // tokens per tile
const uint BN = 64;  // output features per tile (BM = BN: both tiles have the same units)
const uint UNITS = BM * (BK / 8u);   // 8-value units per tile
const uint MAX_UNITS_PER_THREAD = 2;  // the host guarantees >= 128 invocations
const uint C_STRIDE = BN + 4;        // fp32 result row

#include "linear_push.glsl"

shared uvec4 x_hi[BM * STRIDE], x_lo[BM * STRIDE], w_tile[BN * STRIDE];
shared float c_tile[BM * C_STRIDE];

// Loads unit u of the K slice at k0 of both tiles (zeros outside the matrices).
void fetch(uint k0, uint u, out float xv[8], out float wv[8]) {
  const uint r = unit_row(u), c = k0 + unit_column(u);
  const uint m = gl_WorkGroupID.y * BM + r, n = gl_WorkGroupID.x * BN + r;
  if (u < UNITS && m < p.tokens) load_activation8(p.x, m, p.k, c, xv);
  else for (uint j = 0; j < 8; ++j) xv[j] = 0.0;
  if (u < UNITS && n < p.n) load_weight8(p.weight, WEIGHT_DTYPE, n, p.k, c, wv);
  else for (uint j = 0; j < 8; ++j) wv[j] = 0.0;
}

void main() {
  const uint tid = gl_LocalInvocationID.x, threads = gl_WorkGroupSize.x;
  const uint m0 = gl_WorkGroupID.y * BM, n0 = gl_WorkGroupID.x * BN;
  const uint row = (gl_SubgroupID >> 1) * CM, column = (gl_SubgroupID & 1u) * 32u;
  const uint per_thread = (UNITS + threads - 1u) / threads;

  F32_MATRIX acc_hi[2], acc_lo[2];  // [column block]
  [[unroll]] for (uint j = 0; j < 2; ++j) {
    acc_hi[j] = F32_MATRIX(0.0);
    acc_lo[j] = F32_MATRIX(0.0);
  }

  float xa[MAX_UNITS_PER_THREAD][8], wa[MAX_UNITS_PER_THREAD][8];
  [[unroll]] for (uint i = 0; i < MAX_UNITS_PER_THREAD; ++i)
    if (i < per_thread) fetch(0, tid + i * threads, xa[i], wa[i]);

  for (uint k0 = 0; k0 < p.k; k0 += BK) {
    [[unroll]] for (uint i = 0; i < MAX_UNITS_PER_THREAD; ++i) {
      const uint u = tid + i * threads;
      if (i >= per_thread || u >= UNITS) continue;
      const uint at = unit_word(u);
      split_store8(xa[i], x_hi[at], x_lo[at]);
      w_tile[at] = pack_f16x8(wa[i]);
    }
    barrier();
    if (k0 + BK < p.k)  // the next slice's loads overlap this slice's products
      [[unroll]] for (uint i = 0; i < MAX_UNITS_PER_THREAD; ++i)
        if (i < per_thread) fetch(k0 + BK, tid + i * threads, xa[i], wa[i]);
    [[unroll]] for (uint kk = 0; kk < BK / 8u; kk += CM / 8u) {  // in uvec4 units
      B_MATRIX w[2];  // K x N, its column n is row n of the weight tile
      A_MATRIX hi, lo;
      [[unroll]] for (uint j = 0; j < 2; ++j) LOAD_B(w[j], w_tile, (column + j * CM) * STRIDE + kk, STRIDE);
      LOAD_A(hi, x_hi, row * STRIDE + kk, STRIDE);
      LOAD_A(lo, x_lo, row * STRIDE + kk, STRIDE);
      [[unroll]] for (uint j = 0; j < 2; ++j) {
        acc_hi[j] = MUL_ADD(hi, w[j], acc_hi[j]);
        acc_lo[j] = MUL_ADD(lo, w[j], acc_lo[j]);
      }
    }
    barrier();
  }
  [[unroll]] for (uint j = 0; j < 2; ++j) {
    merge_lo(acc_hi[j], acc_lo[j]);
    STORE_C(acc_hi[j], c_tile, row * C_STRIDE + column + j * CM, C_STRIDE);
  }
  barrier();
  for (uint e = tid; e < BM * BN; e += threads) {
    const uint r = e / BN, c = e % BN;
    if (m0 + r < p.tokens && n0 + c < p.n) p.y.v[(m0 + r) * p.n + n0 + c] = c_tile[r * C_STRIDE + c];
  }
}
