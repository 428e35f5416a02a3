#include "graph/graph.h"

#include <algorithm>

#include "runtime/error.h"

namespace q3n::graph {

const char* role_name(TensorRole role) {
  switch (role) {
    case TensorRole::Weight:
      return "weight";
    case TensorRole::State:
      return "state";
    case TensorRole::Input:
      return "input";
    case TensorRole::Output:
      return "output";
    case TensorRole::Scratch:
      return "scratch";
    case TensorRole::Status:
      return "status";
  }
  return "?";
}

TensorId Graph::bind(std::string name, TensorRole role, const BufferRange& range, std::string shape) {
  if (role == TensorRole::Scratch) throw Error("internal: scratch tensors are placed by the plan, not bound");
  tensors_.push_back({std::move(name), role, range.size, std::move(shape), range});
  return static_cast<TensorId>(tensors_.size() - 1);
}

TensorId Graph::scratch(std::string name, uint64_t bytes, std::string shape) {
  tensors_.push_back({std::move(name), TensorRole::Scratch, bytes, std::move(shape), {}});
  return static_cast<TensorId>(tensors_.size() - 1);
}

void Graph::add(Node node) {
  for (TensorId id : node.reads)
    if (id >= tensors_.size()) throw Error("internal: node " + node.name + " reads an unknown tensor");
  for (TensorId id : node.writes)
    if (id >= tensors_.size()) throw Error("internal: node " + node.name + " writes an unknown tensor");
  nodes_.push_back(std::move(node));
}

void Graph::prune() {
  std::vector<bool> needed(tensors_.size(), false);
  for (size_t i = 0; i < tensors_.size(); ++i)
    needed[i] = tensors_[i].role != TensorRole::Scratch && tensors_[i].role != TensorRole::Status;
  std::vector<Node> kept;
  for (auto it = nodes_.rbegin(); it != nodes_.rend(); ++it) {
    const bool useful = std::any_of(it->writes.begin(), it->writes.end(), [&](TensorId id) { return needed[id]; });
    if (!useful) continue;
    for (TensorId id : it->reads) needed[id] = true;
    kept.push_back(std::move(*it));
  }
  nodes_.assign(std::make_move_iterator(kept.rbegin()), std::make_move_iterator(kept.rend()));
}

}  // namespace q3n::graph
