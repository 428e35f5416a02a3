#include "runtime/ops/spec_accept.h"

#include "runtime/ops/op_support.h"

namespace q3n::ops {

namespace {
struct Push {
  VkDeviceAddress ids, sampled, count;
  uint32_t batch, tokens;
};
}  // namespace

void record_spec_accept(PipelineLibrary& pipelines, CommandBuffer& commands, const SpecAcceptArgs& a) {
  const uint64_t rows = uint64_t(a.batch) * a.tokens;
  require_bytes(a.ids, rows * 4, "verified ids");
  require_bytes(a.sampled, rows * 4, "verified samples");
  require_bytes(a.count, uint64_t(a.batch) * 4, "accepted counts");
  const Push push{a.ids.address, a.sampled.address, a.count.address, a.batch, a.tokens};
  commands.dispatch(pipelines.get({"spec_accept", {64, 1, 1}, {}, sizeof(push)}), push, ceil_div(a.batch, 64));
}

}  // namespace q3n::ops
