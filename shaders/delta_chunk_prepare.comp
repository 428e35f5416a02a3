#version 460
// Chunked gated delta rule, step 1 of 3 (spec §6): everything inside one chunk that does not
// depend on the state. One workgroup per (chunk n, value head j, sequence b):
//   gamma_r = sum_{m<=r} g_m                       (written out for steps 2 and 3)
//   A = -L,  L_ri = beta_r exp(gamma_r - gamma_i) (k_r . k_i)   for i < r
//   T = (I + L)^-1 by forward substitution on A (HF's loop), kept in shared memory
//   W  = T (beta V),   Kc = T (beta exp(gamma) K)
// exp() only ever sees gamma_r - gamma_i with i <= r, which is <= 0 (spec §8.4).
//
// The products are register-tiled fp32: invocation t owns rows t/16 + 16a (a < 4) and columns
// t%16 + 16c of each 64-wide output tile, reading operands staged in shared memory. The host
// runs 256 invocations and CHUNK = 64 (runtime/ops/delta_rule.cpp).
#include "common.glsl"

layout(constant_id = 3) const uint CHUNK = 64;

layout(push_constant) uniform Push {
  F32Buf qkv;    // [B*T, 2 Hk dk + Hv dv], prepared
  F32Buf gates;  // [B*T, 2 Hv]: g | beta
  F32Buf gamma;  // [B*T, Hv]
  F32Buf w;      // [B*T, Hv, dv]
  F32Buf kc;     // [B*T, Hv, dk]
  uint tokens;
  uint key_heads;
  uint value_heads;
  uint dk;
  uint dv;
} p;

const uint KS = 16;               // depth of a staged slice of K for K K^T
const uint COLS = 32;             // width of a staged column block of beta V | beta exp(gamma) K
const uint AS = CHUNK + 1u;       // row stride of A (odd: a column walk hits distinct banks)
const uint ROWS = CHUNK / 16u;    // rows per invocation

// A0 (= -L) below the diagonal and, during the substitution, T - I transposed above it; then T.
shared float A[CHUNK * AS];
// Staged operands: K slices [CHUNK][KS + 1], then column blocks [CHUNK][COLS + 1].
shared float X[CHUNK * (COLS + 1u)];
shared float gam[CHUNK];
shared float bet[CHUNK];
shared float beta_decay[CHUNK];  // beta_r exp(gamma_r), Kc's row scale

