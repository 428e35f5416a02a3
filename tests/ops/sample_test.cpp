// shaders/sample.comp: argmax exactly; filtered sampling draws only from the set HF's warpers
// (temperature, top-k, top-p, min-p, in that order) keep, with frequencies that match the
// renormalised probabilities; the same seed and counter repeat a draw.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <set>

#include "runtime/ops/sample.h"
#include "tests/support/gpu_test.h"

namespace q3n::test {
namespace {

class SampleTest : public GpuTest {
 protected:
  // Samples every row of `logits` ([rows, vocab]) with per-row counters 0..rows-1.
  // `texels`: the logits keep their block's texel views (false: the buffer-address kernel).
  std::vector<uint32_t> sample(const std::vector<float>& logits, uint32_t rows, uint32_t vocab,
                               const ops::SamplingParams& params, uint32_t counter0 = 0, bool texels = true) {
    std::vector<uint32_t> records;
    for (uint32_t r = 0; r < rows; ++r) {
      const auto rec = ops::sampling_record(params, counter0 + r);
      records.insert(records.end(), rec.begin(), rec.end());
    }
    Allocation dl = upload(logits), dp = upload_words(records), dids = poisoned(rows);
    BufferRange logit_range = dl.range();
    if (!texels) logit_range.texels = nullptr;
    run([&](CommandBuffer& cb) {
      ops::record_sample(
          pipelines(), cb,
          {.logits = logit_range, .params = dp.range(), .ids = dids.range(), .batch = rows, .vocab = vocab});
    });
    return download_words(dids, rows);
  }
  void expect_frequencies_match(const std::vector<float>& one, uint32_t rows,
                                std::initializer_list<ops::SamplingParams> params);
};

// HF's warpers in double: the kept ids' renormalised probabilities (zero elsewhere).
std::vector<double> kept_distribution(const float* logits, uint32_t vocab, const ops::SamplingParams& s) {
  std::vector<double> z(vocab);
  for (uint32_t i = 0; i < vocab; ++i) z[i] = logits[i] / double(s.temperature);
  std::vector<uint32_t> order(vocab);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) { return z[a] > z[b]; });
  std::vector<bool> keep(vocab, true);
  if (s.top_k > 0)
    for (uint32_t r = s.top_k; r < vocab; ++r) keep[order[r]] = false;
  const double zmax = z[order[0]];
  if (s.top_p < 1.0f) {
    double total = 0, running = 0;
    for (uint32_t i = 0; i < vocab; ++i) total += keep[i] ? std::exp(z[i] - zmax) : 0;
    bool reached = false;
    for (uint32_t r = 0; r < vocab; ++r) {
      const uint32_t id = order[r];
      if (!keep[id]) continue;
      if (reached) keep[id] = false;
      running += std::exp(z[id] - zmax);
      if (running >= s.top_p * total) reached = true;
    }
  }
  if (s.min_p > 0)
    for (uint32_t i = 0; i < vocab; ++i) keep[i] = keep[i] && std::exp(z[i] - zmax) >= s.min_p;
  std::vector<double> prob(vocab, 0.0);
  double total = 0;
  for (uint32_t i = 0; i < vocab; ++i) total += (prob[i] = keep[i] ? std::exp(z[i] - zmax) : 0);
  for (auto& v : prob) v /= total;
  return prob;
}

TEST_F(SampleTest, GreedyIsArgmaxWithLowestIdOnTies) {
  const uint32_t rows = 3, vocab = 151936;  // the real vocabulary: slices of 594 per invocation
  auto logits = random_floats(size_t(rows) * vocab, 71, -10, 10);
  logits[0 * vocab + 70001] = 30;
  logits[1 * vocab + 5] = 30;
  logits[1 * vocab + 150000] = 30;  // tie: the lower id wins
  logits[2 * vocab + vocab - 1] = 30;
  EXPECT_EQ(sample(logits, rows, vocab, {}), (std::vector<uint32_t>{70001, 5, vocab - 1}));
  ops::SamplingParams top1{1.0f, 1};
  EXPECT_EQ(sample(logits, rows, vocab, top1), (std::vector<uint32_t>{70001, 5, vocab - 1})) << "top_k 1";
}

// One NaN anywhere in a row gives the id 0xFFFFFFFF (the host's NaN report), for greedy and
// filtered sampling alike; rows without one are unaffected.
TEST_F(SampleTest, ARowWithANanLogitGetsAnIdOutsideTheVocabulary) {
  const uint32_t rows = 3, vocab = 1001;
  auto logits = random_floats(size_t(rows) * vocab, 72, -5, 5);
  logits[0 * vocab + 999] = std::nanf("");
  logits[2 * vocab + 3] = std::nanf("");
  logits[1 * vocab + 17] = 20;
  const uint32_t none = 0xFFFFFFFFu;
  EXPECT_EQ(sample(logits, rows, vocab, {}), (std::vector<uint32_t>{none, 17, none})) << "greedy";
  const ops::SamplingParams filtered{0.7f, 40, 0.9f};
  EXPECT_EQ(sample(logits, rows, vocab, filtered), (std::vector<uint32_t>{none, 17, none})) << "filtered";
}

