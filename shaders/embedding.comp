#version 460
// Embedding gather (spec §3.1): out[t, :] = float(table[ids[t], :]); no scaling.
// One workgroup per token. The host validates ids (< rows) before they reach the GPU.
#include "common.glsl"

layout(constant_id = 3) const uint WEIGHT_DTYPE = DTYPE_BF16;

layout(push_constant) uniform Push {
  U32Buf table;  // [rows, dim] as WEIGHT_DTYPE
  I32Buf ids;    // [tokens]
  F32Buf dst;    // [tokens, dim]
  uint dim;
  uint tokens;
} p;

void main() {
  const uint t = gl_WorkGroupID.x;
  if (t >= p.tokens) return;
  const uint row = uint(p.ids.v[t]);
  for (uint i = gl_LocalInvocationID.x; i < p.dim; i += gl_WorkGroupSize.x)
    p.dst.v[t * p.dim + i] = load_weight(p.table, WEIGHT_DTYPE, row * p.dim + i);
}
