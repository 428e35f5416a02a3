// Host side of the Gated DeltaNet core (spec §3.3, §3.4, §6): the per-token preparation of q, k
// and the gates, and the gated delta rule in its recurrent form (decode: shaders/
// delta_rule_recurrent.comp) and its chunked form (prefill: shaders/delta_chunk_*.comp).
//
// Layouts. After the causal conv, row r (= b * tokens + t) of `qkv` holds the conv_dim channels
// q (Hk x dk) | k (Hk x dk) | v (Hv x dv), the channel order of conv1d.weight. q and k are
// normalised in place by record_delta_prepare. `gates` row r holds g (Hv) | beta (Hv).
#pragma once

#include <optional>
#include <vector>

#include "runtime/command.h"
#include "runtime/ops/op_support.h"
#include "runtime/ops/state_update.h"
#include "runtime/pipeline.h"

namespace q3n::ops {

constexpr uint32_t kDeltaChunk = 64;        // chunk length of the chunked form (FLA's and HF's)
constexpr uint32_t kMaxDeltaHeadDim = 256;  // shared-memory bound of the shaders

struct DeltaShape {
  uint32_t batch = 1, tokens = 1, key_heads = 0, value_heads = 0, dk = 0, dv = 0;
  uint32_t qkv_width() const { return 2 * key_heads * dk + value_heads * dv; }
  uint64_t rows() const { return uint64_t(batch) * tokens; }
};

struct DeltaPrepareArgs {
  BufferRange qkv;      // f32 [rows, qkv_width]: q and k are l2-normalised in place, q scaled by dk^-1/2
  BufferRange ba;       // f32 [rows, 2 Hv]: b | a (in_proj_ba output after the load-time row permutation)
  BufferRange a_log;    // f32 [Hv]
  BufferRange dt_bias;  // f32 [Hv]
  BufferRange gates;    // f32 [rows, 2 Hv]: g = -exp(A_log) softplus(a + dt_bias) | beta = sigmoid(b)
  DeltaShape shape;
};

struct DeltaRuleArgs {
  BufferRange qkv;    // f32 [rows, qkv_width], prepared
  BufferRange gates;  // f32 [rows, 2 Hv]
  BufferRange state;  // f32 [slots, Hv, dk, dv], read and written in place
  BufferRange seqs;   // u32 [batch, 2]: slot, position (shaders/common.glsl)
  BufferRange out;    // f32 [rows, Hv, dv]
  DeltaShape shape;
  // Keep and Commit (speculative verification) are the recurrent form's only; `accepted` is
  // u32 [batch], read by Commit.
  StateUpdate update = StateUpdate::Write;
  BufferRange accepted;
  // The recurrent form only: q and k as the conv left them and `gates` unused; the kernel does
  // record_delta_prepare's work itself (l2 norms, q scale, g and beta from these), so a step whose
  // pieces all take the recurrent form needs no prepare dispatch.
  bool raw_inputs = false;
  BufferRange ba;       // f32 [rows, 2 Hv]: b | a
  BufferRange a_log;    // f32 [Hv]
  BufferRange dt_bias;  // f32 [Hv]
  // The recurrent form only, where delta_rule_norms_heads(): `out` receives the layer's gated
  // norm of the outputs (spec §3.5: RMSNorm per value head, times norm_weight and silu(gate)),
  // computed in the rule's workgroups, instead of the outputs themselves.
  struct GatedNorm {
    BufferRange gate;    // f32 [rows, Hv, dv]: z (in_proj_z's output)
    BufferRange weight;  // f32 [dv]
    float eps = 0;
  };
  std::optional<GatedNorm> gated_norm;
};

// Whether the recurrent form can apply the gated norm itself on this device (a workgroup holds a
// whole value head: dv columns of its parts).
bool delta_rule_norms_heads(const DeviceInfo& device, uint32_t dv);

// Intermediates of the chunked form; sizes from delta_chunk_scratch_floats().
struct DeltaChunkScratch {
  BufferRange gamma;      // f32 [rows, Hv] in-chunk cumulative log-decay
  BufferRange w;          // f32 [rows, Hv, dv]  T (beta V)
  BufferRange kc;         // f32 [rows, Hv, dk]  T (beta Gamma K)
  BufferRange u;          // f32 [rows, Hv, dv]  pseudo-values W - Kc S
  BufferRange snapshots;  // f32 [batch, chunks, Hv, dk, dv] state at each chunk start
};

struct DeltaChunkScratchFloats {
  uint64_t gamma, w, kc, u, snapshots;
};
DeltaChunkScratchFloats delta_chunk_scratch_floats(const DeltaShape& shape);

void record_delta_prepare(PipelineLibrary& pipelines, CommandBuffer& commands, const DeltaPrepareArgs& args);
void record_delta_rule_recurrent(PipelineLibrary& pipelines, CommandBuffer& commands, const DeltaRuleArgs& args);
// A verify step's commit (StateUpdate::Commit, raw inputs) of several layers in one dispatch: each
// layer has `args`' shape, seqs and accepted counts, and its own tensors below (args' qkv, state,
// ba, a_log, dt_bias and out are not used). `table` receives the layers' addresses, 40 bytes per
// layer. Each state column's arithmetic is record_delta_rule_recurrent's: the same bits.
struct DeltaCommitLayer {
  BufferRange qkv, state, ba, a_log, dt_bias;
};
void record_delta_rule_commits(PipelineLibrary& pipelines, CommandBuffer& commands, const DeltaRuleArgs& args,
                               const std::vector<DeltaCommitLayer>& layers, const AddressTable& table);
// Whether a piece of `shape` takes the recurrent form rather than the chunked one: one token per
// sequence, or the CPU shapes (a CPU runs the recurrent form, one invocation per state column and
// no barrier, faster than the chunked one's tiles at every length).
inline bool delta_rule_takes_recurrent(const PipelineLibrary& pipelines, const DeltaShape& shape) {
  return shape.tokens == 1 || pipelines.cpu_shapes();
}
// Three dispatches with barriers between them; continues from and writes back the state.
void record_delta_rule_chunked(PipelineLibrary& pipelines, CommandBuffer& commands, const DeltaRuleArgs& args,
                               const DeltaChunkScratch& scratch);

}  // namespace q3n::ops
