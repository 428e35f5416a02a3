#include "runtime/ops/attention.h"

#include <algorithm>
#include <array>
#include <cmath>

#include "runtime/error.h"
#include "runtime/ops/op_support.h"

namespace q3n::ops {

namespace {
struct PreparePush {
  VkDeviceAddress qkv, q_norm, k_norm, inv_freq, seqs, kv_slots, q_out;
  uint32_t tokens, heads, kv_heads, head_dim, rot_dim, capacity;
  float eps;
  uint32_t rope_offset;
};
struct AttentionPush {
  VkDeviceAddress q, kv_slots, seqs, qkv, out, part_o, part_ml;
  uint32_t tokens, heads, kv_heads, capacity, splits;
  float scale;
};
struct AttentionTexelPush {  // attention_rowwise's Q3N_TEXEL variant
  AttentionPush attend;
  uint32_t k_texel, v_texel, slot_words;
};
struct CombinePush {
  VkDeviceAddress part_o, part_ml, qkv, out;
  uint32_t tokens, heads, kv_heads, head_dim, splits;
};
constexpr uint32_t kRowsPerTile = 16;  // BR of attention.comp

// The largest key tile (power of two, <= 64) whose shared arrays fit the device.
uint32_t key_tile(const Device& device, uint32_t head_dim) {
  const uint64_t limit = device.info().max_shared_memory;
  for (uint32_t bc = 64; bc >= 1; bc /= 2) {
    const uint64_t bytes = 4ull * (kRowsPerTile * head_dim + bc * head_dim + kRowsPerTile * bc + 3 * kRowsPerTile);
    if (bytes <= limit) return bc;
  }
  throw Error("this device's " + std::to_string(limit) +
              " bytes of compute shared memory cannot hold attention tiles of head_dim " + std::to_string(head_dim));
}

// Whether attention_coopmat.comp takes this shape: prefill (several tokens, one split) on a device
// with matrix units, a head dim it tiles (a multiple of 32, at most 256) and shared memory for its
// tiles (~41 KiB at head_dim 256).
bool matrix_attention(const PipelineLibrary& pipelines, const AttentionShape& s) {
  if (!pipelines.coopmat() || pipelines.cpu_shapes() || s.tokens < 2 || s.splits != 1 || s.head_dim % 32 != 0)
    return false;
  constexpr uint64_t rows = 32, keys = 32;  // BR, BC of the shader
  // uvec4 tiles (Q and K/V, S, P; rows padded by one unit) plus the fp32 row max and sum.
  const uint64_t bytes =
      16 * ((rows + keys) * (s.head_dim / 8 + 1) + rows * (keys / 4 + 1) + rows * (keys / 8 + 1)) + 8 * rows;
  return bytes <= pipelines.device().info().max_shared_memory;
}

// Whether attention_decode.comp takes this shape: a GPU (CPU devices take attention_rowwise), at
// most kMaxDecodeRows rows per kv head (its registers), a head dim that is a multiple of 8 (its
// loads), and at most 32 subgroups per workgroup (its shared partials).
constexpr uint32_t kDecodeKeysPerTile = 128;  // invocations per workgroup
constexpr uint32_t kMaxDecodeRows = 16;
bool decode_attention(const PipelineLibrary& pipelines, const AttentionShape& s) {
  const uint32_t subgroup = pipelines.device().info().subgroup_size;
  return !pipelines.cpu_shapes() && uint64_t(s.tokens) * (s.heads / s.kv_heads) <= kMaxDecodeRows &&
         s.head_dim % 8 == 0 && subgroup >= kDecodeKeysPerTile / 32;
}
}  // namespace

std::vector<float> rope_inv_freq(double theta, uint32_t rot_dim) {
  std::vector<float> inv(rot_dim / 2);
  for (uint32_t i = 0; i < inv.size(); ++i) {
    const float exponent = float(2 * i) / float(rot_dim);                       // arange(0, rot, 2).float() / rot
    const float power = static_cast<float>(std::pow(theta, double(exponent)));  // fp32 pow, correctly rounded
    inv[i] = 1.0f / power;
  }
  return inv;
}

uint32_t attention_splits(const Device& device, uint32_t tokens, uint32_t capacity) {
  if (has_bounded_loops(device)) return std::max(1u, ceil_div(capacity, kBoundedLoopPositions));
  if (tokens > 1) return 1;  // prefill: the token tiles already give many workgroups
  // Decode: a split per kDecodeKeysPerSplit cache positions, at most kMaxDecodeSplits, so that one
  // sequence's step over a long cache still spreads over many workgroups (H100, one sequence at
  // 262,144 positions, f16: 64 splits 0.87 ms per layer, 128 0.53, 512 0.70; bench/NOTES.md).
  // Not a function of the batch: a row's arithmetic must not depend on what shares its step.
  return std::clamp(ceil_div(capacity, kDecodeKeysPerSplit), 1u, kMaxDecodeSplits);
}

void record_attention(PipelineLibrary& pipelines, CommandBuffer& commands, const AttentionArgs& a) {
  const AttentionShape& s = a.shape;
  if (s.kv_heads == 0 || s.heads % s.kv_heads != 0)
    throw Error("internal: attention heads must be a multiple of key/value heads");
  if (s.head_dim > kMaxAttentionHeadDim || s.head_dim % 2 != 0)
    throw Error("internal: attention head dim " + std::to_string(s.head_dim) + " is odd or above " +
                std::to_string(kMaxAttentionHeadDim) + " (graph::check_supported refuses such configs)");
  if (s.rot_dim % 2 != 0 || s.rot_dim > s.head_dim)
    throw Error("internal: rotary dims must be even and <= the head dim");
  const uint64_t rows = s.rows();
  require_bytes(a.qkv, rows * s.qkv_width() * 4, "attention qkv");
  require_bytes(a.q, rows * s.heads * s.head_dim * 4, "attention q");
  require_bytes(a.out, rows * s.heads * s.head_dim * 4, "attention output");
  require_bytes(a.seqs, uint64_t(s.batch) * 8, "attention sequence table");
  require_bytes(a.kv_slots, sizeof(KvSlotAddresses), "KV slot table");
  if (uint64_t(s.kv_heads) * s.capacity * s.head_dim > UINT32_MAX)
    throw Error("internal: one slot's KV rows exceed the attention kernels' 32-bit indices");
  require_bytes(a.q_norm, s.head_dim * 4, "q_norm");
  require_bytes(a.k_norm, s.head_dim * 4, "k_norm");
  if (s.splits > 1) {
    require_bytes(a.part_o, uint64_t(s.batch) * s.splits * s.tokens * s.heads * s.head_dim * 4, "attention partials");
    require_bytes(a.part_ml, uint64_t(s.batch) * s.splits * s.tokens * s.heads * 8, "attention partial stats");
  }

  if (s.rot_dim > 0) require_bytes(a.inv_freq, s.rot_dim / 2 * 4, "RoPE frequencies");
  const PreparePush prepare{a.qkv.address,    a.q_norm.address,
                            a.k_norm.address, a.inv_freq.address,
                            a.seqs.address,   a.kv_slots.address,
                            a.q.address,      s.tokens,
                            s.heads,          s.kv_heads,
                            s.head_dim,       s.rot_dim,
                            s.capacity,       s.eps,
                            s.rope_offset};
  const uint32_t kv_type = static_cast<uint32_t>(s.kv_type);
  commands.dispatch(pipelines.get({"attention_prepare",
                                   {pipelines.reduction_workgroup(128), 1, 1},
                                   {kMaxAttentionHeadDim, kv_type},
                                   sizeof(prepare)}),
                    prepare, s.heads + s.kv_heads, static_cast<uint32_t>(rows));
  commands.barrier();

  const uint32_t bc = key_tile(pipelines.device(), s.head_dim);
  const AttentionPush attend{a.q.address,
                             a.kv_slots.address,
                             a.seqs.address,
                             a.qkv.address,
                             a.out.address,
                             a.part_o.address,
                             a.part_ml.address,
                             s.tokens,
                             s.heads,
                             s.kv_heads,
                             s.capacity,
                             s.splits,
                             1.0f / std::sqrt(float(s.head_dim))};
  const uint32_t group = s.heads / s.kv_heads;
  const uint64_t rows_per_kv_head = uint64_t(s.tokens) * group;
  if (a.matrix_units && matrix_attention(pipelines, s)) {  // 32 rows per workgroup, four subgroups
    const PipelineKey key{pipelines.coopmat_shader("attention_coopmat"),
                          {4 * pipelines.device().info().subgroup_size, 1, 1},
                          {s.head_dim, kv_type},
                          sizeof(attend)};
    commands.dispatch(pipelines.get(key), attend, ceil_div(rows_per_kv_head, 32), s.kv_heads, s.batch);
  } else if (decode_attention(pipelines, s)) {  // few rows per kv head: keys across invocations
    const PipelineKey key{"attention_decode",
                          {kDecodeKeysPerTile, 1, 1},
                          {s.head_dim, static_cast<uint32_t>(rows_per_kv_head), kv_type},
                          sizeof(attend)};
    commands.dispatch(pipelines.get(key), attend, 1, s.kv_heads, s.batch * s.splits);
  } else if (pipelines.cpu_shapes()) {  // one row per invocation, one subgroup per workgroup
    const uint32_t threads = pipelines.reduction_workgroup(kRowwiseWorkgroup);
    const uint32_t groups = ceil_div(rows_per_kv_head, threads);
    const bool texel = pipelines.device().texel_reads() && a.k_rows.quad_readable() && a.v_rows.quad_readable() &&
                       s.head_dim % 8 == 0 && a.kv_slot_stride % 16 == 0 && a.kv_slot_stride / 4 <= UINT32_MAX;
    if (texel) {
      const AttentionTexelPush push{attend, texel_offset(a.k_rows), texel_offset(a.v_rows),
                                    static_cast<uint32_t>(a.kv_slot_stride / 4)};
      const Pipeline& pipeline =
          pipelines.get({"attention_rowwise_texel", {threads, 1, 1}, {s.head_dim, kv_type}, sizeof(push), 2});
      const std::array<VkBufferView, 2> views{a.k_rows.texels->quads, a.v_rows.texels->quads};
      commands.push_texel_views(pipeline, views);
      commands.dispatch(pipeline, push, groups, s.kv_heads, s.batch * s.splits);
    } else {
      commands.dispatch(pipelines.get({"attention_rowwise", {threads, 1, 1}, {s.head_dim, kv_type}, sizeof(attend)}),
                        attend, groups, s.kv_heads, s.batch * s.splits);
    }
  } else {
    commands.dispatch(
        pipelines.get({"attention", {128, 1, 1}, {s.head_dim, kRowsPerTile, bc, kv_type}, sizeof(attend)}), attend,
        ceil_div(rows_per_kv_head, kRowsPerTile), s.kv_heads, s.batch * s.splits);
  }
  if (s.splits == 1) return;
  commands.barrier();
  const CombinePush combine{a.part_o.address, a.part_ml.address, a.qkv.address, a.out.address, s.tokens,
                            s.heads,          s.kv_heads,        s.head_dim,    s.splits};
  commands.dispatch(
      pipelines.get({"attention_combine", {pipelines.reduction_workgroup(64), 1, 1}, {}, sizeof(combine)}), combine,
      s.tokens * s.heads, s.batch);
}

}  // namespace q3n::ops
