#version 460
// Chunked gated delta rule, step 1 of 3 (spec §6): everything inside one chunk that does not
// depend on the state. One workgroup per (chunk n, value head j, sequence b):
//   gamma_r = sum_{m<=r} g_m                       (written out for steps 2 and 3)
//   A = -L,  L_ri = beta_r exp(gamma_r - gamma_i) (k_r . k_i)   for i < r
//   T = (I + L)^-1 by forward substitution on A (HF's loop), kept in shared memory
//   W  = T (beta V),   Kc = T (beta exp(gamma) K)
// exp() only ever sees gamma_r - gamma_i with i <= r, which is <= 0 (spec §8.4).
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

shared float A[CHUNK * CHUNK];
shared float gam[CHUNK];
shared float bet[CHUNK];
shared float new_row[CHUNK];

void main() {
  const uint n = gl_WorkGroupID.x, j = gl_WorkGroupID.y, b = gl_WorkGroupID.z;
  const uint tid = gl_LocalInvocationID.x, threads = gl_WorkGroupSize.x;
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
  for (uint r = tid; r < len; r += threads) p.gamma.v[(first_row + r) * hv + j] = gam[r];

  for (uint e = tid; e < CHUNK * CHUNK; e += threads) {
    const uint r = e / CHUNK, i = e % CHUNK;
    float value = 0.0;
    if (i < r && r < len) {
      float dot_kk = 0.0;
      for (uint d = 0; d < p.dk; ++d)
        dot_kk += p.qkv.v[(first_row + r) * width + k_col + d] * p.qkv.v[(first_row + i) * width + k_col + d];
      value = -bet[r] * exp(gam[r] - gam[i]) * dot_kk;
    }
    A[e] = value;
  }
  barrier();

  // Row r becomes A0[r][i] + sum_{i<m<r} A0[r][m] * A[m][i], with rows < r already final.
  for (uint r = 2; r < len; ++r) {
    for (uint i = tid; i < r; i += threads) {
      float s = A[r * CHUNK + i];
      for (uint m = i + 1u; m < r; ++m) s += A[r * CHUNK + m] * A[m * CHUNK + i];
      new_row[i] = s;
    }
    barrier();
    for (uint i = tid; i < r; i += threads) A[r * CHUNK + i] = new_row[i];
    barrier();
  }

  // T = A + I: the diagonal term is the row itself.
  for (uint e = tid; e < len * p.dv; e += threads) {
    const uint r = e / p.dv, c = e % p.dv;
    float s = bet[r] * p.qkv.v[(first_row + r) * width + v_col + c];
    for (uint i = 0; i < r; ++i) s += A[r * CHUNK + i] * bet[i] * p.qkv.v[(first_row + i) * width + v_col + c];
    p.w.v[((first_row + r) * hv + j) * p.dv + c] = s;
  }
  for (uint e = tid; e < len * p.dk; e += threads) {
    const uint r = e / p.dk, c = e % p.dk;
    float s = bet[r] * exp(gam[r]) * p.qkv.v[(first_row + r) * width + k_col + c];
    for (uint i = 0; i < r; ++i)
      s += A[r * CHUNK + i] * bet[i] * exp(gam[i]) * p.qkv.v[(first_row + i) * width + k_col + c];
    p.kc.v[((first_row + r) * hv + j) * p.dk + c] = s;
  }
}
