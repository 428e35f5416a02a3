#version 460
// Causal depthwise conv1d + SiLU over the DeltaNet q/k/v channels (spec §3.3, §5), carrying the
// conv state: state holds the K-1 previous pre-conv rows (oldest first), so
//   y[t, c] = silu( sum_{j<K} w[c, j] * X[t - (K-1) + j, c] ),  X[-m] = state[K-1-m, c]
// and afterwards state = the last K-1 rows of [state; x]. One invocation per (channel, sequence);
// it walks the tokens in order with the window in registers.
#include "common.glsl"

layout(constant_id = 3) const uint WEIGHT_DTYPE = DTYPE_BF16;
layout(constant_id = 4) const uint MAX_KERNEL = 8;

layout(push_constant) uniform Push {
  F32Buf x;       // [B, T, C] pre-conv
  U32Buf weight;  // [C, K] (conv1d.weight [C, 1, K])
  F32Buf state;   // [slots, K-1, C], read and written in the sequence's slot
  U32Buf seqs;    // [B, 2] slot, position
  F32Buf y;       // [B, T, C]
  uint channels;
  uint tokens;
  uint kernel;
} p;

void main() {
  const uint c = gl_GlobalInvocationID.x;
  const uint b = gl_GlobalInvocationID.y;
  if (c >= p.channels) return;
  const uint history = p.kernel - 1;
  const uint slot = seq_slot(p.seqs, b);
  float window[MAX_KERNEL];  // window[0..history) = previous inputs, oldest first
  float w[MAX_KERNEL];
  for (uint j = 0; j < p.kernel; ++j) w[j] = load_weight(p.weight, WEIGHT_DTYPE, c * p.kernel + j);
  for (uint j = 0; j < history; ++j) window[j] = p.state.v[(slot * history + j) * p.channels + c];
  for (uint t = 0; t < p.tokens; ++t) {
    const float xt = p.x.v[(b * p.tokens + t) * p.channels + c];
    float acc = w[history] * xt;  // the last tap multiplies the current token
    for (uint j = 0; j < history; ++j) acc += w[j] * window[j];
    p.y.v[(b * p.tokens + t) * p.channels + c] = acc / (1.0 + exp(-acc));
    for (uint j = 0; j + 1 < history; ++j) window[j] = window[j + 1];
    if (history > 0) window[history - 1] = xt;
  }
  for (uint j = 0; j < history; ++j) p.state.v[(slot * history + j) * p.channels + c] = window[j];
}
