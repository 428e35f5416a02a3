// Small helpers every operator wrapper uses: grid arithmetic and the "buffer smaller than its
// shape" check that guards against graph bugs before a shader reads out of bounds.
#pragma once

#include <array>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "runtime/command.h"
#include "runtime/error.h"
#include "runtime/memory.h"
#include "runtime/ops/weight_type.h"
#include "runtime/pipeline.h"

namespace q3n::ops {

inline uint32_t ceil_div(uint64_t a, uint64_t b) { return static_cast<uint32_t>((a + b - 1) / b); }

// Throws if `range` holds fewer than `bytes`; `what` names the operator and the operand.
inline void require_bytes(const BufferRange& range, uint64_t bytes, const char* what) {
  if (range.size < bytes)
    throw Error(std::string("internal: ") + what + " holds " + std::to_string(range.size) + " bytes, needs " +
                std::to_string(bytes));
}

// Device addresses a kernel reads from memory rather than from its push constants (the commits
// of a verify step's layers in one dispatch): host-visible, mapped memory, written when the
// dispatch is recorded, since a recorded step's tensors stay where they are while it is replayed.
struct AddressTable {
  BufferRange range;
  void* mapped = nullptr;
};
inline void write_address_table(const AddressTable& table, const std::vector<VkDeviceAddress>& addresses,
                                const char* what) {
  const uint64_t bytes = addresses.size() * sizeof(VkDeviceAddress);
  require_bytes(table.range, bytes, what);
  if (!table.mapped) throw Error(std::string("internal: ") + what + " is not host-visible");
  std::memcpy(table.mapped, addresses.data(), bytes);
}

// Whether the GEMV-shaped kernels (linear_gemv, moe_expert_gemv) read a matrix with rows of k
// elements in units of 8 (VEC8 = 1): always for quantised rows, otherwise when k % 8 == 0 and the
// input rows start 16-byte aligned (two vec4 loads per unit); else element by element.
inline uint32_t gemv_units_of_8(WeightType type, uint32_t k, uint64_t x_address) {
  return is_quantized(type) || (k % 8 == 0 && x_address % 16 == 0) ? 1 : 0;
}

// Output rows per workgroup of the CPU-shape GEMVs (linear_gemv_rowwise, moe_expert_gemv_rowwise:
// one row per invocation). Small enough that a matrix of a few hundred rows still gives every
// core of a CPU driver a workgroup; measured on lavapipe against 8 and 64 (bench/NOTES.md).
constexpr uint32_t kRowwiseWorkgroup = 32;

// The texel-read variants of the CPU-shape products (shaders/texel_reads.glsl) bind three views:
// the weight's block as words and as quads, the input's block as float quads.
constexpr uint32_t kTexelViews = 3;
// Whether a product can read `weight` and `x` through texel views: the device reads through
// them and both ranges lie quad-aligned inside their blocks' views.
inline bool reads_texels(const PipelineLibrary& pipelines, const BufferRange& weight, const BufferRange& x) {
  return pipelines.device().texel_reads() && weight.quad_readable() && x.quad_readable();
}
inline std::array<VkBufferView, kTexelViews> texel_views(const BufferRange& weight, const BufferRange& x) {
  return {weight.texels->words, weight.texels->quads, x.texels->floats};
}
// A range's first 32-bit word within its block's views.
inline uint32_t texel_offset(const BufferRange& range) { return static_cast<uint32_t>(range.offset / 4); }
// Records the views of `weight` and `x` for the next dispatch of a texel-read `pipeline`, and
// points the push constants' weight_texel / x_texel at the two tensors.
template <typename Push>
void bind_texel_reads(CommandBuffer& commands, const Pipeline& pipeline, const BufferRange& weight,
                      const BufferRange& x, Push& push) {
  commands.push_texel_views(pipeline, texel_views(weight, x));
  push.weight_texel = texel_offset(weight);
  push.x_texel = texel_offset(x);
}

}  // namespace q3n::ops
