// graph/ without a model or a GPU: the memory planner (tensors alive at the same time never
// share bytes), pruning, the hazard tracker that places barriers, and the decode-traffic floor.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <set>

#include "graph/graph.h"
#include "graph/hazard_tracker.h"
#include "graph/memory_plan.h"
#include "graph/state.h"
#include "graph/support_check.h"
#include "graph/traffic.h"
#include "graph/weight_cache.h"
#include "loader/config.h"
#include "runtime/error.h"

namespace q3n::graph {
namespace {

Node node(std::string name, std::vector<TensorId> reads, std::vector<TensorId> writes) {
  return {std::move(name), "test", std::move(reads), std::move(writes),
          [](const Bindings&, PipelineLibrary&, CommandBuffer&) {}};
}

// Random graphs of scratch tensors (sizes 0 .. 100 kB, some zero) read and written by nodes that
// touch recent tensors, as a layer stack does: every pair of tensors whose lifetimes (first to last
// node touching them) overlap gets disjoint byte ranges, offsets are aligned, the arena holds them all
// and sharing never makes it larger than placing them side by side.
TEST(MemoryPlan, TensorsAliveTogetherNeverShareBytes) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 50; ++trial) {
    Graph g;
    const uint32_t count = 5 + rng() % 120;
    for (uint32_t i = 0; i < count; ++i) g.scratch("t" + std::to_string(i), rng() % 7 == 0 ? 0 : rng() % 100000, "");
    const TensorId weight = g.bind("w", TensorRole::Weight, {}, "");
    const uint32_t nodes = 5 + rng() % 150;
    for (uint32_t n = 0; n < nodes; ++n) {
      std::vector<TensorId> reads{weight}, writes;
      for (int j = 0; j < 3; ++j) reads.push_back(rng() % count);
      writes.push_back(rng() % count);
      g.add(node("n" + std::to_string(n), reads, writes));
    }
    const uint64_t alignment = 256;
    const MemoryPlan plan = plan_memory(g, alignment);

    std::vector<size_t> first(g.tensors().size(), SIZE_MAX), last(g.tensors().size(), 0);
    for (size_t n = 0; n < g.nodes().size(); ++n)
      for (const auto* list : {&g.nodes()[n].reads, &g.nodes()[n].writes})
        for (TensorId id : *list) first[id] = std::min(first[id], n), last[id] = std::max(last[id], n);
    auto extent = [&](TensorId id) { return std::max<uint64_t>(g.tensors()[id].bytes, 4); };
    for (TensorId a = 0; a < count; ++a) {
      if (first[a] == SIZE_MAX) continue;
      EXPECT_EQ(plan.offsets[a] % alignment, 0u);
      EXPECT_LE(plan.offsets[a] + extent(a), plan.arena_bytes);
      for (TensorId b = a + 1; b < count; ++b) {
        if (first[b] == SIZE_MAX || first[a] > last[b] || first[b] > last[a]) continue;  // not alive together
        const bool disjoint =
            plan.offsets[a] + extent(a) <= plan.offsets[b] || plan.offsets[b] + extent(b) <= plan.offsets[a];
        ASSERT_TRUE(disjoint) << "trial " << trial << ": tensors " << a << " and " << b << " share bytes";
      }
    }
    EXPECT_LE(plan.arena_bytes, plan.unshared_bytes);
  }
}

// A chain whose tail feeds nothing: nodes whose writes nobody needs go, transitively; a node
// that writes an Output or State tensor stays with everything it reads; a node that only raises
// a Status flag goes.
TEST(Prune, DropsWorkNobodyNeeds) {
  Graph g;
  const TensorId x = g.bind("x", TensorRole::Input, {}, ""), out = g.bind("out", TensorRole::Output, {}, "");
  const TensorId state = g.bind("state", TensorRole::State, {}, ""),
                 status = g.bind("status", TensorRole::Status, {}, "");
  const TensorId a = g.scratch("a", 16, ""), b = g.scratch("b", 16, ""), c = g.scratch("c", 16, ""),
                 d = g.scratch("d", 16, "");
  g.add(node("make a", {x}, {a}));
  g.add(node("make b", {a}, {b}));
  g.add(node("make out", {b}, {out}));
  g.add(node("make c (unused)", {a}, {c}));
  g.add(node("make d from c (unused)", {c}, {d}));
  g.add(node("update state", {x}, {state}));
  g.add(node("flag only", {b}, {status}));
  g.prune();
  std::vector<std::string> kept;
  for (const Node& n : g.nodes()) kept.push_back(n.name);
  EXPECT_EQ(kept, (std::vector<std::string>{"make a", "make b", "make out", "update state"}));
}

