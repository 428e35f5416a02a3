// A pipeline split (--devices, graph/layer_split.h) computes what one device computes: each
// device runs its layers with the kernels the whole model gets, and the hidden state and pending
// MLP output cross between devices unchanged, so the logits and sampled ids must be bitwise the
// unsplit ones. The second device is a second VkDevice on the test's physical device (as
// `--devices 0,0`), under the validation layer too.
#include <cstring>

#include "graph/engine.h"
#include "tests/support/gpu_test.h"
#include "tests/support/hf_fixture.h"

namespace q3n::test {
namespace {

// Made and destroyed by the test suite, inside main (see tests/support/gpu_test.cpp).
std::unique_ptr<Runtime> second;
Runtime& second_runtime() { return *second; }

// Spans ending at each of `ends` (the last one the layer count).
std::vector<graph::LayerSpan> spans_ending_at(const std::vector<uint32_t>& ends) {
  std::vector<graph::LayerSpan> spans;
  uint32_t first = 0;
  for (uint32_t end : ends) spans.push_back({first, end}), first = end;
  return spans;
}

class SplitTest : public GpuTest, public ::testing::WithParamInterface<std::string> {
 protected:
  static void SetUpTestSuite() {
    RuntimeOptions options;
    options.instance.validation = true;
    options.device = std::to_string(runtime().device.info().index);
    second = std::make_unique<Runtime>(options);
  }
  static void TearDownTestSuite() { second.reset(); }
  void SetUp() override {
    GpuTest::SetUp();
    f_ = load_hf_fixture(GetParam());
    config_ = load_config(f_.dir);
    checkpoint_ = std::make_unique<Checkpoint>(f_.dir);
    second_errors_ = second_runtime().instance.validation_errors();
  }
  void TearDown() override {
    EXPECT_EQ(second_runtime().instance.validation_errors(), second_errors_)
        << "validation error: " << second_runtime().instance.last_validation_error();
    GpuTest::TearDown();
  }
  graph::EngineOptions options() const {
    graph::EngineOptions o;
    o.context = 256;
    o.slots = 3;
    o.prefill_chunk = 64;
    return o;
  }
  // Weights from the checkpoint, or synthetic ones drawn with `seed`.
  graph::DeviceWeights weights(Runtime& rt, const graph::LayerSpan& span, uint32_t seed) const {
    graph::WeightOptions wo;
    wo.layers = span;
    return seed ? graph::DeviceWeights(rt, config_, seed, wo) : graph::DeviceWeights(rt, config_, *checkpoint_, wo);
  }
  std::unique_ptr<graph::Engine> whole(uint32_t seed = 0) const {
    return std::make_unique<graph::Engine>(runtime(), config_, weights(runtime(), {}, seed), options());
  }
  // Device d of the split alternates between the test's runtime and the second one.
  std::unique_ptr<graph::Engine> split(const std::vector<graph::LayerSpan>& spans, uint32_t seed = 0) const {
    std::vector<graph::EngineDevice> devices;
    for (size_t d = 0; d < spans.size(); ++d) {
      Runtime& rt = d % 2 ? second_runtime() : runtime();
      devices.push_back({&rt, weights(rt, spans[d], seed), spans[d]});
    }
    return std::make_unique<graph::Engine>(std::move(devices), config_, options());
  }

  // Everything the engine computes for a few sequences: teacher-forced logits in prefill chunks,
  // greedy and sampled decode steps of several sequences, and a mixed step (a prompt piece with
  // decode rows), in one list of numbers.
  static std::vector<float> outputs(graph::Engine& e, const HfFixture& f) {
    std::vector<float> out = e.feed_logits(0, f.all_ids(), true);  // chunks 64 + 64 + 38
    const std::vector<int32_t> prompt(f.prompt.begin(), f.prompt.begin() + 20);
    const ops::SamplingParams greedy, sampled{.temperature = 0.8f, .top_k = 20, .seed = 5};
    std::vector<int32_t> next = {e.feed_and_sample(1, prompt, greedy), e.feed_and_sample(2, f.prompt, sampled)};
    const uint32_t slots[2] = {1, 2};
    const ops::SamplingParams params[2] = {greedy, sampled};
    for (int step = 0; step < 6; ++step) {
      next = e.decode(slots, next, params);
      out.insert(out.end(), next.begin(), next.end());
    }
    e.reset(0);
    int32_t piece_token = -1;
    next = e.decode_with_piece(slots, next, params, {.slot = 0, .ids = prompt, .params = &greedy}, piece_token);
    out.insert(out.end(), next.begin(), next.end());
    out.push_back(float(piece_token));
    const auto last = e.feed_logits(1, std::span(&next[0], 1), false);
    out.insert(out.end(), last.begin(), last.end());
    return out;
  }

  static void expect_bitwise_equal(const std::vector<float>& got, const std::vector<float>& want) {
    ASSERT_EQ(got.size(), want.size());
    size_t differ = 0;
    for (size_t i = 0; i < got.size(); ++i) differ += std::memcmp(&got[i], &want[i], 4) != 0;
    EXPECT_EQ(differ, 0u) << "of " << got.size() << " values";
  }

