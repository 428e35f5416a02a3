#version 460
// Causal depthwise conv1d + SiLU over the DeltaNet q/k/v channels (spec §3.3, §5), carrying the
// conv state: state holds the K-1 previous pre-conv rows (oldest first), so
//   y[t, c] = silu( sum_{j<K} w[c, j] * X[t - (K-1) + j, c] ),  X[-m] = state[K-1-m, c]
// and afterwards state = the last K-1 rows of [state; x]. A workgroup takes CHANNELS channels of
// one sequence; its LANES token lanes each walk a contiguous block of the tokens with the window
// in registers (the block's first window read from x or the state), so a long prompt runs 8 times
// wider than one walker per channel. Steps of fewer tokens than lanes (decode, speculative
// verification) take one lane and 8 times the channels per workgroup instead: no idle lanes.
// Every output has the same sum order however the tokens are split. After a barrier (the old
// state is read by now) lane 0 writes the new state. The CPU shapes take one lane (LANES = 1):
// each invocation walks its channel's tokens and writes its state after reading it, so no
// barrier is needed, which a CPU driver emulates at some cost.
// Speculative verification runs it twice (as delta_rule_recurrent.comp): over every verified
// token writing y only, then writing only the state after the accepted count[b] tokens.
// LAYER_TABLE = 1 (a verify step's commit, state only): one dispatch commits every DeltaNet
// layer of the step, gl_WorkGroupID.z the layer; layer L's x and state addresses are entries
// 2 L and 2 L + 1 of p.table (the weight and y are not read by a commit).
#include "common.glsl"
#include "conv_taps.glsl"
#extension GL_EXT_buffer_reference_uvec2 : require

layout(buffer_reference, std430, buffer_reference_align = 8) buffer AddressTable { uvec2 v[]; };

layout(constant_id = 3) const uint WEIGHT_DTYPE = DTYPE_BF16;
layout(constant_id = 4) const uint LANES = 8;  // token lanes per channel; the workgroup is 32 x LANES
layout(constant_id = 5) const uint LAYER_TABLE = 0;  // 1: several layers' commits (above)

layout(push_constant) uniform Push {
  F32Buf x;       // [B, T, C] pre-conv
  U32Buf weight;  // [C, K] (conv1d.weight [C, 1, K])
  F32Buf state;   // [slots, K-1, C], read and written in the sequence's slot
  U32Buf seqs;    // [B, 2] slot, position
  F32Buf y;       // [B, T, C]
  U32Buf count;   // [B] tokens the new state follows (flags & TOKENS_FROM_COUNT), at most T
  AddressTable table;  // LAYER_TABLE: [layers, 2] x, state
  uint flags;     // WRITE_OUTPUT | WRITE_STATE | TOKENS_FROM_COUNT
  uint channels;
  uint tokens;
  uint kernel;
} p;

const uint WRITE_OUTPUT = 1u, WRITE_STATE = 2u, TOKENS_FROM_COUNT = 4u;
const uint CHANNELS = gl_WorkGroupSize.x / LANES;  // channels per workgroup

void main() {
  const uint c = gl_WorkGroupID.x * CHANNELS + gl_LocalInvocationID.x % CHANNELS;
  const uint lane = gl_LocalInvocationID.x / CHANNELS;
  const uint b = gl_WorkGroupID.y;
  F32Buf x = p.x, state = p.state;
  if (LAYER_TABLE != 0u) {
    x = F32Buf(p.table.v[2u * gl_WorkGroupID.z]);
    state = F32Buf(p.table.v[2u * gl_WorkGroupID.z + 1u]);
  }
  const bool inside = c < p.channels;  // no early return: the barrier below needs every invocation
  const uint history = p.kernel - 1;
  const uint slot = seq_slot(p.seqs, b);
  const uint block = (p.tokens + LANES - 1u) / LANES;
  const uint t0 = min(lane * block, p.tokens), t1 = min(t0 + block, p.tokens);
  if (inside && t0 < t1 && (p.flags & WRITE_OUTPUT) != 0u) {
    float window[CONV_MAX_HISTORY];  // window[0..history) = the inputs before token t0, oldest first
    float taps[CONV_MAX_HISTORY];
    [[unroll]] for (uint j = 0; j < CONV_MAX_HISTORY; ++j) {
      if (j >= history) continue;
      taps[j] = load_weight(p.weight, WEIGHT_DTYPE, c * p.kernel + j);
      const int s = int(t0) - int(history) + int(j);  // token index; < 0: from the state
      window[j] = s >= 0 ? x.v[(b * p.tokens + uint(s)) * p.channels + c]
                         : state.v[(slot * history + uint(int(history) + s)) * p.channels + c];
    }
    const float last = load_weight(p.weight, WEIGHT_DTYPE, c * p.kernel + history);
    for (uint t = t0; t < t1; ++t) {
      const float xt = x.v[(b * p.tokens + t) * p.channels + c];
      p.y.v[(b * p.tokens + t) * p.channels + c] = conv_taps(taps, last, window, xt, history);
      conv_shift(window, xt, history);
    }
  }
  if (LANES > 1u) barrier();  // a constant condition: uniform control flow
  if (!inside || lane != 0u || (p.flags & WRITE_STATE) == 0u) return;
  // state[j] = row n + j of [state; x] (n tokens taken): from x where that is a token, else from
  // the state further on (n + j > j, so in increasing j nothing is read after it is overwritten).
  const uint n = (p.flags & TOKENS_FROM_COUNT) != 0u ? min(p.count.v[b], p.tokens) : p.tokens;
  for (uint j = 0; j < history; ++j) {
    const int s = int(n) - int(history) + int(j);
    state.v[(slot * history + j) * p.channels + c] =
        s >= 0 ? x.v[(b * p.tokens + uint(s)) * p.channels + c] : state.v[(slot * history + n + j) * p.channels + c];
  }
}
