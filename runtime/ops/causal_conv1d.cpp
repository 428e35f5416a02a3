#include "runtime/ops/causal_conv1d.h"

#include "runtime/error.h"
#include "runtime/ops/op_support.h"

namespace q3n::ops {

namespace {
struct Push {
  VkDeviceAddress x, weight, state, seqs, y, count;
  uint32_t flags, channels, tokens, kernel;
};
}  // namespace

void record_causal_conv1d(PipelineLibrary& pipelines, CommandBuffer& commands, const CausalConv1dArgs& a) {
  if (a.kernel < 1 || a.kernel > kMaxConvKernel)
    throw Error("internal: conv kernel width " + std::to_string(a.kernel) + " is outside 1.." +
                std::to_string(kMaxConvKernel) + " (graph::check_supported refuses such configs)");
  const uint64_t rows = uint64_t(a.batch) * a.tokens;
  if (a.x.size < rows * a.channels * 4 || a.y.size < rows * a.channels * 4 ||
      a.weight.size < weight_storage_bytes(a.type, uint64_t(a.channels) * a.kernel) ||
      a.state.size < uint64_t(a.kernel - 1) * a.channels * 4 || a.seqs.size < uint64_t(a.batch) * 8)
    throw Error("internal: causal conv1d buffers are smaller than their shapes");
  if (a.update == StateUpdate::Commit && a.accepted.size < uint64_t(a.batch) * 4)
    throw Error("internal: causal conv1d accepted counts are smaller than the batch");
  // GPUs: 256 invocations, 32 channels x 8 token lanes, or 256 channels x 1 lane for steps of
  // fewer than 8 tokens (decode), which would leave lanes idle. The CPU shapes: 32 channels of one
  // lane (no barrier).
  const uint32_t lanes = pipelines.cpu_shapes() || a.tokens < 8 ? 1 : 8;
  const uint32_t workgroup = pipelines.cpu_shapes() ? 32 : 256, channels_per_group = workgroup / lanes;
  const Pipeline& pipeline =
      pipelines.get({"causal_conv1d", {workgroup, 1, 1}, {static_cast<uint32_t>(a.type), lanes}, sizeof(Push)});
  const Push push{a.x.address,
                  a.weight.address,
                  a.state.address,
                  a.seqs.address,
                  a.y.address,
                  a.update == StateUpdate::Commit ? a.accepted.address : 0,
                  state_update_flags(a.update),
                  a.channels,
                  a.tokens,
                  a.kernel};
  commands.dispatch(pipeline, push, ceil_div(a.channels, channels_per_group), a.batch);
}

}  // namespace q3n::ops
