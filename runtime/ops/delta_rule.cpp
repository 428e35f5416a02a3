#include "runtime/ops/delta_rule.h"

#include "runtime/error.h"
#include "runtime/ops/op_support.h"

namespace q3n::ops {

namespace {
struct PreparePush {
  VkDeviceAddress qkv, ba, a_log, dt_bias, gates;
  uint32_t key_heads, value_heads, dk, dv;
};
struct RecurrentPush {
  VkDeviceAddress qkv, gates, state, seqs, out, count, ba, a_log, dt_bias, gate, norm_weight, table;
  uint32_t flags, tokens, key_heads, value_heads, dk, dv;
  float eps;
};
struct ChunkPreparePush {
  VkDeviceAddress qkv, gates, gamma, w, kc;
  uint32_t tokens, key_heads, value_heads, dk, dv;
};
struct ChunkStatePush {
  VkDeviceAddress qkv, gamma, w, kc, u, snapshots, state, seqs;
  uint32_t tokens, key_heads, value_heads, dk, dv;
};
struct ChunkOutputPush {
  VkDeviceAddress qkv, gamma, u, snapshots, out;
  uint32_t tokens, key_heads, value_heads, dk, dv;
};
// The chunked form's workgroups: 256 invocations (the shaders' register tiles assume it with
// kDeltaChunk = 64). Their shared memory (prepare 25 KiB, output 30, state at most 27) stays
// within the 32 KiB every device q3n accepts has (DeviceInfo::missing_requirement).
constexpr uint32_t kChunkThreads = 256;
static_assert(kDeltaChunk == 64, "delta_chunk_*.comp tile their 64-row chunks over 16 row groups");

// delta_chunk_state.comp's columns per workgroup and its shared state rows: 16 columns up to
// dk = 128 (21 KiB of shared memory), 8 above (at most 27 KiB at dk = 256).
struct ChunkStateShape {
  uint32_t dv_tile, max_dk;
};
ChunkStateShape chunk_state_shape(uint32_t dk) {
  const uint32_t dv_tile = dk <= 128 ? 16 : 8;
  const uint32_t step = 4 * (kChunkThreads / dv_tile);  // each invocation's rows come in vec4s
  return {dv_tile, ceil_div(dk, step) * step};
}

void check_shape(const DeltaShape& s) {
  if (s.key_heads == 0 || s.value_heads % s.key_heads != 0)
    throw Error("internal: delta-rule value heads must be a multiple of key heads");
  if (s.dk > kMaxDeltaHeadDim || s.dv > kMaxDeltaHeadDim)
    throw Error("internal: delta-rule head dims above " + std::to_string(kMaxDeltaHeadDim) +
                " (graph::check_supported refuses such configs)");
}

void check_rule_args(const DeltaRuleArgs& a) {
  const DeltaShape& s = a.shape;
  check_shape(s);
  require_bytes(a.qkv, s.rows() * s.qkv_width() * 4, "delta rule qkv");
  if (a.raw_inputs) {
    require_bytes(a.ba, s.rows() * 2 * s.value_heads * 4, "delta rule ba");
    require_bytes(a.a_log, s.value_heads * 4, "delta rule A_log");
    require_bytes(a.dt_bias, s.value_heads * 4, "delta rule dt_bias");
  } else {
    require_bytes(a.gates, s.rows() * 2 * s.value_heads * 4, "delta rule gates");
  }
  require_bytes(a.out, s.rows() * s.value_heads * s.dv * 4, "delta rule output");
  require_bytes(a.seqs, uint64_t(s.batch) * 8, "delta rule sequence table");
  require_bytes(a.state, uint64_t(s.value_heads) * s.dk * s.dv * 4, "delta rule state");
}
}  // namespace

DeltaChunkScratchFloats delta_chunk_scratch_floats(const DeltaShape& s) {
  const uint64_t chunks = ceil_div(s.tokens, kDeltaChunk);
  const uint64_t rh = s.rows() * s.value_heads;
  return {rh, rh * s.dv, rh * s.dk, rh * s.dv, uint64_t(s.batch) * chunks * s.value_heads * s.dk * s.dv};
}

void record_delta_prepare(PipelineLibrary& pipelines, CommandBuffer& commands, const DeltaPrepareArgs& a) {
  const DeltaShape& s = a.shape;
  check_shape(s);
  require_bytes(a.qkv, s.rows() * s.qkv_width() * 4, "delta prepare qkv");
  require_bytes(a.ba, s.rows() * 2 * s.value_heads * 4, "delta prepare ba");
  require_bytes(a.gates, s.rows() * 2 * s.value_heads * 4, "delta prepare gates");
  require_bytes(a.a_log, s.value_heads * 4, "delta prepare A_log");
  require_bytes(a.dt_bias, s.value_heads * 4, "delta prepare dt_bias");
  const Pipeline& pipeline =
      pipelines.get({"delta_prepare", {pipelines.reduction_workgroup(64), 1, 1}, {}, sizeof(PreparePush)});
  const PreparePush push{
      a.qkv.address, a.ba.address, a.a_log.address, a.dt_bias.address, a.gates.address, s.key_heads, s.value_heads,
      s.dk,          s.dv};
  commands.dispatch(pipeline, push, 2 * s.key_heads + 1, static_cast<uint32_t>(s.rows()));
}

// delta_rule_recurrent.comp's workgroup: COLS columns of PARTS invocations each, and MAX_DK the
// model's dk, so the unrolled row loops do no masked work and an invocation keeps only its
// dk / PARTS state rows in registers (MAX_DK 256 for a dk of 128 cost the H200 5% of its decode
// speed). GPUs: 16 columns of 8 parts. On the H200, 8 parts against 4 measured +1.7% at one
// sequence (latency-bound: more invocations, half the serial rows each) and -0.6% at 128 (bound
// by the state traffic), bench/NOTES.md. The shape must not depend on the batch: the parts' sums
// are added in an order fixed by it, and --batch-invariant promises a sequence the same bits
// whatever shares its step. The CPU shapes: one invocation per column (no shared memory, no
// barrier).
// With the gated norm (DeltaRuleArgs::gated_norm) a workgroup takes a whole head, dv columns of
// the same parts, so a column's arithmetic is the same with and without it.
struct RecurrentShape {
  uint32_t cols, parts, max_dk;
};
constexpr uint32_t kRecurrentGpuParts = 8;
RecurrentShape recurrent_shape(const PipelineLibrary& pipelines, const DeltaShape& s, bool whole_heads) {
  const uint32_t parts = pipelines.cpu_shapes() ? 1 : kRecurrentGpuParts;
  if (whole_heads) return RecurrentShape{s.dv, parts, s.dk};
  return RecurrentShape{pipelines.cpu_shapes() ? 32u : 16u, parts, s.dk};
}

bool delta_rule_norms_heads(const DeviceInfo& device, uint32_t dv) {
  // The GPU shapes' parts bound the CPU shapes' (one part), so one answer serves both.
  return uint64_t(dv) * kRecurrentGpuParts <= device.max_workgroup_invocations;
}

void record_delta_rule_recurrent(PipelineLibrary& pipelines, CommandBuffer& commands, const DeltaRuleArgs& a) {
  check_rule_args(a);
  const DeltaShape& s = a.shape;
  const bool norm = a.gated_norm.has_value();
  if (norm) {
    if (!delta_rule_norms_heads(pipelines.device().info(), s.dv))
      throw Error("internal: the delta rule's gated norm needs a whole head per workgroup");
    require_bytes(a.gated_norm->gate, s.rows() * s.value_heads * s.dv * 4, "delta rule gate");
    require_bytes(a.gated_norm->weight, uint64_t(s.dv) * 4, "delta rule norm weight");
  }
  const RecurrentShape shape = recurrent_shape(pipelines, s, norm);
  const Pipeline& pipeline =
      pipelines.get({"delta_rule_recurrent",
                     {shape.cols * shape.parts, 1, 1},
                     {shape.max_dk, shape.cols, shape.parts, a.raw_inputs ? 1u : 0u, norm ? 1u : 0u, 0u},
                     sizeof(RecurrentPush)});
  if (a.update == StateUpdate::Commit) require_bytes(a.accepted, uint64_t(s.batch) * 4, "delta rule accepted counts");
  const RecurrentPush push{a.qkv.address,
                           a.raw_inputs ? 0 : a.gates.address,
                           a.state.address,
                           a.seqs.address,
                           a.out.address,
                           a.update == StateUpdate::Commit ? a.accepted.address : 0,
                           a.raw_inputs ? a.ba.address : 0,
                           a.raw_inputs ? a.a_log.address : 0,
                           a.raw_inputs ? a.dt_bias.address : 0,
                           norm ? a.gated_norm->gate.address : 0,
                           norm ? a.gated_norm->weight.address : 0,
                           0,
                           state_update_flags(a.update),
                           s.tokens,
                           s.key_heads,
                           s.value_heads,
                           s.dk,
                           s.dv,
                           norm ? a.gated_norm->eps : 0.0f};
  commands.dispatch(pipeline, push, s.value_heads, s.batch, ceil_div(s.dv, shape.cols));
}

void record_delta_rule_commits(PipelineLibrary& pipelines, CommandBuffer& commands, const DeltaRuleArgs& a,
                               const std::vector<DeltaCommitLayer>& layers, const AddressTable& table) {
  const DeltaShape& s = a.shape;
  check_shape(s);
  if (a.update != StateUpdate::Commit || !a.raw_inputs || a.gated_norm || layers.empty())
    throw Error("internal: the layer-table delta rule records commits of raw inputs, of at least one layer");
  require_bytes(a.seqs, uint64_t(s.batch) * 8, "delta commit sequence table");
  require_bytes(a.accepted, uint64_t(s.batch) * 4, "delta commit accepted counts");
  std::vector<VkDeviceAddress> addresses;
  for (const DeltaCommitLayer& layer : layers) {
    require_bytes(layer.qkv, s.rows() * s.qkv_width() * 4, "delta commit qkv");
    require_bytes(layer.state, uint64_t(s.value_heads) * s.dk * s.dv * 4, "delta commit state");
    require_bytes(layer.ba, s.rows() * 2 * s.value_heads * 4, "delta commit ba");
    require_bytes(layer.a_log, s.value_heads * 4, "delta commit A_log");
    require_bytes(layer.dt_bias, s.value_heads * 4, "delta commit dt_bias");
    for (const BufferRange* r : {&layer.qkv, &layer.state, &layer.ba, &layer.a_log, &layer.dt_bias})
      addresses.push_back(r->address);
  }
  write_address_table(table, addresses, "delta commit address table");
  const RecurrentShape shape = recurrent_shape(pipelines, s, false);
  const Pipeline& pipeline = pipelines.get({"delta_rule_recurrent",
                                            {shape.cols * shape.parts, 1, 1},
                                            {shape.max_dk, shape.cols, shape.parts, 1u, 0u, 1u},
                                            sizeof(RecurrentPush)});
  // Only the step's tables and sizes: each layer's tensors come from `table`.
  RecurrentPush push{};
  push.seqs = a.seqs.address, push.count = a.accepted.address, push.table = table.range.address;
  push.flags = state_update_flags(a.update);
  push.tokens = s.tokens, push.key_heads = s.key_heads, push.value_heads = s.value_heads;
  push.dk = s.dk, push.dv = s.dv;
  const uint64_t slices = ceil_div(s.dv, shape.cols), groups_z = slices * layers.size();
  commands.dispatch(pipeline, push, s.value_heads, s.batch, static_cast<uint32_t>(groups_z));
}

void record_delta_rule_chunked(PipelineLibrary& pipelines, CommandBuffer& commands, const DeltaRuleArgs& a,
                               const DeltaChunkScratch& scratch) {
  check_rule_args(a);
  if (a.update != StateUpdate::Write) throw Error("internal: speculative state updates take the recurrent form");
  if (a.raw_inputs) throw Error("internal: the chunked form takes prepared inputs (record_delta_prepare)");
  const DeltaShape& s = a.shape;
  const DeltaChunkScratchFloats need = delta_chunk_scratch_floats(s);
  require_bytes(scratch.gamma, need.gamma * 4, "delta chunk gamma");
  require_bytes(scratch.w, need.w * 4, "delta chunk W");
  require_bytes(scratch.kc, need.kc * 4, "delta chunk Kc");
  require_bytes(scratch.u, need.u * 4, "delta chunk U");
  require_bytes(scratch.snapshots, need.snapshots * 4, "delta chunk snapshots");
  const uint32_t chunks = ceil_div(s.tokens, kDeltaChunk);

  const ChunkPreparePush prepare{a.qkv.address,
                                 a.gates.address,
                                 scratch.gamma.address,
                                 scratch.w.address,
                                 scratch.kc.address,
                                 s.tokens,
                                 s.key_heads,
                                 s.value_heads,
                                 s.dk,
                                 s.dv};
  commands.mark("delta_rule.chunk_prepare");
  commands.dispatch(pipelines.get({"delta_chunk_prepare", {kChunkThreads, 1, 1}, {kDeltaChunk}, sizeof(prepare)}),
                    prepare, chunks, s.value_heads, s.batch);
  commands.barrier();
  const ChunkStatePush state{a.qkv.address,
                             scratch.gamma.address,
                             scratch.w.address,
                             scratch.kc.address,
                             scratch.u.address,
                             scratch.snapshots.address,
                             a.state.address,
                             a.seqs.address,
                             s.tokens,
                             s.key_heads,
                             s.value_heads,
                             s.dk,
                             s.dv};
  commands.mark("delta_rule.chunk_state");
  const ChunkStateShape shape = chunk_state_shape(s.dk);
  commands.dispatch(
      pipelines.get(
          {"delta_chunk_state", {kChunkThreads, 1, 1}, {kDeltaChunk, shape.dv_tile, shape.max_dk}, sizeof(state)}),
      state, ceil_div(s.dv, shape.dv_tile), s.value_heads, s.batch);
  commands.barrier();
  const ChunkOutputPush output{a.qkv.address,
                               scratch.gamma.address,
                               scratch.u.address,
                               scratch.snapshots.address,
                               a.out.address,
                               s.tokens,
                               s.key_heads,
                               s.value_heads,
                               s.dk,
                               s.dv};
  commands.mark("delta_rule.chunk_output");
  commands.dispatch(pipelines.get({"delta_chunk_output", {kChunkThreads, 1, 1}, {kDeltaChunk}, sizeof(output)}), output,
                    chunks, s.value_heads, s.batch);
}

}  // namespace q3n::ops
