#version 460
// Chunked gated delta rule, step 2 of 3 (spec §6): the sequential pass over chunks. One
// workgroup per (tile of DV_TILE value columns, value head j, sequence b) holds its slice of the
// state S [dk, DV_TILE] in shared memory, starting from the sequence's cached state:
//   snapshot_n = S
//   U  = W - Kc S                                            (pseudo-values, written out)
//   S  = exp(gamma_last) S + sum_r exp(gamma_last - gamma_r) k_r U_r^T
// and writes the final S back to the state slot.
//
// 256 invocations: invocation t owns column t % DV_TILE, rows t / DV_TILE + GROUPS a of U and
// rows S_ROWS (t / DV_TILE) + a of S, accumulating in registers over operands staged in shared
// memory KS at a time and read four at a time (vec4) along the staged rows.
#include "common.glsl"

layout(constant_id = 3) const uint CHUNK = 64;
layout(constant_id = 4) const uint DV_TILE = 16;  // 16 or 8
layout(constant_id = 5) const uint MAX_DK = 128;  // dk rounded up to a multiple of 4 GROUPS

const uint THREADS = 256;  // the host's workgroup size
const uint GROUPS = THREADS / DV_TILE;
const uint KS = 16;                 // depth of a staged slice
const uint LS4 = KS / 4u + 1u;      // row stride (vec4) of a staged Kc slice [CHUNK][KS]
const uint S_ROWS = MAX_DK / GROUPS;  // state rows per invocation, a multiple of 4
const uint MAX_U_ROWS = 4;   // CHUNK / GROUPS for DV_TILE <= 16
const uint MAX_S_ROWS = 16;  // S_ROWS for MAX_DK <= 256

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
// Kc slices [CHUNK][KS], then decayed K slices [KS][MAX_DK], as vec4.
shared vec4 stage[KS * MAX_DK / 4u > CHUNK * LS4 ? KS * MAX_DK / 4u : CHUNK * LS4];
shared float decay_to_end[CHUNK];

void main() {
  const uint c0 = gl_WorkGroupID.x * DV_TILE, j = gl_WorkGroupID.y, b = gl_WorkGroupID.z;
  const uint tid = gl_LocalInvocationID.x;
  const uint c = tid % DV_TILE, g = tid / DV_TILE;
  const uint hv = p.value_heads;
  const uint kh = j / (hv / p.key_heads);
  const uint width = 2u * p.key_heads * p.dk + hv * p.dv;
  const uint k_col = (p.key_heads + kh) * p.dk;
  const uint tile = min(DV_TILE, p.dv - c0);
  const uint state_base = (seq_slot(p.seqs, b) * hv + j) * p.dk * p.dv;
  const uint chunks = (p.tokens + CHUNK - 1u) / CHUNK;

  for (uint e = tid; e < MAX_DK * DV_TILE; e += THREADS) {
    const uint i = e / DV_TILE, cc = e % DV_TILE;
    S[e] = i < p.dk && cc < tile ? p.state.v[state_base + i * p.dv + c0 + cc] : 0.0;
  }
  barrier();
  for (uint n = 0; n < chunks; ++n) {
    const uint first_row = b * p.tokens + n * CHUNK;
    const uint len = min(CHUNK, p.tokens - n * CHUNK);
    const uint snap_base = ((b * chunks + n) * hv + j) * p.dk * p.dv;
    for (uint e = tid; e < p.dk * DV_TILE; e += THREADS) {
      const uint i = e / DV_TILE, cc = e % DV_TILE;
      if (cc < tile) p.snapshots.v[snap_base + i * p.dv + c0 + cc] = S[e];
    }
    const float gamma_last = p.gamma.v[(first_row + len - 1u) * hv + j];
    for (uint r = tid; r < CHUNK; r += THREADS)
      decay_to_end[r] = r < len ? exp(gamma_last - p.gamma.v[(first_row + r) * hv + j]) : 0.0;

    // U = W - Kc S
    float ua[MAX_U_ROWS];
    for (uint a = 0; a < CHUNK / GROUPS; ++a) ua[a] = 0.0;
    for (uint d0 = 0; d0 < p.dk; d0 += KS) {
      for (uint e = tid; e < CHUNK * KS; e += THREADS) {
        const uint r = e / KS, d = e % KS;
        stage[r * LS4 + d / 4u][d % 4u] =
            r < len && d0 + d < p.dk ? p.kc.v[((first_row + r) * hv + j) * p.dk + d0 + d] : 0.0;
      }
      barrier();
      for (uint d4 = 0; d4 < KS / 4u; ++d4) {
        vec4 s;
        for (uint k = 0; k < 4u; ++k) s[k] = S[(d0 + 4u * d4 + k) * DV_TILE + c];
        for (uint a = 0; a < CHUNK / GROUPS; ++a) ua[a] += dot(stage[(g + GROUPS * a) * LS4 + d4], s);
      }
      barrier();
    }
    for (uint a = 0; a < CHUNK / GROUPS; ++a) {
      const uint r = g + GROUPS * a;
      float value = 0.0;
      if (r < len && c < tile) {
        const uint at = ((first_row + r) * hv + j) * p.dv + c0 + c;
        value = p.w.v[at] - ua[a];
        p.u.v[at] = value;
      }
      U[r * DV_TILE + c] = value;
    }
    barrier();

    // S = exp(gamma_last) S + (decay o K)^T U
    float sa[MAX_S_ROWS];
    for (uint a = 0; a < S_ROWS; ++a) sa[a] = 0.0;
    for (uint r0 = 0; r0 < len; r0 += KS) {
      for (uint e = tid; e < KS * MAX_DK; e += THREADS) {
        const uint r = e / MAX_DK, i = e % MAX_DK;
        stage[e / 4u][e % 4u] = r0 + r < len && i < p.dk
                                    ? decay_to_end[r0 + r] * p.qkv.v[(first_row + r0 + r) * width + k_col + i]
                                    : 0.0;
      }
      barrier();
      for (uint r = 0; r < KS; ++r) {
        const float uu = U[(r0 + r) * DV_TILE + c];
        for (uint a4 = 0; a4 < S_ROWS / 4u; ++a4) {
          const vec4 k = stage[(r * MAX_DK + g * S_ROWS) / 4u + a4];
          for (uint k4 = 0; k4 < 4u; ++k4) sa[4u * a4 + k4] += k[k4] * uu;
        }
      }
      barrier();
    }
    const float decay_all = exp(gamma_last);
    for (uint a = 0; a < S_ROWS; ++a) {
      const uint at = (g * S_ROWS + a) * DV_TILE + c;
      S[at] = decay_all * S[at] + sa[a];
    }
    barrier();
  }
  for (uint e = tid; e < p.dk * DV_TILE; e += THREADS) {
    const uint i = e / DV_TILE, cc = e % DV_TILE;
    if (cc < tile) p.state.v[state_base + i * p.dv + c0 + cc] = S[e];
  }
}