// Barriers: read after write, write after write and write after read on overlapping bytes need
// one; reads after reads, disjoint ranges and other buffers do not; clear() starts over.
TEST(HazardTracker, PlacesBarriersOnOverlappingBytesOnly) {
  const VkBuffer buf = reinterpret_cast<VkBuffer>(uintptr_t(1)), other = reinterpret_cast<VkBuffer>(uintptr_t(2));
  HazardTracker t;
  t.add({{buf, 0, 100}}, {{buf, 200, 300}});                              // read [0, 100), write [200, 300)
  EXPECT_TRUE(t.needs_barrier({{buf, 250, 260}}, {}));                    // read after write
  EXPECT_TRUE(t.needs_barrier({}, {{buf, 299, 400}}));                    // write after write
  EXPECT_TRUE(t.needs_barrier({}, {{buf, 50, 60}}));                      // write after read
  EXPECT_FALSE(t.needs_barrier({{buf, 0, 100}}, {}));                     // read after read
  EXPECT_FALSE(t.needs_barrier({{buf, 100, 200}}, {{buf, 300, 400}}));    // touching, not overlapping
  EXPECT_FALSE(t.needs_barrier({{other, 200, 300}}, {{other, 0, 100}}));  // another buffer
  t.clear();
  EXPECT_FALSE(t.needs_barrier({{buf, 250, 260}}, {{buf, 0, 100}}));
}

