#version 460
// MoE routing and grouping of a single-token step on CPU shapes in one workgroup (GPU shapes
// route small steps with moe_route.comp and skip the grouping: moe_expert_gemv.comp's DIRECT):
// it routes the token exactly as moe_route.comp does (the same code, moe_route.glsl, so its
// experts and weights do not depend on which kernel routed it), then writes what moe_group.comp
// would write for it. One dispatch and one barrier instead of two of each per MoE layer.
//
// One token's top-k experts are distinct, so every chosen expert holds exactly one assignment:
// the grouping is a rank among top_k values, with no counts, atomics, scans or barriers. Experts
// are listed ascending and each expert's assignment id is its choice index, as moe_group.comp
// lists them for one token.
#include "common.glsl"
#extension GL_EXT_control_flow_attributes : require

layout(constant_id = 3) const uint MAX_EXPERTS = 512;
layout(constant_id = 4) const uint MAX_CHOICES = 10;  // top_k

layout(push_constant) uniform Push {
  F32Buf logits;   // [1, logit_stride]; experts in columns [0, experts)
  U32Buf ids;      // [1, top_k]
  F32Buf weights;  // [1, top_k]
  uint experts;
  uint top_k;
  uint logit_stride;
  uint normalise;
  U32Buf status;   // [1]: set to 1 on a NaN/+Inf logit (when has_status)
  uint has_status;
  U32Buf offsets;  // [experts + 1]
  U32Buf sorted;   // [top_k]
  U32Buf live;     // [1 + experts + 6]
  uint gate_up_columns, down_columns;
} p;

#include "moe_route.glsl"
#include "moe_grids.glsl"

// Chosen experts below e: e's offset among the assignments sorted by expert.
uint chosen_below(uint e) {
  uint below = 0u;
  for (uint j = 0u; j < p.top_k; ++j) below += choice_id[j] < e ? 1u : 0u;
  return below;
}

void main() {
  route_row(0u);  // choice_id is read-only from here: no barrier needed
  const uint tid = gl_LocalInvocationID.x;
  for (uint j = tid; j < p.top_k; j += gl_WorkGroupSize.x) {
    const uint e = choice_id[j], rank = chosen_below(e);
    p.live.v[1u + rank] = e;
    p.sorted.v[rank] = j;
  }
  for (uint e = tid; e <= p.experts; e += gl_WorkGroupSize.x) p.offsets.v[e] = chosen_below(e);
  if (tid == 0u) {
    p.live.v[0] = p.top_k;
    write_expert_grids(1u, p.top_k);  // one row tile: no expert holds two rows
  }
}