// Draws `rows` times from the row `one` with each of `params` and compares the frequencies with the
// filtered distribution.
void SampleTest::expect_frequencies_match(const std::vector<float>& one, uint32_t rows,
                                          std::initializer_list<ops::SamplingParams> params) {
  const uint32_t vocab = uint32_t(one.size());
  std::vector<float> logits;
  for (uint32_t r = 0; r < rows; ++r) logits.insert(logits.end(), one.begin(), one.end());
  for (const ops::SamplingParams p : params) {
    const auto want = kept_distribution(one.data(), vocab, p);
    const auto ids = sample(logits, rows, vocab, p);
    std::vector<double> freq(vocab, 0.0);
    for (uint32_t id : ids) {
      ASSERT_LT(id, vocab);
      EXPECT_GT(want[id], 0.0) << "drew id " << id << ", which the filters remove (top_k " << p.top_k << ")";
      freq[id] += 1.0 / rows;
    }
    // Binomial standard error sqrt(p (1 - p) / n); 5 sigma plus a floor keeps false alarms
    // negligible over thousands of checks while a wrong filter or a grossly biased draw fails.
    for (uint32_t i = 0; i < vocab; ++i)
      EXPECT_NEAR(freq[i], want[i], 5 * std::sqrt(want[i] * (1 - want[i]) / rows) + 2e-3)
          << "id " << i << " temperature " << p.temperature << " top_k " << p.top_k;
  }
}

TEST_F(SampleTest, FilteredFrequenciesMatchKeptDistribution) {
  expect_frequencies_match(
      random_floats(61, 72, -3, 3), 6000,
      {ops::SamplingParams{0.8f, 20, 0.9f, 0.05f, 1234}, ops::SamplingParams{1.3f, 0, 0.7f, 0.0f, 99},
       ops::SamplingParams{1.0f, 7, 1.0f, 0.0f, 5}, ops::SamplingParams{0.7f, 0, 1.0f, 0.1f, 7}});
}

// A vocabulary larger than the kernel's shared candidate list (1024): top-k's bisection starts on
// the whole row and moves to the candidates part-way (top-k 20 and top-p 0.8, Qwen3-Next's
// defaults; top-k 50 alone); top-p alone, and a top-k past the list's size, stay on the whole row.
// The logits are peaked so that each filter keeps a few tokens worth counting.
TEST_F(SampleTest, FilteredFrequenciesMatchKeptDistributionOnALargeVocabulary) {
  const uint32_t vocab = 3001;
  auto one = random_floats(vocab, 75, -6, 2);
  for (uint32_t i = 0; i < 40; ++i) one[(i * 677 + 13) % vocab] = 2.0f + 0.1f * float(i % 17);
  expect_frequencies_match(
      one, 4000,
      {ops::SamplingParams{0.7f, 20, 0.8f, 0.0f, 31}, ops::SamplingParams{1.0f, 50, 1.0f, 0.0f, 32},
       ops::SamplingParams{0.9f, 0, 0.6f, 0.0f, 33}, ops::SamplingParams{1.0f, 1500, 0.5f, 0.0f, 34}});
}

TEST_F(SampleTest, SameSeedAndCounterRepeatDraws) {
  const uint32_t vocab = 1000, rows = 64;
  const auto one = random_floats(vocab, 73, -2, 2);
  std::vector<float> logits;
  for (uint32_t r = 0; r < rows; ++r) logits.insert(logits.end(), one.begin(), one.end());
  const ops::SamplingParams params{1.0f, 0, 1.0f, 0.0f, 42};
  const auto a = sample(logits, rows, vocab, params), b = sample(logits, rows, vocab, params);
  EXPECT_EQ(a, b);
  ops::SamplingParams other = params;
  other.seed = 43;
  EXPECT_NE(a, sample(logits, rows, vocab, other)) << "another seed draws another sequence";
  EXPECT_GT(std::set<uint32_t>(a.begin(), a.end()).size(), 10u) << "counters decorrelate draws";
}

// The CPU shapes' texel-read variant draws the ids of the buffer-address kernel: greedy and
// filtered, 2000 logits (not a multiple of the workgroup) in 40 rows.
TEST_F(SampleTest, TexelReadsDrawTheIdsOfAddressReads) {
  if (!rt().device.texel_reads())
    GTEST_SKIP() << "texel reads are off (no push descriptors, GPU shapes, or Q3N_TEXEL_READS=0)";
  const CpuShapesForThisScope cpu_shapes(pipelines());
  const uint32_t vocab = 2000, rows = 40;
  const auto logits = random_floats(size_t(vocab) * rows, 74, -4, 4);
  for (const ops::SamplingParams params :
       {ops::SamplingParams{0.0f, 0, 1.0f, 0.0f, 1}, ops::SamplingParams{0.8f, 20, 0.9f, 0.05f, 1234}}) {
    const auto texel = sample(logits, rows, vocab, params, 0, true),
               address = sample(logits, rows, vocab, params, 0, false);
    EXPECT_EQ(texel, address) << "temperature " << params.temperature;
  }
  EXPECT_TRUE(pipelines().built("sample_texel"));
}

}  // namespace
}  // namespace q3n::test
