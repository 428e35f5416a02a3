#include "runtime/ops/embedding.h"

#include "runtime/error.h"

namespace q3n::ops {

namespace {
struct Push {
  VkDeviceAddress table, ids, out;
  uint32_t dim, tokens;
};
}  // namespace

void record_embedding(PipelineLibrary& pipelines, CommandBuffer& commands, const EmbeddingArgs& a) {
  if (a.table.size < weight_storage_bytes(a.type, uint64_t(a.rows) * a.dim) || a.ids.size < uint64_t(a.tokens) * 4 ||
      a.out.size < uint64_t(a.tokens) * a.dim * 4)
    throw Error("internal: embedding buffers are smaller than their shapes");
  const Pipeline& pipeline = pipelines.get({"embedding", {128, 1, 1}, {static_cast<uint32_t>(a.type)}, sizeof(Push)});
  commands.dispatch(pipeline, Push{a.table.address, a.ids.address, a.out.address, a.dim, a.tokens}, a.tokens);
}

}  // namespace q3n::ops
