#version 460
// Gated delta rule, recurrent form (spec §3.4), for decode: T tokens processed in order from the
// state S [dk, dv] (fp32, updated in place in the sequence's slot):
//   S *= exp(g_t);  u = beta_t * (v_t - S^T k_t);  S += k_t u^T;  o_t = S^T q_t
// Columns of S are independent, so the grid is (value head j, sequence b, slice of COLS
// columns): a decode step of the 80B shape gets 256 workgroups instead of 32. In a workgroup,
// PARTS invocations share each column, each keeping every PARTS-th row of it in registers for
// all T tokens (S is read and written once per step); the two dot products over dk are summed
// across the PARTS through shared memory. With PARTS = 1 (the CPU shapes) an invocation owns a
// whole column, reads q and k straight from memory and needs no shared memory or barrier. Value
// head j reads key head j / (Hv / Hk) (spec §8.10). q, k prepared by delta_prepare.comp, or, with
// RAW_INPUTS, as the conv left them: then the kernel does delta_prepare's work itself, one dispatch
// fewer per DeltaNet layer in a decode step. The norms need the sums of k^2 and q^2 over dk, which
// the kv and output sums already walk, so they come along: kv = |k|^-1 sum S_i k_i, the state
// update adds k_i (|k|^-1 u) and o = |q|^-1 dk^-1/2 sum S_i q_i (the same values, rounded in
// another order); g and beta come from the row's b, a and the head's A_log and dt_bias.
// Speculative verification (graph/model_graph.cpp) runs it twice: first over every verified
// token writing outputs only (the state is left as it was), then over the accepted prefix
// (count[b] tokens, read from the GPU) writing the state only: the same per-token arithmetic
// both times, so the committed state is bitwise the state plain decoding would have reached.
// GATED_NORM = 1 (decode and verification steps): the workgroup holds a whole value head (COLS =
// dv) and applies the layer's gated RMSNorm (spec §3.5) to the head's outputs itself,
//   o = o * rsqrt(mean_head(o^2) + eps) * norm_weight * silu(z),
// so the norm needs no dispatch and barrier of its own. Each column's arithmetic is unchanged
// (the same PARTS, summed in the same order), so the state is the same bits either way.
// LAYER_TABLE = 1 (a verify step's commit): one dispatch commits every DeltaNet layer of the
// step, gl_WorkGroupID.z walking layers x column slices; a layer's qkv, state, ba, A_log and
// dt_bias addresses are entries 5 L .. 5 L + 4 of p.table. A commit is a few µs of work per
// layer, so one dispatch instead of one per layer saves most of its cost.
#include "common.glsl"
#extension GL_EXT_control_flow_attributes : require
#extension GL_EXT_buffer_reference_uvec2 : require

layout(buffer_reference, std430, buffer_reference_align = 8) buffer AddressTable { uvec2 v[]; };

layout(constant_id = 3) const uint MAX_DK = 256;

layout(push_constant) uniform Push {
  F32Buf qkv;    // [B*T, 2 Hk dk + Hv dv]: q | k | v
  F32Buf gates;  // [B*T, 2 Hv]: g | beta
  F32Buf state;  // [slots, Hv, dk, dv], read and written
  U32Buf seqs;   // [B, 2] slot, position
  F32Buf o;      // [B*T, Hv, dv]
  U32Buf count;  // [B] tokens to walk per sequence (flags & TOKENS_FROM_COUNT), at most `tokens`
  F32Buf ba;       // RAW_INPUTS: [B*T, 2 Hv]: b | a (gates unused)
  F32Buf a_log;    // RAW_INPUTS: [Hv]
  F32Buf dt_bias;  // RAW_INPUTS: [Hv]
  F32Buf gate;         // GATED_NORM: [B*T, Hv, dv] z
  F32Buf norm_weight;  // GATED_NORM: [dv]
  AddressTable table;  // LAYER_TABLE: [layers, 5] qkv, state, ba, a_log, dt_bias
  uint flags;    // WRITE_OUTPUT | WRITE_STATE | TOKENS_FROM_COUNT
  uint tokens;
  uint key_heads;
  uint value_heads;
  uint dk;
  uint dv;
  float eps;  // GATED_NORM
} p;

const uint WRITE_OUTPUT = 1u, WRITE_STATE = 2u, TOKENS_FROM_COUNT = 4u;

