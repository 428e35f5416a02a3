#version 460
// y[t, n] = sum_k x[t, k] * W[n, k] for decode steps and small batches (up to 128 tokens): each
// workgroup owns ROWS output rows, reads their weights once per CHUNK tokens (from memory the
// first time, from cache after) and keeps ROWS x CHUNK sums per invocation, so each weight read
// serves CHUNK tokens and each activation read serves ROWS rows.
//
// Invocations stride over K in units of 8 elements (VEC8 = 1: quantised rows an eighth of a block
// at a time, 16-bit rows four words, activations two vec4 loads) or of single elements (VEC8 = 0:
// k not a multiple of 8 or an unaligned input). A token's sums are reduced in the same order
// whatever the token count and whichever chunk it falls in: its output row does not depend on
// the other tokens of the step (batch invariance; tests/ops/linear_test.cpp).
//
// SWIGLU_INPUT = 1 (the down projection of a SwiGLU MLP in decode steps): x is the gate|up
// projection [tokens, 2k] and the activation is silu(gate) * up, computed as it is read, so the
// MLP needs no SwiGLU dispatch and barrier of its own.
//
// CONV_KERNEL > 0 (in_proj_qkv in decode and verify steps): each output is the DeltaNet causal
// conv + SiLU of the product (spec §3.3) over the sequence's conv state: the conv needs no
// dispatch and barrier of its own. CONV_TOKENS = 1 (one token per sequence): the invocation
// writing an output shifts that channel's state in place (it alone touches that channel of that
// sequence). CONV_TOKENS = T > 1 (a verify step's T rows per sequence): the products are kept in
// shared memory, written to pre_conv for the commit, and after the last pass each (row, sequence)
// walks its T tokens; the state is left for the commit (causal_conv1d.comp's Keep).
// conv_taps.glsl gives every output causal_conv1d.comp's bits.
#include "common.glsl"
#include "conv_taps.glsl"
#extension GL_EXT_control_flow_attributes : require

layout(constant_id = 3) const uint WEIGHT_DTYPE = DTYPE_BF16;
layout(constant_id = 4) const uint ROWS = 4;   // output rows per workgroup
layout(constant_id = 5) const uint CHUNK = 4;  // tokens per pass over the rows
layout(constant_id = 6) const uint VEC8 = 1;
layout(constant_id = 7) const uint SWIGLU_INPUT = 0;
layout(constant_id = 8) const uint CONV_KERNEL = 0;  // 0: a plain product
layout(constant_id = 9) const uint CONV_DTYPE = DTYPE_BF16;
layout(constant_id = 10) const uint CONV_TOKENS = 1;  // tokens per sequence (rows are b * T + t)
const uint CONV_MAX_ROWS = 128;                       // ops::kGemvMaxTokens

#define LINEAR_PUSH_CONV
#include "linear_push.glsl"

// CONV_KERNEL: output `value` of channel `channel` for token `t` (sequence t's only token) after
// the conv, and that channel's state moved on by the token.
float conv_output(float value, uint t, uint channel) {
  const uint history = CONV_KERNEL - 1u;
  const uint base = seq_slot(p.seqs, t) * history * p.n + channel;
  float taps[CONV_MAX_HISTORY], window[CONV_MAX_HISTORY];
  [[unroll]] for (uint j = 0; j < CONV_MAX_HISTORY; ++j) {
    if (j >= history) continue;
    taps[j] = load_weight(p.conv_weight, CONV_DTYPE, channel * CONV_KERNEL + j);
    window[j] = p.conv_state.v[base + j * p.n];
  }
  const float y = conv_taps(taps, load_weight(p.conv_weight, CONV_DTYPE, channel * CONV_KERNEL + history), window,
                            value, history);
  if (history > 0u) {
    conv_shift(window, value, history);
    [[unroll]] for (uint j = 0; j < CONV_MAX_HISTORY; ++j)
      if (j < history) p.conv_state.v[base + j * p.n] = window[j];
  }
  return y;
}

// Per-subgroup partial sums, [ROWS * CHUNK][subgroups] (gl_WorkGroupSize.x bounds the subgroup count).
shared float partial[ROWS * CHUNK * gl_WorkGroupSize.x];
// CONV_TOKENS > 1: every pass's products, [ROWS][rows of the step].
shared float conv_rows[CONV_KERNEL != 0u && CONV_TOKENS > 1u ? ROWS * CONV_MAX_ROWS : 1u];

