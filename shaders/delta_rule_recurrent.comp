#version 460
// Gated delta rule, recurrent form (spec §3.4), for decode: T tokens processed in order from the
// state S [dk, dv] (fp32, updated in place). One workgroup per (value head j, sequence b); each
// invocation owns value columns c of S:
//   S *= exp(g_t);  u = beta_t * (v_t - S^T k_t);  S += k_t u^T;  o_t = S^T q_t
// q and k are per key head (value head j reads key head j / (Hv / Hk)); q is already l2-normed
// and scaled by dk^-1/2, k l2-normed (spec §3.3).
#include "common.glsl"

layout(constant_id = 3) const uint MAX_DK = 256;

layout(push_constant) uniform Push {
  F32Buf q;      // [B, T, Hk, dk]
  F32Buf k;      // [B, T, Hk, dk]
  F32Buf v;      // [B, T, Hv, dv]
  F32Buf g;      // [B, T, Hv] log-decay (< 0)
  F32Buf beta;   // [B, T, Hv]
  F32Buf state;  // [B, Hv, dk, dv], read and written
  F32Buf o;      // [B, T, Hv, dv]
  uint tokens;
  uint key_heads;
  uint value_heads;
  uint dk;
  uint dv;
} p;

shared float k_shared[MAX_DK];
shared float q_shared[MAX_DK];

void main() {
  const uint j = gl_WorkGroupID.x;  // value head
  const uint b = gl_WorkGroupID.y;  // sequence
  const uint kh = j / (p.value_heads / p.key_heads);
  const uint state_base = (b * p.value_heads + j) * p.dk * p.dv;
  for (uint t = 0; t < p.tokens; ++t) {
    const uint bt = b * p.tokens + t;
    for (uint i = gl_LocalInvocationID.x; i < p.dk; i += gl_WorkGroupSize.x) {
      k_shared[i] = p.k.v[(bt * p.key_heads + kh) * p.dk + i];
      q_shared[i] = p.q.v[(bt * p.key_heads + kh) * p.dk + i];
    }
    barrier();
    const float decay = exp(p.g.v[bt * p.value_heads + j]);
    const float beta = p.beta.v[bt * p.value_heads + j];
    for (uint c = gl_LocalInvocationID.x; c < p.dv; c += gl_WorkGroupSize.x) {
      float kv = 0.0;
      for (uint i = 0; i < p.dk; ++i) kv += p.state.v[state_base + i * p.dv + c] * k_shared[i];
      const float u = beta * (p.v.v[(bt * p.value_heads + j) * p.dv + c] - decay * kv);
      float out_c = 0.0;
      for (uint i = 0; i < p.dk; ++i) {
        const float s = decay * p.state.v[state_base + i * p.dv + c] + k_shared[i] * u;
        p.state.v[state_base + i * p.dv + c] = s;
        out_c += s * q_shared[i];
      }
      p.o.v[(bt * p.value_heads + j) * p.dv + c] = out_c;
    }
    barrier();  // k_shared / q_shared are rewritten for the next token
  }
}
