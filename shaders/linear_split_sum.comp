#version 460
// y[i] = the sum of a K-split product's parts (linear_gemm_coopmat.comp with K_PART), added in
// part order, so an output's value depends only on the split, never on the workgroup that wrote it.
#include "common.glsl"

layout(push_constant) uniform Push {
  F32Buf parts;  // [count_parts, count]
  F32Buf y;      // [count]
  uint count;
  uint count_parts;
} p;

void main() {
  const uint i = (gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x) * gl_WorkGroupSize.x + gl_LocalInvocationID.x;
  if (i >= p.count) return;
  float sum = p.parts.v[i];
  for (uint j = 1u; j < p.count_parts; ++j) sum += p.parts.v[j * p.count + i];
  p.y.v[i] = sum;
}
