#version 460
// Speculative decoding's acceptance (graph/model_graph.cpp, a verify step). Sequence b's T rows
// were fed the tokens x_0, d_1 .. d_{T-1} (the last sampled token, then the drafts), and the
// target model sampled y_t after row t with the draw plain decoding would make at that position.
// Draft d_{t+1} is accepted while it equals y_t: with greedy drafts this is the speculative
// rejection rule exactly (accept with probability p(d), else a draw from p without d), and the
// emitted tokens y_0 .. y_{a} are those plain decoding emits. count[b] = a + 1: the tokens whose
// state the step commits (x_0 and the accepted drafts), and the tokens emitted.
#include "common.glsl"

layout(push_constant) uniform Push {
  U32Buf ids;      // [B*T] the rows' input tokens (int32 < vocab)
  U32Buf sampled;  // [B*T] the target's token after each row (0xFFFFFFFF for a NaN row)
  U32Buf count;    // [B] out
  uint batch;
  uint tokens;
} p;

void main() {
  const uint b = gl_GlobalInvocationID.x;
  if (b >= p.batch) return;
  uint n = 1u;
  while (n < p.tokens && p.sampled.v[b * p.tokens + n - 1u] == p.ids.v[b * p.tokens + n]) ++n;
  p.count.v[b] = n;
}
