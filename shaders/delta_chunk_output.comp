#version 460
// Chunked gated delta rule, step 3 of 3 (spec §6): the outputs of one chunk, parallel over
// (chunk n, value head j, sequence b), from the chunk's starting state and pseudo-values:
//   O_r = exp(gamma_r) q_r^T S_n  +  sum_{i<=r} exp(gamma_r - gamma_i) (q_r . k_i) U_i
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

shared float P[CHUNK * CHUNK];
shared float gam[CHUNK];

void main() {
  const uint n = gl_WorkGroupID.x, j = gl_WorkGroupID.y, b = gl_WorkGroupID.z;
  const uint tid = gl_LocalInvocationID.x, threads = gl_WorkGroupSize.x;
  const uint hv = p.value_heads;
  const uint kh = j / (hv / p.key_heads);
  const uint width = 2u * p.key_heads * p.dk + hv * p.dv;
  const uint q_col = kh * p.dk, k_col = (p.key_heads + kh) * p.dk;
  const uint first_row = b * p.tokens + n * CHUNK;
  const uint len = min(CHUNK, p.tokens - n * CHUNK);
  const uint chunks = (p.tokens + CHUNK - 1u) / CHUNK;
  const uint snap_base = ((b * chunks + n) * hv + j) * p.dk * p.dv;

  for (uint r = tid; r < len; r += threads) gam[r] = p.gamma.v[(first_row + r) * hv + j];
  barrier();
  for (uint e = tid; e < CHUNK * CHUNK; e += threads) {
    const uint r = e / CHUNK, i = e % CHUNK;
    float value = 0.0;
    if (i <= r && r < len) {
      float dot_qk = 0.0;
      for (uint d = 0; d < p.dk; ++d)
        dot_qk += p.qkv.v[(first_row + r) * width + q_col + d] * p.qkv.v[(first_row + i) * width + k_col + d];
      value = exp(gam[r] - gam[i]) * dot_qk;
    }
    P[e] = value;
  }
  barrier();
  for (uint e = tid; e < len * p.dv; e += threads) {
    const uint r = e / p.dv, c = e % p.dv;
    float inter = 0.0;
    for (uint i = 0; i < p.dk; ++i)
      inter += p.qkv.v[(first_row + r) * width + q_col + i] * p.snapshots.v[snap_base + i * p.dv + c];
    float s = exp(gam[r]) * inter;
    for (uint i = 0; i <= r; ++i) s += P[r * CHUNK + i] * p.u.v[((first_row + i) * hv + j) * p.dv + c];
    p.o.v[((first_row + r) * hv + j) * p.dv + c] = s;
  }
}
