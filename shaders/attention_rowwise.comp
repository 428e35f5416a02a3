#version 460
// Causal softmax attention with online softmax and the sigmoid output gate (spec §3.6), for CPU
// devices (lavapipe): one invocation per "row" = (token t, q head of kv head g's group), walking
// this split's keys in order with its q row, running max, running sum and output row in
// registers. No shared memory, barrier or subgroup operation (see linear_gemv_rowwise.comp).
// Every row of a workgroup walks the same keys (rows a key is past mask it), so each K and V row
// is read at one address by all lanes at once. Same operands, splits and outputs as
// attention.comp: with one split the result is normalised, gated and written; with several each
// split writes its unnormalised partial sums and running max for attention_combine.comp.
// The Q3N_TEXEL variant reads K and V rows through texel views of the layer's K and V blocks, 8
// elements per 16-byte fetch (16-bit caches; f32 takes two), where the address variant's every
// element is a load that lavapipe runs lane by lane (texel_reads.glsl): the same values, added in
// the same order, so the same bits. It needs every slot of the layer in one K and one V block.
#include "common.glsl"
#extension GL_EXT_control_flow_attributes : require

layout(constant_id = 3) const uint HEAD_DIM = 256;
layout(constant_id = 4) const uint KV_DTYPE = DTYPE_F32;
#include "kv_cache.glsl"
#define NEG_INF uintBitsToFloat(0xFF800000u)

#include "attention_push.glsl"

#ifdef Q3N_TEXEL
#define Q3N_TEXEL_OWN_BINDINGS
#include "texel_reads.glsl"
layout(set = 0, binding = 0) uniform usamplerBuffer k_quads;  // the K block as R32G32B32A32_UINT
layout(set = 0, binding = 1) uniform usamplerBuffer v_quads;  // the V block
#endif

void main() {
  const uint g = gl_WorkGroupID.y;
  const uint b = gl_WorkGroupID.z / p.splits, split = gl_WorkGroupID.z % p.splits;
  const uint group = p.heads / p.kv_heads;
  const uint rows = p.tokens * group;
  const uint first = gl_WorkGroupID.x * gl_WorkGroupSize.x;
  const uint row = first + gl_LocalInvocationID.x;
  const uint pos0 = seq_position(p.seqs, b);
  const uint kv_base = g * p.capacity;  // this kv head's first row in the slot's K and V rows
#ifdef Q3N_TEXEL
  const uint k_first = p.k_texel + seq_slot(p.seqs, b) * p.slot_words;
  const uint v_first = p.v_texel + seq_slot(p.seqs, b) * p.slot_words;
#else
  U32Buf keys = kv_keys(p.kv, seq_slot(p.seqs, b)), values = kv_values(p.kv, seq_slot(p.seqs, b));
#endif

  // This split's keys, clipped to what the workgroup's last row may see and to the slot's
  // capacity (as in attention.comp); a row past the end computes like the last row, unwritten.
  const uint kv_len = min(pos0 + p.tokens, p.capacity);
  const uint per_split = (kv_len + p.splits - 1u) / p.splits;
  const uint last_row = min(first + gl_WorkGroupSize.x, rows) - 1u;
  const uint key_begin = split * per_split;
  const uint key_end = min(min(key_begin + per_split, kv_len), pos0 + last_row / group + 1u);
  const uint r = min(row, rows - 1u);
  const uint t = r / group, h = g * group + r % group;
  const uint bt = b * p.tokens + t;
  const uint visible = pos0 + t;  // the last key this row attends to

  float q[HEAD_DIM], o[HEAD_DIM];
  [[unroll]] for (uint d = 0; d < HEAD_DIM; ++d) {
    q[d] = p.q.v[(bt * p.heads + h) * HEAD_DIM + d] * p.scale;
    o[d] = 0.0;
  }
  float m = NEG_INF, sum = 0.0;
  for (uint key = key_begin; key < key_end; ++key) {
    const uint at = (kv_base + key) * HEAD_DIM;
    float s = 0.0;
#ifdef Q3N_TEXEL
    [[unroll]] for (uint d8 = 0; d8 < HEAD_DIM; d8 += 8) {
      float e[8];
      texel_unit8_of(k_quads, k_first, KV_DTYPE, at + d8, e);
      [[unroll]] for (uint j = 0; j < 8; ++j) s += q[d8 + j] * e[j];
    }
#else
    [[unroll]] for (uint d = 0; d < HEAD_DIM; ++d) s += q[d] * kv_load(keys, at + d);
#endif
    if (key > visible) continue;  // masked for this row (a later key of the tile's last row)
    const float m_new = max(m, s);
    const float alpha = exp(m - m_new), w = exp(s - m_new);  // m = -inf only before the first key
    sum = sum * alpha + w;
#ifdef Q3N_TEXEL
    [[unroll]] for (uint d8 = 0; d8 < HEAD_DIM; d8 += 8) {
      float e[8];
      texel_unit8_of(v_quads, v_first, KV_DTYPE, at + d8, e);
      [[unroll]] for (uint j = 0; j < 8; ++j) o[d8 + j] = o[d8 + j] * alpha + w * e[j];
    }
#else
    [[unroll]] for (uint d = 0; d < HEAD_DIM; ++d) o[d] = o[d] * alpha + w * kv_load(values, at + d);
#endif
    m = m_new;
  }
  if (row >= rows) return;

  const uint width = (2u * p.heads + 2u * p.kv_heads) * HEAD_DIM;
  if (p.splits == 1u) {
    [[unroll]] for (uint d = 0; d < HEAD_DIM; ++d) {
      const float gate = p.qkv.v[bt * width + h * 2u * HEAD_DIM + HEAD_DIM + d];
      p.dst.v[(bt * p.heads + h) * HEAD_DIM + d] = o[d] / sum * sigmoid(gate);
    }
  } else {
    const uint part = ((b * p.splits + split) * p.tokens + t) * p.heads + h;
    [[unroll]] for (uint d = 0; d < HEAD_DIM; ++d) p.part_o.v[part * HEAD_DIM + d] = o[d];
    p.part_ml.v[part * 2u] = m;
    p.part_ml.v[part * 2u + 1u] = sum;
  }
}
