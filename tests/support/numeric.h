// Weight encoding for op tests, so references use exactly the weights the GPU reads.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "runtime/ops/quantize.h"

namespace q3n::test {

// Encodes `values` as `type` into 32-bit words (runtime/ops/quantize: 16-bit types packed two per
// word, low half first; Q8/Q4 blocks) and replaces `values` by what the GPU will read back.
inline std::vector<uint32_t> encode_weights(std::vector<float>& values, ops::WeightType type) {
  std::vector<std::byte> bytes;
  ops::encode_weights(type, values.data(), values.size(), bytes);
  bytes.resize((bytes.size() + 3) / 4 * 4);
  for (size_t i = 0; i < values.size(); ++i) values[i] = ops::decode_weight(type, bytes.data(), i);
  std::vector<uint32_t> words(bytes.size() / 4);
  std::memcpy(words.data(), bytes.data(), bytes.size());
  return words;
}

}  // namespace q3n::test
