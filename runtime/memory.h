// GPU memory: large pooled blocks, each one VkBuffer with a device address, handed out as ranges.
//
// Shaders reach tensors through buffer device addresses (GL_EXT_buffer_reference) passed in push
// constants, not through descriptor bindings. That is q3n's answer to maxStorageBufferRange
// (128 MiB on lavapipe): a range is limited only by maxMemoryAllocationSize / maxBufferSize, and
// the recorded command buffers need no descriptor sets. The one exception: where the device
// allows it, each block also has texel views (TexelViews), which the CPU shapes' products read
// through, pushed as descriptors. See docs/ARCHITECTURE.md.
#pragma once

#include <vulkan/vulkan.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "runtime/device.h"
#include "runtime/handle.h"

namespace q3n {

enum class MemoryKind {
  Device,    // device-local: weights, activations, state
  Upload,    // host-visible, coherent: staging towards the GPU
  Readback,  // host-visible, preferably cached: staging back to the host
};

// Views of one pooled block as arrays of texels, from the block's first byte (Device::texel_reads):
// 32-bit words, quads of words and quads of floats. Each covers the block up to `*_end` bytes
// (maxTexelBufferElements texels at most).
struct TexelViews {
  VkBufferView words = VK_NULL_HANDLE;   // R32_UINT
  VkBufferView quads = VK_NULL_HANDLE;   // R32G32B32A32_UINT
  VkBufferView floats = VK_NULL_HANDLE;  // R32G32B32A32_SFLOAT
  VkDeviceSize words_end = 0, quads_end = 0;
};

// A contiguous range inside one pooled block.
struct BufferRange {
  VkBuffer buffer = VK_NULL_HANDLE;
  VkDeviceSize offset = 0;
  VkDeviceSize size = 0;
  VkDeviceAddress address = 0;
  const TexelViews* texels = nullptr;  // of the block, where the device reads through texel views
  BufferRange sub(VkDeviceSize at, VkDeviceSize bytes) const {
    return {buffer, offset + at, bytes, address + at, texels};
  }
  // Whether a kernel can read this range as quads (16-byte texels) of its block's views: the
  // views exist, the range starts on a quad and every byte of it lies within both views.
  bool quad_readable() const {
    return texels && offset % 16 == 0 && offset + size <= texels->quads_end && offset + size <= texels->words_end;
  }
  // Whether a kernel can read this range as words of its block's views.
  bool word_readable() const { return texels && offset % 4 == 0 && offset + size <= texels->words_end; }
};

class Allocator;

// Owns one range; gives it back to the pool when destroyed. Move-only.
class Allocation {
 public:
  Allocation() = default;
  ~Allocation();
  Allocation(Allocation&& other) noexcept;
  Allocation& operator=(Allocation&& other) noexcept;
  Allocation(const Allocation&) = delete;
  Allocation& operator=(const Allocation&) = delete;

  const BufferRange& range() const { return range_; }
  VkDeviceAddress address() const { return range_.address; }
  VkDeviceSize size() const { return range_.size; }
  void* mapped() const { return mapped_; }  // non-null for Upload / Readback memory
  explicit operator bool() const { return owner_ != nullptr; }

 private:
  friend class Allocator;
  Allocator* owner_ = nullptr;
  size_t block_ = 0;
  BufferRange range_;
  void* mapped_ = nullptr;
};

class Allocator {
 public:
  explicit Allocator(const Device& device);
  ~Allocator();
  Allocator(const Allocator&) = delete;
  Allocator& operator=(const Allocator&) = delete;

  // `what` names the tensor in error messages ("layer 3 KV cache").
  Allocation allocate(VkDeviceSize bytes, MemoryKind kind, const std::string& what);
  VkDeviceSize reserved_bytes(MemoryKind kind) const;  // held from the driver
  VkDeviceSize used_bytes(MemoryKind kind) const;      // handed out to allocations
  VkDeviceSize alignment() const { return alignment_; }

 private:
  friend class Allocation;
  struct Block {
    OwnedMemory memory;
    OwnedBuffer buffer;
    VkDeviceAddress address = 0;
    VkDeviceSize size = 0;
    void* mapped = nullptr;
    MemoryKind kind = MemoryKind::Device;
    std::map<VkDeviceSize, VkDeviceSize> free;  // offset -> size, coalesced
    OwnedBufferView words, quads, floats;
    TexelViews texels;
  };
  // Creates the block's texel views where the device reads through them.
  void create_texel_views(Block& block);
  size_t create_block(VkDeviceSize bytes, MemoryKind kind, const std::string& what);
  bool carve(Block& block, VkDeviceSize bytes, VkDeviceSize* offset);
  void release(size_t block, VkDeviceSize offset, VkDeviceSize bytes);
  uint32_t memory_type(MemoryKind kind, uint32_t type_bits) const;

  const Device& device_;
  VkDeviceSize alignment_ = 256;
  VkDeviceSize block_size_ = 0;
  VkDeviceSize used_[3] = {0, 0, 0};
  std::vector<std::unique_ptr<Block>> blocks_;
};

std::string format_bytes(VkDeviceSize bytes);

}  // namespace q3n
