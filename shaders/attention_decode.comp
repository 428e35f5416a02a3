#version 460
// Causal softmax attention for steps of few query rows per kv head (decode: one token, so the
// GQA group's q heads; a 2-token step of a small group), with the sigmoid output gate (spec §3.6).
// Same operands, splits and outputs as attention.comp; built for long caches, where
// attention.comp's 16-key tiles spend their time in barriers and shared-memory traffic.
//
// A workgroup takes one kv head g of one sequence and one split of the key range, and walks it
// T = gl_WorkGroupSize.x keys at a time:
//   scores: invocation t owns key k0 + t and computes its score against all ROWS q rows (q in
//           shared memory, read by all invocations at one address; the key row read from the
//           cache 8 elements per load);
//   softmax: each row's tile maximum from subgroup maxima; every invocation then knows the
//           running max m and rescales what it holds. Each invocation keeps its own share of each
//           row's sum l (rescaling is linear, so the shares add up at the end);
//   P V: invocation t owns output dims 2 (t + jT) and 2 (t + jT) + 1 of every row; each value
//           row is read once, consecutive invocations at consecutive words.
// Three barriers per T keys. Precision: fp32 throughout (as attention.comp).
#include "common.glsl"
#extension GL_EXT_control_flow_attributes : require

layout(constant_id = 3) const uint HEAD_DIM = 256;  // a multiple of 8
layout(constant_id = 4) const uint ROWS = 8;        // tokens x (q heads per kv head), at most 16
layout(constant_id = 5) const uint KV_DTYPE = DTYPE_F32;
#include "kv_cache.glsl"
#define NEG_INF uintBitsToFloat(0xFF800000u)

#include "attention_push.glsl"

const uint T = gl_WorkGroupSize.x;
const uint PAIRS = (HEAD_DIM / 2u + T - 1u) / T;  // output dim pairs per invocation

shared vec4 q_tile[ROWS * HEAD_DIM / 4u];
shared float p_tile[ROWS * T];
shared float partial[ROWS * 32u];  // per-subgroup maxima or sums (the host: at most 32 subgroups)

// Eight elements d .. d + 7 of one cache row (d a multiple of 8).
void load_eight(U32Buf rows, uint at, out vec4 lo, out vec4 hi) {
  if (KV_DTYPE == DTYPE_F32) {
    lo = F32x4Buf(rows).v[at >> 2];
    hi = F32x4Buf(rows).v[(at >> 2) + 1u];
  } else {
    const uvec4 w = U32x4Buf(rows).v[at >> 3];
    lo = vec4(kv_unpack_word(w.x), kv_unpack_word(w.y));
    hi = vec4(kv_unpack_word(w.z), kv_unpack_word(w.w));
  }
}

// The sum (or max) over the workgroup of each row's value, for every invocation. Ends with the
// partials free to overwrite only after the caller's next barrier.
void reduce_rows(inout float v[ROWS], bool is_max) {
  [[unroll]] for (uint r = 0; r < ROWS; ++r) {
    const float x = is_max ? subgroupMax(v[r]) : subgroupAdd(v[r]);
    if (subgroupElect()) partial[r * gl_NumSubgroups + gl_SubgroupID] = x;
  }
  barrier();
  [[unroll]] for (uint r = 0; r < ROWS; ++r) {
    float x = partial[r * gl_NumSubgroups];
    for (uint sg = 1; sg < gl_NumSubgroups; ++sg)
      x = is_max ? max(x, partial[r * gl_NumSubgroups + sg]) : x + partial[r * gl_NumSubgroups + sg];
    v[r] = x;
  }
}