// CONV_TOKENS > 1, after the last pass: output row `r` of sequence b's T tokens, the conv walked
// from the sequence's state (read only) over the products in conv_rows.
void conv_sequence(uint r, uint b, uint channel) {
  const uint history = CONV_KERNEL - 1u;
  const uint base = seq_slot(p.seqs, b) * history * p.n + channel;
  float taps[CONV_MAX_HISTORY], window[CONV_MAX_HISTORY];
  [[unroll]] for (uint j = 0; j < CONV_MAX_HISTORY; ++j) {
    if (j >= history) continue;
    taps[j] = load_weight(p.conv_weight, CONV_DTYPE, channel * CONV_KERNEL + j);
    window[j] = p.conv_state.v[base + j * p.n];
  }
  const float last = load_weight(p.conv_weight, CONV_DTYPE, channel * CONV_KERNEL + history);
  for (uint t = 0; t < CONV_TOKENS; ++t) {
    const uint row = b * CONV_TOKENS + t;
    const float x = conv_rows[r * CONV_MAX_ROWS + row];
    p.y.v[row * p.n + channel] = conv_taps(taps, last, window, x, history);
    conv_shift(window, x, history);
  }
}

void main() {
  // 2-D grid: row groups beyond maxComputeWorkGroupCount[0] (65535) wrap into y.
  const uint row0 = (gl_WorkGroupID.x + gl_WorkGroupID.y * gl_NumWorkGroups.x) * ROWS;
  if (row0 >= p.n) return;  // uniform per workgroup
  const uint rows = min(ROWS, p.n - row0);
  const uint tid = gl_LocalInvocationID.x, threads = gl_WorkGroupSize.x;

  for (uint t0 = 0; t0 < p.tokens; t0 += CHUNK) {
    const uint count = min(CHUNK, p.tokens - t0);  // tokens in this pass (uniform)
    float acc[ROWS][CHUNK];
    [[unroll]] for (uint r = 0; r < ROWS; ++r)
      [[unroll]] for (uint c = 0; c < CHUNK; ++c) acc[r][c] = 0.0;

    if (VEC8 != 0u) {
      // Quantised rows: the raw words of the next unit's rows are fetched before this unit is
      // multiplied (a unit's loads are only 4-8 bytes per row, so one unit at a time leaves too
      // few bytes in flight). Each invocation still adds its units in order u, u + threads, ...
      const bool quantized = WEIGHT_DTYPE == DTYPE_Q4 || WEIGHT_DTYPE == DTYPE_Q8;
      uvec3 next[ROWS];
      if (quantized && tid < (p.k >> 3))
        [[unroll]] for (uint r = 0; r < ROWS; ++r)
          if (r < rows) next[r] = fetch_codes_unit(p.weight, WEIGHT_DTYPE, row0 + r, p.k, tid);
      for (uint u = tid; u < (p.k >> 3); u += threads) {
        vec4 xa[CHUNK], xb[CHUNK];  // this unit's activations of every token of the pass
        [[unroll]] for (uint c = 0; c < CHUNK; ++c) {
          if (c >= count) continue;
          if (SWIGLU_INPUT != 0u) {
            const uint gate = ((t0 + c) * 2u * p.k + u * 8u) >> 2, up = gate + (p.k >> 2);
            xa[c] = silu4(F32x4Buf(p.x).v[gate]) * F32x4Buf(p.x).v[up];
            xb[c] = silu4(F32x4Buf(p.x).v[gate + 1u]) * F32x4Buf(p.x).v[up + 1u];
            continue;
          }
          const uint at = ((t0 + c) * p.k + u * 8u) >> 2;
          xa[c] = F32x4Buf(p.x).v[at];
          xb[c] = F32x4Buf(p.x).v[at + 1u];
        }
        if (quantized) {
          uvec3 raw[ROWS];
          [[unroll]] for (uint r = 0; r < ROWS; ++r) raw[r] = next[r];
          const uint ahead = u + threads;
          if (ahead < (p.k >> 3))
            [[unroll]] for (uint r = 0; r < ROWS; ++r)
              if (r < rows) next[r] = fetch_codes_unit(p.weight, WEIGHT_DTYPE, row0 + r, p.k, ahead);
          // scale * (codes . x) + min * sum(x): the scale and min once per unit and row.
          float xsum[CHUNK];
          [[unroll]] for (uint c = 0; c < CHUNK; ++c) xsum[c] = dot(xa[c] + xb[c], vec4(1.0));
          [[unroll]] for (uint r = 0; r < ROWS; ++r) {
            if (r >= rows) continue;
            vec4 qa, qb;
            vec2 scale_min;
            decode_codes_unit(WEIGHT_DTYPE, raw[r], qa, qb, scale_min);
            [[unroll]] for (uint c = 0; c < CHUNK; ++c) {
              if (c >= count) continue;
              const float codes_x = dot(qa, xa[c]) + dot(qb, xb[c]);
              acc[r][c] += WEIGHT_DTYPE == DTYPE_Q4 ? scale_min.x * codes_x + scale_min.y * xsum[c]
                                                    : scale_min.x * codes_x;
            }
          }
        } else {
          [[unroll]] for (uint r = 0; r < ROWS; ++r) {
            if (r >= rows) continue;
            float w[8];
            load_weight_unit(p.weight, WEIGHT_DTYPE, row0 + r, p.k, u, w);
            const vec4 wa = vec4(w[0], w[1], w[2], w[3]), wb = vec4(w[4], w[5], w[6], w[7]);
            [[unroll]] for (uint c = 0; c < CHUNK; ++c) {
              if (c >= count) continue;
              acc[r][c] += dot(wa, xa[c]) + dot(wb, xb[c]);
            }
          }
        }
      }
    } else {
      for (uint i = tid; i < p.k; i += threads) {
        float xv[CHUNK];
        [[unroll]] for (uint c = 0; c < CHUNK; ++c) {
          if (c >= count) {
            xv[c] = 0.0;
          } else if (SWIGLU_INPUT != 0u) {
            const uint gate = (t0 + c) * 2u * p.k + i;
            xv[c] = silu(p.x.v[gate]) * p.x.v[gate + p.k];
          } else {
            xv[c] = p.x.v[(t0 + c) * p.k + i];
          }
        }
        [[unroll]] for (uint r = 0; r < ROWS; ++r) {
          if (r >= rows) continue;
          const float w = load_weight(p.weight, WEIGHT_DTYPE, (row0 + r) * p.k + i);
          [[unroll]] for (uint c = 0; c < CHUNK; ++c) acc[r][c] += w * xv[c];
        }
      }
    }

    // One reduction for all rows x tokens of the pass: subgroup sums, then the subgroups' partials
    // added in subgroup order by one invocation per value.
    [[unroll]] for (uint r = 0; r < ROWS; ++r)
      [[unroll]] for (uint c = 0; c < CHUNK; ++c) {
        if (r >= rows || c >= count) continue;  // uniform
        const float s = subgroupAdd(acc[r][c]);
        if (subgroupElect()) partial[(r * CHUNK + c) * gl_NumSubgroups + gl_SubgroupID] = s;
      }
    barrier();
    if (tid < ROWS * CHUNK) {
      const uint r = tid / CHUNK, c = tid % CHUNK;
      if (r < rows && c < count) {
        float total = 0.0;
        for (uint s = 0; s < gl_NumSubgroups; ++s) total += partial[tid * gl_NumSubgroups + s];
        if (CONV_KERNEL != 0u && CONV_TOKENS > 1u) {
          conv_rows[r * CONV_MAX_ROWS + t0 + c] = total;
          p.pre_conv.v[(t0 + c) * p.n + row0 + r] = total;
        } else {
          if (CONV_KERNEL != 0u) total = conv_output(total, t0 + c, row0 + r);
          p.y.v[(t0 + c) * p.n + row0 + r] = total;
        }
      }
    }
    barrier();
  }
  if (CONV_KERNEL != 0u && CONV_TOKENS > 1u)  // every pass's conv_rows are visible (the barrier above)
    for (uint i = tid; i < rows * (p.tokens / CONV_TOKENS); i += threads) conv_sequence(i % rows, i / rows, row0 + i % rows);
}
