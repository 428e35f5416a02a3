// Storage type of a weight tensor as shaders read it (matches DTYPE_* in shaders/common.glsl).
#pragma once

#include <cstdint>

namespace q3n::ops {

enum class WeightType : uint32_t { F32 = 0, F16 = 1, BF16 = 2 };

inline uint32_t weight_bytes(WeightType t) { return t == WeightType::F32 ? 4 : 2; }

}  // namespace q3n::ops
