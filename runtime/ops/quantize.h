// Host side of the weight storage types (runtime/ops/weight_type.h): converting rows of floats
// into F32/F16/BF16 or the Q8/Q4 blocks, and back (for tests and the CPU reference).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "runtime/ops/weight_type.h"

namespace q3n::ops {

uint16_t f32_to_f16_bits(float f);  // round to nearest even; overflow to infinity
float f16_bits_to_f32(uint16_t h);
uint16_t f32_to_bf16_bits(float f);  // round to nearest even

// Appends `n` values in `type` to `out` (n a multiple of 32 for Q8/Q4). Quantisation picks, per
// block, d = max|x|/127 (Q8) or d = (max-min)/15, m = min (Q4), with d and m rounded to fp16
// before the codes are chosen, so the stored codes are the best for the stored scale.
void encode_weights(WeightType type, const float* values, size_t n, std::vector<std::byte>& out);
// The same into `out`, which holds exactly weight_storage_bytes(type, n) bytes.
void encode_weights(WeightType type, const float* values, size_t n, std::byte* out);

// Element i of data stored as `type` (the shaders' load_weight, on the host).
float decode_weight(WeightType type, const std::byte* data, size_t i);

}  // namespace q3n::ops
