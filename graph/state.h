// Per-sequence model state, in slots so that several sequences can be in flight: for each
// DeltaNet layer the conv state [slots, K-1, conv_dim] and the fp32 recurrent state
// [slots, Hv, dk, dv]; for each attention layer the KV cache [slots, Hkv, capacity, hd] (f32).
#pragma once

#include <vector>

#include "loader/config.h"
#include "runtime/runtime.h"

namespace q3n::graph {

struct LayerState {
  BufferRange conv, recurrent;  // DeltaNet layers
  BufferRange k, v;             // attention layers
};

class SequenceState {
 public:
  SequenceState(Runtime& runtime, const ModelConfig& config, uint32_t slots, uint32_t capacity);
  // Bytes the constructor would allocate (memory-fit checks).
  static uint64_t planned_bytes(const ModelConfig& config, uint32_t slots, uint32_t capacity);
  // The most slots of `capacity` positions whose KV cache the attention shaders can index: they
  // address one layer's K (or V) cache with 32-bit element indices, so slots x kv_heads x
  // capacity x head_dim must stay below 2^32. The constructor refuses more, before allocating.
  static uint32_t max_slots(const ModelConfig& config, uint32_t capacity);
  // Zeroes a slot's conv and recurrent state: the start of a new sequence. (KV-cache rows are
  // overwritten by position, so they need no clearing.)
  void reset(uint32_t slot);

  const std::vector<LayerState>& layers() const { return layers_; }
  uint32_t slots() const { return slots_; }
  uint32_t capacity() const { return capacity_; }
  uint64_t bytes() const { return bytes_; }

 private:
  Runtime& runtime_;
  uint32_t slots_, capacity_;
  uint64_t conv_slot_bytes_ = 0, recurrent_slot_bytes_ = 0, bytes_ = 0;
  std::vector<Allocation> storage_;
  std::vector<LayerState> layers_;
};

}  // namespace q3n::graph
