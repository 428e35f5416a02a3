// The memory traffic a decode step cannot avoid, computed from its graph: the floor that
// `q3n bench` compares measured decode speed against (bytes per step / measured bandwidth).
#pragma once

#include <cstdint>

#include "graph/graph.h"
#include "graph/layer_split.h"
#include "loader/config.h"
#include "runtime/ops/kv_type.h"

namespace q3n::graph {

struct StepTraffic {
  uint64_t weights = 0;  // dense weights, embedding rows, lm_head, norms
  uint64_t experts = 0;  // routed experts: the expected number touched
  uint64_t state = 0;    // recurrent and conv state read and written, KV cache read
  uint64_t total() const { return weights + experts + state; }
};

// One decode step of `batch` sequences at `position` tokens of context. Every weight tensor the
// graph binds counts in full, except the embedding table (only `batch` rows are read) and each
// MoE layer's experts, which count as the expected number of distinct experts that batch·top-k
// uniform routing draws touch: E (1 - (1 - k/E)^batch). The state counted is that of `layers`
// (a pipeline split's device: the layers its graph runs).
StepTraffic decode_traffic(const Graph& graph, const ModelConfig& config, uint32_t batch, uint32_t position,
                           ops::KvType kv_type = ops::KvType::F32, const LayerSpan& layers = {});

}  // namespace q3n::graph