layout(constant_id = 4) const uint COLS = 16;  // columns per workgroup
layout(constant_id = 5) const uint PARTS = 4;  // invocations per column; the host dispatches COLS * PARTS
layout(constant_id = 6) const uint RAW_INPUTS = 0;  // 1: q, k unnormalised, gates from ba (above)
layout(constant_id = 7) const uint GATED_NORM = 0;  // 1: COLS = dv, the head's norm applied (above)
layout(constant_id = 8) const uint LAYER_TABLE = 0; // 1: several layers' commits (above)
const uint MAX_ROWS = (MAX_DK + PARTS - 1) / PARTS;

shared float k_shared[MAX_DK];
shared float q_shared[MAX_DK];
shared vec2 partial_sums[PARTS][COLS];
// GATED_NORM: the head's squares, then their sums by eights (an order fixed by dv alone, whatever
// the subgroup size).
shared float norm_squares[GATED_NORM != 0u ? COLS : 1u];
shared float norm_eights[GATED_NORM != 0u ? (COLS + 7u) / 8u : 1u];

// The sum of the squares of the head's dv outputs (`value` from part 0 of each column); every
// invocation receives it.
float head_squares(float value, uint part, uint col) {
  if (part == 0u) norm_squares[col] = value * value;
  barrier();
  const uint eights = (p.dv + 7u) / 8u;
  if (gl_LocalInvocationID.x < eights) {
    float sum = 0.0;
    for (uint i = gl_LocalInvocationID.x * 8u; i < min(p.dv, gl_LocalInvocationID.x * 8u + 8u); ++i)
      sum += norm_squares[i];
    norm_eights[gl_LocalInvocationID.x] = sum;
  }
  barrier();
  float total = 0.0;
  for (uint e = 0; e < eights; ++e) total += norm_eights[e];
  barrier();  // the next token's squares overwrite both arrays
  return total;
}

// Sums of `value` over the PARTS invocations of this column; every one receives them.
vec2 column_sum(vec2 value, uint part, uint col) {
  if (PARTS == 1u) return value;
  partial_sums[part][col] = value;
  barrier();
  vec2 total = vec2(0.0);
  for (uint q = 0; q < PARTS; ++q) total += partial_sums[q][col];
  barrier();
  return total;
}

// Element i of this token's k or q: staged in shared memory when PARTS invocations share a column,
// read from memory (one address for every lane) when an invocation owns it (PARTS = 1).
float key_element(F32Buf qkv, uint i, uint k_at) { return PARTS > 1u ? k_shared[i] : qkv.v[k_at + i]; }
float query_element(F32Buf qkv, uint i, uint q_at) { return PARTS > 1u ? q_shared[i] : qkv.v[q_at + i]; }