  HfFixture f_;
  ModelConfig config_;
  std::unique_ptr<Checkpoint> checkpoint_;
  uint64_t second_errors_ = 0;
};

TEST_P(SplitTest, TwoDevicesComputeTheUnsplitOutputs) {
  const std::vector<float> want = outputs(*whole(), f_);
  const uint32_t layers = uint32_t(config_.num_hidden_layers);
  // After the first layer (the embedding device holds one) and before the last (the other tests
  // cut in the middle).
  for (const uint32_t cut : {1u, layers - 1}) {
    SCOPED_TRACE("split after layer " + std::to_string(cut - 1));
    expect_bitwise_equal(outputs(*split(spans_ending_at({cut, layers})), f_), want);
  }
}

TEST_P(SplitTest, ThreeDevicesComputeTheUnsplitOutputs) {
  const uint32_t layers = uint32_t(config_.num_hidden_layers);
  expect_bitwise_equal(outputs(*split(spans_ending_at({1, layers - 1, layers})), f_), outputs(*whole(), f_));
}

// Each device draws its span's synthetic weights as the unsplit model does (the seeds of the
// tensors it skips still advance), so a split synthetic model is the same model.
// More sequences than one decode step takes: on a split the steps of different groups run on
// different devices at once (Engine::run_groups), each group's rows as one device runs them.
TEST_P(SplitTest, PipelinedDecodeGroupsComputeTheUnsplitTokens) {
  const uint32_t layers = uint32_t(config_.num_hidden_layers);
  graph::EngineOptions o = options();
  o.slots = 8;
  o.decode_rows = 2;  // groups of 2, 2, 2 and 1 sequences
  const auto tokens = [&](graph::Engine& e) {
    const uint32_t decoding = 7;  // slot 7 takes a prompt piece in a mixed step at the end
    std::vector<uint32_t> slots(decoding);
    std::vector<int32_t> next(decoding);
    std::vector<ops::SamplingParams> params(decoding);
    for (uint32_t s = 0; s < decoding; ++s) {
      slots[s] = s;
      params[s] = {.temperature = s % 2 ? 0.7f : 0.0f, .seed = s};
      const std::vector<int32_t> prompt(f_.prompt.begin() + s, f_.prompt.begin() + 5 + 9 * s);
      next[s] = e.feed_and_sample(s, prompt, params[s]);
    }
    std::vector<float> out;
    for (int step = 0; step < 5; ++step) {
      next = e.decode(slots, next, params);
      out.insert(out.end(), next.begin(), next.end());
    }
    // A mixed step leads the groups: the piece and 2 decode rows, then groups of 2, 2 and 1.
    const std::vector<int32_t> piece(f_.prompt.begin(), f_.prompt.begin() + 11);
    int32_t piece_token = -1;
    next = e.decode_with_piece(slots, next, params, {.slot = 7, .ids = piece, .params = &params[1]}, piece_token);
    out.insert(out.end(), next.begin(), next.end());
    out.push_back(float(piece_token));
    next = e.decode(slots, next, params);
    out.insert(out.end(), next.begin(), next.end());
    return out;
  };
  graph::Engine whole_engine(runtime(), config_, weights(runtime(), {}, 0), o);
  const std::vector<float> want = tokens(whole_engine);
  for (const auto& ends : {std::vector<uint32_t>{layers / 2, layers}, std::vector<uint32_t>{1, layers - 1, layers}}) {
    std::vector<graph::EngineDevice> devices;
    const auto spans = spans_ending_at(ends);
    for (size_t d = 0; d < spans.size(); ++d) {
      Runtime& rt = d % 2 ? second_runtime() : runtime();
      devices.push_back({&rt, weights(rt, spans[d], 0), spans[d]});
    }
    graph::Engine split_engine(std::move(devices), config_, o);
    SCOPED_TRACE(std::to_string(spans.size()) + " devices");
    expect_bitwise_equal(tokens(split_engine), want);
  }
}

TEST_P(SplitTest, SyntheticWeightsAreTheUnsplitOnes) {
  const uint32_t layers = uint32_t(config_.num_hidden_layers);
  expect_bitwise_equal(outputs(*split(spans_ending_at({layers / 2, layers}), 9), f_), outputs(*whole(9), f_));
}

TEST_P(SplitTest, EachDeviceHoldsOnlyItsShare) {
  const uint32_t layers = uint32_t(config_.num_hidden_layers);
  auto e = split(spans_ending_at({layers / 2, layers}));
  ASSERT_EQ(e->device_count(), 2u);
  const graph::WeightParts parts = graph::DeviceWeights::planned_parts(config_, checkpoint_.get(), {});
  EXPECT_EQ(e->weights(0).bytes(), parts.on_device(config_, e->layers(0)));
  EXPECT_EQ(e->weights(1).bytes(), parts.on_device(config_, e->layers(1)));
  EXPECT_EQ(e->weights(0).bytes() + e->weights(1).bytes(),
            parts.total() + parts.rope + (parts.tied ? parts.embed : 0));  // RoPE on both; a tied table on both
  EXPECT_EQ(e->state_bytes(), whole()->state_bytes());
}

INSTANTIATE_TEST_SUITE_P(Fixtures, SplitTest, ::testing::Values("f32_untied", "bf16_tied"));

}  // namespace
}  // namespace q3n::test
