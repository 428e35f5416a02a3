#include "graph/state.h"

#include <algorithm>
#include <string>

#include "runtime/error.h"

namespace q3n::graph {

namespace {
struct SlotBytes {
  uint64_t conv, recurrent, kv;  // per slot: one DeltaNet layer's conv / recurrent state, one K (or V) cache
};
SlotBytes slot_bytes(const ModelConfig& c, uint32_t capacity) {
  return {uint64_t(c.linear_conv_kernel_dim - 1) * c.linear_conv_dim() * 4,
          uint64_t(c.linear_num_value_heads) * c.linear_key_head_dim * c.linear_value_head_dim * 4,
          uint64_t(c.num_key_value_heads) * capacity * c.head_dim * 4};
}
}  // namespace

uint64_t SequenceState::planned_bytes(const ModelConfig& c, uint32_t slots, uint32_t capacity) {
  const SlotBytes b = slot_bytes(c, capacity);
  return slots * (c.count_layers(LayerType::LinearAttention) * (b.conv + b.recurrent) +
                  c.count_layers(LayerType::FullAttention) * 2 * b.kv);
}

uint32_t SequenceState::max_slots(const ModelConfig& c, uint32_t capacity) {
  const uint64_t per_slot = uint64_t(c.num_key_value_heads) * capacity * c.head_dim;
  if (c.count_layers(LayerType::FullAttention) == 0 || per_slot == 0) return UINT32_MAX;
  return uint32_t(std::min<uint64_t>(((1ull << 32) - 1) / per_slot, UINT32_MAX));
}

SequenceState::SequenceState(Runtime& runtime, const ModelConfig& c, uint32_t slots, uint32_t capacity)
    : runtime_(runtime), slots_(slots), capacity_(capacity) {
  if (slots > max_slots(c, capacity))
    throw Error(std::to_string(slots) + " sequences of " + std::to_string(capacity) + " positions need a KV cache of " +
                std::to_string(uint64_t(slots) * c.num_key_value_heads * capacity * c.head_dim) +
                " values per attention layer, more than the 2^32 the attention kernels address; run at most " +
                std::to_string(max_slots(c, capacity)) + " at once (--max-batch) or lower --ctx");
  const SlotBytes per_slot = slot_bytes(c, capacity);
  conv_slot_bytes_ = per_slot.conv;
  recurrent_slot_bytes_ = per_slot.recurrent;
  const uint64_t kv_bytes = slots * per_slot.kv;
  auto allocate = [&](uint64_t bytes, const std::string& what) {
    storage_.push_back(runtime.allocator.allocate(std::max<uint64_t>(bytes, 4), MemoryKind::Device, what));
    bytes_ += bytes;
    return storage_.back().range();
  };
  for (int L = 0; L < c.num_hidden_layers; ++L) {
    LayerState s;
    const std::string name = "layer " + std::to_string(L);
    if (c.layer_types[L] == LayerType::LinearAttention) {
      s.conv = allocate(slots * conv_slot_bytes_, name + " conv state");
      s.recurrent = allocate(slots * recurrent_slot_bytes_, name + " recurrent state");
    } else {
      s.k = allocate(kv_bytes, name + " KV cache (K)");
      s.v = allocate(kv_bytes, name + " KV cache (V)");
    }
    layers_.push_back(s);
  }
}

void SequenceState::reset(uint32_t slot) {
  CommandBuffer commands = runtime_.pool.allocate();
  commands.begin();
  for (const LayerState& s : layers_) {
    if (s.conv.size == 0) continue;
    if (conv_slot_bytes_) commands.fill(s.conv.sub(slot * conv_slot_bytes_, conv_slot_bytes_), 0);
    commands.fill(s.recurrent.sub(slot * recurrent_slot_bytes_, recurrent_slot_bytes_), 0);
  }
  commands.barrier();
  commands.end();
  runtime_.queue.submit_and_wait(commands);
}

}  // namespace q3n::graph