void main() {
  const uint j = gl_WorkGroupID.x;  // value head
  const uint b = gl_WorkGroupID.y;  // sequence
  const uint col = gl_LocalInvocationID.x % COLS, part = gl_LocalInvocationID.x / COLS;
  const uint slices = (p.dv + COLS - 1u) / COLS;  // column slices per layer
  const uint layer = LAYER_TABLE != 0u ? gl_WorkGroupID.z / slices : 0u;
  const uint c = (gl_WorkGroupID.z - layer * slices) * COLS + col;
  F32Buf qkv = p.qkv, state = p.state, ba = p.ba, a_log = p.a_log, dt_bias = p.dt_bias;
  if (LAYER_TABLE != 0u) {
    qkv = F32Buf(p.table.v[5u * layer]);
    state = F32Buf(p.table.v[5u * layer + 1u]);
    ba = F32Buf(p.table.v[5u * layer + 2u]);
    a_log = F32Buf(p.table.v[5u * layer + 3u]);
    dt_bias = F32Buf(p.table.v[5u * layer + 4u]);
  }
  const bool in_range = c < p.dv;
  const uint hv = p.value_heads;
  const uint kh = j / (hv / p.key_heads);
  const uint width = 2u * p.key_heads * p.dk + hv * p.dv;
  const uint state_base = (seq_slot(p.seqs, b) * hv + j) * p.dk * p.dv;

  // Rows part, part + PARTS, ... of column c, in registers: every loop over them has the constant
  // bound MAX_ROWS and is unrolled (so on lavapipe only the token loop counts towards its limit of
  // 65535 iterations per loop nest, common.glsl). The host sets MAX_DK to dk itself.
  float s[MAX_ROWS];
  [[unroll]] for (uint r = 0; r < MAX_ROWS; ++r) {
    const uint i = part + PARTS * r;
    s[r] = (in_range && i < p.dk) ? state.v[state_base + i * p.dv + c] : 0.0;
  }
  // Uniform per workgroup (one sequence), so the barriers in the loop stay legal.
  const uint walk = (p.flags & TOKENS_FROM_COUNT) != 0u ? min(p.count.v[b], p.tokens) : p.tokens;
  for (uint t = 0; t < walk; ++t) {
    const uint row = b * p.tokens + t;
    const uint q_at = row * width + kh * p.dk, k_at = row * width + (p.key_heads + kh) * p.dk;
    if (PARTS > 1u) {
      for (uint i = gl_LocalInvocationID.x; i < p.dk; i += gl_WorkGroupSize.x) {
        q_shared[i] = qkv.v[q_at + i];
        k_shared[i] = qkv.v[k_at + i];
      }
      barrier();
    }
    float decay, beta;
    if (RAW_INPUTS != 0u) {  // delta_prepare.comp's gates
      decay = exp(-exp(a_log.v[j]) * softplus(ba.v[row * 2u * hv + hv + j] + dt_bias.v[j]));
      beta = sigmoid(ba.v[row * 2u * hv + j]);
    } else {
      decay = exp(p.gates.v[row * 2u * hv + j]);
      beta = p.gates.v[row * 2u * hv + hv + j];
    }
    vec2 kv_ksq = vec2(0.0);  // sum S_i k_i, sum k_i^2 (RAW_INPUTS)
    [[unroll]] for (uint r = 0; r < MAX_ROWS; ++r) {
      const uint i = part + PARTS * r;
      if (i < p.dk) {
        const float k_i = key_element(qkv, i, k_at);
        kv_ksq += vec2(s[r] * k_i, RAW_INPUTS != 0u ? k_i * k_i : 0.0);
      }
    }
    kv_ksq = column_sum(kv_ksq, part, col);
    const float k_scale = RAW_INPUTS != 0u ? inversesqrt(kv_ksq.y + 1e-6) : 1.0;
    const float v = in_range ? qkv.v[row * width + 2u * p.key_heads * p.dk + j * p.dv + c] : 0.0;
    const float u = beta * (v - decay * (kv_ksq.x * k_scale));
    const float k_u = k_scale * u;  // what k_i is multiplied by in the update
    vec2 out_qsq = vec2(0.0);       // sum S_i q_i, sum q_i^2 (RAW_INPUTS)
    [[unroll]] for (uint r = 0; r < MAX_ROWS; ++r) {
      const uint i = part + PARTS * r;
      if (i < p.dk) {
        const float q_i = query_element(qkv, i, q_at);
        s[r] = decay * s[r] + key_element(qkv, i, k_at) * k_u;
        out_qsq += vec2(s[r] * q_i, RAW_INPUTS != 0u ? q_i * q_i : 0.0);
      }
    }
    out_qsq = column_sum(out_qsq, part, col);  // its barriers also free k_shared / q_shared
    float out_c =
        RAW_INPUTS != 0u ? out_qsq.x * (inversesqrt(out_qsq.y + 1e-6) * inversesqrt(float(p.dk))) : out_qsq.x;
    if (GATED_NORM != 0u && (p.flags & WRITE_OUTPUT) != 0u) {  // uniform: the barriers stay legal
      const float scale = inversesqrt(head_squares(out_c, part, col) / float(p.dv) + p.eps);
      out_c = out_c * scale * p.norm_weight.v[c] * silu(p.gate.v[(row * hv + j) * p.dv + c]);
    }
    if (in_range && part == 0u && (p.flags & WRITE_OUTPUT) != 0u) p.o.v[(row * hv + j) * p.dv + c] = out_c;
  }
  [[unroll]] for (uint r = 0; r < MAX_ROWS; ++r) {
    const uint i = part + PARTS * r;
    if (in_range && i < p.dk && (p.flags & WRITE_STATE) != 0u) state.v[state_base + i * p.dv + c] = s[r];
  }
}
