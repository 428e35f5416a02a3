// A graph made runnable: its scratch arena allocated from the memory plan, and its nodes recorded
// once into a reusable command buffer with only the barriers that data dependencies need.
// Replaying it is one vkQueueSubmit; per-step values come from the graph's Input tensors.
#pragma once

#include <map>
#include <memory>
#include <string>

#include "graph/graph.h"
#include "graph/memory_plan.h"
#include "runtime/profiler.h"
#include "runtime/runtime.h"

namespace q3n::graph {

class Program {
 public:
  // With `profile`, every node is timed so that take_gpu_seconds() can attribute GPU time.
  // Scratch tensors go into `arena` when it is given (shared by programs that never run at the
  // same time; it must hold plan_memory(graph).arena_bytes), else into an arena of its own.
  Program(Runtime& runtime, Graph graph, const std::string& what, bool profile, BufferRange arena = {});
  Program(const Program&) = delete;
  Program& operator=(const Program&) = delete;

  void run() { finish(submit()); }  // submit and wait (and read the node timings when profiling)
  // The two halves of run(), for programs of several devices in flight at once. submit() returns
  // the queue's timeline value that finish() waits for.
  uint64_t submit();
  void finish(uint64_t submitted);

  const Graph& graph() const { return graph_; }
  const MemoryPlan& plan() const { return plan_; }
  uint32_t barrier_count() const { return commands_.barrier_count(); }
  uint32_t dispatch_count() const { return commands_.dispatch_count(); }
  // Seconds of GPU time per node kind over the runs since the last call (profile only).
  std::map<std::string, double> take_gpu_seconds();

 private:
  Runtime& runtime_;
  Graph graph_;
  MemoryPlan plan_;
  Allocation own_arena_;  // when no shared arena was given
  CommandBuffer commands_;
  std::unique_ptr<Profiler> profiler_;  // when profiling
};

// Text description: nodes with their tensors, the memory plan and the barrier count.
std::string describe(const Program& program);
// Graphviz DOT of the dataflow.
std::string to_dot(const Graph& graph);

}  // namespace q3n::graph
