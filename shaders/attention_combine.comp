#version 460
// Merges the per-split partial results of attention.comp (flash-decoding) and applies the
// sigmoid output gate: with M = max_s m_s,
//   o = sum_s exp(m_s - M) o_s / sum_s exp(m_s - M) l_s,   out = o * sigmoid(gate).
// One workgroup per (token, q head) row of one sequence; invocations over head dims.
#include "common.glsl"

layout(push_constant) uniform Push {
  F32Buf part_o;   // [B, splits, T, Hq, hd]
  F32Buf part_ml;  // [B, splits, T, Hq, 2]
  F32Buf qkv;      // projection rows, for the gate
  F32Buf dst;      // [B*T, Hq*hd]
  uint tokens;
  uint heads;
  uint kv_heads;
  uint head_dim;
  uint splits;
} p;

void main() {
  const uint th = gl_WorkGroupID.x;  // t * Hq + h
  const uint b = gl_WorkGroupID.y;
  const uint t = th / p.heads, h = th % p.heads;
  const uint hd = p.head_dim;
  const uint stride = p.tokens * p.heads;  // between splits
  const uint base = b * p.splits * stride + th;
  float m = uintBitsToFloat(0xFF800000u);
  for (uint s = 0; s < p.splits; ++s) m = max(m, p.part_ml.v[(base + s * stride) * 2u]);
  float total = 0.0;
  for (uint s = 0; s < p.splits; ++s) {
    const float ms = p.part_ml.v[(base + s * stride) * 2u];
    if (ms != uintBitsToFloat(0xFF800000u)) total += exp(ms - m) * p.part_ml.v[(base + s * stride) * 2u + 1u];
  }
  const uint bt = b * p.tokens + t;
  const uint width = (2u * p.heads + 2u * p.kv_heads) * hd;
  for (uint d = gl_LocalInvocationID.x; d < hd; d += gl_WorkGroupSize.x) {
    float o = 0.0;
    for (uint s = 0; s < p.splits; ++s) {
      const float ms = p.part_ml.v[(base + s * stride) * 2u];
      if (ms != uintBitsToFloat(0xFF800000u)) o += exp(ms - m) * p.part_o.v[(base + s * stride) * hd + d];
    }
    const float gate = p.qkv.v[bt * width + h * 2u * hd + hd + d];
    p.dst.v[(bt * p.heads + h) * hd + d] = o / total * sigmoid(gate);
  }
}
