// Places every scratch tensor of a graph in one arena: tensors whose lifetimes (first to last
// node that touches them) do not overlap may share bytes.
#pragma once

#include <cstdint>
#include <vector>

#include "graph/graph.h"

namespace q3n::graph {

struct MemoryPlan {
  std::vector<uint64_t> offsets;  // per tensor; meaningful for scratch tensors
  uint64_t arena_bytes = 0;
  uint64_t unshared_bytes = 0;  // what the scratch tensors would take without sharing
};

MemoryPlan plan_memory(const Graph& graph, uint64_t alignment);

}  // namespace q3n::graph
