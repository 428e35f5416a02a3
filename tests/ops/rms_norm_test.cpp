// shaders/rms_norm.comp against a double-precision CPU reference (spec §3.2).
#include <cmath>

#include "runtime/ops/rms_norm.h"
#include "tests/support/gpu_test.h"

namespace q3n::test {
namespace {

// Reference: h = x (+ residual); out = h / sqrt(mean(h^2) + eps) * (offset + w), in double.
std::vector<double> reference(const std::vector<float>& x, const std::vector<float>* residual,
                              const std::vector<float>& w, uint32_t rows, uint32_t n, double eps, double offset,
                              std::vector<double>* sum_out) {
  std::vector<double> out(x.size());
  if (sum_out) sum_out->resize(x.size());
  for (uint32_t r = 0; r < rows; ++r) {
    double ss = 0;
    for (uint32_t i = 0; i < n; ++i) {
      double h = x[r * n + i] + (residual ? (*residual)[r * n + i] : 0.0);
      ss += h * h;
    }
    const double scale = 1.0 / std::sqrt(ss / n + eps);
    for (uint32_t i = 0; i < n; ++i) {
      double h = x[r * n + i] + (residual ? (*residual)[r * n + i] : 0.0);
      if (sum_out) (*sum_out)[r * n + i] = h;
      out[r * n + i] = h * scale * (offset + w[i]);
    }
  }
  return out;
}

struct Shape {
  uint32_t rows, n;
};

class RmsNormTest : public GpuTest, public ::testing::WithParamInterface<Shape> {
 protected:
  // Normalises random rows with a (1 + w) or plain w scale and compares with the reference.
  void check_plain(bool zero_centred, uint32_t seed, float lo, float hi);
};

// fp32 arithmetic with a sum of n squares: relative error grows ~ n * 2^-24; 1e-5 relative plus a
// small absolute floor for values near zero is ~100x that bound at n = 4099.
constexpr double kAtol = 1e-6, kRtol = 2e-5;

void RmsNormTest::check_plain(bool zero_centred, uint32_t seed, float lo, float hi) {
  const auto [rows, n] = GetParam();
  auto x = random_floats(size_t(rows) * n, seed, lo, hi);
  auto w = zero_centred ? random_floats(n, seed + 1, -0.5f, 0.5f) : random_floats(n, seed + 1, 0.5f, 1.5f);
  Allocation dx = upload(x), dw = upload(w), dout = poisoned(x.size());
  run([&](CommandBuffer& cb) {
    ops::record_rms_norm(pipelines(), cb,
                         {.x = dx.range(),
                          .weight = dw.range(),
                          .out = dout.range(),
                          .rows = rows,
                          .n = n,
                          .eps = 1e-6f,
                          .zero_centred = zero_centred});
  });
  const auto expected = reference(x, nullptr, w, rows, n, 1e-6, zero_centred ? 1.0 : 0.0, nullptr);
  EXPECT_TRUE(all_close(download(dout, x.size()), expected, kAtol, kRtol));
}

TEST_P(RmsNormTest, ZeroCentredMatchesReference) { check_plain(true, 1, -3, 3); }

TEST_P(RmsNormTest, PlainWeightMatchesReference) { check_plain(false, 3, -2, 2); }

TEST_P(RmsNormTest, FusedResidualAddUpdatesStreamAndNormalisesSum) {
  const auto [rows, n] = GetParam();
  auto x = random_floats(size_t(rows) * n, 5, -1, 1);
  auto res = random_floats(x.size(), 6, -4, 4);
  auto w = random_floats(n, 7, -0.5f, 0.5f);
  Allocation dx = upload(x), dres = upload(res), dw = upload(w), dout = poisoned(x.size());
  run([&](CommandBuffer& cb) {
    ops::record_rms_norm(pipelines(), cb,
                         {.x = dx.range(),
                          .weight = dw.range(),
                          .out = dout.range(),
                          .residual = dres.range(),
                          .rows = rows,
                          .n = n,
                          .eps = 1e-6f,
                          .zero_centred = true});
  });
  std::vector<double> sum;
  auto expected = reference(x, &res, w, rows, n, 1e-6, 1.0, &sum);
  EXPECT_TRUE(all_close(download(dout, x.size()), expected, kAtol, kRtol));
  EXPECT_TRUE(all_close(download(dres, x.size()), sum, 1e-6, 1e-6));  // one fp32 add
}

TEST_P(RmsNormTest, GatedPlainWeightMatchesReference) {
  const auto [rows, n] = GetParam();
  auto x = random_floats(size_t(rows) * n, 8, -2, 2);
  auto z = random_floats(x.size(), 9, -4, 4);
  auto w = random_floats(n, 10, 0.5f, 1.5f);
  Allocation dx = upload(x), dz = upload(z), dw = upload(w), dout = poisoned(x.size());
  run([&](CommandBuffer& cb) {
    ops::record_rms_norm(pipelines(), cb,
                         {.x = dx.range(),
                          .weight = dw.range(),
                          .out = dout.range(),
                          .rows = rows,
                          .n = n,
                          .eps = 1e-6f,
                          .zero_centred = false,
                          .gate = dz.range()});
  });
  auto expected = reference(x, nullptr, w, rows, n, 1e-6, 0.0, nullptr);
  for (size_t i = 0; i < expected.size(); ++i) expected[i] *= z[i] / (1.0 + std::exp(-double(z[i])));
  EXPECT_TRUE(all_close(download(dout, x.size()), expected, kAtol, kRtol));  // one more fp32 exp and divide
}

// Sizes that are not multiples of the workgroup (256) or any subgroup size, one row up to many.
INSTANTIATE_TEST_SUITE_P(Shapes, RmsNormTest,
                         ::testing::Values(Shape{1, 1}, Shape{1, 7}, Shape{3, 130}, Shape{5, 257}, Shape{17, 2048},
                                           Shape{2, 4099}),
                         [](const auto& info) {
                           return std::to_string(info.param.rows) + "x" + std::to_string(info.param.n);
                         });

}  // namespace
}  // namespace q3n::test
