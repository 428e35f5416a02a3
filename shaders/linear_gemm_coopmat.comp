#version 460
// y[t, n] = sum_k x[t, k] * W[n, k] for many tokens, on cooperative-matrix units: the same
// operands and results as linear_gemm.comp, for devices with 16x16x16 fp16 matrices (precision
// in coopmat.glsl). Output tiles of 64 (or 128: BM_TILES) tokens x BN = 32 * NB features; K goes
// through shared memory 64 at a time, the next slice fetched into registers (weights as raw
// words, activations as fp32, converted when stored so that the products need not wait for the
// loads) while the matrix units work on this one. The workgroup is 8 subgroups (the host sizes
// it from the device's fixed subgroup size) in a 4 x 2 grid, each owning 16 * BM_TILES tokens x
// 16 * NB features of the tile: BM_TILES x NB matrices, each with a hi (and with SPLIT a lo)
// accumulator.
// NB only changes how the features are cut into workgroups (fewer tokens want narrower tiles,
// so that there are enough workgroups): an output's sum is the same sequence of products for
// every NB and every token count.
// K_PART > 0 splits K (decode-sized steps, whose few tiles would leave the GPU idle): workgroup z
// sums K values [z K_PART, (z + 1) K_PART) only and writes its partial sums to y + z * tokens * n
// (a scratch buffer); linear_split_sum.comp adds the parts in order.
#include "common.glsl"
#include "coopmat.glsl"

layout(constant_id = 3) const uint WEIGHT_DTYPE = DTYPE_BF16;
layout(constant_id = 4) const uint SPLIT = 1;  // activations as hi + lo fp16 halves (coopmat.glsl)
layout(constant_id = 5) const uint NB = 4;     // 16-feature matrices per subgroup: 1, 2 or 4
layout(constant_id = 6) const uint K_PART = 0;  // K values per workgroup (a multiple of SK), 0: all
// Row tiles of 16 tokens per subgroup: 1 (64-token tiles) or 2 (128-token tiles: each weight unit
// decoded once per 128 tokens instead of 64; fp16 activations and >= 256 invocations only, the
// host checks). The x tile then takes the place of x hi + x lo.
layout(constant_id = 7) const uint BM_TILES = 1;

const uint BM = 64u * BM_TILES;        // tokens per tile
const uint BN = 32u * NB;              // output features per tile
const uint SK = 64;                    // K values per slice
const uint SK_UNITS = SK / 8u;         // 8-value units per row of a slice
const uint SK_STRIDE = SK_UNITS + 1u;  // uvec4 per shared row: 144 bytes, rows start in different banks
const uint X_UNITS = BM * SK_UNITS, W_UNITS = BN * SK_UNITS;
const uint MAX_X = 4, MAX_W = 8;       // units per invocation and slice (the host guarantees >= 128 invocations)
const uint C_STRIDE = BN + 4;          // fp32 result row, in floats (a multiple of 4)

#include "linear_push.glsl"

// One array, three tiles: x hi, x lo (BM_TILES = 1), weights; after the K loop it holds the fp32
// results, 64 rows at a time.
const uint X_HI = 0, X_LO = 64u * SK_STRIDE, W_TILE = 128u * SK_STRIDE;
shared uvec4 tiles[128u * SK_STRIDE + BN * SK_STRIDE];

