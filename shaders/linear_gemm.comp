#version 460
// y[t, n] = sum_k x[t, k] * W[n, k] for many tokens (prefill, batches): 64x64 output tiles,
// 256 invocations each computing a 4x4 block, K consumed 16 at a time through shared memory.
// Weights are read in place in their stored dtype; accumulation is fp32. Any sizes: edges are
// guarded. (Cooperative-matrix variants come later; this is the portable path.)
#include "common.glsl"

layout(constant_id = 3) const uint WEIGHT_DTYPE = DTYPE_BF16;

const uint BM = 64;  // tokens per tile
const uint BN = 64;  // output features per tile
const uint BK = 16;

#include "linear_push.glsl"

shared float tile_x[BK][BM + 1];
shared float tile_w[BK][BN + 1];

void main() {
  const uint tid = gl_LocalInvocationID.x;  // 0..255 (the host dispatches 256 invocations)
  const uint m0 = gl_WorkGroupID.y * BM;
  const uint n0 = gl_WorkGroupID.x * BN;
  const uint tm = (tid / 16) * 4;  // this invocation's 4 rows within the tile
  const uint tn = (tid % 16) * 4;  // and 4 columns
  float acc[4][4];
  for (uint i = 0; i < 4; ++i)
    for (uint j = 0; j < 4; ++j) acc[i][j] = 0.0;

  for (uint k0 = 0; k0 < p.k; k0 += BK) {
    // Each invocation loads 4 elements of each tile (64 x 16 = 1024 = 256 x 4).
    for (uint e = tid; e < BM * BK; e += 256) {
      const uint r = e / BK, c = e % BK;
      const uint m = m0 + r, kk = k0 + c;
      tile_x[c][r] = (m < p.tokens && kk < p.k) ? p.x.v[m * p.k + kk] : 0.0;
      if (WEIGHT_DTYPE == DTYPE_Q8 || WEIGHT_DTYPE == DTYPE_Q4) continue;
      const uint nn = n0 + r;
      tile_w[c][r] = (nn < p.n && kk < p.k) ? load_weight(p.weight, WEIGHT_DTYPE, nn * p.k + kk) : 0.0;
    }
    if (WEIGHT_DTYPE == DTYPE_Q8 || WEIGHT_DTYPE == DTYPE_Q4) {
      // BK = 16 is half a block of each row (k is a multiple of 32): two eighths per row.
      if (tid < BN * 2u) {
        const uint r = tid >> 1, unit = (k0 >> 3) + (tid & 1u), nn = n0 + r;
        float w[8];
        for (uint j = 0; j < 8; ++j) w[j] = 0.0;
        if (nn < p.n) dequantize_eighth(p.weight, WEIGHT_DTYPE, quantized_block_word(WEIGHT_DTYPE, nn, p.k, unit), unit & 3u, w);
        for (uint j = 0; j < 8; ++j) tile_w[(tid & 1u) * 8u + j][r] = w[j];
      }
    }
    barrier();
    for (uint c = 0; c < BK; ++c) {
      float a[4], b[4];
      for (uint i = 0; i < 4; ++i) a[i] = tile_x[c][tm + i];
      for (uint j = 0; j < 4; ++j) b[j] = tile_w[c][tn + j];
      for (uint i = 0; i < 4; ++i)
        for (uint j = 0; j < 4; ++j) acc[i][j] += a[i] * b[j];
    }
    barrier();
  }
  for (uint i = 0; i < 4; ++i) {
    const uint m = m0 + tm + i;
    if (m >= p.tokens) continue;
    for (uint j = 0; j < 4; ++j) {
      const uint nn = n0 + tn + j;
      if (nn < p.n) p.y.v[m * p.n + nn] = acc[i][j];
    }
  }
}
