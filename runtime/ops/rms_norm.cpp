#include "runtime/ops/rms_norm.h"

#include "runtime/error.h"

namespace q3n::ops {

namespace {
struct Push {
  VkDeviceAddress x, weight, out, residual, gate;
  uint32_t n, rows;
  float eps, weight_offset;
};
constexpr uint32_t kWorkgroup = 256;
}  // namespace

void record_rms_norm(PipelineLibrary& pipelines, CommandBuffer& commands, const RmsNormArgs& a) {
  const bool fused = a.residual.address != 0, gated = a.gate.address != 0;
  const uint64_t elements = uint64_t(a.rows) * a.n;
  if (a.x.size < elements * 4 || a.out.size < elements * 4 || a.weight.size < uint64_t(a.n) * 4 ||
      (fused && a.residual.size < elements * 4) || (gated && a.gate.size < elements * 4))
    throw Error("internal: rms_norm buffers are smaller than rows x n");
  const Pipeline& pipeline = pipelines.get({"rms_norm",
                                            {pipelines.reduction_workgroup(kWorkgroup), 1, 1},
                                            {fused ? 1u : 0u, gated ? 1u : 0u},
                                            sizeof(Push)});
  Push push{a.x.address,
            a.weight.address,
            a.out.address,
            fused ? a.residual.address : a.x.address,
            gated ? a.gate.address : a.x.address,
            a.n,
            a.rows,
            a.eps,
            a.zero_centred ? 1.0f : 0.0f};
  commands.dispatch(pipeline, push, a.rows);
}

}  // namespace q3n::ops
