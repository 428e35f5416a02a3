#include "runtime/ops/moe.h"

#include <algorithm>
#include <cstddef>
#include <cstdlib>
#include <string>

#include "runtime/error.h"
#include "runtime/ops/op_support.h"

namespace q3n::ops {

namespace {
struct RoutePush {
  VkDeviceAddress logits, ids, weights;
  uint32_t experts, top_k, logit_stride, normalise;
  VkDeviceAddress status;
  uint32_t has_status;
};
struct RouteGroupPush {  // shaders/moe_route_group.comp: RoutePush's fields, then the grouping's
  VkDeviceAddress logits, ids, weights;
  uint32_t experts, top_k, logit_stride, normalise;
  VkDeviceAddress status;
  uint32_t has_status;
  VkDeviceAddress offsets, sorted, active;
  uint32_t gate_up_columns, down_columns;
};
// Invocations routing one token (moe_route.glsl), the same in both routing kernels so a token's
// weights do not depend on which one ran. Its top-k selection ranks each invocation's best
// probability against every other invocation's, so it costs a loop of this length; 512 experts
// are 8 per invocation.
constexpr uint32_t kRouteWorkgroup = 64;
struct GroupPush {
  VkDeviceAddress ids, offsets, sorted, active;
  uint32_t assignments, experts, tile_rows, gate_up_columns, down_columns;
};
struct ExpertPush {  // shaders/moe_expert_push.glsl
  VkDeviceAddress x, weight, offsets, sorted, active, y;
  uint32_t k, n, top_k;
  uint32_t weight_texel = 0, x_texel = 0;  // the texel-read variant's offsets in words
};
struct ExpertCombinePush {  // moe_expert_gemv_combine: moe_expert_push.glsl with Q3N_COMBINE
  ExpertPush expert;
  VkDeviceAddress weights, shared_out, shared_logit, out;
  uint32_t logit_stride, has_shared;
};
static_assert(offsetof(ExpertCombinePush, weights) == 72, "GLSL places the first address after x_texel at 72");
struct DownCombinePush {  // shaders/moe_expert_down_combine_rowwise.comp
  VkDeviceAddress h, weight, ids, weights, shared_out, shared_logit, out;
  uint32_t k, n, top_k, logit_stride, has_shared;
  uint32_t weight_texel = 0, x_texel = 0;  // the texel-read variant's offsets in words
};
struct CombinePush {
  VkDeviceAddress y, weights, shared_out, shared_logit, out;
  uint32_t hidden, top_k, logit_stride, has_shared;
};
struct SwigluPush {
  VkDeviceAddress x, h;
  uint32_t n, rows;
};
// The `active` scratch: the live-expert count and list, then moe_group's grids of the two tiled
// expert dispatches (two VkDispatchIndirectCommand of three u32).
constexpr uint64_t kGridWords = 6;
constexpr uint32_t kExpertTile = 64;          // BN of moe_expert.comp
constexpr uint32_t kExpertCoopmatTile = 128;  // BN of moe_expert_coopmat.comp (its down tiles are 2 BN)
ExpertPush gate_up_push(const MoeArgs& a, const MoeScratch& scratch) {
  return {a.x.address,       a.gate_up.address, scratch.offsets.address, scratch.sorted.address, scratch.active.address,
          scratch.h.address, a.shape.hidden,    a.shape.expert_dim,      a.shape.top_k};
}
ExpertPush down_push(const MoeArgs& a, const MoeScratch& scratch) {
  return {scratch.h.address,      a.down.address,         scratch.offsets.address,
          scratch.sorted.address, scratch.active.address, scratch.y.address,
          a.shape.expert_dim,     a.shape.hidden,         a.shape.top_k};
}
uint32_t expert_gemv_rows_per_workgroup(const ExpertGemvShape& s) { return s.threads / s.lanes * s.rows; }
// The combine's shared-expert operands (moe_combine.comp, moe_expert_down_combine_rowwise.comp):
// its output and its gate's logit, or, without a shared expert, stand-ins the kernels never read.
struct SharedExpertOperands {
  VkDeviceAddress out, logit;
  uint32_t present;
};
SharedExpertOperands shared_expert_operands(const MoeArgs& a) {
  const bool shared = a.shared_out.address != 0;  // as record_moe decides it
  return {shared ? a.shared_out.address : a.out.address, a.logits.address + uint64_t(a.shared_logit_column) * 4,
          shared ? 1u : 0u};
}
}  // namespace

MoeScratchBytes moe_scratch_bytes(const MoeShape& s) {
  const uint64_t a = s.assignments();
  return {a * 4,
          a * 4,
          (uint64_t(s.experts) + 1) * 4,
          a * 4,
          (uint64_t(s.experts) + 1 + kGridWords) * 4,
          a * s.expert_dim * 4,
          a * s.hidden * 4};
}

// CPU shapes: the down product and the combine in one dispatch, from scratch.h into a.out
// (moe_expert_down_combine_rowwise.comp).
void record_down_combine_rowwise(PipelineLibrary& pipelines, CommandBuffer& commands, const MoeArgs& a,
                                 const MoeScratch& scratch);

// How record_moe records a step: the expert kernels and their shapes.
struct MoePlan {
  bool matrix_units = false;  // the tiled kernels, where taken, are the matrix-unit ones
  bool gemv_path = false;     // the expert GEMVs rather than the tiled kernels
  bool direct = false;        // the GEMVs with a slot per assignment, no grouping
  std::string shader = "moe_expert";
  uint32_t threads = 256, column_tile = kExpertTile, down_column_tile = kExpertTile;
  uint32_t tm = 4;  // the tiled kernels' row tile
  ExpertGemvShape gate_up_shape, down_shape;
};

MoePlan plan_moe(const PipelineLibrary& pipelines, const MoeArgs& a, const MoeScratch& scratch) {
  const MoeShape& s = a.shape;
  MoePlan plan;
  // Row tile: the power of two (4..32) at or above the average rows per expert, so a prefill
  // whose experts get ~10 rows each does not compute 32-row tiles that are two-thirds empty.
  const uint64_t average_rows = ceil_div(s.assignments(), std::min<uint64_t>(s.experts, s.assignments()));
  while (plan.tm < 32 && plan.tm < average_rows) plan.tm *= 2;
  plan.matrix_units =
      pipelines.coopmat() && a.type != WeightType::F32 && a.x.address % 16 == 0 && scratch.h.address % 16 == 0;
  if (plan.matrix_units) {
    // Matrix units: row tiles of 16 or 32, column tiles of 128 (down: 256); fp32 weights stay on
    // the fp32 kernel.
    plan.shader = pipelines.coopmat_shader("moe_expert_coopmat");
    plan.threads = pipelines.coopmat_workgroup();
    plan.column_tile = kExpertCoopmatTile;
    plan.down_column_tile = 2 * kExpertCoopmatTile;
    plan.tm = std::max(plan.tm, 16u);
  }
  if (a.gemv_max_tokens > kExpertGemvMaxTokens)
    throw Error("internal: the expert GEMV serves at most " + std::to_string(kExpertGemvMaxTokens) + " tokens");
  plan.gate_up_shape = a.gate_up_gemv.value_or(expert_gemv_shape(true, s.hidden, s.tokens));
  plan.down_shape = a.down_gemv.value_or(expert_gemv_shape(false, s.expert_dim, s.tokens));
  // Decode and small batches take the expert GEMVs, and so do CPU shapes at every size the
  // matrix units do not take (the tiled kernels' shared-memory tiles lose on a CPU). Without
  // matrix units the GEMV serves every size it can (a caller's lower gemv_max_tokens says where
  // the matrix units win), as record_linear decides.
  const uint32_t gemv_most = plan.matrix_units ? a.gemv_max_tokens : kExpertGemvMaxTokens;
  plan.gemv_path =
      (s.tokens <= gemv_most && ceil_div(s.expert_dim, expert_gemv_rows_per_workgroup(plan.gate_up_shape)) <= 65535 &&
       ceil_div(s.hidden, expert_gemv_rows_per_workgroup(plan.down_shape)) <= 65535) ||
      (pipelines.cpu_shapes() && !plan.matrix_units &&
       ceil_div(std::max(s.hidden, s.expert_dim), kRowwiseWorkgroup) <= 65535);
  plan.direct = plan.gemv_path && !pipelines.cpu_shapes() && s.tokens <= direct_expert_max_tokens() &&
                s.assignments() <= 65535;  // a grid row per assignment
  // The busiest expert may take every token: its row tiles must fit the grid's y limit (65535 on
  // every Vulkan device).
  if (!plan.gemv_path && ceil_div(s.tokens, plan.tm) > 65535)
    throw Error("a prefill step of " + std::to_string(s.tokens) +
                " tokens needs more than 65535 expert row tiles; "
                "use a smaller --chunk");
  return plan;
}

// moe_expert_gemv_combine's workgroup: top_k lane groups of the down shape's lanes.
uint32_t combine_workgroup(const MoeShape& s, const ExpertGemvShape& down) { return s.top_k * down.lanes; }
bool combine_fits(const PipelineLibrary& pipelines, const MoeShape& s, const ExpertGemvShape& down) {
  const DeviceInfo& device = pipelines.device().info();
  const uint64_t threads = combine_workgroup(s, down);
  return threads <= device.max_workgroup_invocations &&
         (threads * down.rows + uint64_t(s.top_k) * down.rows) * 4 <= device.max_shared_memory &&
         ceil_div(s.hidden, down.rows) <= device.max_workgroup_count[0] && s.tokens <= device.max_workgroup_count[1];
}

// The down product of a direct step with the combine inside (moe_expert_gemv.comp, Q3N_COMBINE):
// a workgroup per (down.rows output rows, token), its lane groups the token's top_k assignments.
void record_expert_down_combine(PipelineLibrary& pipelines, CommandBuffer& commands, const MoeArgs& a,
                                const MoeScratch& scratch, const ExpertGemvShape& down) {
  const MoeShape& s = a.shape;
  const SharedExpertOperands shared_expert = shared_expert_operands(a);
  ExpertCombinePush push{.expert = down_push(a, scratch),
                         .weights = scratch.weights.address,
                         .shared_out = shared_expert.out,
                         .shared_logit = shared_expert.logit,
                         .out = a.out.address,
                         .logit_stride = a.logit_stride,
                         .has_shared = shared_expert.present};
  push.expert.offsets = scratch.ids.address;  // DIRECT: the expert of each assignment
  const uint32_t vec8 = gemv_units_of_8(a.type, s.expert_dim, scratch.h.address);
  const PipelineKey key{"moe_expert_gemv_combine",
                        {combine_workgroup(s, down), 1, 1},
                        {static_cast<uint32_t>(a.type), 0u, down.rows, 1u, vec8, down.lanes, 1u},
                        sizeof(push)};
  commands.dispatch(pipelines.get(key), push, ceil_div(s.hidden, down.rows), s.tokens);
}

void record_combine(PipelineLibrary& pipelines, CommandBuffer& commands, const MoeArgs& a, const MoeScratch& scratch);

void record_moe(PipelineLibrary& pipelines, CommandBuffer& commands, const MoeArgs& a, const MoeScratch& scratch) {
  const MoeShape& s = a.shape;
  if (s.top_k == 0 || s.top_k > s.experts) throw Error("internal: top-k must be between 1 and the expert count");
  const MoeScratchBytes need = moe_scratch_bytes(s);
  require_bytes(a.x, uint64_t(s.tokens) * s.hidden * 4, "moe input");
  require_bytes(a.logits, uint64_t(s.tokens) * a.logit_stride * 4, "moe logits");
  if (is_quantized(a.type) &&
      (s.hidden % kQuantBlock || s.expert_dim % kQuantBlock || a.x.address % 16 || scratch.h.address % 16))
    throw Error("internal: quantised experts need sizes that are multiples of 32 and 16-byte aligned inputs");
  require_bytes(a.gate_up, weight_storage_bytes(a.type, uint64_t(s.experts) * 2 * s.expert_dim * s.hidden),
                "expert gate_up");
  require_bytes(a.down, weight_storage_bytes(a.type, uint64_t(s.experts) * s.hidden * s.expert_dim), "expert down");
  require_bytes(a.out, uint64_t(s.tokens) * s.hidden * 4, "moe output");
  require_bytes(scratch.ids, need.ids, "moe ids");
  require_bytes(scratch.weights, need.weights, "moe weights");
  require_bytes(scratch.offsets, need.offsets, "moe offsets");
  require_bytes(scratch.sorted, need.sorted, "moe sorted");
  require_bytes(scratch.active, need.active, "moe active");
  require_bytes(scratch.h, need.h, "moe h");
  require_bytes(scratch.y, need.y, "moe y");
  const bool shared = a.shared_out.address != 0;
  if (shared) require_bytes(a.shared_out, uint64_t(s.tokens) * s.hidden * 4, "shared expert output");

  if (a.status.size) require_bytes(a.status, 4, "routing status");
  const MoePlan plan = plan_moe(pipelines, a, scratch);
  const RoutePush route{
      a.logits.address,      scratch.ids.address, scratch.weights.address, s.experts, s.top_k, a.logit_stride,
      s.normalise ? 1u : 0u, a.status.address,    a.status.size ? 1u : 0u};
  const auto record_shared_down = [&] {  // beside the routing, before its barrier
    if (!a.shared_down) return;
    if (a.shared_down->y.address != a.shared_out.address)
      throw Error("internal: the shared expert's down product must write the combine's shared_out");
    commands.mark("moe.shared_down");
    record_linear(pipelines, commands, *a.shared_down);
  };
  // Single-token steps on CPU shapes route and group in one workgroup (moe_route_group.comp).
  // Larger steps keep a routing workgroup per token: routing 2-4 tokens one after another in one
  // workgroup cost more than the saved dispatch (H200, 80B-A3B: a 4-row verify step 11.3 -> 12.9
  // ms; bench/NOTES.md, session 15). Direct steps route only.
  const bool fused_route = s.tokens == 1 && !plan.direct;
  if (!fused_route) {
    commands.mark("moe.route");
    commands.dispatch(
        pipelines.get(
            {"moe_route", {pipelines.reduction_workgroup(kRouteWorkgroup), 1, 1}, {s.experts, s.top_k}, sizeof(route)}),
        route, s.tokens);
    record_shared_down();
    commands.barrier();
  }
  if (plan.direct) {  // a slot per assignment, no grouping (moe_expert_gemv.comp, DIRECT)
    commands.mark("moe.gate_up");
    record_expert_gemv(pipelines, commands, a, scratch, true, plan.gate_up_shape);
    commands.barrier();
    commands.mark("moe.down");
    if (combine_fits(pipelines, s, plan.down_shape)) {
      record_expert_down_combine(pipelines, commands, a, scratch, plan.down_shape);
      return;
    }
    record_expert_gemv(pipelines, commands, a, scratch, false, plan.down_shape);
    commands.barrier();
    record_combine(pipelines, commands, a, scratch);
    return;
  }

  const GroupPush group{scratch.ids.address,
                        scratch.offsets.address,
                        scratch.sorted.address,
                        scratch.active.address,
                        static_cast<uint32_t>(s.assignments()),
                        s.experts,
                        plan.tm,
                        ceil_div(s.expert_dim, plan.column_tile),
                        ceil_div(s.hidden, plan.down_column_tile)};
  if (fused_route) {
    const RouteGroupPush both{route.logits,
                              route.ids,
                              route.weights,
                              route.experts,
                              route.top_k,
                              route.logit_stride,
                              route.normalise,
                              route.status,
                              route.has_status,
                              scratch.offsets.address,
                              scratch.sorted.address,
                              scratch.active.address,
                              group.gate_up_columns,
                              group.down_columns};
    commands.mark("moe.route");
    commands.dispatch(pipelines.get({"moe_route_group",
                                     {pipelines.reduction_workgroup(kRouteWorkgroup), 1, 1},
                                     {s.experts, s.top_k},
                                     sizeof(both)}),
                      both, 1);
    record_shared_down();
  } else {
    commands.mark("moe.group");
    commands.dispatch(
        pipelines.get({"moe_group", {pipelines.reduction_workgroup(256), 1, 1}, {s.experts}, sizeof(group)}), group, 1);
  }
  commands.barrier_with_indirect();  // the tiled kernels read their grids

  const uint32_t type = static_cast<uint32_t>(a.type);
  commands.mark("moe.gate_up");
  const ExpertPush gate_up = gate_up_push(a, scratch), down = down_push(a, scratch);
  if (plan.gemv_path) {
    // Decode and small batches: experts hold a few rows each (moe_expert_gemv.comp).
    record_expert_gemv(pipelines, commands, a, scratch, true, plan.gate_up_shape);
    commands.barrier();
    commands.mark("moe.down");
    if (pipelines.cpu_shapes()) {  // the down product and the combine in one dispatch
      record_down_combine_rowwise(pipelines, commands, a, scratch);
      return;
    }
    record_expert_gemv(pipelines, commands, a, scratch, false, plan.down_shape);
  } else {
    const uint32_t split = pipelines.split_activations();  // read by the matrix kernel only
    const uint64_t grids = (uint64_t(s.experts) + 1) * 4;  // byte offset of the grids in `active`
    commands.dispatch_indirect(
        pipelines.get({plan.shader, {plan.threads, 1, 1}, {type, 1u, plan.tm, split}, sizeof(gate_up)}), gate_up,
        scratch.active.sub(grids, 12));
    commands.barrier();
    commands.mark("moe.down");
    commands.dispatch_indirect(
        pipelines.get({plan.shader, {plan.threads, 1, 1}, {type, 0u, plan.tm, split}, sizeof(down)}), down,
        scratch.active.sub(grids + 12, 12));
  }
  commands.barrier();
  record_combine(pipelines, commands, a, scratch);
}

void record_combine(PipelineLibrary& pipelines, CommandBuffer& commands, const MoeArgs& a, const MoeScratch& scratch) {
  const MoeShape& s = a.shape;
  commands.mark("moe.combine");
  const SharedExpertOperands shared_expert = shared_expert_operands(a);
  const CombinePush combine{
      scratch.y.address, scratch.weights.address, shared_expert.out,    shared_expert.logit, a.out.address, s.hidden,
      s.top_k,           a.logit_stride,          shared_expert.present};
  commands.dispatch(pipelines.get({"moe_combine", {256, 1, 1}, {}, sizeof(combine)}), combine, ceil_div(s.hidden, 256),
                    s.tokens);
}

void record_down_combine_rowwise(PipelineLibrary& pipelines, CommandBuffer& commands, const MoeArgs& a,
                                 const MoeScratch& scratch) {
  const MoeShape& s = a.shape;
  const uint32_t vec8 = gemv_units_of_8(a.type, s.expert_dim, scratch.h.address);
  const bool texel = vec8 && reads_texels(pipelines, a.down, scratch.h);
  const SharedExpertOperands shared_expert = shared_expert_operands(a);
  DownCombinePush push{scratch.h.address,
                       a.down.address,
                       scratch.ids.address,
                       scratch.weights.address,
                       shared_expert.out,
                       shared_expert.logit,
                       a.out.address,
                       s.expert_dim,
                       s.hidden,
                       s.top_k,
                       a.logit_stride,
                       shared_expert.present};
  const Pipeline& pipeline =
      pipelines.get({texel ? "moe_expert_down_combine_rowwise_texel" : "moe_expert_down_combine_rowwise",
                     {kRowwiseWorkgroup, 1, 1},
                     {static_cast<uint32_t>(a.type), vec8},
                     sizeof(push),
                     texel ? kTexelViews : 0u});
  if (texel) bind_texel_reads(commands, pipeline, a.down, scratch.h, push);
  commands.dispatch(pipeline, push, ceil_div(s.hidden, kRowwiseWorkgroup), s.tokens);
}

uint32_t direct_expert_max_tokens() {
  static const uint32_t most = [] {
    const char* v = std::getenv("Q3N_MOE_DIRECT_TOKENS");
    if (!v || !*v) return kDirectExpertMaxTokens;
    char* end = nullptr;
    const unsigned long n = std::strtoul(v, &end, 10);
    if (*end || n > kExpertGemvMaxTokens)
      throw Error("Q3N_MOE_DIRECT_TOKENS=" + std::string(v) + " is not a token count from 0 to " +
                  std::to_string(kExpertGemvMaxTokens) + "; unset it for the default " +
                  std::to_string(kDirectExpertMaxTokens));
    return uint32_t(n);
  }();
  return most;
}

bool moe_skips_grouping(const PipelineLibrary& pipelines, const MoeArgs& args, const MoeScratch& scratch) {
  return plan_moe(pipelines, args, scratch).direct;
}

ExpertGemvShape expert_gemv_shape(bool gate_up, uint32_t k, uint32_t tokens) {
  // From q3n_ops_bench --sweep-expert-gemv on the H200 (80B shapes, q4, weights read from memory
  // rather than L2), then end to end (bench/NOTES.md, session 25). Lanes per output row: a lane
  // walks ~8 units of K (gate/up 32 lanes at K = hidden, 2048; down 16 at K = expert_dim, 512) —
  // short chains of dependent loads, which a decode step waits on. The lanes depend on K alone,
  // never on the token count: a row's reduction order depends on them (batch invariance, and MTP's
  // verify rows computing as decode rows). Larger steps take more rows and tokens per pass.
  const uint32_t units = std::max(1u, k / 8);
  uint32_t lanes = 1;
  while (lanes < 64 && lanes * 8 < units) lanes *= 2;  // hidden 2048: 32; expert_dim 512: 8 -> 16 below
  lanes = std::max(lanes, 16u);
  if (gate_up) {
    if (tokens == 1) return {128, lanes, 2, 1};
    return tokens >= 96 ? ExpertGemvShape{64, lanes, 4, 4} : ExpertGemvShape{128, lanes, 2, 2};
  }
  if (tokens == 1) return {256, lanes, 2, 1};
  if (tokens < 16) return {128, lanes, 4, 2};
  return tokens >= 96 ? ExpertGemvShape{64, lanes, 4, 4} : ExpertGemvShape{128, lanes, 8, 2};
}

void record_expert_gemv(PipelineLibrary& pipelines, CommandBuffer& commands, const MoeArgs& a,
                        const MoeScratch& scratch, bool gate_up, const ExpertGemvShape& shape) {
  const MoeShape& s = a.shape;
  const uint32_t slots = static_cast<uint32_t>(std::min<uint64_t>(s.experts, s.assignments()));
  const uint32_t type = static_cast<uint32_t>(a.type), swiglu = gate_up ? 1u : 0u;
  const uint32_t k = gate_up ? s.hidden : s.expert_dim, n = gate_up ? s.expert_dim : s.hidden;
  ExpertPush push = gate_up ? gate_up_push(a, scratch) : down_push(a, scratch);
  const BufferRange& weight = gate_up ? a.gate_up : a.down;
  const BufferRange& x = gate_up ? a.x : scratch.h;
  const uint32_t vec8 = gemv_units_of_8(a.type, k, x.address);
  if (pipelines.cpu_shapes()) {  // one output column per invocation (moe_expert_gemv_rowwise.comp)
    const bool texel = vec8 && reads_texels(pipelines, weight, x);
    const PipelineKey key{texel ? "moe_expert_gemv_rowwise_texel" : "moe_expert_gemv_rowwise",
                          {kRowwiseWorkgroup, 1, 1},
                          {type, swiglu, 1u, vec8},
                          sizeof(push),
                          texel ? kTexelViews : 0u};
    const Pipeline& pipeline = pipelines.get(key);
    if (texel) bind_texel_reads(commands, pipeline, weight, x, push);
    commands.dispatch(pipeline, push, ceil_div(n, kRowwiseWorkgroup), slots);
    return;
  }
  const DeviceInfo& device = pipelines.device().info();
  const uint64_t shared_bytes = uint64_t(gate_up ? 2 : 1) * shape.rows * shape.chunk * shape.threads * 4;
  if (shape.lanes == 0 || shape.threads % shape.lanes || shape.rows == 0 || shape.chunk == 0 ||
      (shape.threads & (shape.threads - 1)) || shape.threads > device.max_workgroup_invocations ||
      shared_bytes > device.max_shared_memory)
    throw Error("internal: expert GEMV shape " + std::to_string(shape.threads) + "/" + std::to_string(shape.lanes) +
                "/" + std::to_string(shape.rows) + "/" + std::to_string(shape.chunk) + " does not fit this device");
  const uint32_t groups = ceil_div(n, expert_gemv_rows_per_workgroup(shape));
  if (groups > device.max_workgroup_count[0])
    throw Error("internal: an expert GEMV of " + std::to_string(n) + " outputs needs too many workgroups");
  // Direct steps: a slot per assignment, its expert read from the routing's ids.
  const bool direct = plan_moe(pipelines, a, scratch).direct;
  if (direct) push.offsets = scratch.ids.address;
  const PipelineKey key{"moe_expert_gemv",
                        {shape.threads, 1, 1},
                        {type, swiglu, shape.rows, direct ? 1u : shape.chunk, vec8, shape.lanes, direct ? 1u : 0u},
                        sizeof(push)};
  commands.dispatch(pipelines.get(key), push, groups, direct ? static_cast<uint32_t>(s.assignments()) : slots);
}

void record_swiglu(PipelineLibrary& pipelines, CommandBuffer& commands, const BufferRange& x, const BufferRange& h,
                   uint32_t rows, uint32_t n) {
  require_bytes(x, uint64_t(rows) * 2 * n * 4, "swiglu input");
  require_bytes(h, uint64_t(rows) * n * 4, "swiglu output");
  const SwigluPush push{x.address, h.address, n, rows};
  commands.dispatch(pipelines.get({"swiglu", {256, 1, 1}, {}, sizeof(push)}), push, ceil_div(n, 256), rows);
}

}  // namespace q3n::ops
