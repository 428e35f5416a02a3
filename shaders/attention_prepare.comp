#version 460
// Gated attention, per-token preparation (spec §3.6, §3.7, §8.8): from the fused projection row
//   [ (query | gate) per q head | k per kv head | v per kv head ]
// workgroup x < Hq:  q = RoPE(RMSNorm_zc(query, q_norm))   -> q_out
// workgroup x >= Hq: k = RoPE(RMSNorm_zc(k, k_norm)), v    -> the KV cache at the token's
//                    absolute position, in the sequence's slot (kv_cache.glsl: stored as
//                    KV_DTYPE, each pair of dims by one invocation)
// RoPE is NeoX rotate-half over the first rot_dim dims, angle = position * inv_freq[i] in fp32
// (rounded, as in HF), sin/cos accurate at long positions (common.glsl).
#include "common.glsl"

layout(constant_id = 3) const uint MAX_HEAD_DIM = 256;
layout(constant_id = 4) const uint KV_DTYPE = DTYPE_F32;
#include "kv_cache.glsl"

layout(push_constant) uniform Push {
  F32Buf qkv;      // [B*T, Hq*2*hd + 2*Hkv*hd]
  F32Buf q_norm;   // [hd] zero-centred
  F32Buf k_norm;   // [hd] zero-centred
  F32Buf inv_freq; // [rot_dim / 2], computed on the host exactly as HF does (GPU pow is too coarse)
  U32Buf seqs;     // [B, 2]
  KvSlotTable kv;  // per slot: its K and V rows [Hkv, capacity, hd]
  F32Buf q_out;    // [B*T, Hq, hd]
  uint tokens;
  uint heads;
  uint kv_heads;
  uint head_dim;
  uint rot_dim;
  uint capacity;
  float eps;
  uint rope_offset;  // RoPE angles at position + rope_offset (0 but in tests)
} p;

shared float partial[gl_WorkGroupSize.x];
shared float normed[MAX_HEAD_DIM];

void main() {
  const uint head = gl_WorkGroupID.x;
  const uint row = gl_WorkGroupID.y;
  const uint b = row / p.tokens, t = row % p.tokens;
  const uint hd = p.head_dim;
  const uint width = (2u * p.heads + 2u * p.kv_heads) * hd;
  const bool is_query = head < p.heads;
  const uint kv = head - p.heads;
  const uint src = row * width + (is_query ? head * 2u * hd : 2u * p.heads * hd + kv * hd);

  float sum_sq = 0.0;
  for (uint d = gl_LocalInvocationID.x; d < hd; d += gl_WorkGroupSize.x) sum_sq += p.qkv.v[src + d] * p.qkv.v[src + d];
  float total;
  Q3N_WORKGROUP_SUM(sum_sq, partial, total);
  const float scale = inversesqrt(total / float(hd) + p.eps);
  for (uint d = gl_LocalInvocationID.x; d < hd; d += gl_WorkGroupSize.x)
    normed[d] = p.qkv.v[src + d] * scale * (1.0 + (is_query ? p.q_norm.v[d] : p.k_norm.v[d]));
  barrier();

  const uint position = seq_position(p.seqs, b) + t;
  if (!is_query && position >= p.capacity) return;  // the host rejects this before recording
  const uint half_rot = p.rot_dim / 2u;
  const uint slot = seq_slot(p.seqs, b);
  const uint cache_row = (kv * p.capacity + position) * hd;  // within the slot's rows
  U32Buf keys = kv_keys(p.kv, slot), values = kv_values(p.kv, slot);
  for (uint d = 2u * gl_LocalInvocationID.x; d < hd; d += 2u * gl_WorkGroupSize.x) {  // hd is even
    vec2 value = vec2(normed[d], normed[d + 1u]);
    for (uint j = 0; j < 2u; ++j) {
      const uint e = d + j;
      if (e >= p.rot_dim) break;
      const uint i = e % half_rot;
      // precise: HF rounds the fp32 product before cos/sin; a contracted fma would not.
      precise const float angle = float(position + p.rope_offset) * p.inv_freq.v[i];
      float s, c;
      sincos_accurate(angle, s, c);
      value[j] = e < half_rot ? normed[e] * c - normed[e + half_rot] * s : normed[e] * c + normed[e - half_rot] * s;
    }
    if (is_query) {
      const uint at = (row * p.heads + head) * hd + d;
      p.q_out.v[at] = value.x;
      p.q_out.v[at + 1u] = value.y;
    } else {
      kv_store_pair(keys, cache_row + d, value);
      kv_store_pair(values, cache_row + d, vec2(p.qkv.v[src + p.kv_heads * hd + d], p.qkv.v[src + p.kv_heads * hd + d + 1u]));
    }
  }
}
