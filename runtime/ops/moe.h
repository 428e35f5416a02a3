// Host side of the MLP family (spec §3.8): MoE routing, grouping by expert, the grouped expert
// GEMMs with SwiGLU fused between gate/up and down, the weighted combine with the shared
// expert's sigmoid gate; and the SwiGLU of the dense MLP / shared expert.
//
// The router and the shared-expert gate are one GEMM over concatenated weights, so `logits`
// rows hold the experts' logits followed by the shared gate's logit (logit_stride = E + 1).
// Expert weights are packed per layer at load: gate_up [E, 2I, H] (gate rows first, then up,
// as HF's in-memory gate_up_proj) and down [E, H, I].
#pragma once

#include <optional>

#include "runtime/command.h"
#include "runtime/ops/linear.h"
#include "runtime/ops/weight_type.h"
#include "runtime/pipeline.h"

namespace q3n::ops {

// Experts a layer may have: routing and grouping keep a few words per expert in shared memory
// (moe_route.glsl, moe_group.comp), which must fit Vulkan's guaranteed 16 KiB.
constexpr uint32_t kMaxExperts = 1024;

// Steps of up to this many tokens take moe_expert_gemv.comp (experts then hold ~1-3 rows each
// at the 80B shapes), more take the tiled expert GEMMs.
constexpr uint32_t kExpertGemvMaxTokens = 128;
// GPU-shape steps of up to this many tokens skip the grouping: the expert GEMVs take a slot per
// (token, choice) assignment, reading its expert from the routing's ids, and the down product
// adds the token's choices itself (moe_expert_gemv.comp, DIRECT and Q3N_COMBINE). Two dispatches
// and barriers fewer per MoE layer; an expert two tokens share is read twice. Q3N_MOE_DIRECT_TOKENS
// overrides it (benchmarks).
constexpr uint32_t kDirectExpertMaxTokens = 16;
uint32_t direct_expert_max_tokens();

// Where the matrix-unit expert GEMM is faster than the expert GEMV: steps of more tokens take it
// when the graph does not ask for batch invariance. On the H200's compute-only queue (80B-A3B q4,
// the whole routed MoE): 32 tokens 400 us with the GEMV against 385, 64 579 against 569, 128 1021
// against 716 (bench/NOTES.md, session 24; on the graphics queue the GEMV won at 128).
constexpr uint32_t kThroughputExpertGemvMaxTokens = 64;

// The shape of moe_expert_gemv.comp for one product: invocations per workgroup, invocations that
// share one output row's K (lanes), output rows per lane group and expert rows per pass. An
// assignment's result depends on `lanes` alone (the order its partial sums are added in), so
// `lanes` is a function of the matrix, and the rest may follow the step size.
struct ExpertGemvShape {
  uint32_t threads = 64, lanes = 64, rows = 4, chunk = 1;
};
// The shape a step of `tokens` tokens takes for a product over `k` inputs (gate/up: hidden,
// down: expert_dim), measured on the H200 (bench/NOTES.md, session 17).
ExpertGemvShape expert_gemv_shape(bool gate_up, uint32_t k, uint32_t tokens);

struct MoeShape {
  uint32_t tokens = 0, hidden = 0, experts = 0, top_k = 0, expert_dim = 0;
  bool normalise = true;  // norm_topk_prob
  uint64_t assignments() const { return uint64_t(tokens) * top_k; }
};

struct MoeScratch {
  BufferRange ids;      // u32 [assignments]
  BufferRange weights;  // f32 [assignments]
  BufferRange offsets;  // u32 [experts + 1]
  BufferRange sorted;   // u32 [assignments]
  BufferRange active;   // u32 [experts + 1]
  BufferRange h;        // f32 [assignments, expert_dim]
  BufferRange y;        // f32 [assignments, hidden]
};

struct MoeScratchBytes {
  uint64_t ids, weights, offsets, sorted, active, h, y;
};
MoeScratchBytes moe_scratch_bytes(const MoeShape& shape);

struct MoeArgs {
  BufferRange x;       // f32 [tokens, hidden] normalised input
  BufferRange logits;  // f32 [tokens, logit_stride]
  uint32_t logit_stride = 0;
  BufferRange gate_up;  // [experts, 2 I, hidden] in `type`
  BufferRange down;     // [experts, hidden, I] in `type`
  WeightType type = WeightType::BF16;
  BufferRange shared_out;            // f32 [tokens, hidden] shared expert output; empty = no shared expert
  uint32_t shared_logit_column = 0;  // column of `logits` holding the shared gate logit
  BufferRange out;                   // f32 [tokens, hidden]
  MoeShape shape;
  BufferRange status;  // u32 [1], optional: routing sets it to 1 on a NaN/+Inf router logit
  // More tokens take the tiled expert GEMMs (<= kExpertGemvMaxTokens).
  uint32_t gemv_max_tokens = kExpertGemvMaxTokens;
  // Benchmarks only: the expert GEMVs' shapes instead of expert_gemv_shape's.
  std::optional<ExpertGemvShape> gate_up_gemv, down_gemv;
  // The shared expert's down product (a SwiGLU-input record_linear writing shared_out), to record
  // right after the routing dispatch: the two depend on nothing of each other, so they share one
  // barrier instead of taking one each. Unset where the caller records it before record_moe.
  std::optional<LinearArgs> shared_down;
};

// route -> group -> gate/up -> down -> combine, with barriers between; with the CPU shapes the
// down product and the combine are one dispatch (moe_expert_down_combine_rowwise.comp); direct
// steps (kDirectExpertMaxTokens) route -> gate/up -> down with the combine inside. Every path
// gives an assignment the same bits at the same expert GEMV lanes (batch invariance).
void record_moe(PipelineLibrary& pipelines, CommandBuffer& commands, const MoeArgs& args, const MoeScratch& scratch);

// Whether record_moe takes the direct path for this step (no grouping: `scratch`'s offsets,
// sorted and active are left unwritten).
bool moe_skips_grouping(const PipelineLibrary& pipelines, const MoeArgs& args, const MoeScratch& scratch);

// The expert GEMV of one product alone (gate/up with SwiGLU into scratch.h, or down into
// scratch.y), reading the routing (and grouping) a record_moe of the same shape left in `scratch`:
// what record_moe records for that product on GPU shapes. For benchmarks of the shape.
void record_expert_gemv(PipelineLibrary& pipelines, CommandBuffer& commands, const MoeArgs& args,
                        const MoeScratch& scratch, bool gate_up, const ExpertGemvShape& shape);

// h[r, i] = silu(x[r, i]) * x[r, n + i]
void record_swiglu(PipelineLibrary& pipelines, CommandBuffer& commands, const BufferRange& x, const BufferRange& h,
                   uint32_t rows, uint32_t n);

}  // namespace q3n::ops
