// Number formats for op tests: bf16 / f16 encoding (round to nearest even) and decoding, so
// references use exactly the weights the GPU reads.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "runtime/ops/weight_type.h"

namespace q3n::test {

inline uint16_t to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7FFF + ((u >> 16) & 1);
  return static_cast<uint16_t>(u >> 16);
}
inline float from_bf16(uint16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
// IEEE half, normal range only (test data stays within +-65504 and above 6e-5 in magnitude or 0).
inline uint16_t to_f16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint32_t sign = (u >> 16) & 0x8000;
  const int exp = int((u >> 23) & 0xFF) - 127 + 15;
  uint32_t mant = u & 0x7FFFFF;
  if (exp <= 0) return static_cast<uint16_t>(sign);  // flush tiny values to zero
  uint32_t h = sign | (uint32_t(exp) << 10) | (mant >> 13);
  const uint32_t rest = mant & 0x1FFF;
  if (rest > 0x1000 || (rest == 0x1000 && (h & 1))) h++;
  return static_cast<uint16_t>(h);
}
inline float from_f16(uint16_t h) {
  const uint32_t sign = (h & 0x8000) << 16;
  const uint32_t exp = (h >> 10) & 0x1F, mant = h & 0x3FF;
  uint32_t u = exp == 0 ? sign : sign | ((exp - 15 + 127) << 23) | (mant << 13);
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Encodes `values` as `type` into 32-bit words (16-bit types packed two per word, low half first)
// and replaces `values` by what the GPU will read back.
inline std::vector<uint32_t> encode_weights(std::vector<float>& values, ops::WeightType type) {
  std::vector<uint32_t> words;
  if (type == ops::WeightType::F32) {
    words.resize(values.size());
    std::memcpy(words.data(), values.data(), values.size() * 4);
    return words;
  }
  words.assign((values.size() + 1) / 2, 0);
  for (size_t i = 0; i < values.size(); ++i) {
    const uint16_t h = type == ops::WeightType::BF16 ? to_bf16(values[i]) : to_f16(values[i]);
    values[i] = type == ops::WeightType::BF16 ? from_bf16(h) : from_f16(h);
    words[i / 2] |= uint32_t(h) << (16 * (i % 2));
  }
  return words;
}

}  // namespace q3n::test
