#version 460
// Gated attention, per-token preparation (spec §3.6, §3.7, §8.8): from the fused projection row
//   [ (query | gate) per q head | k per kv head | v per kv head ]
// workgroup x < Hq:  q = RoPE(RMSNorm_zc(query, q_norm))   -> q_out
// workgroup x >= Hq: k = RoPE(RMSNorm_zc(k, k_norm)), v    -> the KV cache at the token's
//                    absolute position, in the sequence's slot
// RoPE is NeoX rotate-half over the first rot_dim dims, angle = position * inv_freq[i] in fp32
// (rounded, as in HF), sin/cos accurate at long positions (common.glsl).
#include "common.glsl"

layout(constant_id = 3) const uint MAX_HEAD_DIM = 256;

layout(push_constant) uniform Push {
  F32Buf qkv;      // [B*T, Hq*2*hd + 2*Hkv*hd]
  F32Buf q_norm;   // [hd] zero-centred
  F32Buf k_norm;   // [hd] zero-centred
  F32Buf inv_freq; // [rot_dim / 2], computed on the host exactly as HF does (GPU pow is too coarse)
  U32Buf seqs;     // [B, 2]
  F32Buf cache_k;  // [slots, Hkv, capacity, hd]
  F32Buf cache_v;  // [slots, Hkv, capacity, hd]
  F32Buf q_out;    // [B*T, Hq, hd]
  uint tokens;
  uint heads;
  uint kv_heads;
  uint head_dim;
  uint rot_dim;
  uint capacity;
  float eps;
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
  const uint half_rot = p.rot_dim / 2u;
  const uint slot = seq_slot(p.seqs, b);
  const uint cache_row = ((slot * p.kv_heads + kv) * p.capacity + position) * hd;
  if (!is_query && position >= p.capacity) return;  // the host rejects this before recording
  for (uint d = gl_LocalInvocationID.x; d < hd; d += gl_WorkGroupSize.x) {
    float value = normed[d];
    if (d < p.rot_dim) {
      const uint i = d % half_rot;
      // precise: HF rounds the fp32 product before cos/sin; a contracted fma would not.
      precise const float angle = float(position) * p.inv_freq.v[i];
      float s, c;
      sincos_accurate(angle, s, c);
      value = d < half_rot ? normed[d] * c - normed[d + half_rot] * s : normed[d] * c + normed[d - half_rot] * s;
    }
    if (is_query) {
      p.q_out.v[(row * p.heads + head) * hd + d] = value;
    } else {
      p.cache_k.v[cache_row + d] = value;
      p.cache_v.v[cache_row + d] = p.qkv.v[src + p.kv_heads * hd + d];
    }
  }
}
