#include "graph/program.h"

#include <cstdio>
#include <cstdlib>
#include <sstream>

#include "graph/hazard_tracker.h"
#include "runtime/error.h"

namespace q3n::graph {

namespace {
// Q3N_REPEAT_NODES=kind[,kind...]: a measurement aid. Nodes of those kinds are recorded twice,
// with a barrier between, so a step's time minus its time without the variable is what those
// nodes cost inside the replayed step: their dispatches, their barriers and their waits, which
// per-node timestamps (--profile) attribute poorly (bench/NOTES.md, session 20). Outputs are
// wrong wherever a node is not idempotent (state updates, in-place residual adds): benchmarks only.
bool repeated_for_measurement(const std::string& kind) {
  static const std::string kinds = [] {
    const char* env = std::getenv("Q3N_REPEAT_NODES");
    if (!env || !*env) return std::string();
    std::fprintf(stderr,
                 "[q3n] Q3N_REPEAT_NODES=%s: those nodes run twice per step (a measurement; outputs are not valid)\n",
                 env);
    return "," + std::string(env) + ",";
  }();
  return !kinds.empty() && kinds.find("," + kind + ",") != std::string::npos;
}

// Q3N_PROFILE_NODES=1: --profile times each node under its name, with "layer N " taken out so a
// node's layers add up (e.g. "in_proj_qkv, in_proj_z, in_proj_ba"), instead of under its kind.
// A measurement aid, for telling apart the nodes of one kind (bench/NOTES.md, session 27).
std::string profile_label(const Node& node) {
  static const bool by_name = [] {
    const char* env = std::getenv("Q3N_PROFILE_NODES");
    return env && std::string(env) == "1";
  }();
  if (!by_name) return node.kind;
  std::string name = node.name;
  if (name.rfind("layer ", 0) == 0) {
    const size_t space = name.find(' ', 6);
    if (space != std::string::npos) name = name.substr(space + 1);
  }
  return name;
}
}  // namespace

Program::Program(Runtime& runtime, Graph graph, const std::string& what, bool profile, BufferRange arena)
    : runtime_(runtime), graph_(std::move(graph)), commands_(runtime.pool.allocate()) {
  plan_ = plan_memory(graph_, runtime.allocator.alignment());
  if (arena.size == 0) {
    own_arena_ = runtime.allocator.allocate(std::max<uint64_t>(plan_.arena_bytes, 4), MemoryKind::Device,
                                            what + " scratch arena");
    arena = own_arena_.range();
  } else if (arena.size < plan_.arena_bytes) {
    throw Error("internal: the shared scratch arena (" + format_bytes(arena.size) + ") is smaller than " + what +
                " needs (" + format_bytes(plan_.arena_bytes) + ")");
  }
  std::vector<BufferRange> ranges;
  for (TensorId id = 0; id < graph_.tensors().size(); ++id) {
    const Tensor& t = graph_.tensors()[id];
    ranges.push_back(t.role == TensorRole::Scratch ? arena.sub(plan_.offsets[id], t.bytes) : t.bound);
  }
  const Bindings bindings(std::move(ranges));

  const auto& nodes = graph_.nodes();
  // Room for each node's mark plus the parts operators mark inside it (CommandBuffer::mark).
  if (profile) profiler_ = std::make_unique<Profiler>(runtime.device, static_cast<uint32_t>(nodes.size() * 8));
  commands_.begin(true);
  if (profiler_) profiler_->begin(commands_);
  commands_.attach_profiler(profiler_.get());
  HazardTracker hazards;
  for (size_t n = 0; n < nodes.size(); ++n) {
    std::vector<Span> reads, writes;
    for (TensorId id : nodes[n].reads) reads.push_back(span_of(bindings[id]));
    for (TensorId id : nodes[n].writes) writes.push_back(span_of(bindings[id]));
    if (hazards.needs_barrier(reads, writes)) {
      commands_.barrier();
      hazards.clear();
    }
    hazards.add(reads, writes);
    if (profiler_) profiler_->mark(commands_, profile_label(nodes[n]));
    nodes[n].record(bindings, runtime.pipelines, commands_);
    if (repeated_for_measurement(nodes[n].kind)) {
      commands_.barrier();
      nodes[n].record(bindings, runtime.pipelines, commands_);
    }
  }
  if (profiler_) profiler_->finish(commands_);
  commands_.attach_profiler(nullptr);
  commands_.barrier_to_host();
  commands_.end();
}

uint64_t Program::submit() { return runtime_.queue.submit(commands_); }

void Program::finish(uint64_t submitted) {
  runtime_.queue.wait(submitted);
  if (profiler_) profiler_->read();
}

std::map<std::string, double> Program::take_gpu_seconds() {
  std::map<std::string, double> seconds;
  if (profiler_)
    for (const auto& [kind, entry] : profiler_->take()) seconds[kind] = entry.milliseconds * 1e-3;
  return seconds;
}

std::string describe(const Program& program) {
  std::ostringstream out;
  const Graph& g = program.graph();
  out << "nodes: " << g.nodes().size() << ", dispatches: " << program.dispatch_count()
      << ", barriers: " << program.barrier_count() << "\n";
  for (size_t n = 0; n < g.nodes().size(); ++n) {
    const Node& node = g.nodes()[n];
    out << "  " << n << "  " << node.name << "  [" << node.kind << "]\n";
    for (TensorId id : node.reads) out << "      in   " << g.tensors()[id].name << " " << g.tensors()[id].shape << "\n";
    for (TensorId id : node.writes)
      out << "      out  " << g.tensors()[id].name << " " << g.tensors()[id].shape << "\n";
  }
  uint64_t by_role[6] = {0, 0, 0, 0, 0, 0};
  for (const Tensor& t : g.tensors()) by_role[static_cast<int>(t.role)] += t.bytes;
  out << "memory plan: scratch arena " << format_bytes(program.plan().arena_bytes) << " (unshared "
      << format_bytes(program.plan().unshared_bytes) << "); weights " << format_bytes(by_role[0]) << ", state "
      << format_bytes(by_role[1]) << ", inputs " << format_bytes(by_role[2]) << ", outputs " << format_bytes(by_role[3])
      << "\n";
  return out.str();
}

std::string to_dot(const Graph& g) {
  std::ostringstream out;
  out << "digraph q3n {\n  rankdir=TB;\n  node [fontname=\"Helvetica\"];\n";
  for (size_t n = 0; n < g.nodes().size(); ++n)
    out << "  n" << n << " [shape=box, label=\"" << g.nodes()[n].name << "\"];\n";
  std::vector<int> last_writer(g.tensors().size(), -1);
  for (size_t n = 0; n < g.nodes().size(); ++n) {
    for (TensorId id : g.nodes()[n].reads) {
      const Tensor& t = g.tensors()[id];
      if (last_writer[id] >= 0)
        out << "  n" << last_writer[id] << " -> n" << n << " [label=\"" << t.name << "\"];\n";
      else if (t.role != TensorRole::Weight)
        out << "  \"" << t.name << "\" [shape=ellipse];\n  \"" << t.name << "\" -> n" << n << ";\n";
    }
    for (TensorId id : g.nodes()[n].writes) last_writer[id] = static_cast<int>(n);
  }
  out << "}\n";
  return out.str();
}

}  // namespace q3n::graph
