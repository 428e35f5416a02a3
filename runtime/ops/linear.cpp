#include "runtime/ops/linear.h"

#include <algorithm>

#include "runtime/error.h"
#include "runtime/ops/causal_conv1d.h"
#include "runtime/ops/moe.h"
#include "runtime/ops/op_support.h"

namespace q3n::ops {

namespace {
struct Push {  // shaders/linear_push.glsl
  VkDeviceAddress x, weight, y;
  uint32_t k, n, tokens;
  uint32_t weight_texel = 0, x_texel = 0;  // the texel-read variant's offsets in words
};
struct GemvPush {  // linear_gemv.comp: Push, then LinearArgs::conv's addresses
  Push product;
  VkDeviceAddress conv_weight = 0, conv_state = 0, seqs = 0, pre_conv = 0;
};
struct SplitSumPush {  // shaders/linear_split_sum.comp
  VkDeviceAddress parts, y;
  uint32_t count, count_parts;
};
constexpr uint32_t kMaxGroupsX = 65535;  // the minimum maxComputeWorkGroupCount[0] every device has
// Tokens per pass of linear_gemv.comp: 4, or the token count below that, so a variant holds no
// unused registers (a single token: 22 -> 15 us for in_proj_qkvz on the H100; two, a speculative
// verify step: bench/NOTES.md, session 15). Measured against 1-16: larger register tiles lose more
// to occupancy than they gain in reuse (bench/NOTES.md). A token's arithmetic is the same in every
// variant (tests/ops/linear_test.cpp checks it bitwise).
constexpr uint32_t kGemvChunk = 4;
// Invocations in flight that keep a large GPU's memory busy (~1000 per compute unit on the H100).
// Measured at 64k / 128k / 256k / 1M: single-sequence decode 113 / 135 / 133 / 135 tok/s, 128
// sequences 762 / 730 / 682 / 622 (bench/NOTES.md, round 6).
constexpr uint64_t kGemvTargetInvocations = 131072;
// Workgroups of linear_gemm_coopmat.comp that fill a large GPU (two per multiprocessor on the
// H100's 132); narrower tiles are chosen below it.
constexpr uint64_t kMatrixTargetWorkgroups = 256;
}  // namespace

uint32_t linear_k_part(uint32_t n, uint32_t k) {
  // Enough parts that the 128-feature tiles of one row tile make kMatrixTargetWorkgroups, each
  // part at least 256 long (four 64-value slices), at most 16 parts.
  const uint64_t tiles = ceil_div(n, 128);
  const uint64_t parts = std::min<uint64_t>({ceil_div(kMatrixTargetWorkgroups, tiles), 16, k / 256});
  if (parts <= 1) return k;
  const uint32_t part = static_cast<uint32_t>(ceil_div(ceil_div(k, parts), 64) * 64);
  return std::min(part, k);
}

uint64_t linear_split_bytes(uint32_t tokens, uint32_t n, uint32_t k) {
  const uint32_t part = linear_k_part(n, k);
  if (tokens > kSplitMaxTokens || part >= k) return 0;
  return uint64_t(ceil_div(k, part)) * tokens * n * 4;
}

uint32_t matrix_tile_features(uint32_t tokens, uint32_t n) {
  uint32_t features = 128;
  while (features > 32 && uint64_t(ceil_div(n, features)) * ceil_div(tokens, 64) < kMatrixTargetWorkgroups)
    features /= 2;
  return features;
}

uint32_t matrix_tile_row_blocks(const PipelineLibrary& pipelines, WeightType type, uint32_t tokens, uint32_t n,
                                uint32_t features) {
  // 128-token tiles read each weight unit once per 128 tokens: where the grid still fills the GPU,
  // with fp16 activations (split ones would need a second x tile) and >= 256 invocations (the
  // kernel's per-invocation share of the x tile). Only for 16-bit and f32 weights: on the H200
  // they made bf16 products ~1.2x faster, but Q4 ones no faster (178 registers: one workgroup
  // per multiprocessor), so pp512 of the q4 80B did not move (bench/NOTES.md, session 23).
  const bool fits = !is_quantized(type) && pipelines.split_activations() == 0 && pipelines.coopmat_workgroup() >= 256 &&
                    features == 128;
  return fits && uint64_t(ceil_div(n, features)) * ceil_div(tokens, 128) >= kMatrixTargetWorkgroups ? 2 : 1;
}

GemvShape gemv_shape(uint32_t n, uint32_t units) {
  // Each invocation walks its share of K in a loop whose loads wait on memory every step, so a
  // matrix with few rows needs more invocations per row to keep enough loads in flight; one with
  // many rows gets them from its workgroups. The shape depends on the matrix only, never on the
  // token count: a row's reduction order depends on the invocation count (batch invariance).
  for (const uint32_t rows : {4u, 1u}) {
    uint32_t threads = 32;
    while (uint64_t(ceil_div(n, rows)) * threads < kGemvTargetInvocations && threads < 256 && threads * 2 <= units)
      threads *= 2;
    if (uint64_t(ceil_div(n, rows)) * threads >= kGemvTargetInvocations || rows == 1) return {rows, threads};
  }
  return {1, 32};  // not reached
}

bool linear_applies_conv(const PipelineLibrary& pipelines, uint32_t tokens, uint32_t gemv_max_tokens) {
  return !pipelines.cpu_shapes() && tokens <= std::min(gemv_max_tokens, kGemvMaxTokens);
}

void record_linear(PipelineLibrary& pipelines, CommandBuffer& commands, const LinearArgs& args) {
  LinearArgs a = args;
  if (a.conv) {
    if (!linear_applies_conv(pipelines, a.tokens, a.gemv_max_tokens) || a.swiglu_input || a.conv->kernel < 1 ||
        a.conv->kernel > kMaxConvKernel)
      throw Error("internal: the conv applies to GEMV outputs only (linear_applies_conv), of kernels 1 to " +
                  std::to_string(kMaxConvKernel));
    require_bytes(a.conv->weight, weight_storage_bytes(a.conv->type, uint64_t(a.n) * a.conv->kernel), "conv weight");
    const uint32_t per_sequence = a.conv->tokens_per_sequence;
    if (per_sequence == 0 || a.tokens % per_sequence)
      throw Error("internal: a conv in the GEMV needs whole sequences of tokens_per_sequence rows");
    require_bytes(a.conv->state, uint64_t(a.conv->kernel - 1) * a.n * 4, "conv state");
    require_bytes(a.conv->seqs, uint64_t(a.tokens / per_sequence) * 8, "conv sequence table");
    if (per_sequence > 1) require_bytes(a.conv->pre_conv, uint64_t(a.tokens) * a.n * 4, "pre-conv rows");
  }
  if (a.swiglu_input) {
    require_bytes(a.x, uint64_t(a.tokens) * 2 * a.k * 4, "SwiGLU gate|up input");
    // The same choice of kernel as below: only the (non-rowwise) GEMV applies SwiGLU as it reads.
    const bool matrix_units = pipelines.coopmat() && a.type != WeightType::F32 && a.x.address % 16 == 0;
    const bool gemv = a.tokens <= (matrix_units ? a.gemv_max_tokens : kGemvMaxTokens);
    if (pipelines.cpu_shapes() || !gemv) {  // SwiGLU first, then the plain product of its output
      require_bytes(a.act, uint64_t(a.tokens) * a.k * 4, "SwiGLU activations");
      record_swiglu(pipelines, commands, a.x, a.act, a.tokens, a.k);
      commands.barrier();
      a.x = a.act;
      a.swiglu_input = false;
    }
  }
  const uint64_t x_bytes = uint64_t(a.tokens) * a.k * 4 * (a.swiglu_input ? 2 : 1);
  if (a.x.size < x_bytes || a.y.size < uint64_t(a.tokens) * a.n * 4 ||
      a.weight.size < weight_storage_bytes(a.type, uint64_t(a.n) * a.k))
    throw Error("internal: linear buffers are smaller than their shapes");
  if (is_quantized(a.type) && (a.k % kQuantBlock || a.x.address % 16))
    throw Error("internal: a quantised linear needs rows a multiple of 32 long and a 16-byte aligned input");
  const Push push{a.x.address, a.weight.address, a.y.address, a.k, a.n, a.tokens};
  const uint32_t type = static_cast<uint32_t>(a.type);
  // fp32 weights stay off the matrix units, which would round them to fp16.
  const bool matrix_units = pipelines.coopmat() && a.type != WeightType::F32 && a.x.address % 16 == 0;
  if (a.gemv_max_tokens > kGemvMaxTokens)
    throw Error("internal: the GEMV serves at most " + std::to_string(kGemvMaxTokens) + " tokens");
  // Past gemv_max_tokens the matrix units take over; the fp32 tiled GEMM only past kGemvMaxTokens.
  // CPU shapes take linear_gemv_rowwise.comp (one row per invocation, no reduction) at every token
  // count a matrix unit does not take: the tiled GEMM's shared-memory tiles run at half its speed
  // on lavapipe.
  const bool gemv = a.tokens <= (matrix_units ? a.gemv_max_tokens : kGemvMaxTokens);
  const bool rowwise = pipelines.cpu_shapes() && (gemv || !matrix_units);
  if (rowwise || gemv) {
    const uint32_t vec8 = gemv_units_of_8(a.type, a.k, a.x.address);
    const uint32_t chunk = std::min(a.tokens, kGemvChunk);
    uint32_t rows = kRowwiseWorkgroup;  // output rows per workgroup
    const bool texel = rowwise && vec8 && reads_texels(pipelines, a.weight, a.x);
    PipelineKey key{texel ? "linear_gemv_rowwise_texel" : "linear_gemv_rowwise",
                    {kRowwiseWorkgroup, 1, 1},
                    {type, chunk, vec8},
                    sizeof(Push),
                    texel ? kTexelViews : 0u};
    if (!rowwise) {
      const GemvShape shape = gemv_shape(a.n, vec8 ? a.k / 8 : a.k);
      rows = shape.rows;
      key = {"linear_gemv",
             {shape.threads, 1, 1},
             {type, shape.rows, chunk, vec8, a.swiglu_input ? 1u : 0u, a.conv ? a.conv->kernel : 0u,
              a.conv ? static_cast<uint32_t>(a.conv->type) : 0u, a.conv ? a.conv->tokens_per_sequence : 1u},
             sizeof(GemvPush)};
    }
    const uint32_t groups = ceil_div(a.n, rows), gx = std::min(groups, kMaxGroupsX);
    const Pipeline& pipeline = pipelines.get(key);
    if (rowwise) {
      Push rowwise_push = push;
      if (texel) bind_texel_reads(commands, pipeline, a.weight, a.x, rowwise_push);
      commands.dispatch(pipeline, rowwise_push, gx, ceil_div(groups, gx));
    } else {
      GemvPush gemv_push{push};
      if (a.conv) {
        gemv_push.conv_weight = a.conv->weight.address;
        gemv_push.conv_state = a.conv->state.address;
        gemv_push.seqs = a.conv->seqs.address;
        gemv_push.pre_conv = a.conv->tokens_per_sequence > 1 ? a.conv->pre_conv.address : 0;
      }
      commands.dispatch(pipeline, gemv_push, gx, ceil_div(groups, gx));
    }
  } else if (matrix_units) {
    const uint64_t split_bytes = linear_split_bytes(a.tokens, a.n, a.k);
    if (split_bytes && a.k_split.size >= split_bytes) {
      // K in parts, 128 features per tile; then the parts added in order.
      const uint32_t part = linear_k_part(a.n, a.k), parts = ceil_div(a.k, part);
      Push partial = push;
      partial.y = a.k_split.address;
      const PipelineKey key{pipelines.coopmat_shader("linear_gemm_coopmat"),
                            {pipelines.coopmat_workgroup(), 1, 1},
                            {type, pipelines.split_activations(), 4u, part, 1u},
                            sizeof(Push)};
      commands.dispatch(pipelines.get(key), partial, ceil_div(a.n, 128), ceil_div(a.tokens, 64), parts);
      commands.barrier();
      const SplitSumPush sum{a.k_split.address, a.y.address, a.tokens * a.n, parts};
      const uint32_t groups = ceil_div(sum.count, 256), gx = std::min(groups, kMaxGroupsX);
      commands.dispatch(pipelines.get({"linear_split_sum", {256, 1, 1}, {}, sizeof(sum)}), sum, gx,
                        ceil_div(groups, gx));
      return;
    }
    const uint32_t features = matrix_tile_features(a.tokens, a.n);
    const uint32_t row_tiles = matrix_tile_row_blocks(pipelines, a.type, a.tokens, a.n, features);
    const PipelineKey key{pipelines.coopmat_shader("linear_gemm_coopmat"),
                          {pipelines.coopmat_workgroup(), 1, 1},
                          {type, pipelines.split_activations(), features / 32, 0u, row_tiles},
                          sizeof(Push)};
    commands.dispatch(pipelines.get(key), push, ceil_div(a.n, features), ceil_div(a.tokens, 64 * row_tiles));
  } else {
    const Pipeline& pipeline = pipelines.get({"linear_gemm", {256, 1, 1}, {type}, sizeof(Push)});
    commands.dispatch(pipeline, push, ceil_div(a.n, 64), ceil_div(a.tokens, 64));
  }
}

namespace {
struct MultiPush {  // shaders/linear_gemv_rowwise_multi.comp
  VkDeviceAddress y[kMaxSharedInputProducts];
  uint32_t k, tokens;
  uint32_t n[kMaxSharedInputProducts];
  uint32_t groups0, groups1;
  uint32_t first[kMaxSharedInputProducts];
  uint32_t x_first;
};
}  // namespace

bool products_share_dispatch(const PipelineLibrary& pipelines, const BufferRange& x, uint32_t k,
                             std::span<const LinearOutput> outputs) {
  if (!pipelines.cpu_shapes() || outputs.empty() || outputs.size() > kMaxSharedInputProducts || k % 8 || k / 8 == 0)
    return false;
  uint64_t groups = 0;
  for (const LinearOutput& o : outputs) {
    if (!reads_texels(pipelines, o.weight, x) || o.n == 0) return false;
    groups += ceil_div(o.n, kRowwiseWorkgroup);
  }
  return groups <= pipelines.device().info().max_workgroup_count[0];
}

void record_linears_sharing_input(PipelineLibrary& pipelines, CommandBuffer& commands, const BufferRange& x,
                                  uint32_t tokens, uint32_t k, std::span<const LinearOutput> outputs) {
  if (!products_share_dispatch(pipelines, x, k, outputs))
    throw Error("internal: these products cannot share a dispatch");
  require_bytes(x, uint64_t(tokens) * k * 4, "shared linear input");
  MultiPush push{};
  push.k = k;
  push.tokens = tokens;
  push.x_first = texel_offset(x);
  std::array<uint32_t, kMaxSharedInputProducts> types{}, groups{};
  std::array<VkBufferView, 2 * kMaxSharedInputProducts + 1> views{};
  for (size_t i = 0; i < kMaxSharedInputProducts; ++i) {
    const LinearOutput& o = outputs[std::min(i, outputs.size() - 1)];  // unused slots repeat the last
    if (i < outputs.size()) {
      require_bytes(o.y, uint64_t(tokens) * o.n * 4, "shared-input linear output");
      require_bytes(o.weight, weight_storage_bytes(o.type, uint64_t(o.n) * k), "shared-input linear weight");
      if (is_quantized(o.type) && k % kQuantBlock)
        throw Error("internal: a quantised linear needs rows a multiple of 32 long");
      push.y[i] = o.y.address;
      push.n[i] = o.n;
      groups[i] = ceil_div(o.n, kRowwiseWorkgroup);
    }
    push.first[i] = texel_offset(o.weight);
    types[i] = static_cast<uint32_t>(o.type);
    views[2 * i] = o.weight.texels->words;
    views[2 * i + 1] = o.weight.texels->quads;
  }
  views.back() = x.texels->floats;
  push.groups0 = groups[0];
  push.groups1 = groups[1];
  const uint32_t chunk = std::min(tokens, kGemvChunk);
  const Pipeline& pipeline = pipelines.get({"linear_gemv_rowwise_multi",
                                            {kRowwiseWorkgroup, 1, 1},
                                            {types[0], types[1], types[2], chunk},
                                            sizeof(push),
                                            static_cast<uint32_t>(views.size())});
  commands.push_texel_views(pipeline, views);
  commands.dispatch(pipeline, push, groups[0] + groups[1] + groups[2]);
}

}  // namespace q3n::ops
