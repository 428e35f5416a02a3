// Host side of the gated full-attention family (spec §3.6, §3.7): per-token preparation with
// the KV-cache append (shaders/attention_prepare.comp), flash attention with the fused output
// gate (attention.comp; attention_coopmat.comp for prefill on matrix units, attention_decode.comp
// for steps of few rows per kv head, attention_rowwise.comp with CPU shapes), and the split
// combine for long caches (attention_combine.comp).
//
// The q/k/v projections are one GEMM over concatenated weights; its row layout is
//   [ (query | gate) for each q head | k for each kv head | v for each kv head ]
// which keeps q_proj's own per-head [query | gate] interleave (spec §2.6).
#pragma once

#include <vector>

#include "runtime/command.h"
#include "runtime/ops/kv_type.h"
#include "runtime/pipeline.h"

namespace q3n::ops {

constexpr uint32_t kMaxAttentionHeadDim = 256;

struct AttentionShape {
  uint32_t batch = 1, tokens = 1, heads = 0, kv_heads = 0, head_dim = 0;
  uint32_t rot_dim = 0;   // partial_rotary_factor * head_dim
  uint32_t capacity = 0;  // KV-cache positions per slot
  uint32_t splits = 1;    // key-range splits (flash-decoding); 1 = write the result directly
  KvType kv_type = KvType::F32;
  float eps = 1e-6f;
  uint32_t rope_offset = 0;  // RoPE angles at position + rope_offset (graph::EngineOptions::rope_offset)
  uint64_t rows() const { return uint64_t(batch) * tokens; }
  uint32_t qkv_width() const { return (2 * heads + 2 * kv_heads) * head_dim; }
  // Bytes of one slot's K (or V) rows [kv_heads, capacity, head_dim].
  uint64_t kv_slot_bytes() const { return ops::kv_slot_bytes(kv_heads, capacity, head_dim, kv_type); }
};

// One entry of a layer's KV slot table (shaders/kv_cache.glsl): where a slot's K and V rows start.
// Addresses 16-byte aligned.
struct KvSlotAddresses {
  VkDeviceAddress k, v;
};

// RoPE inverse frequencies as HF computes them in fp32: 1 / theta^(2i / rot_dim).
std::vector<float> rope_inv_freq(double theta, uint32_t rot_dim);

// Splits for a graph of this shape on this device: lavapipe needs short key ranges per
// workgroup (its loop limit, shaders/common.glsl); GPUs want many workgroups for decode.
uint32_t attention_splits(const Device& device, uint32_t tokens, uint32_t capacity);
constexpr uint32_t kDecodeKeysPerSplit = 512;
constexpr uint32_t kMaxDecodeSplits = 128;

struct AttentionArgs {
  BufferRange qkv;       // f32 [rows, qkv_width] projection output
  BufferRange q_norm;    // f32 [hd]
  BufferRange k_norm;    // f32 [hd]
  BufferRange inv_freq;  // f32 [rot_dim / 2] from rope_inv_freq()
  BufferRange seqs;      // u32 [batch, 2]
  BufferRange kv_slots;  // KvSlotAddresses [slots]: each slot's K and V rows, kv_slot_bytes() each
  BufferRange q;         // f32 [rows, heads, hd] scratch: prepared queries
  BufferRange part_o;    // f32 [batch, splits, tokens, heads, hd] scratch (splits > 1)
  BufferRange part_ml;   // f32 [batch, splits, tokens, heads, 2] scratch (splits > 1)
  BufferRange out;       // f32 [rows, heads * hd] gated attention output (o_proj input)
  AttentionShape shape;
  // Prefill may take the matrix units where the device has them (attention_coopmat.comp: fp16
  // q, k, v and weights, fp32 sums); false keeps fp32 arithmetic (fp32 checkpoints).
  bool matrix_units = true;
  // Optional, for the CPU shapes: the layer's K rows and V rows of every slot, each one range with
  // slot s at s * kv_slot_stride (what kv_slots points at). Where they lie inside their blocks'
  // texel views, attention_rowwise reads them through the views (the same bits, far fewer loads
  // on lavapipe); otherwise, and on GPUs, the kernels read through kv_slots.
  BufferRange k_rows, v_rows;
  uint64_t kv_slot_stride = 0;
};

// Prepare + append, attention, and (splits > 1) combine, with the barriers between them.
void record_attention(PipelineLibrary& pipelines, CommandBuffer& commands, const AttentionArgs& args);

}  // namespace q3n::ops
