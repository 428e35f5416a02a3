// Small helpers every operator wrapper uses: grid arithmetic and the "buffer smaller than its
// shape" check that guards against graph bugs before a shader reads out of bounds.
#pragma once

#include <cstdint>
#include <string>

#include "runtime/error.h"
#include "runtime/memory.h"

namespace q3n::ops {

inline uint32_t ceil_div(uint64_t a, uint64_t b) { return static_cast<uint32_t>((a + b - 1) / b); }

// Throws if `range` holds fewer than `bytes`; `what` names the operator and the operand.
inline void require_bytes(const BufferRange& range, uint64_t bytes, const char* what) {
  if (range.size < bytes)
    throw Error(std::string("internal: ") + what + " holds " + std::to_string(range.size) + " bytes, needs " +
                std::to_string(bytes));
}

}  // namespace q3n::ops
