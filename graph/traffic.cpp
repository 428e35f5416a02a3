#include "graph/traffic.h"

#include <cmath>

#include "graph/state.h"

namespace q3n::graph {

StepTraffic decode_traffic(const Graph& graph, const ModelConfig& c, uint32_t batch, uint32_t position,
                           ops::KvType kv_type, const LayerSpan& layers) {
  StepTraffic t;
  double touched = 1.0;  // fraction of a layer's experts a step reads
  if (c.num_experts > 0) {
    const double k = c.num_experts_per_tok, e = c.num_experts;
    touched = 1.0 - std::pow(1.0 - k / e, double(batch));
  }
  for (const Tensor& tensor : graph.tensors()) {
    if (tensor.role != TensorRole::Weight) continue;
    const uint64_t bytes = tensor.bound.size;
    if (tensor.name == "embed_tokens")
      t.weights += bytes / uint64_t(c.vocab_size) * batch;
    else if (tensor.name.ends_with("experts.gate_up") || tensor.name.ends_with("experts.down"))
      t.experts += uint64_t(double(bytes) * touched);
    else
      t.weights += bytes;
  }
  // planned_bytes = conv + recurrent state + K and V up to `position`, per sequence; the
  // recurrent and conv state are also written back.
  const uint64_t read = SequenceState::planned_bytes(c, batch, position, kv_type, layers);
  const uint64_t written = SequenceState::planned_bytes(c, batch, 0, kv_type, layers);
  t.state = read + written;
  return t;
}

}  // namespace q3n::graph
