#version 460
// MoE routing and grouping of a small step (the host sends single-token decode steps) in one
// workgroup: it routes each token in turn exactly as moe_route.comp does (the same code,
// moe_route.glsl, so a token's experts and weights do not depend on which kernel routed it), keeps
// the chosen experts in shared memory, then groups them as moe_group.comp does. One dispatch and
// one barrier instead of two of each per MoE layer.
#include "common.glsl"

layout(constant_id = 3) const uint MAX_EXPERTS = 512;
const uint MAX_ASSIGNMENTS = 128;  // tokens x top_k; the host checks it

layout(push_constant) uniform Push {
  F32Buf logits;   // [tokens, logit_stride]; experts in columns [0, experts)
  U32Buf ids;      // [tokens, top_k]
  F32Buf weights;  // [tokens, top_k]
  uint experts;
  uint top_k;
  uint logit_stride;
  uint normalise;
  U32Buf status;   // [1]: set to 1 on a NaN/+Inf logit (when has_status)
  uint has_status;
  uint tokens;
  U32Buf offsets;  // [experts + 1]
  U32Buf sorted;   // [assignments]
  U32Buf live;     // [1 + experts + 6]
  uint tile_rows;
  uint gate_up_columns, down_columns;
} p;

shared uint chosen[MAX_ASSIGNMENTS];

#define ROUTE_CHOSEN(a, e) chosen[a] = (e)
#include "moe_route.glsl"
#define EXPERT_OF(a) chosen[a]
#include "moe_group.glsl"

void main() {
  for (uint row = 0; row < p.tokens; ++row) route_row(row);
  barrier();
  group_assignments(p.tokens * p.top_k);
}
