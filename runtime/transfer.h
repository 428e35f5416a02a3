// Copies between host memory and device-local allocations through host-visible staging buffers.
#pragma once

#include <cstddef>

#include "runtime/command.h"
#include "runtime/memory.h"

namespace q3n {

class Transfer {
 public:
  Transfer(const Device& device, Allocator& allocator, Queue& queue, const CommandPool& pool,
           VkDeviceSize staging_bytes = 64ull << 20);
  // Blocking copies; large ranges stream through the staging buffer in pieces.
  void upload(const BufferRange& dst, const void* src, size_t bytes);
  void download(const BufferRange& src, void* dst, size_t bytes);
  void fill(const BufferRange& dst, uint32_t value);

 private:
  Allocator& allocator_;
  Queue& queue_;
  CommandBuffer commands_;
  VkDeviceSize staging_bytes_;
  Allocation upload_staging_, readback_staging_;  // created on first use
};

}  // namespace q3n
