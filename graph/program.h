// A graph made runnable: its scratch arena allocated from the memory plan, and its nodes recorded
// once into a reusable command buffer with only the barriers that data dependencies need.
// Replaying it is one vkQueueSubmit; per-step values come from the graph's Input tensors.
#pragma once

#include <map>
#include <string>

#include "graph/graph.h"
#include "graph/memory_plan.h"
#include "runtime/runtime.h"

namespace q3n::graph {

class Program {
 public:
  // With `profile`, a timestamp follows every node so that gpu_times() can attribute time.
  Program(Runtime& runtime, Graph graph, const std::string& what, bool profile);
  ~Program();
  Program(const Program&) = delete;
  Program& operator=(const Program&) = delete;

  void run();  // submit and wait

  const Graph& graph() const { return graph_; }
  const MemoryPlan& plan() const { return plan_; }
  uint32_t barrier_count() const { return commands_.barrier_count(); }
  uint32_t dispatch_count() const { return commands_.dispatch_count(); }
  // Seconds of GPU time per node kind in the last run (profile only), accumulated into `into`.
  void add_gpu_times(std::map<std::string, double>& into) const;

 private:
  Runtime& runtime_;
  Graph graph_;
  MemoryPlan plan_;
  Allocation arena_;
  CommandBuffer commands_;
  VkQueryPool queries_ = VK_NULL_HANDLE;
  bool profile_ = false;
};

// Text description: nodes with their tensors, the memory plan and the barrier count.
std::string describe(const Program& program);
// Graphviz DOT of the dataflow.
std::string to_dot(const Graph& graph);

}  // namespace q3n::graph
