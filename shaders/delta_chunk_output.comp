#version 460
// Chunked gated delta rule, step 3 of 3 (spec §6): the outputs of one chunk, parallel over
// (chunk n, value head j, sequence b), from the chunk's starting state and pseudo-values:
//   O_r = exp(gamma_r) q_r^T S_n  +  sum_{i<=r} exp(gamma_r - gamma_i) (q_r . k_i) U_i
// as one product [exp(gamma) Q | P] [S_n ; U] with P the masked, decayed Q K^T.
//
// Register-tiled fp32 as in delta_chunk_prepare.comp: invocation t owns rows t/16 + 16a (a < 4)
// and columns t%16 + 16c; 256 invocations, CHUNK = 64. Operands whose reduction index runs along
// a shared row are read four at a time (vec4), so a shared load feeds 8-16 FMAs.
#include "common.glsl"

layout(constant_id = 3) const uint CHUNK = 64;

layout(push_constant) uniform Push {
  F32Buf qkv;        // [B*T, 2 Hk dk + Hv dv], prepared
  F32Buf gamma;      // [B*T, Hv]
  F32Buf u;          // [B*T, Hv, dv]
  F32Buf snapshots;  // [B, chunks, Hv, dk, dv]
  F32Buf o;          // [B*T, Hv, dv]
  uint tokens;
  uint key_heads;
  uint value_heads;
  uint dk;
  uint dv;
} p;

const uint KS = 16;             // depth of a staged slice of a product's reduction dimension
const uint COLS = 32;           // output columns per pass of the O product
const uint ROWS = CHUNK / 16u;  // rows per invocation
// Row strides in vec4: 4 floats of padding put neighbouring rows 16 bytes apart in the banks.
const uint PS4 = CHUNK / 4u + 1u;  // P [CHUNK][CHUNK]
const uint LS4 = KS / 4u + 1u;     // staged slices [CHUNK][KS]
const uint RS = COLS + 1u;         // staged rows of S or U [KS][COLS], in floats

shared vec4 P[CHUNK * PS4];
shared vec4 L[CHUNK * LS4];  // Q slices (scaled by exp(gamma) for O)
shared vec4 K[CHUNK * LS4];  // K slices
shared float R[KS * RS];     // S or U row slices
shared float gam[CHUNK];
shared float decay_from_start[CHUNK];  // exp(gamma_r)

