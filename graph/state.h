// Per-sequence model state, in slots so that several sequences can be in flight: for each
// DeltaNet layer the conv state [slots, K-1, conv_dim] and the fp32 recurrent state
// [slots, Hv, dk, dv]; for each attention layer the KV cache, each slot's K rows and V rows
// [Hkv, capacity, hd] as the chosen KvType, found through the layer's slot table
// (shaders/kv_cache.glsl). Slots are packed into as few allocations as the device's
// per-allocation limit allows, so a cache may be larger than one allocation.
#pragma once

#include <vector>

#include "graph/layer_split.h"
#include "loader/config.h"
#include "runtime/ops/kv_type.h"
#include "runtime/runtime.h"

namespace q3n::graph {

struct LayerState {
  BufferRange conv, recurrent;  // DeltaNet layers
  BufferRange kv_slots;         // attention layers: ops::KvSlotAddresses [slots]
  // Where one allocation holds every slot's K rows (and one every slot's V rows): those, slot s
  // at s * kv_slot_stride (ops::AttentionArgs::k_rows; the CPU shapes read them through texel
  // views). Empty where the slots take several allocations.
  BufferRange kv_k_rows, kv_v_rows;
  uint64_t kv_slot_stride = 0;
};

class SequenceState {
 public:
  // `max_chunk_bytes` caps one allocation of KV rows below the device's limit (0: the limit;
  // tests use it to spread slots over several allocations). Only the layers of `layers` get
  // state (a pipeline split's device).
  SequenceState(Runtime& runtime, const ModelConfig& config, uint32_t slots, uint32_t capacity,
                ops::KvType kv_type = ops::KvType::F32, uint64_t max_chunk_bytes = 0, const LayerSpan& layers = {},
                bool mtp = false);
  // Bytes the constructor would allocate (memory-fit checks).
  static uint64_t planned_bytes(const ModelConfig& config, uint32_t slots, uint32_t capacity,
                                ops::KvType kv_type = ops::KvType::F32, const LayerSpan& layers = {}, bool mtp = false);
  // Those of layer `layer` alone.
  static uint64_t planned_layer_bytes(const ModelConfig& config, int layer, uint32_t slots, uint32_t capacity,
                                      ops::KvType kv_type);
  // KV-cache bytes per position of one sequence, all attention layers, K and V.
  static uint64_t kv_bytes_per_token(const ModelConfig& config, ops::KvType kv_type);
  // Bytes of one slot's K (or V) rows of one layer, padded to 256 (the slot stride in a chunk).
  static uint64_t kv_slot_stride(const ModelConfig& config, uint32_t capacity, ops::KvType kv_type);
  // Zeroes a slot's conv and recurrent state: the start of a new sequence. (KV-cache rows are
  // overwritten by position, so they need no clearing.)
  void reset(uint32_t slot);

  const std::vector<LayerState>& layers() const { return layers_; }
  // The MTP head's attention layer (its own KV cache, spec §4.1), with `mtp` on the last device.
  const LayerState& mtp_layer() const { return mtp_; }
  uint32_t slots() const { return slots_; }
  uint32_t capacity() const { return capacity_; }
  uint64_t bytes() const { return bytes_; }
  ops::KvType kv_type() const { return kv_type_; }
  uint32_t kv_allocations_per_layer() const { return kv_chunks_; }  // K and V each

 private:
  Runtime& runtime_;
  uint32_t slots_, capacity_;
  ops::KvType kv_type_;
  uint32_t kv_chunks_ = 0;
  uint64_t conv_slot_bytes_ = 0, recurrent_slot_bytes_ = 0, bytes_ = 0;
  std::vector<Allocation> storage_;
  std::vector<LayerState> layers_;
  LayerState mtp_;
};

}  // namespace q3n::graph
