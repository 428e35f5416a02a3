#version 460
// Causal softmax attention with online softmax (flash attention), for prefill and decode alike,
// plus the sigmoid output gate (spec §3.6). A workgroup takes one kv head g, a tile of BR
// "rows" = (token t, q head of g's group) pairs, and one split of the key range:
//   s = q . k / sqrt(hd) for keys u <= position(t);  o = sum softmax(s) v
// Grouping the q heads that share a kv head into one tile reads each K/V tile once for all of
// them (GQA). Keys stream through shared memory BC at a time (BC chosen by the host from the
// device's shared-memory size). With one split the result is normalised, gated and written;
// with several (flash-decoding: long caches spread over many workgroups) each split writes its
// unnormalised partial sums and running max for attention_combine.comp.
#include "common.glsl"

layout(constant_id = 3) const uint HEAD_DIM = 256;
layout(constant_id = 4) const uint BR = 16;
layout(constant_id = 5) const uint BC = 16;
layout(constant_id = 6) const uint KV_DTYPE = DTYPE_F32;
#include "kv_cache.glsl"
const uint THREADS = 128;  // the host dispatches 128 invocations
const uint ACC = (BR * HEAD_DIM + THREADS - 1u) / THREADS;
#define NEG_INF uintBitsToFloat(0xFF800000u)

#include "attention_push.glsl"

shared float q_tile[BR * HEAD_DIM];
shared float kv_tile[BC * HEAD_DIM];
shared float scores[BR * BC];
shared float row_max[BR];
shared float row_sum[BR];
shared float row_alpha[BR];

// Rows [k0, k0 + BC) of a slot's K or V rows (this kv head's start at kv_base) into kv_tile, zero
// past key_end. A pair of elements per invocation and load (HEAD_DIM is even), so a 16-bit cache
// moves one word per load as an f32 cache does.
void load_kv_tile(U32Buf rows, uint kv_base, uint k0, uint key_end) {
  for (uint e = 2u * gl_LocalInvocationID.x; e < BC * HEAD_DIM; e += 2u * THREADS) {
    const uint key = k0 + e / HEAD_DIM;
    const vec2 v = key < key_end ? kv_load_pair(rows, (kv_base + key) * HEAD_DIM + e % HEAD_DIM) : vec2(0.0);
    kv_tile[e] = v.x;
    kv_tile[e + 1u] = v.y;
  }
}

void main() {
  const uint tid = gl_LocalInvocationID.x;
  const uint g = gl_WorkGroupID.y;
  const uint b = gl_WorkGroupID.z / p.splits, split = gl_WorkGroupID.z % p.splits;
  const uint group = p.heads / p.kv_heads;
  const uint rows = p.tokens * group;
  const uint first = gl_WorkGroupID.x * BR;
  const uint pos0 = seq_position(p.seqs, b);
  const uint kv_base = g * p.capacity;  // this kv head's first row in the slot's K and V rows
  U32Buf keys = kv_keys(p.kv, seq_slot(p.seqs, b)), values = kv_values(p.kv, seq_slot(p.seqs, b));

  // Keys of this split, clipped to what the tile's last token may see and to the slot's capacity
  // (the host never lets a sequence outgrow its slot; if it did, rows past the end would read
  // another slot's cache, so they attend to the slot's keys only).
  const uint kv_len = min(pos0 + p.tokens, p.capacity);
  const uint per_split = (kv_len + p.splits - 1u) / p.splits;
  const uint last_row = min(first + BR, rows) - 1u;
  const uint key_begin = split * per_split;
  const uint key_end = min(min(key_begin + per_split, kv_len), pos0 + last_row / group + 1u);

  for (uint e = tid; e < BR * HEAD_DIM; e += THREADS) {
    const uint r = first + e / HEAD_DIM;
    const uint t = r / group, h = g * group + r % group;
    q_tile[e] = r < rows ? p.q.v[((b * p.tokens + t) * p.heads + h) * HEAD_DIM + e % HEAD_DIM] * p.scale : 0.0;
  }
  if (tid < BR) {
    row_max[tid] = NEG_INF;
    row_sum[tid] = 0.0;
  }
  float acc[ACC];
  for (uint i = 0; i < ACC; ++i) acc[i] = 0.0;
  barrier();

  for (uint k0 = key_begin; k0 < key_end; k0 += BC) {
    load_kv_tile(keys, kv_base, k0, key_end);
    barrier();
    for (uint e = tid; e < BR * BC; e += THREADS) {
      const uint r = e / BC, c = e % BC;
      const uint key = k0 + c, row = first + r;
      float s = NEG_INF;
      if (row < rows && key < key_end && key <= pos0 + row / group) {
        s = 0.0;
        for (uint d = 0; d < HEAD_DIM; ++d) s += q_tile[r * HEAD_DIM + d] * kv_tile[c * HEAD_DIM + d];
      }
      scores[e] = s;
    }
    barrier();
    if (tid < BR) {
      float m = row_max[tid];
      for (uint c = 0; c < BC; ++c) m = max(m, scores[tid * BC + c]);
      const float alpha = m == NEG_INF ? 1.0 : exp(row_max[tid] - m);
      float sum = 0.0;
      for (uint c = 0; c < BC; ++c) {
        const float s = scores[tid * BC + c];
        const float w = s == NEG_INF ? 0.0 : exp(s - m);
        scores[tid * BC + c] = w;
        sum += w;
      }
      row_max[tid] = m;
      row_sum[tid] = row_sum[tid] * alpha + sum;
      row_alpha[tid] = alpha;
    }
    load_kv_tile(values, kv_base, k0, key_end);
    barrier();
    for (uint i = 0; i < ACC; ++i) {
      const uint e = tid + i * THREADS;
      if (e >= BR * HEAD_DIM) break;
      const uint r = e / HEAD_DIM, d = e % HEAD_DIM;
      float a = acc[i] * row_alpha[r];
      for (uint c = 0; c < BC; ++c) a += scores[r * BC + c] * kv_tile[c * HEAD_DIM + d];
      acc[i] = a;
    }
    barrier();
  }

  const uint width = (2u * p.heads + 2u * p.kv_heads) * HEAD_DIM;
  for (uint i = 0; i < ACC; ++i) {
    const uint e = tid + i * THREADS;
    if (e >= BR * HEAD_DIM) break;
    const uint r = e / HEAD_DIM, d = e % HEAD_DIM, row = first + r;
    if (row >= rows) continue;
    const uint t = row / group, h = g * group + row % group;
    const uint bt = b * p.tokens + t;
    if (p.splits == 1u) {
      const float gate = p.qkv.v[bt * width + h * 2u * HEAD_DIM + HEAD_DIM + d];
      p.dst.v[(bt * p.heads + h) * HEAD_DIM + d] = acc[i] / row_sum[r] * sigmoid(gate);
    } else {
      const uint part = ((b * p.splits + split) * p.tokens + t) * p.heads + h;
      p.part_o.v[part * HEAD_DIM + d] = acc[i];
      if (d == 0u) {
        p.part_ml.v[part * 2u] = row_max[r];
        p.part_ml.v[part * 2u + 1u] = row_sum[r];
      }
    }
  }
}
