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
  bool operator<(const StepShape& o) const {
    return std::tie(batch, tokens, head, piece, lane) < std::tie(o.batch, o.tokens, o.head, o.piece, o.lane);
  }
  uint32_t rows() const { return piece + batch * tokens; }
  uint32_t sequences() const { return batch + (piece ? 1 : 0); }
  uint32_t logit_rows() const { return head == Head::AllLogits ? rows() : sequences(); }
};

// The rows one group of sequences occupies: `batch` sequences of `tokens` tokens from row
// `first_row`, sequence-table entries from `first_seq`. A plain step is one segment; a mixed
// step two (the piece, then the decode rows).
struct StepSegment {
  uint32_t first_row = 0, first_seq = 0, batch = 1, tokens = 1;
  uint32_t rows() const { return batch * tokens; }
};
std::vector<StepSegment> step_segments(const StepShape& shape);

// Host-visible buffers of one step shape: written before, read after each submission.
struct StepIO {
  Allocation ids;       // int32 [rows] token ids
  Allocation seqs;      // u32 [sequences, 2] slot, position
  Allocation sampling;  // u32 [sequences, 8] ops::sampling_record
  Allocation logits;    // f32 [logit_rows, vocab] (LastLogits / AllLogits)
  Allocation sampled;   // u32 [sequences] (Sample)
  Allocation status;    // u32 [layers]: nonzero where a layer's router saw NaN/Inf (zeroed before each run)
  // A pipeline split: f32 [2, rows, hidden] the hidden state, then the pending MLP output that the
  // next layer's norm adds into it. From the previous device (every device but the first), to the
  // next (every device but the last).
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
  LayerSpan layers;  // a pipeline split's device: these layers only (embedding on the first, head on the last)
};

Graph build_step_graph(const Device& device, const ModelConfig& config, const DeviceWeights& weights,
                       const SequenceState& state, const StepShape& shape, const StepIO& io,
                       const StepOptions& options);

}  // namespace q3n::graph
