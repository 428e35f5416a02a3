// The few facts q3n reads back from its own SPIR-V: the size of a shader's push-constant block,
// so that each pipeline checks the host struct it is given against the block the shader declares
// (issue: a field added on one side only would otherwise read garbage silently).
#pragma once

#include <cstdint>
#include <optional>
#include <span>

namespace q3n {

// Bytes from the start of the push-constant block to the end of its last member (the block's
// size without tail padding); nullopt when the module declares no push constants. Throws Error
// on a module too malformed to read.
std::optional<uint32_t> push_constant_bytes(std::span<const uint32_t> spirv);

}  // namespace q3n
