#version 460
// MoE routing, one token per workgroup (moe_route.glsl).
#include "common.glsl"
#extension GL_EXT_control_flow_attributes : require

layout(constant_id = 3) const uint MAX_EXPERTS = 512;
layout(constant_id = 4) const uint MAX_CHOICES = 10;  // top_k

layout(push_constant) uniform Push {
  F32Buf logits;   // [rows, logit_stride]; experts in columns [0, experts)
  U32Buf ids;      // [rows, top_k]
  F32Buf weights;  // [rows, top_k]
  uint experts;
  uint top_k;
  uint logit_stride;
  uint normalise;
  U32Buf status;   // [1]: set to 1 on a NaN/+Inf logit (when has_status)
  uint has_status;
} p;

#include "moe_route.glsl"

void main() { route_row(gl_WorkGroupID.x); }
