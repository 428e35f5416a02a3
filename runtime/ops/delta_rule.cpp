#include "runtime/ops/delta_rule.h"

#include "runtime/error.h"

namespace q3n::ops {

namespace {
struct Push {
  VkDeviceAddress q, k, v, g, beta, state, out;
  uint32_t tokens, key_heads, value_heads, dk, dv;
};
constexpr uint32_t kMaxDk = 256;  // shared-memory bound of the shader
}  // namespace

void record_delta_rule_recurrent(PipelineLibrary& pipelines, CommandBuffer& commands, const DeltaRuleArgs& a) {
  if (a.value_heads % a.key_heads != 0) throw Error("internal: value heads must be a multiple of key heads");
  if (a.dk > kMaxDk) throw Error("linear_key_head_dim " + std::to_string(a.dk) + " exceeds q3n's limit of 256");
  const uint64_t bt = uint64_t(a.batch) * a.tokens;
  if (a.q.size < bt * a.key_heads * a.dk * 4 || a.k.size < bt * a.key_heads * a.dk * 4 ||
      a.v.size < bt * a.value_heads * a.dv * 4 || a.g.size < bt * a.value_heads * 4 ||
      a.beta.size < bt * a.value_heads * 4 || a.out.size < bt * a.value_heads * a.dv * 4 ||
      a.state.size < uint64_t(a.batch) * a.value_heads * a.dk * a.dv * 4)
    throw Error("internal: delta rule buffers are smaller than their shapes");
  const Pipeline& pipeline = pipelines.get({"delta_rule_recurrent", {64, 1, 1}, {kMaxDk}, sizeof(Push)});
  const Push push{a.q.address, a.k.address,    a.v.address,    a.g.address, a.beta.address, a.state.address,
                  a.out.address, a.tokens, a.key_heads, a.value_heads, a.dk, a.dv};
  commands.dispatch(pipeline, push, a.value_heads, a.batch);
}

}  // namespace q3n::ops
