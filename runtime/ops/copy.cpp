#include "runtime/ops/copy.h"

#include <algorithm>

#include "runtime/error.h"
#include "runtime/ops/op_support.h"

namespace q3n::ops {

namespace {
struct Push {
  VkDeviceAddress src, dst;
  uint32_t vectors;
};
}  // namespace

void record_copy(PipelineLibrary& pipelines, CommandBuffer& commands, const BufferRange& src, const BufferRange& dst,
                 uint64_t bytes) {
  if (bytes % 16 || src.address % 16 || dst.address % 16 || bytes / 16 > 0xFFFFFFFFull)
    throw Error("internal: copy needs 16-byte aligned ranges and sizes under 64 GiB");
  require_bytes(src, bytes, "copy source");
  require_bytes(dst, bytes, "copy destination");
  const uint32_t vectors = uint32_t(bytes / 16);
  if (vectors == 0) return;
  const Push push{src.address, dst.address, vectors};
  const Pipeline& pipeline = pipelines.get({"copy", {256, 1, 1}, {}, sizeof(Push)});
  // Enough workgroups to fill any GPU, each invocation then strides through the rest.
  commands.dispatch(pipeline, push, std::min<uint32_t>(ceil_div(vectors, 256u), 8192u), 1);
}

}  // namespace q3n::ops
