#version 460
// The expert down product and moe_combine.comp in one dispatch, for the CPU shapes: one output
// element (token t, column d) per invocation, walking the token's top_k assignments in choice
// order:
//   out[t, d] = sum_j w[t, j] (h[t top_k + j] . down_{e(t, j)}[d])  +  sigmoid(shared_logit[t]) shared[t, d]
// Each dot product runs over K in the order of moe_expert_gemv_rowwise.comp, and the weighted sum
// in the order of moe_combine.comp, so a token's output depends on nothing else in the step
// (batch invariance). One dispatch and one barrier fewer per MoE layer than the two kernels:
// a CPU driver charges ~40 µs for each (bench/NOTES.md, session 18). No shared memory, barrier
// or subgroup operation. The Q3N_TEXEL variant (VEC8 = 1) reads the weights and h through
// texel views (texel_reads.glsl).
#include "common.glsl"
#include "moe_combine_terms.glsl"

layout(constant_id = 3) const uint WEIGHT_DTYPE = DTYPE_BF16;
layout(constant_id = 4) const uint VEC8 = 1;

layout(push_constant) uniform Push {
  F32Buf h;             // [tokens * top_k, K]: silu(gate) * up of each assignment
  U32Buf weight;        // down: [experts, N, K]
  U32Buf ids;           // [tokens, top_k]: the expert of each assignment
  F32Buf weights;       // [tokens, top_k]
  F32Buf shared_out;    // [tokens, N] (when has_shared)
  F32Buf shared_logit;  // element t * logit_stride (when has_shared)
  F32Buf dst;           // [tokens, N]
  uint k;
  uint n;
  uint top_k;
  uint logit_stride;
  uint has_shared;
  uint weight_texel;  // first word of the weights / h in their blocks' texel views (Q3N_TEXEL)
  uint x_texel;
} p;

#ifdef Q3N_TEXEL
#include "texel_reads.glsl"
#endif

void main() {
  const uint t = gl_WorkGroupID.y;
  const uint d = gl_GlobalInvocationID.x;
  if (d >= p.n) return;  // no barrier follows
  float sum = 0.0;
  for (uint j = 0; j < p.top_k; ++j) {
    const uint assignment = t * p.top_k + j;
    const uint row = p.ids.v[assignment] * p.n + d;
    float acc = 0.0;
    if (VEC8 != 0u) {
      for (uint u = 0; u < (p.k >> 3); ++u) {
        float w[8];
#ifdef Q3N_TEXEL
        texel_weight_unit(p.weight_texel, WEIGHT_DTYPE, row, p.k, u, w);
        acc += texel_dot8(w, p.x_texel, assignment * p.k + u * 8u);
#else
        load_weight_unit(p.weight, WEIGHT_DTYPE, row, p.k, u, w);
        acc += dot8(w, F32x4Buf(p.h), assignment * p.k + u * 8u);
#endif
      }
    } else {
      for (uint i = 0; i < p.k; ++i) acc += load_weight(p.weight, WEIGHT_DTYPE, row * p.k + i) * p.h.v[assignment * p.k + i];
    }
    sum = combine_choice(sum, p.weights.v[assignment], acc);
  }
  if (p.has_shared != 0u) sum = combine_shared_expert(sum, p.shared_logit.v[t * p.logit_stride], p.shared_out.v[t * p.n + d]);
  p.dst.v[t * p.n + d] = sum;
}
