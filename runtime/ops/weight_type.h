// Storage type of a weight tensor as shaders read it (matches DTYPE_* in shaders/common.glsl).
//
// The two quantised types store each run of 32 consecutive elements of a row as one block of
// 32-bit words (rows must be a multiple of 32 long, so a block never straddles rows):
//   Q8: word 0 = fp16 scale d (low half); words 1..8 = 32 signed bytes q.   w = d q     (9 bits/weight)
//   Q4: word 0 = fp16 scale d (low half), fp16 minimum m (high half);
//       words 1..4 = 32 unsigned nibbles q, element j at bits 4 (j mod 8) of word 1 + j/8.
//                                                                           w = d q + m (5 bits/weight)
// Q8 is llama.cpp's Q8_0 with its scale padded to a word; Q4 is Q4_1 (scale and minimum).
#pragma once

#include <cstdint>

namespace q3n::ops {

enum class WeightType : uint32_t { F32 = 0, F16 = 1, BF16 = 2, Q8 = 3, Q4 = 4 };

constexpr uint32_t kQuantBlock = 32;  // elements per quantisation block

inline bool is_quantized(WeightType t) { return t == WeightType::Q8 || t == WeightType::Q4; }
// 32-bit words per block of a quantised type.
inline uint32_t block_words(WeightType t) { return t == WeightType::Q8 ? 9 : 5; }

// Bytes that `elements` weights occupy (for quantised types `elements` is a multiple of 32).
inline uint64_t weight_storage_bytes(WeightType t, uint64_t elements) {
  switch (t) {
    case WeightType::F32:
      return elements * 4;
    case WeightType::F16:
    case WeightType::BF16:
      return elements * 2;
    case WeightType::Q8:
    case WeightType::Q4:
      return elements / kQuantBlock * block_words(t) * 4;
  }
  return 0;
}

inline const char* weight_type_name(WeightType t) {
  switch (t) {
    case WeightType::F32:
      return "f32";
    case WeightType::F16:
      return "f16";
    case WeightType::BF16:
      return "bf16";
    case WeightType::Q8:
      return "q8";
    case WeightType::Q4:
      return "q4";
  }
  return "?";
}

}  // namespace q3n::ops
