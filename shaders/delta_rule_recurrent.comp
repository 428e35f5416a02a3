#version 460
// Gated delta rule, recurrent form (spec §3.4), for decode: T tokens processed in order from the
// state S [dk, dv] (fp32, updated in place in the sequence's slot). One workgroup per (value
// head j, sequence b); each invocation owns value columns c of S:
//   S *= exp(g_t);  u = beta_t * (v_t - S^T k_t);  S += k_t u^T;  o_t = S^T q_t
// Value head j reads key head j / (Hv / Hk) (spec §8.10). q, k prepared by delta_prepare.comp.
#include "common.glsl"

layout(constant_id = 3) const uint MAX_DK = 256;

layout(push_constant) uniform Push {
  F32Buf qkv;    // [B*T, 2 Hk dk + Hv dv]: q | k | v
  F32Buf gates;  // [B*T, 2 Hv]: g | beta
  F32Buf state;  // [slots, Hv, dk, dv], read and written
  U32Buf seqs;   // [B, 2] slot, position
  F32Buf o;      // [B*T, Hv, dv]
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
  const uint hv = p.value_heads;
  const uint kh = j / (hv / p.key_heads);
  const uint width = 2u * p.key_heads * p.dk + hv * p.dv;
  const uint state_base = (seq_slot(p.seqs, b) * hv + j) * p.dk * p.dv;
  for (uint t = 0; t < p.tokens; ++t) {
    const uint row = b * p.tokens + t;
    for (uint i = gl_LocalInvocationID.x; i < p.dk; i += gl_WorkGroupSize.x) {
      q_shared[i] = p.qkv.v[row * width + kh * p.dk + i];
      k_shared[i] = p.qkv.v[row * width + (p.key_heads + kh) * p.dk + i];
    }
    barrier();
    const float decay = exp(p.gates.v[row * 2u * hv + j]);
    const float beta = p.gates.v[row * 2u * hv + hv + j];
    const uint v_base = row * width + 2u * p.key_heads * p.dk + j * p.dv;
    for (uint c = gl_LocalInvocationID.x; c < p.dv; c += gl_WorkGroupSize.x) {
      float kv = 0.0;
      for (uint i = 0; i < p.dk; ++i) kv += p.state.v[state_base + i * p.dv + c] * k_shared[i];
      const float u = beta * (p.qkv.v[v_base + c] - decay * kv);
      float out_c = 0.0;
      for (uint i = 0; i < p.dk; ++i) {
        const float s = decay * p.state.v[state_base + i * p.dv + c] + k_shared[i] * u;
        p.state.v[state_base + i * p.dv + c] = s;
        out_c += s * q_shared[i];
      }
      p.o.v[(row * hv + j) * p.dv + c] = out_c;
    }
    barrier();  // k_shared / q_shared are rewritten for the next token
  }
}
