#include "runtime/ops/causal_conv1d.h"

#include "runtime/error.h"
#include "runtime/ops/op_support.h"

namespace q3n::ops {

namespace {
struct Push {
  VkDeviceAddress x, weight, state, seqs, y, count, table;
  uint32_t flags, channels, tokens, kernel;
};

// GPUs: 256 invocations, 32 channels x 8 token lanes, or 256 channels x 1 lane for steps of
// fewer than 8 tokens (decode), which would leave lanes idle. The CPU shapes: 32 channels of one
// lane (no barrier).
struct ConvShape {
  uint32_t lanes, workgroup;
  uint32_t channels_per_group() const { return workgroup / lanes; }
};
ConvShape conv_shape(const PipelineLibrary& pipelines, uint32_t tokens) {
  return {pipelines.cpu_shapes() || tokens < 8 ? 1u : 8u, pipelines.cpu_shapes() ? 32u : 256u};
}

void check_kernel(uint32_t kernel) {
  if (kernel < 1 || kernel > kMaxConvKernel)
    throw Error("internal: conv kernel width " + std::to_string(kernel) + " is outside 1.." +
                std::to_string(kMaxConvKernel) + " (graph::check_supported refuses such configs)");
}
}  // namespace

void record_causal_conv1d(PipelineLibrary& pipelines, CommandBuffer& commands, const CausalConv1dArgs& a) {
  check_kernel(a.kernel);
  const uint64_t rows = uint64_t(a.batch) * a.tokens;
  if (a.x.size < rows * a.channels * 4 || a.y.size < rows * a.channels * 4 ||
      a.weight.size < weight_storage_bytes(a.type, uint64_t(a.channels) * a.kernel) ||
      a.state.size < uint64_t(a.kernel - 1) * a.channels * 4 || a.seqs.size < uint64_t(a.batch) * 8)
    throw Error("internal: causal conv1d buffers are smaller than their shapes");
  if (a.update == StateUpdate::Commit && a.accepted.size < uint64_t(a.batch) * 4)
    throw Error("internal: causal conv1d accepted counts are smaller than the batch");
  const ConvShape shape = conv_shape(pipelines, a.tokens);
  const Pipeline& pipeline = pipelines.get(
      {"causal_conv1d", {shape.workgroup, 1, 1}, {static_cast<uint32_t>(a.type), shape.lanes, 0u}, sizeof(Push)});
  const Push push{a.x.address,
                  a.weight.address,
                  a.state.address,
                  a.seqs.address,
                  a.y.address,
                  a.update == StateUpdate::Commit ? a.accepted.address : 0,
                  0,
                  state_update_flags(a.update),
                  a.channels,
                  a.tokens,
                  a.kernel};
  commands.dispatch(pipeline, push, ceil_div(a.channels, shape.channels_per_group()), a.batch);
}

void record_causal_conv1d_commits(PipelineLibrary& pipelines, CommandBuffer& commands, const CausalConv1dArgs& a,
                                  const std::vector<ConvCommitLayer>& layers, const AddressTable& table) {
  check_kernel(a.kernel);
  if (a.update != StateUpdate::Commit || layers.empty())
    throw Error("internal: the layer-table conv records commits of at least one layer");
  require_bytes(a.seqs, uint64_t(a.batch) * 8, "conv commit sequence table");
  require_bytes(a.accepted, uint64_t(a.batch) * 4, "conv commit accepted counts");
  std::vector<VkDeviceAddress> addresses;
  for (const ConvCommitLayer& layer : layers) {
    require_bytes(layer.x, uint64_t(a.batch) * a.tokens * a.channels * 4, "conv commit pre-conv rows");
    require_bytes(layer.state, uint64_t(a.kernel - 1) * a.channels * 4, "conv commit state");
    addresses.push_back(layer.x.address);
    addresses.push_back(layer.state.address);
  }
  write_address_table(table, addresses, "conv commit address table");
  const ConvShape shape = conv_shape(pipelines, a.tokens);
  const Pipeline& pipeline = pipelines.get(
      {"causal_conv1d", {shape.workgroup, 1, 1}, {static_cast<uint32_t>(a.type), shape.lanes, 1u}, sizeof(Push)});
  const Push push{0,
                  0,
                  0,
                  a.seqs.address,
                  0,
                  a.accepted.address,
                  table.range.address,
                  state_update_flags(a.update),
                  a.channels,
                  a.tokens,
                  a.kernel};
  commands.dispatch(pipeline, push, ceil_div(a.channels, shape.channels_per_group()), a.batch,
                    static_cast<uint32_t>(layers.size()));
}

}  // namespace q3n::ops
