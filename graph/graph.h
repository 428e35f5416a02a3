// The static dataflow graph: nodes are operator invocations, edges are tensors. A graph is built
// once per shape (a prefill chunk of T tokens, a decode step of B sequences) from the model's
// config; graph/program.h plans its scratch memory and records it into a command buffer that is
// replayed for every step of that shape.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "runtime/command.h"
#include "runtime/memory.h"
#include "runtime/pipeline.h"

namespace q3n::graph {

using TensorId = uint32_t;

enum class TensorRole {
  Weight,   // bound to the uploaded checkpoint
  State,    // per-sequence slots: conv / recurrent state, KV cache
  Input,    // host-written before each submission (token ids, sequence table, sampling)
  Output,   // read by the host after each submission
  Scratch,  // intermediate: placed in the shared arena by the memory plan
  Status,   // host-read flags (e.g. NaN router logits): read after each run, but a node that only
            // writes these is not needed (pruning drops it)
};
const char* role_name(TensorRole role);

struct Tensor {
  std::string name;  // "layer 3 qkv"
  TensorRole role = TensorRole::Scratch;
  uint64_t bytes = 0;
  std::string shape;  // for people: "[64, 8192] f32"
  BufferRange bound;  // non-scratch tensors: their memory
};

// Resolves a tensor to its memory once the plan is made.
class Bindings {
 public:
  explicit Bindings(std::vector<BufferRange> ranges) : ranges_(std::move(ranges)) {}
  const BufferRange& operator[](TensorId id) const { return ranges_.at(id); }

 private:
  std::vector<BufferRange> ranges_;
};

using RecordFn = std::function<void(const Bindings&, PipelineLibrary&, CommandBuffer&)>;

struct Node {
  std::string name;  // "layer 3 attention"
  std::string kind;  // operator family, for profiles: "linear", "attention", "moe", ...
  std::vector<TensorId> reads, writes;
  RecordFn record;
};

class Graph {
 public:
  TensorId bind(std::string name, TensorRole role, const BufferRange& range, std::string shape);
  TensorId scratch(std::string name, uint64_t bytes, std::string shape);
  void add(Node node);

  // Drops nodes whose writes nobody needs (neither read later nor Output/State/Weight), e.g.
  // the last layer's MLP in a prefill chunk that produces no logits.
  void prune();

  const std::vector<Tensor>& tensors() const { return tensors_; }
  const std::vector<Node>& nodes() const { return nodes_; }

 private:
  std::vector<Tensor> tensors_;
  std::vector<Node> nodes_;
};

}  // namespace q3n::graph
