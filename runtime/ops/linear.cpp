#include "runtime/ops/linear.h"

#include <algorithm>

#include "runtime/error.h"
#include "runtime/ops/op_support.h"

namespace q3n::ops {

namespace {
struct Push {
  VkDeviceAddress x, weight, y;
  uint32_t k, n, tokens;
};
constexpr uint32_t kMaxGroupsX = 65535;  // the minimum maxComputeWorkGroupCount[0] every device has
}  // namespace

void record_linear(PipelineLibrary& pipelines, CommandBuffer& commands, const LinearArgs& a) {
  if (a.x.size < uint64_t(a.tokens) * a.k * 4 || a.y.size < uint64_t(a.tokens) * a.n * 4 ||
      a.weight.size < weight_storage_bytes(a.type, uint64_t(a.n) * a.k))
    throw Error("internal: linear buffers are smaller than their shapes");
  if (is_quantized(a.type) && (a.k % kQuantBlock || a.x.address % 16))
    throw Error("internal: a quantised linear needs rows a multiple of 32 long and a 16-byte aligned input");
  const Push push{a.x.address, a.weight.address, a.y.address, a.k, a.n, a.tokens};
  const uint32_t type = static_cast<uint32_t>(a.type);
  // Two GEMV variants (register budgets of 8 and 32 tokens) whose per-row arithmetic is the same.
  const uint32_t gemv_tokens = a.tokens > kGemvSmallTokens ? kGemvMaxTokens : kGemvSmallTokens;
  if (a.tokens <= kGemvMaxTokens) {
    // Quantised rows hold ~1.3 KB at k = 2048: 64 invocations per row keep each one busy with
    // several block parts and halve the reduction; 16-bit rows keep 256.
    const uint32_t threads = is_quantized(a.type) ? 64 : 256;
    const Pipeline& pipeline = pipelines.get({"linear_gemv", {threads, 1, 1}, {type, gemv_tokens}, sizeof(Push)});
    const uint32_t gx = std::min(a.n, kMaxGroupsX);
    commands.dispatch(pipeline, push, gx, ceil_div(a.n, gx));
  } else if (pipelines.coopmat() && a.type != WeightType::F32 && a.x.address % 16 == 0) {
    // fp32 weights stay on the fp32 kernel: the matrix units would round them to fp16.
    const PipelineKey key{"linear_gemm_coopmat", {pipelines.coopmat_workgroup(), 1, 1}, {type}, sizeof(Push)};
    commands.dispatch(pipelines.get(key), push, ceil_div(a.n, 64), ceil_div(a.tokens, 64));
  } else {
    const Pipeline& pipeline = pipelines.get({"linear_gemm", {256, 1, 1}, {type}, sizeof(Push)});
    commands.dispatch(pipeline, push, ceil_div(a.n, 64), ceil_div(a.tokens, 64));
  }
}

}  // namespace q3n::ops
