// Compiles a ModelConfig into the graph of one step shape: B sequences of T tokens each
// (prefill: B = 1, T = chunk; decode: T = 1). Layer kinds come from layer_types, MoE or dense
// from the config; every size from the config.
#pragma once

#include "graph/graph.h"
#include "graph/state.h"
#include "graph/weights.h"

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
  bool operator<(const StepShape& o) const {
    return std::tie(batch, tokens, head) < std::tie(o.batch, o.tokens, o.head);
  }
  uint32_t rows() const { return batch * tokens; }
  uint32_t logit_rows() const { return head == Head::AllLogits ? rows() : batch; }
};

// Host-visible buffers of one step shape: written before, read after each submission.
struct StepIO {
  Allocation ids;       // int32 [rows] token ids
  Allocation seqs;      // u32 [batch, 2] slot, position
  Allocation sampling;  // u32 [batch, 8] ops::sampling_record
  Allocation logits;    // f32 [logit_rows, vocab] (LastLogits / AllLogits)
  Allocation sampled;   // u32 [batch] (Sample)
  Allocation status;    // u32 [layers]: nonzero where a layer's router saw NaN/Inf (zeroed before each run)
};
StepIO allocate_step_io(Runtime& runtime, const ModelConfig& config, const StepShape& shape);

Graph build_step_graph(const Device& device, const ModelConfig& config, const DeviceWeights& weights,
                       const SequenceState& state, const StepShape& shape, const StepIO& io);

}  // namespace q3n::graph
