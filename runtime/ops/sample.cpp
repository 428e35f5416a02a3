#include "runtime/ops/sample.h"

#include <cstring>

#include "runtime/ops/op_support.h"

namespace q3n::ops {

namespace {
struct Push {
  VkDeviceAddress logits, params, ids;
  uint32_t vocab;
  uint32_t logits_texel = 0;  // the texel-read variant's offset in words
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
  // The CPU shapes read the logits through a texel view where they can (shaders/sample.comp).
  const bool texel = pipelines.cpu_shapes() && pipelines.device().texel_reads() && a.logits.word_readable();
  const Pipeline& pipeline = pipelines.get({texel ? "sample_texel" : "sample",
                                            {pipelines.reduction_workgroup(256), 1, 1},
                                            {},
                                            sizeof(Push),
                                            texel ? 1u : 0u});
  Push push{a.logits.address, a.params.address, a.ids.address, a.vocab};
  if (texel) {
    const VkBufferView view = a.logits.texels->words;
    commands.push_texel_views(pipeline, {&view, 1});
    push.logits_texel = texel_offset(a.logits);
  }
  commands.dispatch(pipeline, push, a.batch);
}

}  // namespace q3n::ops
