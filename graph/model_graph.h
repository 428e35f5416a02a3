// Compiles a ModelConfig into the graph of one step shape: B sequences of T tokens each
// (prefill: B = 1, T = chunk; decode: T = 1), optionally led by one more sequence's prompt piece
// of P tokens (a mixed step: P prompt rows, then B decode rows). Layer kinds come from
// layer_types, MoE or dense from the config; every size from the config.
#pragma once

#include "graph/graph.h"
#include "graph/state.h"
#include "graph/weights.h"
#include "runtime/ops/linear.h"
#include "runtime/ops/moe.h"

namespace q3n::graph {

enum class Head {
  None,        // only advance the state (a prefill chunk whose logits nobody needs)
  LastLogits,  // logits of each sequence's last token -> host
  AllLogits,   // logits of every token -> host (teacher-forced evaluation)
  Sample,      // sample each sequence's last token on the GPU -> ids to host
};

struct StepShape {
  uint32_t batch = 1, tokens = 1;
  Head head = Head::Sample;
  // Mixed step: rows [0, piece) are one more sequence's prompt piece, sequence-table entry 0;
  // the B x T rows follow. Only with T = 1 and Head::Sample (the piece's last row is sampled
  // too, so the sampled rows [piece - 1, rows) are contiguous).
  uint32_t piece = 0;
  // Steps of one shape in flight at once on a pipeline split (different groups of sequences on
  // different devices) each need their own host buffers: the same graph, another lane.
  uint32_t lane = 0;
  // Speculative verification (Head::Sample, no piece): each sequence's T rows are its last
  // sampled token and T - 1 draft tokens. Every row gets exactly a decode step's arithmetic at
  // its position (attention sees it as its own sequence entry; the DeltaNet kernels walk the
  // rows in order without writing the state) and is sampled with that position's draw; then the
  // GPU counts the accepted drafts and commits the state of the accepted rows only.
  bool verify = false;
  // Also every row's final-normed hidden state to the host (StepIO::final_hidden): what the MTP
  // head reads.
  bool hidden = false;
  // Not the model but its MTP head (spec §4.2), over one sequence's `tokens` rows or one row of
  // each of `batch` sequences: each row's model hidden state (StepIO::hidden_in) and next token
  // id in, the greedy draft of each row (Head::Sample) and the head's own output state
  // (StepIO::final_hidden) out.
  bool mtp = false;
  bool operator<(const StepShape& o) const {
    return std::tie(batch, tokens, head, piece, lane, verify, hidden, mtp) <
           std::tie(o.batch, o.tokens, o.head, o.piece, o.lane, o.verify, o.hidden, o.mtp);
  }
  uint32_t rows() const { return piece + batch * tokens; }
  uint32_t sequences() const { return batch + (piece ? 1 : 0); }
  uint32_t logit_rows() const { return head == Head::AllLogits || verify || mtp ? rows() : sequences(); }
  uint32_t sampled_rows() const { return verify || mtp ? rows() : sequences(); }  // ids the Sample head returns
};

// The rows one group of sequences occupies: `batch` sequences of `tokens` tokens from row
// `first_row`, sequence-table entries from `first_seq`. A plain step is one segment; a mixed
// step two (the piece, then the decode rows).
struct StepSegment {
  uint32_t first_row = 0, first_seq = 0, batch = 1, tokens = 1;
  uint32_t rows() const { return batch * tokens; }
};
std::vector<StepSegment> step_segments(const StepShape& shape);

// A verify step's commit address table: per DeltaNet layer, 2 addresses for the conv's commit
// and 5 for the delta rule's (ops::record_causal_conv1d_commits, record_delta_rule_commits).
constexpr uint64_t kConvCommitTableBytesPerLayer = 2 * 8, kDeltaCommitTableBytesPerLayer = 5 * 8;
constexpr uint64_t kCommitTableBytesPerLayer = kConvCommitTableBytesPerLayer + kDeltaCommitTableBytesPerLayer;

// Host-visible buffers of one step shape: written before, read after each submission.
struct StepIO {
  Allocation ids;       // int32 [rows] token ids
  Allocation seqs;      // u32 [sequences, 2] slot, position
  Allocation sampling;  // u32 [sampled_rows, 8] ops::sampling_record
  Allocation logits;    // f32 [logit_rows, vocab] (LastLogits / AllLogits)
  Allocation sampled;   // u32 [sampled_rows] (Sample)
  Allocation row_seqs;  // verify: u32 [rows, 2] each row's slot and position (attention's table)
  Allocation accepted;  // verify: u32 [sequences] 1 + the drafts accepted: tokens committed and emitted
  // verify: the addresses the commit of every DeltaNet layer in one dispatch per kind reads,
  // written when the step is recorded: [layers, 2] conv, then [layers, 5] delta rule
  Allocation commit_table;
  Allocation final_hidden;  // hidden / mtp: f32 [rows, hidden] each row's final-normed state
  // u32 [layers + 1]: nonzero where a layer's router saw NaN/Inf (the last entry: the MTP head's)
  Allocation status;  // zeroed before each run
  // A pipeline split: f32 [2, rows, hidden] the hidden state, then the pending MLP output that the
  // next layer's norm adds into it. From the previous device (every device but the first), to the
  // next (every device but the last). An MTP step reads the model's hidden rows from hidden_in.
  Allocation hidden_in, hidden_out;
};
StepIO allocate_step_io(Runtime& runtime, const ModelConfig& config, const StepShape& shape,
                        const LayerSpan& layers = {});
// Bytes of the hidden state crossing between devices in one step of `shape`.
uint64_t handoff_bytes(const ModelConfig& config, const StepShape& shape);

// How the engine's steps compute, beyond their shape.
struct StepOptions {
  // Decode rows (one token per sequence) take the GEMV up to this many rows per step, the matrix
  // units beyond where the device has them. ops::kGemvMaxTokens keeps every decode step on the
  // GEMV: a sequence's arithmetic then never depends on the other rows (batch invariance).
  uint32_t decode_gemv_max_tokens = ops::kGemvMaxTokens;
  uint32_t decode_expert_gemv_max_tokens = ops::kExpertGemvMaxTokens;  // the same for the MoE experts
  uint32_t rope_offset = 0;                                            // EngineOptions::rope_offset
  // The pipelines have the GPU shapes (not PipelineLibrary::cpu_shapes): decode steps may take the
  // fusions only their kernels have (the DeltaNet conv inside in_proj_qkv's GEMV).
  bool gpu_shapes = false;
  LayerSpan layers;  // a pipeline split's device: these layers only (embedding on the first, head on the last)
};

Graph build_step_graph(const Device& device, const ModelConfig& config, const DeviceWeights& weights,
                       const SequenceState& state, const StepShape& shape, const StepIO& io,
                       const StepOptions& options);

}  // namespace q3n::graph
