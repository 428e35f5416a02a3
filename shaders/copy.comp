#version 460
// dst = src, 16 bytes per invocation step. Used to measure the device's achievable memory
// bandwidth in the same run as a benchmark (`q3n bench`), so "fraction of the bound" compares
// against what this device really does, not a datasheet figure.
#include "common.glsl"

layout(buffer_reference, std430, buffer_reference_align = 16) buffer Vec4Buf { uvec4 v[]; };

layout(push_constant) uniform Push {
  Vec4Buf src;
  Vec4Buf dst;
  uint vectors;  // 16-byte units
} p;

void main() {
  const uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
  for (uint i = gl_GlobalInvocationID.x; i < p.vectors; i += stride) p.dst.v[i] = p.src.v[i];
}
