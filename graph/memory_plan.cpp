#include "graph/memory_plan.h"

#include <algorithm>
#include <numeric>

namespace q3n::graph {

namespace {
struct Lifetime {
  size_t first = SIZE_MAX, last = 0;
  bool used() const { return first != SIZE_MAX; }
  bool overlaps(const Lifetime& o) const { return first <= o.last && o.first <= last; }
};
uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }
}  // namespace

MemoryPlan plan_memory(const Graph& graph, uint64_t alignment) {
  const auto& tensors = graph.tensors();
  std::vector<Lifetime> life(tensors.size());
  const auto& nodes = graph.nodes();
  for (size_t n = 0; n < nodes.size(); ++n) {
    for (const auto* list : {&nodes[n].reads, &nodes[n].writes})
      for (TensorId id : *list) {
        life[id].first = std::min(life[id].first, n);
        life[id].last = std::max(life[id].last, n);
      }
  }
  // Greedy by size, largest first: each tensor goes to the lowest offset that does not collide
  // with an already placed tensor of overlapping lifetime.
  std::vector<TensorId> order;
  for (TensorId id = 0; id < tensors.size(); ++id)
    if (tensors[id].role == TensorRole::Scratch && life[id].used()) order.push_back(id);
  std::stable_sort(order.begin(), order.end(),
                   [&](TensorId a, TensorId b) { return tensors[a].bytes > tensors[b].bytes; });

  MemoryPlan plan;
  plan.offsets.assign(tensors.size(), 0);
  std::vector<TensorId> placed;
  // Every tensor takes at least 4 bytes (an empty binding would be invalid), rounded to `alignment`.
  auto placed_size = [&](TensorId id) { return align_up(std::max<uint64_t>(tensors[id].bytes, 4), alignment); };
  for (TensorId id : order) {
    const uint64_t size = placed_size(id);
    plan.unshared_bytes += size;
    std::vector<std::pair<uint64_t, uint64_t>> busy;  // [begin, end) of colliding tensors
    for (TensorId other : placed)
      if (life[id].overlaps(life[other]))
        busy.push_back({plan.offsets[other], plan.offsets[other] + placed_size(other)});
    std::sort(busy.begin(), busy.end());
    uint64_t offset = 0;
    for (const auto& [begin, end] : busy) {
      if (offset + size <= begin) break;
      offset = std::max(offset, end);
    }
    plan.offsets[id] = offset;
    plan.arena_bytes = std::max(plan.arena_bytes, offset + size);
    placed.push_back(id);
  }
  return plan;
}

}  // namespace q3n::graph
