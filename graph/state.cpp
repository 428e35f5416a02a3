#include "graph/state.h"

#include <algorithm>
#include <string>

#include "runtime/error.h"
#include "runtime/ops/attention.h"

namespace q3n::graph {

namespace {
struct SlotBytes {
  uint64_t conv, recurrent;  // per slot: one DeltaNet layer's conv / recurrent state
};
SlotBytes slot_bytes(const ModelConfig& c) {
  return {uint64_t(c.linear_conv_kernel_dim - 1) * c.linear_conv_dim() * 4,
          uint64_t(c.linear_num_value_heads) * c.linear_key_head_dim * c.linear_value_head_dim * 4};
}
constexpr uint64_t kSlotAlign = 256;  // a slot's rows start 16-byte aligned (vector loads) and more
}  // namespace

uint64_t SequenceState::kv_slot_stride(const ModelConfig& c, uint32_t capacity, ops::KvType kv_type) {
  const uint64_t bytes = ops::kv_slot_bytes(c.num_key_value_heads, capacity, c.head_dim, kv_type);
  return (bytes + kSlotAlign - 1) / kSlotAlign * kSlotAlign;
}

uint64_t SequenceState::kv_bytes_per_token(const ModelConfig& c, ops::KvType kv_type) {
  return c.count_layers(LayerType::FullAttention) * 2ull * c.num_key_value_heads * c.head_dim *
         ops::kv_element_bytes(kv_type);
}

uint64_t SequenceState::planned_layer_bytes(const ModelConfig& c, int layer, uint32_t slots, uint32_t capacity,
                                            ops::KvType kv_type) {
  const SlotBytes b = slot_bytes(c);
  if (c.layer_types.at(size_t(layer)) == LayerType::LinearAttention) return slots * (b.conv + b.recurrent);
  return slots * 2 * kv_slot_stride(c, capacity, kv_type);
}

uint64_t SequenceState::planned_bytes(const ModelConfig& c, uint32_t slots, uint32_t capacity, ops::KvType kv_type,
                                      const LayerSpan& layers, bool mtp) {
  uint64_t sum = mtp && layers.heads(c) ? slots * 2 * kv_slot_stride(c, capacity, kv_type) : 0;
  for (uint32_t L = layers.first; L < layers.last_of(c); ++L)
    sum += planned_layer_bytes(c, int(L), slots, capacity, kv_type);
  return sum;
}

SequenceState::SequenceState(Runtime& runtime, const ModelConfig& c, uint32_t slots, uint32_t capacity,
                             ops::KvType kv_type, uint64_t max_chunk_bytes, const LayerSpan& layers, bool mtp)
    : runtime_(runtime), slots_(slots), capacity_(capacity), kv_type_(kv_type) {
  if (uint64_t(c.num_key_value_heads) * capacity * c.head_dim > UINT32_MAX)
    throw Error("a context of " + std::to_string(capacity) +
                " positions needs more KV-cache rows per sequence than the attention kernels' 32-bit indices "
                "address; lower --ctx");
  const SlotBytes per_slot = slot_bytes(c);
  conv_slot_bytes_ = per_slot.conv;
  recurrent_slot_bytes_ = per_slot.recurrent;
  auto allocate = [&](uint64_t bytes, const std::string& what) {
    storage_.push_back(runtime.allocator.allocate(std::max<uint64_t>(bytes, 4), MemoryKind::Device, what));
    bytes_ += bytes;
    return storage_.back().range();
  };

  // KV rows: chunks of as many slots as one allocation holds.
  const uint64_t stride = kv_slot_stride(c, capacity, kv_type);
  const DeviceInfo& info = runtime.device.info();
  uint64_t chunk_limit = std::min(info.max_allocation, info.max_buffer_size);
  if (max_chunk_bytes) chunk_limit = std::min(chunk_limit, max_chunk_bytes);
  bool has_attention = mtp && layers.heads(c);
  for (uint32_t L = layers.first; L < layers.last_of(c); ++L)
    has_attention = has_attention || c.layer_types[L] == LayerType::FullAttention;
  if (has_attention && stride > chunk_limit)
    throw Error("one sequence's KV cache of " + std::to_string(capacity) + " positions needs " + format_bytes(stride) +
                " per attention layer in one allocation, but " + info.name + " allows at most " +
                format_bytes(chunk_limit) + "; lower --ctx or use --kv f16");
  const uint32_t slots_per_chunk = uint32_t(std::min<uint64_t>(slots, std::max<uint64_t>(1, chunk_limit / stride)));
  kv_chunks_ = (slots + slots_per_chunk - 1) / slots_per_chunk;

  const auto kv_cache = [&](const std::string& name, LayerState& s) {
    std::vector<ops::KvSlotAddresses> table(slots);
    for (uint32_t first = 0; first < slots; first += slots_per_chunk) {
      const uint32_t n = std::min(slots_per_chunk, slots - first);
      const BufferRange k = allocate(n * stride, name + " KV cache (K)");
      const BufferRange v = allocate(n * stride, name + " KV cache (V)");
      for (uint32_t i = 0; i < n; ++i) table[first + i] = {k.address + i * stride, v.address + i * stride};
      if (n == slots) s.kv_k_rows = k, s.kv_v_rows = v, s.kv_slot_stride = stride;
    }
    s.kv_slots = allocate(slots * sizeof(ops::KvSlotAddresses), name + " KV slot table");
    runtime.transfer.upload(s.kv_slots, table.data(), table.size() * sizeof(table[0]));
  };

  for (int L = 0; L < c.num_hidden_layers; ++L) {
    LayerState s;
    const std::string name = "layer " + std::to_string(L);
    if (!layers.contains(c, L)) {
      layers_.push_back(s);  // another device's layer
      continue;
    }
    if (c.layer_types[L] == LayerType::LinearAttention) {
      s.conv = allocate(slots * conv_slot_bytes_, name + " conv state");
      s.recurrent = allocate(slots * recurrent_slot_bytes_, name + " recurrent state");
    } else {
      kv_cache(name, s);
    }
    layers_.push_back(s);
  }
  if (mtp && layers.heads(c)) kv_cache("MTP layer", mtp_);
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
