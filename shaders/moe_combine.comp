#version 460
// Weighted sum of the routed experts' outputs back in token order, plus the shared expert
// scaled by its per-token sigmoid gate (spec §3.8):
//   out[t] = sum_j w[t, j] y[t * top_k + j]  +  sigmoid(shared_logit[t]) * shared[t]
// The sum runs in choice order (moe_combine_terms.glsl), so results do not depend on how
// assignments were grouped, nor on whether moe_expert_gemv_combine (the same sum) ran instead.
#include "common.glsl"
#include "moe_combine_terms.glsl"

layout(push_constant) uniform Push {
  F32Buf y;             // [tokens * top_k, hidden]
  F32Buf weights;       // [tokens, top_k]
  F32Buf shared_out;    // [tokens, hidden] (when has_shared)
  F32Buf shared_logit;  // element t * logit_stride (when has_shared)
  F32Buf dst;           // [tokens, hidden]
  uint hidden;
  uint top_k;
  uint logit_stride;
  uint has_shared;
} p;

void main() {
  const uint t = gl_WorkGroupID.y;
  const uint d = gl_GlobalInvocationID.x;
  if (d >= p.hidden) return;
  float sum = 0.0;
  for (uint j = 0; j < p.top_k; ++j)
    sum = combine_choice(sum, p.weights.v[t * p.top_k + j], p.y.v[(t * p.top_k + j) * p.hidden + d]);
  if (p.has_shared != 0u)
    sum = combine_shared_expert(sum, p.shared_logit.v[t * p.logit_stride], p.shared_out.v[t * p.hidden + d]);
  p.dst.v[t * p.hidden + d] = sum;
}