void main() {
  const uint n = gl_WorkGroupID.x, j = gl_WorkGroupID.y, b = gl_WorkGroupID.z;
  const uint tid = gl_LocalInvocationID.x, threads = gl_WorkGroupSize.x;
  const uint tr = tid / 16u, tc = tid % 16u;
  const uint hv = p.value_heads;
  const uint kh = j / (hv / p.key_heads);
  const uint width = 2u * p.key_heads * p.dk + hv * p.dv;
  const uint first_row = b * p.tokens + n * CHUNK;
  const uint len = min(CHUNK, p.tokens - n * CHUNK);
  const uint k_col = (p.key_heads + kh) * p.dk;
  const uint v_col = 2u * p.key_heads * p.dk + j * p.dv;

  for (uint r = tid; r < len; r += threads) {
    gam[r] = p.gates.v[(first_row + r) * 2u * hv + j];
    bet[r] = p.gates.v[(first_row + r) * 2u * hv + hv + j];
  }
  barrier();
  if (tid == 0u)
    for (uint r = 1; r < len; ++r) gam[r] += gam[r - 1];
  barrier();
  for (uint r = tid; r < len; r += threads) {
    p.gamma.v[(first_row + r) * hv + j] = gam[r];
    beta_decay[r] = bet[r] * exp(gam[r]);
  }

  // K K^T over slices of KS key dims; rows past len stage as zeros.
  float kk[ROWS][ROWS];
  for (uint a = 0; a < ROWS; ++a)
    for (uint c = 0; c < ROWS; ++c) kk[a][c] = 0.0;
  for (uint d0 = 0; d0 < p.dk; d0 += KS) {
    for (uint e = tid; e < CHUNK * KS; e += threads) {
      const uint r = e / KS, d = e % KS;
      X[r * (KS + 1u) + d] =
          r < len && d0 + d < p.dk ? p.qkv.v[(first_row + r) * width + k_col + d0 + d] : 0.0;
    }
    barrier();
    for (uint d = 0; d < KS; ++d) {
      float left[ROWS], right[ROWS];
      for (uint a = 0; a < ROWS; ++a) left[a] = X[(tr + 16u * a) * (KS + 1u) + d];
      for (uint c = 0; c < ROWS; ++c) right[c] = X[(tc + 16u * c) * (KS + 1u) + d];
      for (uint a = 0; a < ROWS; ++a)
        for (uint c = 0; c < ROWS; ++c) kk[a][c] += left[a] * right[c];
    }
    barrier();
  }
  for (uint a = 0; a < ROWS; ++a)
    for (uint c = 0; c < ROWS; ++c) {
      const uint r = tr + 16u * a, i = tc + 16u * c;
      A[r * AS + i] = i < r && r < len ? -bet[r] * exp(gam[r] - gam[i]) * kk[a][c] : 0.0;
    }
  barrier();

  // Forward substitution, row r from the original row r (below the diagonal) and the finished
  // rows m < r (stored transposed above it, so row r is written while earlier rows are read):
  //   T'[r][i] = A0[r][i] + sum_{i<m<r} A0[r][m] T'[m][i],   T'[m][i] at A[i][m].
  for (uint r = 1; r < len; ++r) {
    if (tid < r) {
      const uint i = tid;
      float s0 = A[r * AS + i], s1 = 0.0, s2 = 0.0, s3 = 0.0;
      uint m = i + 1u;
      for (; m + 3u < r; m += 4u) {
        s0 += A[r * AS + m] * A[i * AS + m];
        s1 += A[r * AS + m + 1u] * A[i * AS + m + 1u];
        s2 += A[r * AS + m + 2u] * A[i * AS + m + 2u];
        s3 += A[r * AS + m + 3u] * A[i * AS + m + 3u];
      }
      for (; m < r; ++m) s0 += A[r * AS + m] * A[i * AS + m];
      A[i * AS + r] = (s0 + s1) + (s2 + s3);
    }
    barrier();
  }
  // T = T' + I, written below the diagonal with zeros above it.
  for (uint e = tid; e < CHUNK * CHUNK; e += threads) {
    const uint r = e / CHUNK, i = e % CHUNK;
    if (i < r) {
      A[r * AS + i] = A[i * AS + r];
      A[i * AS + r] = 0.0;
    } else if (i == r) {
      A[r * AS + r] = 1.0;
    }
  }
  barrier();

  // [W | Kc] = T [beta V | beta exp(gamma) K], COLS columns at a time; T is lower triangular, so
  // invocation t's rows (at most tr + 48) need columns i <= tr + 48 of T only.
  const uint total = p.dv + p.dk;
  const uint i_end = min(len, tr + 16u * (ROWS - 1u) + 1u);
  for (uint c0 = 0; c0 < total; c0 += COLS) {
    for (uint e = tid; e < CHUNK * COLS; e += threads) {
      const uint r = e / COLS, c = c0 + e % COLS;
      float value = 0.0;
      if (r < len && c < total) {
        const uint row = first_row + r;
        value = c < p.dv ? bet[r] * p.qkv.v[row * width + v_col + c]
                         : beta_decay[r] * p.qkv.v[row * width + k_col + c - p.dv];
      }
      X[r * (COLS + 1u) + e % COLS] = value;
    }
    barrier();
    float acc[ROWS][2];
    for (uint a = 0; a < ROWS; ++a) acc[a][0] = acc[a][1] = 0.0;
    for (uint i = 0; i < i_end; ++i) {
      const float x0 = X[i * (COLS + 1u) + tc], x1 = X[i * (COLS + 1u) + tc + 16u];
      for (uint a = 0; a < ROWS; ++a) {
        const float t = A[(tr + 16u * a) * AS + i];
        acc[a][0] += t * x0;
        acc[a][1] += t * x1;
      }
    }
    for (uint a = 0; a < ROWS; ++a) {
      const uint r = tr + 16u * a;
      if (r >= len) continue;
      const uint row_head = (first_row + r) * hv + j;
      for (uint h = 0; h < 2u; ++h) {
        const uint c = c0 + tc + 16u * h;
        if (c < p.dv)
          p.w.v[row_head * p.dv + c] = acc[a][h];
        else if (c < total)
          p.kc.v[row_head * p.dk + c - p.dv] = acc[a][h];
      }
    }
    barrier();
  }
}
