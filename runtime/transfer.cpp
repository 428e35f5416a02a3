#include "runtime/transfer.h"

#include <algorithm>
#include <cstring>

#include "runtime/error.h"

namespace q3n {

Transfer::Transfer(const Device& /*device*/, Allocator& allocator, Queue& queue, const CommandPool& pool,
                   VkDeviceSize staging_bytes)
    : allocator_(allocator), queue_(queue), commands_(pool.allocate()), staging_bytes_(staging_bytes) {}

void Transfer::upload(const BufferRange& dst, const void* src, size_t bytes) {
  if (bytes > dst.size) throw Error("internal: upload of " + std::to_string(bytes) + " bytes into a smaller range");
  if (!upload_staging_) upload_staging_ = allocator_.allocate(staging_bytes_, MemoryKind::Upload, "upload staging");
  const auto* p = static_cast<const char*>(src);
  for (size_t done = 0; done < bytes;) {
    const size_t n = std::min<size_t>(bytes - done, staging_bytes_);
    std::memcpy(upload_staging_.mapped(), p + done, n);
    commands_.begin();
    commands_.copy(upload_staging_.range(), dst.sub(done, n), n);
    commands_.barrier();
    commands_.end();
    queue_.submit_and_wait(commands_);
    done += n;
  }
}

void Transfer::download(const BufferRange& src, void* dst, size_t bytes) {
  if (bytes > src.size) throw Error("internal: download of " + std::to_string(bytes) + " bytes from a smaller range");
  if (!readback_staging_)
    readback_staging_ = allocator_.allocate(staging_bytes_, MemoryKind::Readback, "readback staging");
  auto* p = static_cast<char*>(dst);
  for (size_t done = 0; done < bytes;) {
    const size_t n = std::min<size_t>(bytes - done, staging_bytes_);
    commands_.begin();
    commands_.barrier();
    commands_.copy(src.sub(done, n), readback_staging_.range(), n);
    commands_.barrier_to_host();
    commands_.end();
    queue_.submit_and_wait(commands_);
    std::memcpy(p + done, readback_staging_.mapped(), n);
    done += n;
  }
}

void Transfer::fill(const BufferRange& dst, uint32_t value) {
  commands_.begin();
  commands_.fill(dst, value);
  commands_.barrier();
  commands_.end();
  queue_.submit_and_wait(commands_);
}

}  // namespace q3n