void main() {
  const uint tid = gl_LocalInvocationID.x, threads = gl_WorkGroupSize.x;
  const uint m0 = gl_WorkGroupID.y * BM, n0 = gl_WorkGroupID.x * BN;
  const uint row = (gl_SubgroupID >> 1) * CM * BM_TILES, column = (gl_SubgroupID & 1u) * (BN / 2u);
  const uint x_per_thread = (X_UNITS + threads - 1u) / threads;
  const uint w_per_thread = (W_UNITS + threads - 1u) / threads;

  F32_MATRIX acc_hi[2][4], acc_lo[4];  // [row block][column block]; the first BM_TILES x NB are used
  [[unroll]] for (uint j = 0; j < NB; ++j) {
    acc_hi[0][j] = F32_MATRIX(0.0);
    acc_hi[1][j] = F32_MATRIX(0.0);
    acc_lo[j] = F32_MATRIX(0.0);
  }

  // Registers holding the next K slice. Unit u of a tile is row u / SK_UNITS, 8 columns at
  // 8 (u % SK_UNITS): neighbouring invocations read neighbouring words of one row.
  float xv[MAX_X][8];  // activations as fetched: converted to fp16 when stored
  RawUnit wa[MAX_W];
  const uint k_begin = gl_WorkGroupID.z * K_PART, k_end = K_PART == 0u ? p.k : min(p.k, k_begin + K_PART);
  for (uint k0 = k_begin; k0 < k_end + SK; k0 += SK) {
    if (k0 > k_begin) {  // store the slice fetched last iteration (at k0 - SK)
      [[unroll]] for (uint i = 0; i < MAX_X; ++i) {
        const uint u = tid + i * threads;
        if (i >= x_per_thread || u >= X_UNITS) continue;
        const uint at = (u / SK_UNITS) * SK_STRIDE + u % SK_UNITS;
        interleave8(WEIGHT_DTYPE, xv[i]);
        if (SPLIT != 0u) split_store8(xv[i], tiles[X_HI + at], tiles[X_LO + at]);
        else tiles[X_HI + at] = round_store8(xv[i]);
      }
      [[unroll]] for (uint i = 0; i < MAX_W; ++i) {
        const uint u = tid + i * threads;
        if (i >= w_per_thread || u >= W_UNITS) continue;
        tiles[W_TILE + (u / SK_UNITS) * SK_STRIDE + u % SK_UNITS] = decode_weight_unit(WEIGHT_DTYPE, wa[i]);
      }
      barrier();
    }
    if (k0 < k_end) {  // fetch slice k0; its loads overlap the products of slice k0 - SK
      [[unroll]] for (uint i = 0; i < MAX_X; ++i) {
        const uint u = tid + i * threads;
        if (i >= x_per_thread) continue;
        const uint m = m0 + u / SK_UNITS, c = k0 + (u % SK_UNITS) * 8u;
        if (u < X_UNITS && m < p.tokens) load_activation8(p.x, m, p.k, c, xv[i]);
        else for (uint j = 0; j < 8; ++j) xv[i][j] = 0.0;
      }
      [[unroll]] for (uint i = 0; i < MAX_W; ++i) {
        const uint u = tid + i * threads;
        if (i >= w_per_thread) continue;
        const uint n = n0 + u / SK_UNITS, c = k0 + (u % SK_UNITS) * 8u;
        wa[i] = RawUnit(uvec4(0u), 0u);
        if (u < W_UNITS && n < p.n && c < p.k) wa[i] = fetch_weight_unit(p.weight, WEIGHT_DTYPE, n, p.k, c);
      }
    }
    if (k0 == k_begin) continue;
    [[unroll]] for (uint kk = 0; kk < SK_UNITS; kk += CM / 8u) {  // in uvec4 units
      A_MATRIX hi[2], lo;
      [[unroll]] for (uint t = 0; t < BM_TILES; ++t)
        LOAD_A(hi[t], tiles, X_HI + (row + t * CM) * SK_STRIDE + kk, SK_STRIDE);
      if (SPLIT != 0u) LOAD_A(lo, tiles, X_LO + row * SK_STRIDE + kk, SK_STRIDE);
      [[unroll]] for (uint j = 0; j < NB; ++j) {
        B_MATRIX w;  // K x N, its column n is row n of the weight tile
        LOAD_B(w, tiles, W_TILE + (column + j * CM) * SK_STRIDE + kk, SK_STRIDE);
        [[unroll]] for (uint t = 0; t < BM_TILES; ++t) acc_hi[t][j] = MUL_ADD(hi[t], w, acc_hi[t][j]);
        if (SPLIT != 0u) acc_lo[j] = MUL_ADD(lo, w, acc_lo[j]);
      }
    }
    barrier();
  }
  // The loop ended with a barrier: the tiles are free to hold the results, 64 rows (row block t
  // of every subgroup) at a time.
  const uint part = gl_WorkGroupID.z * p.tokens;  // the partial sums' rows (0 without K_PART)
  [[unroll]] for (uint t = 0; t < BM_TILES; ++t) {
    if (t > 0) barrier();  // the previous rows are written out
    [[unroll]] for (uint j = 0; j < NB; ++j) {
      if (SPLIT != 0u) merge_lo(acc_hi[t][j], acc_lo[j]);
      STORE_C(acc_hi[t][j], tiles, ((gl_SubgroupID >> 1) * CM * C_STRIDE + column + j * CM) / 4u, C_STRIDE / 4u);
    }
    barrier();
    for (uint e = tid; e < 64u * BN; e += threads) {
      const uint r = e / BN, c = e % BN, at = r * C_STRIDE + c;
      const uint m = m0 + (r / CM) * CM * BM_TILES + t * CM + r % CM;  // the token of tile row r
      if (m < p.tokens && n0 + c < p.n) p.y.v[(part + m) * p.n + n0 + c] = uintBitsToFloat(tiles[at >> 2][at & 3u]);
    }
  }
}
