#version 460
// Per-token preparation for the gated delta rule (spec §3.3, §8.2, §8.13), after the conv:
//   workgroups x < 2 Hk: l2-normalise one q or k head in place, x * rsqrt(sum(x^2) + 1e-6),
//                        and scale q by dk^-1/2;
//   workgroup  x = 2 Hk: the gates of every value head of the row,
//                        g = -exp(A_log) * softplus(a + dt_bias),  beta = sigmoid(b).
// One row (token) per workgroup y.
#include "common.glsl"

layout(push_constant) uniform Push {
  F32Buf qkv;      // [rows, 2 Hk dk + Hv dv]
  F32Buf ba;       // [rows, 2 Hv]: b | a
  F32Buf a_log;    // [Hv]
  F32Buf dt_bias;  // [Hv]
  F32Buf gates;    // [rows, 2 Hv]: g | beta
  uint key_heads;
  uint value_heads;
  uint dk;
  uint dv;
} p;

shared float partial[gl_WorkGroupSize.x];

void main() {
  const uint head = gl_WorkGroupID.x;
  const uint row = gl_WorkGroupID.y;
  const uint hv = p.value_heads;
  if (head == 2u * p.key_heads) {
    for (uint j = gl_LocalInvocationID.x; j < hv; j += gl_WorkGroupSize.x) {
      const float b = p.ba.v[row * 2u * hv + j];
      const float a = p.ba.v[row * 2u * hv + hv + j];
      p.gates.v[row * 2u * hv + j] = -exp(p.a_log.v[j]) * softplus(a + p.dt_bias.v[j]);
      p.gates.v[row * 2u * hv + hv + j] = sigmoid(b);
    }
    return;
  }
  const uint width = 2u * p.key_heads * p.dk + hv * p.dv;
  const uint base = row * width + head * p.dk;
  float sum_sq = 0.0;
  for (uint i = gl_LocalInvocationID.x; i < p.dk; i += gl_WorkGroupSize.x) sum_sq += p.qkv.v[base + i] * p.qkv.v[base + i];
  float total;
  Q3N_WORKGROUP_SUM(sum_sq, partial, total);
  float scale = inversesqrt(total + 1e-6);
  if (head < p.key_heads) scale *= inversesqrt(float(p.dk));  // q only
  for (uint i = gl_LocalInvocationID.x; i < p.dk; i += gl_WorkGroupSize.x) p.qkv.v[base + i] *= scale;
}
