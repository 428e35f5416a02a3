// shaders/linear_gemv.comp and linear_gemm.comp: y = x W^T against a double reference, for every
// weight type (quantised ones included: the reference uses the decoded weights the GPU reads, so
// the tolerance is that of the fp32 sum), token counts on both sides of the GEMV/GEMM switch, and
// odd k / n.
#include <cmath>

#include "runtime/ops/linear.h"
#include "tests/support/gpu_test.h"
#include "tests/support/numeric.h"

namespace q3n::test {
namespace {

struct Case {
  uint32_t tokens, k, n;
  ops::WeightType type;
};

class LinearTest : public GpuTest, public ::testing::WithParamInterface<Case> {};

TEST_P(LinearTest, MatchesReference) {
  const auto [tokens, k, n, type] = GetParam();
  auto x = random_floats(size_t(tokens) * k, 31, -1, 1);
  auto w = random_floats(size_t(n) * k, 32, -0.5f, 0.5f);
  const auto words = encode_weights(w, type);  // w now holds exactly what the GPU reads
  Allocation dx = upload(x), dw = upload_words(words), dy = poisoned(size_t(tokens) * n);
  run([&](CommandBuffer& cb) { ops::record_linear(pipelines(), cb, {dx.range(), dw.range(), dy.range(), type, tokens, k, n}); });
  const auto got = download(dy, size_t(tokens) * n);

  // fp32 summation of k products: |error| <= (k-1) u sum|x w| with u = 2^-24 (recursive
  // summation; the GPU's tree order is no worse). Allow twice that plus a denormal floor.
  size_t bad = 0;
  for (uint32_t t = 0; t < tokens; ++t)
    for (uint32_t j = 0; j < n; ++j) {
      double ref = 0, abs_sum = 0;
      for (uint32_t i = 0; i < k; ++i) {
        const double p = double(x[size_t(t) * k + i]) * w[size_t(j) * k + i];
        ref += p;
        abs_sum += std::fabs(p);
      }
      const double tol = 2.0 * k * std::ldexp(1.0, -24) * abs_sum + 1e-30;
      const double err = std::fabs(got[size_t(t) * n + j] - ref);
      if (!(err <= tol) && bad++ < 3)
        ADD_FAILURE() << "y[" << t << "," << j << "] = " << got[size_t(t) * n + j] << ", expected " << ref
                      << " (tolerance " << tol << ")";
    }
  EXPECT_EQ(bad, 0u);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, LinearTest,
    ::testing::Values(Case{1, 2048, 67, ops::WeightType::BF16}, Case{1, 131, 300, ops::WeightType::F16},
                      Case{3, 257, 130, ops::WeightType::F32}, Case{8, 64, 63, ops::WeightType::BF16},
                      Case{9, 130, 65, ops::WeightType::BF16}, Case{63, 257, 129, ops::WeightType::F16},
                      Case{65, 100, 200, ops::WeightType::F32}, Case{130, 2048, 96, ops::WeightType::BF16},
                      Case{1, 16, 70000, ops::WeightType::BF16},  // n over 65535 uses the 2-D grid
                      // Quantised rows (k a multiple of 32): the GEMV's block path, the GEMM's tiles.
                      Case{1, 2048, 67, ops::WeightType::Q8}, Case{5, 96, 131, ops::WeightType::Q8},
                      Case{1, 2048, 67, ops::WeightType::Q4}, Case{8, 4128, 33, ops::WeightType::Q4},
                      Case{70, 160, 129, ops::WeightType::Q8}, Case{130, 544, 70, ops::WeightType::Q4},
                      // Quantised GEMV up to 32 tokens, GEMM from 33.
                      Case{32, 96, 67, ops::WeightType::Q4}, Case{33, 64, 40, ops::WeightType::Q8},
                      Case{20, 128, 35, ops::WeightType::Q8}),
    [](const auto& info) {
      const Case& c = info.param;
      return std::to_string(c.tokens) + "x" + std::to_string(c.k) + "x" + std::to_string(c.n) + "_" + ops::weight_type_name(c.type);
    });

}  // namespace
}  // namespace q3n::test
