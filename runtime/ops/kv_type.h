// Storage type of the attention layers' KV cache (shaders/kv_cache.glsl); values match the
// shaders' DTYPE_* constants. Attention always computes in fp32 (or on matrix units in fp16,
// which an f16 cache feeds without conversion); only the stored K and V rows are rounded.
#pragma once

#include <cstdint>
#include <string>

#include "runtime/error.h"

namespace q3n::ops {

enum class KvType : uint32_t { F32 = 0, F16 = 1, BF16 = 2 };

inline uint32_t kv_element_bytes(KvType t) { return t == KvType::F32 ? 4 : 2; }

// Bytes of one slot's K (or V) rows [kv_heads, capacity, head_dim].
inline uint64_t kv_slot_bytes(uint32_t kv_heads, uint32_t capacity, uint32_t head_dim, KvType t) {
  return uint64_t(kv_heads) * capacity * head_dim * kv_element_bytes(t);
}

inline const char* kv_type_name(KvType t) {
  switch (t) {
    case KvType::F32:
      return "f32";
    case KvType::F16:
      return "f16";
    case KvType::BF16:
      return "bf16";
  }
  return "?";
}

inline KvType parse_kv_type(const std::string& name) {
  if (name == "f32") return KvType::F32;
  if (name == "f16") return KvType::F16;
  if (name == "bf16") return KvType::BF16;
  throw Error("unknown KV-cache type '" + name + "': use --kv f32, f16 or bf16");
}

}  // namespace q3n::ops
