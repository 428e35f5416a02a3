// Batch invariance and bounded resources, on the random-weight fixtures:
// - with batch_invariant, decode rows of a B-sequence step equal the same sequences decoded
//   alone, bit for bit in the token ids, greedy and seeded sampling, for B = 12 and 40 (several
//   4-token passes of the GEMV);
// - without it, decode rows of steps past the GEMV (where the device has matrix units, the matrix
//   kernels) still do not depend on how many rows share the step;
// - a mixed step (decode rows plus a prompt piece) equals the separate steps, bit for bit, in
//   both modes;
// - the continuous-batching scheduler gives every request exactly the tokens it gets alone,
//   whatever else shares the batch and in whatever order requests arrive;
// - prompts of many different lengths record a bounded set of programs and the device memory
//   stays flat after warm-up.
#include <random>

#include "graph/batch_scheduler.h"
#include "graph/engine.h"
#include "runtime/error.h"
#include "runtime/ops/linear.h"
#include "tests/support/gpu_test.h"

namespace q3n::test {
namespace {

std::filesystem::path fixture_dir(const std::string& name) {
  return std::filesystem::path(Q3N_SOURCE_DIR) / "tests/data/fixtures" / name;
}

std::vector<int32_t> random_ids(size_t n, uint32_t vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> ids(n);
  for (auto& id : ids) id = int32_t(rng() % vocab);
  return ids;
}

class BatchTest : public GpuTest, public ::testing::WithParamInterface<std::string> {
 protected:
  std::unique_ptr<graph::Engine> engine(uint32_t slots, uint32_t chunk = 64, uint32_t context = 256,
                                        bool batch_invariant = true) {
    config_ = load_config(fixture_dir(GetParam()));
    checkpoint_ = std::make_unique<Checkpoint>(fixture_dir(GetParam()));
    graph::EngineOptions o;
    o.context = context;
    o.slots = slots;
    o.prefill_chunk = chunk;
    o.decode_rows = graph::Engine::kMaxDecodeRows;  // one step for every sequence
    o.batch_invariant = batch_invariant;
    return std::make_unique<graph::Engine>(rt(), config_, *checkpoint_, o);
  }
  // `steps` tokens of one sequence alone in slot 0, the way `q3n run` generates them.
  static std::vector<int32_t> alone(graph::Engine& e, const std::vector<int32_t>& prompt, uint32_t steps,
                                    const ops::SamplingParams& params) {
    e.reset(0);
    std::vector<int32_t> out = {e.feed_and_sample(0, prompt, params)};
    const uint32_t slot = 0;
    while (out.size() < steps) out.push_back(e.decode(std::span(&slot, 1), std::span(&out.back(), 1), params)[0]);
    return out;
  }
  ModelConfig config_;
  std::unique_ptr<Checkpoint> checkpoint_;
};

TEST_P(BatchTest, DecodeRowsDoNotDependOnTheBatch) {
  for (const uint32_t batch : {12u, 40u}) {
    auto e = engine(batch);
    const uint32_t steps = 3;
    std::vector<std::vector<int32_t>> prompts;
    std::vector<ops::SamplingParams> params(batch);
    for (uint32_t b = 0; b < batch; ++b) {
      prompts.push_back(random_ids(1 + (b * 37) % 24, uint32_t(config_.vocab_size), 100 + b));
      if (b % 2) params[b] = {.temperature = 1.0f, .seed = 1000 + b};  // odd rows sample, even rows are greedy
    }
    std::vector<std::vector<int32_t>> want;
    for (uint32_t b = 0; b < batch; ++b) want.push_back(alone(*e, prompts[b], steps, params[b]));

    std::vector<uint32_t> slots(batch);
    for (uint32_t b = 0; b < batch; ++b) slots[b] = (b * 7 + 3) % batch;  // a permutation: not in slot order
    std::vector<int32_t> next(batch);
    std::vector<std::vector<int32_t>> got(batch);
    for (uint32_t b = 0; b < batch; ++b) {
      e->reset(slots[b]);
      got[b].push_back(next[b] = e->feed_and_sample(slots[b], prompts[b], params[b]));
    }
    for (uint32_t s = 1; s < steps; ++s) {
      next = e->decode(slots, next, params);
      for (uint32_t b = 0; b < batch; ++b) got[b].push_back(next[b]);
    }
    for (uint32_t b = 0; b < batch; ++b) EXPECT_EQ(got[b], want[b]) << "batch " << batch << ", sequence " << b;
  }
}

// Without batch_invariant, decode steps of more than kThroughputGemvMaxTokens rows take the matrix
// units where the device has them (else the GEMV): a row's products are then the same sequence of
// matrix operations for any row count and any tile width, so a sequence decodes the same tokens in
// a step of 40 rows as in a step of 20.
TEST_P(BatchTest, LargeDecodeStepsAgreeWithoutBatchInvariance) {
  const uint32_t small = ops::kThroughputGemvMaxTokens + 4, large = 40, steps = 3;
  auto e = engine(large, 64, 256, false);
  std::vector<std::vector<int32_t>> prompts;
  std::vector<ops::SamplingParams> params(large);
  for (uint32_t b = 0; b < large; ++b) {
    prompts.push_back(random_ids(1 + (b * 37) % 24, uint32_t(config_.vocab_size), 100 + b));
    if (b % 2) params[b] = {.temperature = 1.0f, .seed = 1000 + b};
  }
  auto decode_first = [&](uint32_t batch) {
    std::vector<uint32_t> slots(batch);
    std::vector<int32_t> next(batch);
    std::vector<std::vector<int32_t>> got(batch);
    for (uint32_t b = 0; b < batch; ++b) {
      slots[b] = b;
      e->reset(b);
      got[b].push_back(next[b] = e->feed_and_sample(b, prompts[b], params[b]));
    }
    const std::span<const ops::SamplingParams> p(params.data(), batch);
    for (uint32_t s = 1; s < steps; ++s) {
      next = e->decode(slots, next, p);
      for (uint32_t b = 0; b < batch; ++b) got[b].push_back(next[b]);
    }
    return got;
  };
  const auto in_small = decode_first(small), in_large = decode_first(large);
  for (uint32_t b = 0; b < small; ++b) EXPECT_EQ(in_small[b], in_large[b]) << "sequence " << b;
}

// A mixed step (decode rows plus another sequence's prompt piece, one submission) gives every
// row the arithmetic of the separate steps: the sampled ids, and the logits of one more token
// of every sequence afterwards, are bitwise equal. The cases reach each way a step is cut into
// dispatches (graph/model_graph.cpp, dispatch_groups): 5 + 16 rows (one GEMV for the whole
// step), 5 + 1 (a one-token piece takes the recurrent delta rule), 125 + 16 (past the GEMV's
// 128 rows: one dispatch per segment) and 5 + 200 (the piece takes the tiled GEMM); without
// batch_invariant also 40 + 16 (the decode rows leave the GEMV: one dispatch per segment).
TEST_P(BatchTest, MixedStepEqualsSeparateSteps) {
  struct Case {
    uint32_t batch, piece;
    bool batch_invariant = true;
  };
  for (const Case c : {Case{5, 16}, Case{5, 1}, Case{125, 16}, Case{5, 200}, Case{5, 16, false}, Case{40, 16, false}}) {
    SCOPED_TRACE("decode rows " + std::to_string(c.batch) + ", piece " + std::to_string(c.piece) +
                 (c.batch_invariant ? "" : ", not batch-invariant"));
    const uint32_t piece_slot = c.batch;
    auto e = engine(c.batch + 1, 256, 512, c.batch_invariant);
    const uint32_t V = uint32_t(config_.vocab_size);
    std::vector<std::vector<int32_t>> prompts;
    std::vector<ops::SamplingParams> params(c.batch);
    std::vector<uint32_t> slots(c.batch);
    for (uint32_t b = 0; b < c.batch; ++b) {
      prompts.push_back(random_ids(1 + (b * 5) % 9, V, 300 + b));
      if (b % 2) params[b] = {.temperature = 1.0f, .seed = 500 + b};
      slots[b] = (b * 7 + 3) % c.batch;
    }
    const std::vector<int32_t> prefix = random_ids(10, V, 7), piece = random_ids(c.piece, V, 8);
    const ops::SamplingParams piece_params{.temperature = 0.7f, .seed = 9};
    // Every sequence prompted and its first token sampled; the piece's sequence 10 tokens in.
    auto prepare = [&] {
      std::vector<int32_t> first(c.batch);
      for (uint32_t b = 0; b < c.batch; ++b) {
        e->reset(slots[b]);
        first[b] = e->feed_and_sample(slots[b], prompts[b], params[b]);
      }
      e->reset(piece_slot);
      e->feed_piece(piece_slot, prefix, nullptr);
      return first;
    };
    // The logits of one more token for each of a few sequences (every one for small batches).
    auto logits_after = [&](const std::vector<int32_t>& next, int32_t piece_next) {
      std::vector<std::vector<float>> out = {e->feed_logits(piece_slot, std::span(&piece_next, 1), false)};
      for (uint32_t b = 0; b<c.batch; b += c.batch> 16 ? 31 : 1)
        out.push_back(e->feed_logits(slots[b], std::span(&next[b], 1), false));
      return out;
    };

    std::vector<int32_t> first = prepare();
    const std::vector<int32_t> want = e->decode(slots, first, params);
    const int32_t want_piece = e->feed_piece(piece_slot, piece, &piece_params);
    const auto want_logits = logits_after(want, want_piece);

    first = prepare();
    int32_t got_piece = -2;
    const std::vector<int32_t> got =
        e->decode_with_piece(slots, first, params, {piece_slot, piece, &piece_params}, got_piece);
    EXPECT_EQ(got, want);
    EXPECT_EQ(got_piece, want_piece);
    const auto got_logits = logits_after(got, got_piece);
    ASSERT_EQ(got_logits.size(), want_logits.size());
    for (size_t i = 0; i < got_logits.size(); ++i)
      EXPECT_TRUE(got_logits[i] == want_logits[i]) << "logits after the step differ for sequence " << i;
  }
}

TEST_P(BatchTest, MixedStepRefusesAPieceForADecodingSlot) {
  auto e = engine(2);
  e->reset(0);
  const int32_t first = e->feed_and_sample(0, random_ids(5, uint32_t(config_.vocab_size), 1), {});
  const uint32_t slot = 0;
  const std::vector<int32_t> piece = random_ids(4, uint32_t(config_.vocab_size), 2);
  const ops::SamplingParams greedy;
  int32_t token = 0;
  EXPECT_THROW(e->decode_with_piece(std::span(&slot, 1), std::span(&first, 1), std::span(&greedy, 1),
                                    {0, piece, nullptr}, token),
               Error);
}

TEST_P(BatchTest, SameSlotTwiceInOneStepIsRefused) {
  auto e = engine(2);
  e->reset(0);
  const int32_t first = e->feed_and_sample(0, random_ids(5, uint32_t(config_.vocab_size), 1), {});
  const std::vector<uint32_t> slots = {0, 0};
  const std::vector<int32_t> ids = {first, first};
  EXPECT_THROW(e->decode(slots, ids, ops::SamplingParams{}), Error);
}

TEST_P(BatchTest, SchedulerGivesEachRequestItsTokensAlone) {
  const uint32_t requests = 9, max_batch = 3;
  auto e = engine(max_batch, 16);
  std::vector<graph::GenerationRequest> input;
  std::vector<std::vector<int32_t>> want;
  for (uint32_t r = 0; r < requests; ++r) {
    graph::GenerationRequest g;
    g.tag = r;
    g.prompt = random_ids(1 + (r * 53) % 70, uint32_t(config_.vocab_size), 200 + r);  // 1..70 tokens, several pieces
    g.max_tokens = 2 + (r * 5) % 6;
    if (r % 3 == 1) g.sampling = {.temperature = 0.8f, .top_k = 40, .seed = 77 + r};
    want.push_back(alone(*e, g.prompt, g.max_tokens, g.sampling));
    input.push_back(std::move(g));
  }
  // Twice: in order with a small prefill budget, then in reverse with a large one.
  for (const bool reverse : {false, true}) {
    std::vector<std::vector<int32_t>> got(requests);
    std::vector<bool> finished(requests, false);
    graph::SchedulerOptions o;
    o.max_batch = max_batch;
    o.prefill_budget = reverse ? 1000 : 8;
    graph::BatchScheduler scheduler(
        *e, o,
        [&](uint64_t tag, int32_t id) {
          got[tag].push_back(id);
          return false;
        },
        [&](uint64_t tag, graph::FinishReason reason, uint32_t, uint32_t generated) {
          EXPECT_EQ(reason, graph::FinishReason::Length);
          EXPECT_EQ(generated, got[tag].size());
          finished[tag] = true;
        });
    for (uint32_t i = 0; i < requests; ++i) scheduler.add(input[reverse ? requests - 1 - i : i]);
    while (scheduler.step()) {
    }
    for (uint32_t r = 0; r < requests; ++r) {
      EXPECT_TRUE(finished[r]) << "request " << r;
      EXPECT_EQ(got[r], want[r]) << "request " << r << (reverse ? " (reversed)" : "");
    }
  }
}

TEST_P(BatchTest, ManyPromptLengthsKeepProgramsAndMemoryBounded) {
  const uint32_t chunk = 32;
  auto e = engine(1, chunk);
  auto run_prompt = [&](size_t n, uint32_t seed) {
    e->reset(0);
    e->feed_and_sample(0, random_ids(n, uint32_t(config_.vocab_size), seed), {});
  };
  // Warm-up: every piece shape, with and without a sampling head (63 = 32 + 16 + 8 + 4 + 2 + 1).
  for (const size_t n : {63, 32, 16, 8, 4, 2, 1}) run_prompt(n, uint32_t(n));
  const auto device = rt().allocator.reserved_bytes(MemoryKind::Device);
  const auto upload = rt().allocator.reserved_bytes(MemoryKind::Upload);
  const auto readback = rt().allocator.reserved_bytes(MemoryKind::Readback);
  std::mt19937 rng(5);
  for (int i = 0; i < 16; ++i) run_prompt(1 + rng() % 150, rng());  // 16 lengths, most never seen before
  // Full chunks plus powers of two below the chunk, each with or without a sampling head.
  EXPECT_LE(e->program_count(), 2u * 6u);
  EXPECT_EQ(rt().allocator.reserved_bytes(MemoryKind::Device), device);
  EXPECT_EQ(rt().allocator.reserved_bytes(MemoryKind::Upload), upload);
  EXPECT_EQ(rt().allocator.reserved_bytes(MemoryKind::Readback), readback);
  for (const uint32_t n : e->prompt_pieces(1000)) EXPECT_TRUE(n == chunk || (n < chunk && (n & (n - 1)) == 0)) << n;
}

// A KV cache spread over several allocations (slots past what one allocation holds go to the
// next; capped here at two slots per allocation so the fixtures reach it) gives every sequence
// exactly the tokens it gets from a cache in one allocation.
TEST_P(BatchTest, KvCacheInSeveralAllocationsGivesTheSameTokens) {
  const uint32_t batch = 5, steps = 4;
  auto one = engine(batch);
  std::vector<std::vector<int32_t>> prompts;
  for (uint32_t b = 0; b < batch; ++b) prompts.push_back(random_ids(3 + 11 * b, uint32_t(config_.vocab_size), 300 + b));
  const ops::SamplingParams greedy;
  auto decode_all = [&](graph::Engine& e) {
    std::vector<uint32_t> slots = {4, 0, 3, 1, 2};
    std::vector<int32_t> next(batch);
    std::vector<std::vector<int32_t>> got(batch);
    for (uint32_t b = 0; b < batch; ++b) {
      e.reset(slots[b]);
      got[b].push_back(next[b] = e.feed_and_sample(slots[b], prompts[b], greedy));
    }
    for (uint32_t s = 1; s < steps; ++s) {
      next = e.decode(slots, next, greedy);
      for (uint32_t b = 0; b < batch; ++b) got[b].push_back(next[b]);
    }
    return got;
  };
  ASSERT_EQ(one->state().kv_allocations_per_layer(), 1u);
  const auto want = decode_all(*one);
  one.reset();
  graph::EngineOptions o;
  o.context = 256;
  o.slots = batch;
  o.prefill_chunk = 64;
  o.batch_invariant = true;
  o.kv_chunk_bytes = 2 * graph::SequenceState::kv_slot_stride(config_, o.context, o.kv_type);
  graph::Engine split(rt(), config_, *checkpoint_, o);
  EXPECT_EQ(split.state().kv_allocations_per_layer(), 3u);
  EXPECT_EQ(decode_all(split), want);
}

// A context whose KV rows for one sequence and layer exceed one allocation is refused before
// anything is allocated, with the fix in the message.
TEST_F(GpuTest, KvSlotLargerThanOneAllocationIsRefused) {
  const ModelConfig big =
      load_config_file(std::filesystem::path(Q3N_SOURCE_DIR) / "assets/configs/qwen3-next-80b-a3b.json");
  const auto reserved = rt().allocator.reserved_bytes(MemoryKind::Device);
  // 262,144 positions x 2 kv heads x 256 dims x 4 bytes = 512 MiB per slot and layer.
  EXPECT_EQ(graph::SequenceState::kv_slot_stride(big, 262144, ops::KvType::F32), 512ull << 20);
  EXPECT_EQ(graph::SequenceState::kv_slot_stride(big, 262144, ops::KvType::F16), 256ull << 20);
  try {
    graph::SequenceState state(rt(), big, 1, 262144, ops::KvType::F32, 256ull << 20);
    FAIL() << "a 512 MiB slot was accepted under a 256 MiB allocation limit";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("lower --ctx"), std::string::npos) << e.what();
  }
  EXPECT_EQ(rt().allocator.reserved_bytes(MemoryKind::Device), reserved);  // nothing was allocated
}

// bf16_tied: 16-bit weights are the case where a step's row count once changed the kernel.
INSTANTIATE_TEST_SUITE_P(Fixtures, BatchTest, ::testing::Values("bf16_tied"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace q3n::test
