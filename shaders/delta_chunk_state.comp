#version 460
// Chunked gated delta rule, step 2 of 3 (spec §6): the sequential pass over chunks. One
// workgroup per (tile of DV_TILE value columns, value head j, sequence b) holds its slice of the
// state S [dk, DV_TILE] in shared memory, starting from the sequence's cached state:
//   snapshot_n = S
//   U  = W - Kc S                                            (pseudo-values, written out)
//   S  = exp(gamma_last) S + sum_r exp(gamma_last - gamma_r) k_r U_r^T
// and writes the final S back to the state slot.
#include "common.glsl"

layout(constant_id = 3) const uint CHUNK = 64;
layout(constant_id = 4) const uint DV_TILE = 16;
layout(constant_id = 5) const uint MAX_DK = 256;

layout(push_constant) uniform Push {
  F32Buf qkv;        // [B*T, 2 Hk dk + Hv dv], prepared
  F32Buf gamma;      // [B*T, Hv]
  F32Buf w;          // [B*T, Hv, dv]
  F32Buf kc;         // [B*T, Hv, dk]
  F32Buf u;          // [B*T, Hv, dv]
  F32Buf snapshots;  // [B, chunks, Hv, dk, dv]
  F32Buf state;      // [slots, Hv, dk, dv]
  U32Buf seqs;       // [B, 2]
  uint tokens;
  uint key_heads;
  uint value_heads;
  uint dk;
  uint dv;
} p;

shared float S[MAX_DK * DV_TILE];
shared float U[CHUNK * DV_TILE];
shared float decay_to_end[CHUNK];

void main() {
  const uint c0 = gl_WorkGroupID.x * DV_TILE, j = gl_WorkGroupID.y, b = gl_WorkGroupID.z;
  const uint tid = gl_LocalInvocationID.x, threads = gl_WorkGroupSize.x;
  const uint hv = p.value_heads;
  const uint kh = j / (hv / p.key_heads);
  const uint width = 2u * p.key_heads * p.dk + hv * p.dv;
  const uint k_col = (p.key_heads + kh) * p.dk;
  const uint tile = min(DV_TILE, p.dv - c0);
  const uint state_base = (seq_slot(p.seqs, b) * hv + j) * p.dk * p.dv;
  const uint chunks = (p.tokens + CHUNK - 1u) / CHUNK;

  for (uint e = tid; e < p.dk * DV_TILE; e += threads) {
    const uint i = e / DV_TILE, c = e % DV_TILE;
    S[e] = c < tile ? p.state.v[state_base + i * p.dv + c0 + c] : 0.0;
  }
  barrier();
  for (uint n = 0; n < chunks; ++n) {
    const uint first_row = b * p.tokens + n * CHUNK;
    const uint len = min(CHUNK, p.tokens - n * CHUNK);
    const uint snap_base = ((b * chunks + n) * hv + j) * p.dk * p.dv;
    for (uint e = tid; e < p.dk * DV_TILE; e += threads) {
      const uint i = e / DV_TILE, c = e % DV_TILE;
      if (c < tile) p.snapshots.v[snap_base + i * p.dv + c0 + c] = S[e];
    }
    for (uint e = tid; e < len * DV_TILE; e += threads) {
      const uint r = e / DV_TILE, c = e % DV_TILE;
      float s = 0.0;
      if (c < tile) {
        const uint row_head = (first_row + r) * hv + j;
        s = p.w.v[row_head * p.dv + c0 + c];
        for (uint i = 0; i < p.dk; ++i) s -= p.kc.v[row_head * p.dk + i] * S[i * DV_TILE + c];
        p.u.v[row_head * p.dv + c0 + c] = s;
      }
      U[e] = s;
    }
    const float gamma_last = p.gamma.v[(first_row + len - 1u) * hv + j];
    for (uint r = tid; r < len; r += threads) decay_to_end[r] = exp(gamma_last - p.gamma.v[(first_row + r) * hv + j]);
    barrier();
    const float decay_all = exp(gamma_last);
    for (uint e = tid; e < p.dk * DV_TILE; e += threads) {
      const uint i = e / DV_TILE, c = e % DV_TILE;
      float s = decay_all * S[e];
      for (uint r = 0; r < len; ++r) s += decay_to_end[r] * p.qkv.v[(first_row + r) * width + k_col + i] * U[r * DV_TILE + c];
      S[e] = s;
    }
    barrier();
  }
  for (uint e = tid; e < p.dk * DV_TILE; e += threads) {
    const uint i = e / DV_TILE, c = e % DV_TILE;
    if (c < tile) p.state.v[state_base + i * p.dv + c0 + c] = S[e];
  }
}
