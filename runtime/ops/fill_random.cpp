#include "runtime/ops/fill_random.h"

#include <algorithm>

#include "runtime/error.h"
#include "runtime/ops/op_support.h"

namespace q3n::ops {

namespace {
struct Push {
  VkDeviceAddress dst;
  uint32_t words, dtype, seed;
  float lo, hi;
};
}  // namespace

void record_fill_random(PipelineLibrary& pipelines, CommandBuffer& commands, const FillRandomArgs& a) {
  const uint64_t bytes = weight_storage_bytes(a.type, a.elements);
  if ((is_quantized(a.type) && a.elements % kQuantBlock) ||
      ((a.type == WeightType::F16 || a.type == WeightType::BF16) && a.elements % 2))
    throw Error("internal: fill_random of " + std::to_string(a.elements) + " elements as " + weight_type_name(a.type));
  require_bytes(a.dst, bytes, "fill_random destination");
  if (bytes / 4 > 0xFFFFFFFFull) throw Error("internal: fill_random of more than 2^32 words");
  const uint32_t words = uint32_t(bytes / 4);
  if (words == 0) return;
  const Push push{a.dst.address, words, static_cast<uint32_t>(a.type), a.seed, a.lo, a.hi};
  const Pipeline& pipeline = pipelines.get({"fill_random", {256, 1, 1}, {}, sizeof(Push)});
  commands.dispatch(pipeline, push, std::min<uint32_t>(ceil_div(words, 256u), 65535u), 1);
}

}  // namespace q3n::ops