void main() {
  const uint tid = gl_LocalInvocationID.x;
  const uint g = gl_WorkGroupID.y;
  const uint b = gl_WorkGroupID.z / p.splits, split = gl_WorkGroupID.z % p.splits;
  const uint group = p.heads / p.kv_heads;  // ROWS = tokens x group (the host picks the pipeline by it)
  const uint pos0 = seq_position(p.seqs, b);
  const uint kv_base = g * p.capacity;  // this kv head's first row in the slot's K and V rows
  U32Buf keys = kv_keys(p.kv, seq_slot(p.seqs, b)), values = kv_values(p.kv, seq_slot(p.seqs, b));

  // This split's keys, clipped to what the last token may see and to the slot's capacity (as
  // attention.comp: a step past the capacity reads its own slot only).
  const uint kv_len = min(pos0 + p.tokens, p.capacity);
  const uint per_split = (kv_len + p.splits - 1u) / p.splits;
  const uint key_begin = split * per_split;
  const uint key_end = min(key_begin + per_split, kv_len);

  for (uint e = tid; e < ROWS * HEAD_DIM / 4u; e += T) {
    const uint r = e / (HEAD_DIM / 4u), d = (e % (HEAD_DIM / 4u)) * 4u;
    const uint t = r / group, h = g * group + r % group;
    q_tile[e] = F32x4Buf(p.q).v[(((b * p.tokens + t) * p.heads + h) * HEAD_DIM + d) >> 2] * p.scale;
  }
  float m[ROWS], l[ROWS];
  vec2 acc[ROWS][PAIRS];
  [[unroll]] for (uint r = 0; r < ROWS; ++r) {
    m[r] = NEG_INF;
    l[r] = 0.0;
    [[unroll]] for (uint j = 0; j < PAIRS; ++j) acc[r][j] = vec2(0.0);
  }
  barrier();

  for (uint k0 = key_begin; k0 < key_end; k0 += T) {
    const uint key = k0 + tid;
    float s[ROWS];
    [[unroll]] for (uint r = 0; r < ROWS; ++r) s[r] = 0.0;
    if (key < key_end) {
      const uint at = (kv_base + key) * HEAD_DIM;
      for (uint d = 0; d < HEAD_DIM; d += 8u) {
        vec4 lo, hi;
        load_eight(keys, at + d, lo, hi);
        [[unroll]] for (uint r = 0; r < ROWS; ++r)
          s[r] += dot(q_tile[(r * HEAD_DIM + d) >> 2], lo) + dot(q_tile[((r * HEAD_DIM + d) >> 2) + 1u], hi);
      }
    }
    [[unroll]] for (uint r = 0; r < ROWS; ++r)
      if (key >= key_end || key > pos0 + r / group) s[r] = NEG_INF;  // past the split, or a later token's key

    float tile_max[ROWS];
    [[unroll]] for (uint r = 0; r < ROWS; ++r) tile_max[r] = s[r];
    reduce_rows(tile_max, true);
    [[unroll]] for (uint r = 0; r < ROWS; ++r) {
      const float new_max = max(m[r], tile_max[r]);
      const float alpha = new_max == NEG_INF ? 1.0 : exp(m[r] - new_max);  // exp(-inf) = 0 on the first keys
      const float w = s[r] == NEG_INF ? 0.0 : exp(s[r] - new_max);
      m[r] = new_max;
      l[r] = l[r] * alpha + w;
      [[unroll]] for (uint j = 0; j < PAIRS; ++j) acc[r][j] *= alpha;
      p_tile[r * T + tid] = w;
    }
    barrier();

    const uint n = min(T, key_end - k0);
    for (uint c = 0; c < n; ++c) {
      const uint at = (kv_base + k0 + c) * HEAD_DIM;
      [[unroll]] for (uint j = 0; j < PAIRS; ++j) {
        const uint d = 2u * (tid + j * T);
        if (d < HEAD_DIM) {
          const vec2 v = kv_load_pair(values, at + d);
          [[unroll]] for (uint r = 0; r < ROWS; ++r) acc[r][j] += p_tile[r * T + c] * v;
        }
      }
    }
    barrier();  // p_tile and the partials are rewritten by the next keys
  }

  reduce_rows(l, false);
  const uint width = (2u * p.heads + 2u * p.kv_heads) * HEAD_DIM;
  [[unroll]] for (uint r = 0; r < ROWS; ++r) {
    const uint t = r / group, h = g * group + r % group, bt = b * p.tokens + t;
    const uint part = ((b * p.splits + split) * p.tokens + t) * p.heads + h;
    [[unroll]] for (uint j = 0; j < PAIRS; ++j) {
      const uint d = 2u * (tid + j * T);
      if (d >= HEAD_DIM) continue;
      if (p.splits == 1u) {
        const uint gate_at = bt * width + h * 2u * HEAD_DIM + HEAD_DIM + d;
        const vec2 gate = vec2(p.qkv.v[gate_at], p.qkv.v[gate_at + 1u]);
        const vec2 o = acc[r][j] / l[r];
        p.dst.v[(bt * p.heads + h) * HEAD_DIM + d] = o.x * sigmoid(gate.x);
        p.dst.v[(bt * p.heads + h) * HEAD_DIM + d + 1u] = o.y * sigmoid(gate.y);
      } else {
        p.part_o.v[part * HEAD_DIM + d] = acc[r][j].x;
        p.part_o.v[part * HEAD_DIM + d + 1u] = acc[r][j].y;
      }
    }
    if (p.splits > 1u && tid == 0u) {
      p.part_ml.v[part * 2u] = m[r];
      p.part_ml.v[part * 2u + 1u] = l[r];
    }
  }
}
