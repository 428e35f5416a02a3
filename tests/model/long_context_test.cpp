// Long context against HF transformers (issue 18): the long_context fixture of
// tools/make_fixtures.py has a 4500-token prompt (positions past 4096, many prefill chunks) and
// HF's logits of its first tokens at RoPE positions near 200,000 and up to 262,143.
#include <cstdio>

#include "graph/engine.h"
#include "tests/support/gpu_test.h"
#include "tests/support/hf_fixture.h"

namespace q3n::test {
namespace {

class LongContextTest : public GpuTest {
 protected:
  void SetUp() override {
    GpuTest::SetUp();
    f_ = load_hf_fixture("long_context");
    config_ = load_config(f_.dir);
    checkpoint_ = std::make_unique<Checkpoint>(f_.dir);
  }
  std::unique_ptr<graph::Engine> engine(uint32_t context, ops::KvType kv_type, uint32_t chunk = 512,
                                        uint32_t rope_offset = 0) {
    graph::EngineOptions o;
    o.context = context;
    o.kv_type = kv_type;
    o.prefill_chunk = chunk;
    o.rope_offset = rope_offset;
    return std::make_unique<graph::Engine>(rt(), config_, *checkpoint_, o);
  }
  HfFixture f_;
  ModelConfig config_;
  std::unique_ptr<Checkpoint> checkpoint_;
};

// The fp32 path's bound of the short fixtures (1e-3; summation order only) holds over 4508
// positions. The prompt runs in chunks of 512, then each greedy token in a one-token step (the
// decode kernels over a 4500-position cache), whose logits must pick HF's greedy ids.
TEST_F(LongContextTest, LogitsPast4096AndGreedyStepsMatchTransformers) {
  auto e = engine(uint32_t(f_.tokens), ops::KvType::F32);
  std::vector<float> all = e->feed_logits(0, f_.prompt, true);
  for (const int32_t id : f_.greedy) {
    const auto row = e->feed_logits(0, std::span(&id, 1), true);
    all.insert(all.end(), row.begin(), row.end());
  }
  const auto got = f_.stored_rows(all);
  const double err = relative_rms(got, f_.logits);
  std::printf("[kv f32] relative RMS error of %zu rows over %zu positions: %.3g\n", f_.rows.size(), f_.tokens, err);
  EXPECT_LE(err, 1e-3);
  size_t clear = 0;
  for (const std::string& row : argmax_mismatches(got, f_.logits, f_.vocab, 1e-2, clear))
    ADD_FAILURE() << "argmax at stored " << row;
  EXPECT_GT(clear, f_.rows.size() / 2);
  // Greedy step i's logits are those of position prompt + i - 1; compare up to the first step
  // where HF's own top-2 margin is below fp32 noise.
  for (size_t i = 0; i < f_.greedy.size() && f_.margins[i] >= 1e-4; ++i)
    EXPECT_EQ(int32_t(argmax(&all[(f_.prompt.size() + i - 1) * f_.vocab], f_.vocab)), f_.greedy[i])
        << "greedy step " << i;
}

// With the CLI's default f16 cache (rounding K and V moves the short fixtures' logits by ~1e-4,
// ModelTest) the same bound holds over the whole sequence, here fed in chunks of 1000 (not a
// power of two, so the chunk ends fall elsewhere).
TEST_F(LongContextTest, LogitsPast4096WithF16CacheMatchTransformers) {
  const auto got =
      f_.stored_rows(engine(uint32_t(f_.tokens), ops::KvType::F16, 1000)->feed_logits(0, f_.all_ids(), true));
  const double err = relative_rms(got, f_.logits);
  std::printf("[kv f16] relative RMS error of %zu rows over %zu positions: %.3g\n", f_.rows.size(), f_.tokens, err);
  EXPECT_LE(err, 1e-3);
}

// RoPE angles reach 2.6e5 rad near the end of the 262,144-token context, where one fp32 ulp of
// the angle is 0.016 rad: q3n must round position x inv_freq to fp32 as HF does and then take
// cos/sin of that fp32 angle accurately. HF's logits with position_ids shifted to P are the
// reference (the causal mask is unchanged), q3n runs with EngineOptions::rope_offset = P.
TEST_F(LongContextTest, LogitsAtRopePositionsNear262144MatchTransformers) {
  ASSERT_FALSE(f_.rope_offsets.empty());
  const std::vector<int32_t> ids(f_.prompt.begin(), f_.prompt.begin() + f_.offset_tokens);
  const std::vector<float> at_zero = engine(f_.offset_tokens, ops::KvType::F32, 64)->feed_logits(0, ids, true);
  for (const uint32_t offset : f_.rope_offsets) {
    ASSERT_LE(offset + f_.offset_tokens, uint32_t(config_.max_position_embeddings));
    const std::vector<float> want = f_.offset_logits(offset);
    const auto got = engine(f_.offset_tokens, ops::KvType::F32, 64, offset)->feed_logits(0, ids, true);
    const double err = relative_rms(got, want), moved = relative_rms(at_zero, want);
    std::printf("[rope offset %u] relative RMS error %.3g; the same tokens at position 0 differ by %.3g\n", offset, err,
                moved);
    EXPECT_LE(err, 1e-3) << "rope offset " << offset;
    // The shift itself moves HF's logits (fp32 angle rounding): a q3n that ignored the offset,
    // or rounded the angle differently, would be that far off.
    EXPECT_LT(err, moved / 4) << "the test does not see the offset";
  }
}

}  // namespace
}  // namespace q3n::test
