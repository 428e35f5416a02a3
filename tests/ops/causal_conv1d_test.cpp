// shaders/causal_conv1d.comp against a double reference of spec §3.3 / §5: outputs and the
// updated conv state, from a non-zero state, for one token (decode) and many (prefill).
#include <cmath>

#include "runtime/ops/causal_conv1d.h"
#include "tests/support/gpu_test.h"
#include "tests/support/numeric.h"

namespace q3n::test {
namespace {

struct Case {
  uint32_t batch, tokens, channels, kernel;
  ops::WeightType type;
};

class CausalConv1dTest : public GpuTest, public ::testing::WithParamInterface<Case> {};
class CausalConv1dKeepCommitTest : public GpuTest {};

TEST_P(CausalConv1dTest, MatchesReferenceAndUpdatesState) {
  const auto [batch, tokens, channels, kernel, type] = GetParam();
  const uint32_t history = kernel - 1;
  auto x = random_floats(size_t(batch) * tokens * channels, 51, -2, 2);
  auto w = random_floats(size_t(channels) * kernel, 52, -1, 1);
  const auto words = encode_weights(w, type);
  // batch + 1 state slots; sequence b uses slot batch - b, so slot 0 must stay untouched.
  const uint32_t slots = batch + 1;
  auto state = random_floats(std::max<size_t>(1, size_t(slots) * history * channels), 53, -2, 2);
  std::vector<uint32_t> seqs;
  for (uint32_t b = 0; b < batch; ++b) seqs.insert(seqs.end(), {batch - b, 7});
  Allocation dx = upload(x), dw = upload_words(words), dstate = upload(state), dseqs = upload_words(seqs),
             dy = poisoned(size_t(batch) * tokens * channels);
  run([&](CommandBuffer& cb) {
    ops::record_causal_conv1d(pipelines(), cb,
                              {.x = dx.range(),
                               .weight = dw.range(),
                               .state = dstate.range(),
                               .seqs = dseqs.range(),
                               .y = dy.range(),
                               .type = type,
                               .batch = batch,
                               .tokens = tokens,
                               .channels = channels,
                               .kernel = kernel});
  });

  std::vector<double> y(x.size()), new_state(state.begin(), state.end());
  for (uint32_t b = 0; b < batch; ++b)
    for (uint32_t c = 0; c < channels; ++c) {
      // The full input sequence of this channel: state rows, then the tokens.
      std::vector<double> seq;
      const size_t slot = batch - b;
      for (uint32_t j = 0; j < history; ++j) seq.push_back(state[(slot * history + j) * channels + c]);
      for (uint32_t t = 0; t < tokens; ++t) seq.push_back(x[(size_t(b) * tokens + t) * channels + c]);
      for (uint32_t t = 0; t < tokens; ++t) {
        double acc = 0;
        for (uint32_t j = 0; j < kernel; ++j) acc += double(w[size_t(c) * kernel + j]) * seq[t + j];
        y[(size_t(b) * tokens + t) * channels + c] = acc / (1.0 + std::exp(-acc));
      }
      for (uint32_t j = 0; j < history; ++j)
        new_state[(slot * history + j) * channels + c] = seq[seq.size() - history + j];
    }
  // K products summed in fp32 (|terms| <= 2) then SiLU with fp32 exp: a few ulps of values <= ~16.
  EXPECT_TRUE(all_close(download(dy, y.size()), y, 2e-6, 2e-6)) << "outputs";
  if (history > 0) {
    EXPECT_TRUE(all_close(download(dstate, new_state.size()), new_state, 0, 0))
        << "state (exact copy; the unused slot unchanged)";
  }
}

// Speculative verification: Keep gives the plain outputs and leaves the state; Commit writes no
// output and the state after each sequence's accepted prefix (exact copies of inputs).
TEST_F(CausalConv1dKeepCommitTest, CommitTakesTheAcceptedPrefix) {
  const uint32_t batch = 3, tokens = 4, channels = 70, kernel = 4, history = kernel - 1, slots = batch + 1;
  const auto x = random_floats(size_t(batch) * tokens * channels, 54, -2, 2);
  auto w = random_floats(size_t(channels) * kernel, 55, -1, 1);
  const auto words = encode_weights(w, ops::WeightType::BF16);
  const auto state = random_floats(size_t(slots) * history * channels, 56, -2, 2);
  const std::vector<uint32_t> counts = {1, 4, 2};  // fewer and more tokens than the history (3)
  std::vector<uint32_t> seqs;
  for (uint32_t b = 0; b < batch; ++b) seqs.insert(seqs.end(), {batch - b, 3});
  const auto run_conv = [&](std::vector<ops::StateUpdate> updates) {
    Allocation dx = upload(x), dw = upload_words(words), dstate = upload(state), dseqs = upload_words(seqs),
               dcounts = upload_words(counts), dy = poisoned(x.size());
    run([&](CommandBuffer& cb) {
      for (size_t i = 0; i < updates.size(); ++i) {
        if (i) cb.barrier();
        ops::record_causal_conv1d(pipelines(), cb,
                                  {.x = dx.range(),
                                   .weight = dw.range(),
                                   .state = dstate.range(),
                                   .seqs = dseqs.range(),
                                   .y = dy.range(),
                                   .batch = batch,
                                   .tokens = tokens,
                                   .channels = channels,
                                   .kernel = kernel,
                                   .update = updates[i],
                                   .accepted = dcounts.range()});
      }
    });
    return std::pair{download_words(dy, x.size()), download(dstate, state.size())};
  };
  const auto plain = run_conv({ops::StateUpdate::Write});
  const auto keep = run_conv({ops::StateUpdate::Keep});
  EXPECT_EQ(keep.first, plain.first) << "Keep's outputs are a plain step's";
  EXPECT_EQ(keep.second, state) << "Keep leaves the state";
  const auto commit = run_conv({ops::StateUpdate::Commit});
  EXPECT_EQ(commit.first, std::vector<uint32_t>(x.size(), kPoison)) << "Commit writes no output";
  std::vector<float> want = state;
  for (uint32_t b = 0; b < batch; ++b) {
    const size_t slot = batch - b;
    for (uint32_t c = 0; c < channels; ++c) {
      std::vector<float> seq;
      for (uint32_t j = 0; j < history; ++j) seq.push_back(state[(slot * history + j) * channels + c]);
      for (uint32_t t = 0; t < counts[b]; ++t) seq.push_back(x[(size_t(b) * tokens + t) * channels + c]);
      for (uint32_t j = 0; j < history; ++j) want[(slot * history + j) * channels + c] = seq[seq.size() - history + j];
    }
  }
  EXPECT_EQ(commit.second, want) << "the state after the accepted prefix; slot 0 untouched";
}

// A verify step commits every DeltaNet layer's conv state in one dispatch, each layer's pre-conv
// rows and state found through an address table: each layer's state must be what its own commit
// writes, bit for bit (the commit copies inputs), and the layers must not touch each other's.
TEST_F(CausalConv1dKeepCommitTest, CommitsOfSeveralLayersInOneDispatchAreEachLayersCommit) {
  const uint32_t layers = 3, batch = 3, tokens = 3, channels = 300, kernel = 4, history = kernel - 1, slots = 4;
  const std::vector<uint32_t> counts = {2, 1, 3}, seqs = {2, 5, 0, 9, 3, 1};  // slot 1 is no sequence's
  auto w = random_floats(size_t(channels) * kernel, 60, -1, 1);
  const auto words = encode_weights(w, ops::WeightType::BF16);
  Allocation dw = upload_words(words), dseqs = upload_words(seqs), dcounts = upload_words(counts);
  std::vector<std::vector<float>> xs, states;
  for (uint32_t l = 0; l < layers; ++l) {
    xs.push_back(random_floats(size_t(batch) * tokens * channels, 61 + 2 * l, -2, 2));
    states.push_back(random_floats(size_t(slots) * history * channels, 62 + 2 * l, -2, 2));
  }
  const ops::CausalConv1dArgs shape{
      .batch = batch, .tokens = tokens, .channels = channels, .kernel = kernel, .update = ops::StateUpdate::Commit};
  // One layer at a time, as a commit node per layer recorded it.
  std::vector<std::vector<float>> want;
  for (uint32_t l = 0; l < layers; ++l) {
    Allocation dx = upload(xs[l]), dstate = upload(states[l]), dy = poisoned(xs[l].size());
    run([&](CommandBuffer& cb) {
      ops::CausalConv1dArgs a = shape;
      a.x = dx.range(), a.weight = dw.range(), a.state = dstate.range(), a.seqs = dseqs.range(), a.y = dy.range();
      a.accepted = dcounts.range();
      ops::record_causal_conv1d(pipelines(), cb, a);
    });
    want.push_back(download(dstate, states[l].size()));
    ASSERT_NE(want.back(), states[l]) << "the commit changed the state";
  }
  std::vector<Allocation> dxs, dstates;
  std::vector<ops::ConvCommitLayer> tensors;
  for (uint32_t l = 0; l < layers; ++l) {
    dxs.push_back(upload(xs[l]));
    dstates.push_back(upload(states[l]));
    tensors.push_back({dxs.back().range(), dstates.back().range()});
  }
  Allocation table = rt().allocator.allocate(layers * 16, MemoryKind::Upload, "conv commit table");
  run([&](CommandBuffer& cb) {
    ops::CausalConv1dArgs a = shape;
    a.seqs = dseqs.range(), a.accepted = dcounts.range();
    ops::record_causal_conv1d_commits(pipelines(), cb, a, tensors, {table.range(), table.mapped()});
  });
  for (uint32_t l = 0; l < layers; ++l) {
    EXPECT_EQ(download(dstates[l], states[l].size()), want[l]) << "layer " << l;
    EXPECT_EQ(download(dxs[l], xs[l].size()), xs[l]) << "layer " << l << "'s rows are read only";
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, CausalConv1dTest,
                         ::testing::Values(Case{1, 1, 67, 4, ops::WeightType::BF16},    // decode step
                                           Case{2, 1, 200, 4, ops::WeightType::F32},    // batched decode
                                           Case{3, 1, 600, 4, ops::WeightType::BF16},   // 3 groups of 256 channels
                                           Case{1, 2, 130, 4, ops::WeightType::F16},    // fewer tokens than K-1
                                           Case{2, 130, 65, 4, ops::WeightType::BF16},  // prefill chunk
                                           Case{1, 9, 33, 2, ops::WeightType::F32},     // other kernel size
                                           Case{1, 37, 45, 3, ops::WeightType::F16},    // token lanes of 5 (one of 2)
                                           Case{1, 5, 31, 8, ops::WeightType::BF16}),   // largest kernel
                         [](const auto& info) {
                           const Case& c = info.param;
                           return "b" + std::to_string(c.batch) + "t" + std::to_string(c.tokens) + "c" +
                                  std::to_string(c.channels) + "k" + std::to_string(c.kernel);
                         });

}  // namespace
}  // namespace q3n::test
