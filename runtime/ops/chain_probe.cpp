#include "runtime/ops/chain_probe.h"

#include "runtime/error.h"
#include "runtime/ops/op_support.h"

namespace q3n::ops {

namespace {
struct Push {
  VkDeviceAddress input, rows, counters, status;
  uint32_t n_in, width, first_phase, phases, wait_target, spin_limit;
};
}  // namespace

void record_chain_probe(PipelineLibrary& pipelines, CommandBuffer& commands, const ChainProbeArgs& a) {
  if (a.phases == 0 || a.workgroups == 0 || a.input_floats == 0 || a.epoch == 0)
    throw Error("internal: chain_probe needs phases, workgroups, input and an epoch of at least 1");
  const uint64_t width = uint64_t(a.workgroups) * kChainProbeWorkgroup;
  if (uint64_t(a.phases) * width >= (uint64_t(1) << 32)) throw Error("internal: chain_probe rows past 2^32 floats");
  require_bytes(a.input, uint64_t(a.input_floats) * 4, "chain_probe input");
  require_bytes(a.vectors, uint64_t(a.phases) * width * 4, "chain_probe vectors");
  require_bytes(a.counters, uint64_t(a.phases) * 4, "chain_probe counters");
  require_bytes(a.status, 4, "chain_probe status");
  const uint32_t counted = a.wait == ChainWait::Counter || a.wait == ChainWait::Persistent ? 1u : 0u;
  const Pipeline& pipeline =
      pipelines.get({"chain_probe", {kChainProbeWorkgroup, 1, 1}, {counted, counted}, sizeof(Push)});
  const auto push = [&](uint32_t first, uint32_t phases) {
    return Push{a.input.address,
                a.vectors.address,
                a.counters.address,
                a.status.address,
                a.input_floats,
                uint32_t(width),
                first,
                phases,
                a.workgroups * a.epoch,
                a.spin_limit};
  };
  if (a.wait == ChainWait::Persistent) {
    commands.dispatch(pipeline, push(0, a.phases), a.workgroups);
    return;
  }
  for (uint32_t i = 0; i < a.phases; ++i) {
    if (i > 0 && a.wait == ChainWait::Barrier) commands.barrier();
    commands.dispatch(pipeline, push(i, 1), a.workgroups);
  }
}

}  // namespace q3n::ops
