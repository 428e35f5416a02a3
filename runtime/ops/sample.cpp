#include "runtime/ops/sample.h"

#include <cstring>

#include "runtime/ops/op_support.h"

namespace q3n::ops {

namespace {
struct Push {
  VkDeviceAddress logits, params, ids;
  uint32_t vocab;
};
uint32_t bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
}  // namespace

std::vector<uint32_t> sampling_record(const SamplingParams& s, uint32_t counter) {
  return {bits(s.temperature),
          s.top_k,
          bits(s.top_p),
          bits(s.min_p),
          static_cast<uint32_t>(s.seed),
          static_cast<uint32_t>(s.seed >> 32),
          counter,
          0};
}

void record_sample(PipelineLibrary& pipelines, CommandBuffer& commands, const SampleArgs& a) {
  require_bytes(a.logits, uint64_t(a.batch) * a.vocab * 4, "sampling logits");
  require_bytes(a.params, uint64_t(a.batch) * 32, "sampling parameters");
  require_bytes(a.ids, uint64_t(a.batch) * 4, "sampled ids");
  const Push push{a.logits.address, a.params.address, a.ids.address, a.vocab};
  commands.dispatch(pipelines.get({"sample", {pipelines.reduction_workgroup(256), 1, 1}, {}, sizeof(push)}), push,
                    a.batch);
}

}  // namespace q3n::ops
