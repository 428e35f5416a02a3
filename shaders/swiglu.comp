#version 460
// SwiGLU between a fused gate|up projection and the down projection (dense MLP, shared
// expert): h[r, i] = silu(x[r, i]) * x[r, n + i] for x = [rows, 2n].
#include "common.glsl"

layout(push_constant) uniform Push {
  F32Buf x;  // [rows, 2n]
  F32Buf h;  // [rows, n]
  uint n;
  uint rows;
} p;

void main() {
  const uint i = gl_GlobalInvocationID.x, r = gl_WorkGroupID.y;
  if (i >= p.n) return;
  p.h.v[r * p.n + i] = silu(p.x.v[r * 2u * p.n + i]) * p.x.v[r * 2u * p.n + p.n + i];
}