void main() {
  const uint n = gl_WorkGroupID.x, j = gl_WorkGroupID.y, b = gl_WorkGroupID.z;
  const uint tid = gl_LocalInvocationID.x, threads = gl_WorkGroupSize.x;
  const uint tr = tid / 16u, tc = tid % 16u;
  const uint hv = p.value_heads;
  const uint kh = j / (hv / p.key_heads);
  const uint width = 2u * p.key_heads * p.dk + hv * p.dv;
  const uint q_col = kh * p.dk, k_col = (p.key_heads + kh) * p.dk;
  const uint first_row = b * p.tokens + n * CHUNK;
  const uint len = min(CHUNK, p.tokens - n * CHUNK);
  const uint chunks = (p.tokens + CHUNK - 1u) / CHUNK;
  const uint snap_base = ((b * chunks + n) * hv + j) * p.dk * p.dv;

  for (uint r = tid; r < CHUNK; r += threads) {
    gam[r] = r < len ? p.gamma.v[(first_row + r) * hv + j] : 0.0;
    decay_from_start[r] = exp(gam[r]);
  }
  barrier();

  // P = decay o (Q K^T), lower triangle with the diagonal.
  float qk[ROWS][ROWS];
  for (uint a = 0; a < ROWS; ++a)
    for (uint c = 0; c < ROWS; ++c) qk[a][c] = 0.0;
  for (uint d0 = 0; d0 < p.dk; d0 += KS) {
    for (uint e = tid; e < CHUNK * KS; e += threads) {
      const uint r = e / KS, d = e % KS;
      const bool inside = r < len && d0 + d < p.dk;
      const uint at = (first_row + r) * width + d0 + d;
      L[r * LS4 + d / 4u][d % 4u] = inside ? p.qkv.v[at + q_col] : 0.0;
      K[r * LS4 + d / 4u][d % 4u] = inside ? p.qkv.v[at + k_col] : 0.0;
    }
    barrier();
    for (uint d4 = 0; d4 < KS / 4u; ++d4) {
      vec4 left[ROWS], right[ROWS];
      for (uint a = 0; a < ROWS; ++a) left[a] = L[(tr + 16u * a) * LS4 + d4];
      for (uint c = 0; c < ROWS; ++c) right[c] = K[(tc + 16u * c) * LS4 + d4];
      for (uint a = 0; a < ROWS; ++a)
        for (uint c = 0; c < ROWS; ++c) qk[a][c] += dot(left[a], right[c]);
    }
    barrier();
  }
  for (uint a = 0; a < ROWS; ++a)
    for (uint c = 0; c < ROWS; ++c) {
      const uint r = tr + 16u * a, i = tc + 16u * c;
      P[r * PS4 + i / 4u][i % 4u] = i <= r && r < len ? exp(gam[r] - gam[i]) * qk[a][c] : 0.0;
    }
  barrier();

  const uint i_end = min(len, tr + 16u * (ROWS - 1u) + 1u);  // P is lower triangular
  for (uint c0 = 0; c0 < p.dv; c0 += COLS) {
    float acc[ROWS][2];
    for (uint a = 0; a < ROWS; ++a) acc[a][0] = acc[a][1] = 0.0;
    // exp(gamma) Q S_n
    for (uint d0 = 0; d0 < p.dk; d0 += KS) {
      for (uint e = tid; e < CHUNK * KS; e += threads) {
        const uint r = e / KS, d = e % KS;
        L[r * LS4 + d / 4u][d % 4u] =
            r < len && d0 + d < p.dk ? decay_from_start[r] * p.qkv.v[(first_row + r) * width + q_col + d0 + d] : 0.0;
      }
      for (uint e = tid; e < KS * COLS; e += threads) {
        const uint d = e / COLS, c = e % COLS;
        R[d * RS + c] = d0 + d < p.dk && c0 + c < p.dv ? p.snapshots.v[snap_base + (d0 + d) * p.dv + c0 + c] : 0.0;
      }
      barrier();
      for (uint d4 = 0; d4 < KS / 4u; ++d4) {
        vec4 s0, s1;
        for (uint k = 0; k < 4u; ++k) {
          s0[k] = R[(4u * d4 + k) * RS + tc];
          s1[k] = R[(4u * d4 + k) * RS + tc + 16u];
        }
        for (uint a = 0; a < ROWS; ++a) {
          const vec4 q = L[(tr + 16u * a) * LS4 + d4];
          acc[a][0] += dot(q, s0);
          acc[a][1] += dot(q, s1);
        }
      }
      barrier();
    }
    // + P U, over the staged blocks of U rows this invocation's rows reach
    for (uint i0 = 0; i0 < len; i0 += KS) {
      for (uint e = tid; e < KS * COLS; e += threads) {
        const uint i = e / COLS, c = e % COLS;
        R[i * RS + c] = i0 + i < len && c0 + c < p.dv ? p.u.v[((first_row + i0 + i) * hv + j) * p.dv + c0 + c] : 0.0;
      }
      barrier();
      if (i0 < i_end) {
        for (uint i4 = 0; i4 < KS / 4u; ++i4) {
          vec4 u0, u1;
          for (uint k = 0; k < 4u; ++k) {
            u0[k] = R[(4u * i4 + k) * RS + tc];
            u1[k] = R[(4u * i4 + k) * RS + tc + 16u];
          }
          for (uint a = 0; a < ROWS; ++a) {
            const vec4 pv = P[(tr + 16u * a) * PS4 + i0 / 4u + i4];
            acc[a][0] += dot(pv, u0);
            acc[a][1] += dot(pv, u1);
          }
        }
      }
      barrier();
    }
    for (uint a = 0; a < ROWS; ++a) {
      const uint r = tr + 16u * a;
      if (r >= len) continue;
      for (uint h = 0; h < 2u; ++h) {
        const uint c = c0 + tc + 16u * h;
        if (c < p.dv) p.o.v[((first_row + r) * hv + j) * p.dv + c] = acc[a][h];
      }
    }
  }
}