// Kernel limits are checked against the config before anything is loaded: the 80B config passes;
// a head_dim, linear head dim, conv width or expert count past what the kernels take is refused with the field,
// its value and the limit in the message.
TEST(CheckSupported, RefusesConfigsPastTheKernelLimits) {
  const std::string path = std::string(Q3N_SOURCE_DIR) + "/assets/configs/qwen3-next-80b-a3b.json";
  const ModelConfig base = load_config_file(path);
  EXPECT_NO_THROW(check_supported(base, path));
  auto refusal = [&](auto change) {
    ModelConfig c = base;
    change(c);
    try {
      check_supported(c, "config.json");
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  EXPECT_EQ(
      refusal([](ModelConfig& c) { c.head_dim = 512; }),
      "config.json: field \"head_dim\" is 512; q3n's attention kernels take heads of at most 256 (this q3n cannot "
      "run the model)");
  EXPECT_NE(refusal([](ModelConfig& c) { c.linear_value_head_dim = 300; }).find("\"linear_value_head_dim\" is 300"),
            std::string::npos);
  EXPECT_NE(refusal([](ModelConfig& c) { c.linear_key_head_dim = 257; }).find("\"linear_key_head_dim\" is 257"),
            std::string::npos);
  EXPECT_NE(refusal([](ModelConfig& c) { c.linear_conv_kernel_dim = 9; }).find("1 to 8"), std::string::npos);
  EXPECT_NE(refusal([](ModelConfig& c) { c.num_experts = 1025; })
                .find("\"num_experts\" is 1025; q3n's routing kernels "
                      "take at most 1024"),
            std::string::npos);
  // A model without full-attention layers is not held to the attention limit.
  EXPECT_EQ(refusal([](ModelConfig& c) {
              c.head_dim = 512;
              for (auto& t : c.layer_types) t = LayerType::LinearAttention;
            }),
            "accepted");
}

// decode_traffic: dense weights count in full, the embedding table by the rows a step reads,
// routed experts by the expected number of distinct experts that batch x top-k routing touches
// (checked against a simulation of random top-k draws, not against the formula it uses), state
// as SequenceState plans it; scratch tensors are not traffic.
TEST(DecodeTraffic, CountsExpertsByTheDistinctExpertsABatchTouches) {
  const ModelConfig c = load_config(std::filesystem::path(Q3N_SOURCE_DIR) / "tests/data/fixtures/bf16_tied");
  const uint32_t E = c.num_experts, k = c.num_experts_per_tok;
  ASSERT_GT(E, k);
  const uint64_t row = 64, gate_up = 600000, down = 300000, lm_head = 4096;
  auto range = [](uint64_t bytes) { return BufferRange{VK_NULL_HANDLE, 0, bytes, 0}; };
  Graph g;
  g.bind("embed_tokens", TensorRole::Weight, range(row * uint64_t(c.vocab_size)), "");
  g.bind("layer 0 moe experts.gate_up", TensorRole::Weight, range(gate_up), "");
  g.bind("layer 0 moe experts.down", TensorRole::Weight, range(down), "");
  g.bind("lm_head", TensorRole::Weight, range(lm_head), "");
  g.scratch("hidden", 12345, "");
  std::mt19937 rng(3);
  for (const uint32_t batch : {1u, 2u, 5u, 40u}) {
    // Simulated: each token picks k distinct experts uniformly; count the distinct ones.
    double distinct = 0;
    const int trials = 20000;
    for (int t = 0; t < trials; ++t) {
      std::set<uint32_t> seen;
      for (uint32_t b = 0; b < batch; ++b) {
        std::vector<uint32_t> experts(E);
        for (uint32_t e = 0; e < E; ++e) experts[e] = e;
        std::shuffle(experts.begin(), experts.end(), rng);
        seen.insert(experts.begin(), experts.begin() + k);
      }
      distinct += double(seen.size()) / trials;
    }
    const StepTraffic t = decode_traffic(g, c, batch, 10);
    EXPECT_EQ(t.weights, row * batch + lm_head) << batch;
    EXPECT_NEAR(double(t.experts), (gate_up + down) * distinct / E, 0.01 * (gate_up + down)) << batch;
    EXPECT_EQ(t.state, SequenceState::planned_bytes(c, batch, 10) + SequenceState::planned_bytes(c, batch, 0)) << batch;
    EXPECT_EQ(t.total(), t.weights + t.experts + t.state);
  }
  // One sequence reads exactly k of E experts.
  EXPECT_NEAR(double(decode_traffic(g, c, 1, 0).experts), double(gate_up + down) * k / E, 1.0);
}

// A `--cache` entry is read only when its magic, key, planned size and file size all agree; each
// mismatch is named for the rebuild notice.
TEST(WeightCacheHeader, ReadOnlyWhenEveryFieldAgrees) {
  const uint64_t key = 0x0123456789abcdefull, payload = 4096;
  std::vector<char> header(kWeightCacheHeaderBytes);
  std::memcpy(header.data(), "q3n-weights-v1", 15);
  std::memcpy(header.data() + 16, &key, 8);
  std::memcpy(header.data() + 24, &payload, 8);
  const uint64_t whole = kWeightCacheHeaderBytes + payload;
  EXPECT_EQ(weight_cache_problem(header, whole, key, payload), "");
  EXPECT_NE(weight_cache_problem(header, whole - 1, key, payload).find("truncated"), std::string::npos);
  EXPECT_NE(weight_cache_problem(header, whole + 1, key, payload).find("trailing"), std::string::npos);
  EXPECT_NE(weight_cache_problem(header, whole, key + 1, payload).find("another checkpoint"), std::string::npos);
  EXPECT_NE(weight_cache_problem(header, whole + 8, key, payload + 8).find("another amount"), std::string::npos);
  EXPECT_NE(weight_cache_problem(std::span<const char>(header).first(31), whole, key, payload).find("not a q3n"),
            std::string::npos);
  header[3] = 'X';
  EXPECT_NE(weight_cache_problem(header, whole, key, payload).find("not a q3n"), std::string::npos);
}

}  // namespace
}  // namespace q3n::graph
