#version 460
// Deterministic random weights written straight into a tensor in its storage type, for
// synthetic models (`--synthetic`): no checkpoint, no host traffic. Word w of the tensor gets
// h = hash32(w ^ hash32(seed)); values are uniform in [lo, hi]. Quantised blocks get a header
// whose scale spans [lo, hi] and random codes.
#include "common.glsl"

layout(push_constant) uniform Push {
  U32Buf dst;
  uint words;
  uint dtype;
  uint seed;
  float lo;
  float hi;
} p;

float unit_interval(uint h) { return float(h >> 8) * (1.0 / 16777216.0); }  // [0, 1)

void main() {
  const uint key = hash32(p.seed);
  const uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
  for (uint w = gl_GlobalInvocationID.x; w < p.words; w += stride) {
    const uint h = hash32(w ^ key);
    uint v = h;  // quantised code words: every bit pattern is a valid code
    if (p.dtype == DTYPE_F32) {
      v = floatBitsToUint(p.lo + (p.hi - p.lo) * unit_interval(h));
    } else if (p.dtype == DTYPE_F16 || p.dtype == DTYPE_BF16) {
      const float a = p.lo + (p.hi - p.lo) * unit_interval(h);
      const float b = p.lo + (p.hi - p.lo) * unit_interval(hash32(h));
      v = p.dtype == DTYPE_F16 ? packHalf2x16(vec2(a, b))
                               : (floatBitsToUint(a) >> 16) | (floatBitsToUint(b) & 0xFFFF0000u);
    } else if (p.dtype == DTYPE_Q8 && w % 9u == 0u) {
      v = packHalf2x16(vec2(max(abs(p.lo), abs(p.hi)) / 127.0, 0.0));
    } else if (p.dtype == DTYPE_Q4 && w % 5u == 0u) {
      v = packHalf2x16(vec2((p.hi - p.lo) / 15.0, p.lo));
    }
    p.dst.v[w] = v;
  }
}
