// shaders/linear_gemv.comp and linear_gemm.comp: y = x W^T against a double reference, for every
// weight type (quantised ones included: the reference uses the decoded weights the GPU reads, so
// the tolerance is that of the fp32 sum), token counts on both sides of the GEMV/GEMM switch, and
// odd k / n; every case with 16-bit or quantised weights again on the cooperative-matrix kernel
// where the device has one (at every token count, as steps past gemv_max_tokens take it).
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "runtime/ops/causal_conv1d.h"
#include "runtime/ops/linear.h"
#include "tests/support/gpu_test.h"
#include "tests/support/numeric.h"

namespace q3n::test {
namespace {

struct Case {
  uint32_t tokens, k, n;
  ops::WeightType type;
};

// Parts a K-split product of n features and k inputs has.
uint32_t k_parts(uint32_t n, uint32_t k) { return (k + ops::linear_k_part(n, k) - 1) / ops::linear_k_part(n, k); }

class LinearTest : public GpuTest, public ::testing::WithParamInterface<Case> {
 protected:
  // Runs the case on the selected path and checks every output against a double reference.
  // `matrix_units`: the tolerance of linear_gemm_coopmat.comp (coopmat.glsl) taking activations as
  // the pipelines are set to, else of fp32 sums; with it, every token count takes the matrix units.
  // `k_split`: with scratch for a K-split product (ops::linear_split_bytes), poisoned too.
  void check(bool matrix_units, bool k_split = false) {
    const bool split = pipelines().matrix_activations() == MatrixActivations::Split;
    const auto [tokens, k, n, type] = GetParam();
    auto x = random_floats(size_t(tokens) * k, 31, -1, 1);
    auto w = random_floats(size_t(n) * k, 32, -0.5f, 0.5f);
    const auto words = encode_weights(w, type);  // w now holds exactly what the GPU reads
    Allocation dx = upload(x), dw = upload_words(words), dy = poisoned(size_t(tokens) * n);
    const uint64_t split_bytes = k_split ? ops::linear_split_bytes(tokens, n, k) : 0;
    Allocation parts = poisoned(std::max<uint64_t>(split_bytes / 4, 1));
    run([&](CommandBuffer& cb) {
      ops::record_linear(pipelines(), cb,
                         {.x = dx.range(),
                          .weight = dw.range(),
                          .y = dy.range(),
                          .type = type,
                          .tokens = tokens,
                          .k = k,
                          .n = n,
                          .gemv_max_tokens = matrix_units ? 0u : ops::kGemvMaxTokens,
                          .k_split = split_bytes ? parts.range() : BufferRange{}});
    });
    const auto got = download(dy, size_t(tokens) * n);

    // fp32 summation of k products: |error| <= (k-1) u sum|x w| with u = 2^-24 (recursive
    // summation; the GPU's tree order is no worse). Allow twice that plus a denormal floor; the
    // matrix units (whose accumulation may truncate rather than round) four times.
    // Matrix units also round each weight to fp16: exact for 16-bit weights, within 2^-11
    // relative for decoded Q8/Q4 values, and below 2^-14 fp16 may be flushed (absolute 2^-14);
    // x enters as hi + lo fp16 halves: within 2^-21 |x| + 2^-25; or rounded to fp16: within
    // 2^-11 |x| (round to nearest), and below 2^-14 it may be flushed (absolute 2^-14).
    const double u_weight = is_quantized(type) ? std::ldexp(1.0, -11) : 0.0;
    const double u_x = split ? std::ldexp(1.0, -21) : std::ldexp(1.0, -11),
                 floor_x = std::ldexp(1.0, split ? -25 : -14);
    size_t bad = 0;
    for (uint32_t t = 0; t < tokens; ++t)
      for (uint32_t j = 0; j < n; ++j) {
        double ref = 0, abs_sum = 0, rounding = 0;
        for (uint32_t i = 0; i < k; ++i) {
          const double xv = x[size_t(t) * k + i], wv = w[size_t(j) * k + i];
          ref += xv * wv;
          abs_sum += std::fabs(xv * wv);
          const double weight_error =
              u_weight * std::fabs(wv) + (std::fabs(wv) < std::ldexp(1.0, -14) ? std::ldexp(1.0, -14) : 0.0);
          rounding += std::fabs(xv) * weight_error + std::fabs(wv) * (u_x * std::fabs(xv) + floor_x);
        }
        const double tol = matrix_units ? 4.0 * k * std::ldexp(1.0, -24) * abs_sum + rounding + 1e-30
                                        : 2.0 * k * std::ldexp(1.0, -24) * abs_sum + 1e-30;
        const double err = std::fabs(got[size_t(t) * n + j] - ref);
        if (!(err <= tol) && bad++ < 3)
          ADD_FAILURE() << "y[" << t << "," << j << "] = " << got[size_t(t) * n + j] << ", expected " << ref
                        << " (tolerance " << tol << ")";
      }
    EXPECT_EQ(bad, 0u);
  }
};

TEST_P(LinearTest, MatchesReference) {
  use_coopmat(false);
  check(false);
}

// The cooperative-matrix GEMM, on devices that have it, for the cases with 16-bit or quantised
// weights, with activations rounded to fp16 and split into two halves; where the case is
// decode-sized and its K long enough, also split along K (ops::linear_k_part; the same bound:
// the parts are fp32 sums of the same products, added in fp32).
TEST_P(LinearTest, CoopmatMatchesReference) {
  const Case c = GetParam();
  if (c.type == ops::WeightType::F32) GTEST_SKIP() << "fp32 weights take no matrix units";
  std::string why;
  if (!use_coopmat(true, &why)) GTEST_SKIP() << why;
  for (MatrixActivations a : {MatrixActivations::Fp16, MatrixActivations::Split}) {
    SCOPED_TRACE(matrix_activations_name(a));
    use_matrix_activations(a);
    check(true);
    if (ops::linear_split_bytes(c.tokens, c.n, c.k)) {
      SCOPED_TRACE("K split in " + std::to_string(k_parts(c.n, c.k)) + " parts");
      check(true, true);
    }
  }
}

// Two properties of the matrix-unit path that random data would blur, with exact answers:
// activations keep the bits below fp16's precision with the split (1 + 2^-15, via the lo half)
// and lose them, rounded to nearest, without it (1); and sums are accumulated in fp32 across K
// tiles either way (1 + 2^-12, which an fp16 accumulator would round to 1).
TEST_F(GpuTest, CoopmatKeepsFp32Precision) {
  std::string why;
  if (!use_coopmat(true, &why)) GTEST_SKIP() << why;
  const uint32_t tokens = ops::kGemvMaxTokens + 17, k = 64, n = 2;  // enough tokens for the GEMM
  auto x = random_floats(size_t(tokens) * k, 33, -1, 1);
  std::vector<float> w(size_t(n) * k, 0.0f);
  w[0] = 1;                  // y[t, 0] = x[t, 0]
  w[k + 2] = w[k + 40] = 1;  // y[t, 1] = x[t, 2] + x[t, 40], K tiles 0 and 1
  for (uint32_t t = 0; t < tokens; ++t) {
    x[size_t(t) * k] = 1.0f + std::ldexp(1.0f, -15);
    x[size_t(t) * k + 2] = 1.0f;
    x[size_t(t) * k + 40] = std::ldexp(1.0f, -12);
  }
  const auto words = encode_weights(w, ops::WeightType::BF16);
  Allocation dx = upload(x), dw = upload_words(words), dy = poisoned(size_t(tokens) * n);
  for (MatrixActivations a : {MatrixActivations::Split, MatrixActivations::Fp16}) {
    SCOPED_TRACE(matrix_activations_name(a));
    use_matrix_activations(a);
    run([&](CommandBuffer& cb) {
      ops::record_linear(pipelines(), cb,
                         {.x = dx.range(),
                          .weight = dw.range(),
                          .y = dy.range(),
                          .type = ops::WeightType::BF16,
                          .tokens = tokens,
                          .k = k,
                          .n = n});
    });
    const auto got = download(dy, size_t(tokens) * n);
    const float first = a == MatrixActivations::Split ? 1.0f + std::ldexp(1.0f, -15) : 1.0f;
    for (uint32_t t = 0; t < tokens; t += 16) {
      EXPECT_EQ(got[size_t(t) * n], first) << "token " << t << ": activation not taken as this precision says";
      EXPECT_EQ(got[size_t(t) * n + 1], 1.0f + std::ldexp(1.0f, -12)) << "token " << t << ": accumulation not fp32";
    }
  }
}

// The texel-read variant of the CPU shapes' GEMV (shaders/texel_reads.glsl) gives the bits of the
// buffer-address one, which reads the same values and adds them in the same order; on devices
// with texel reads, for every weight type, 1, 5 and 37 tokens (passes of 4 and a partial one),
// 45 rows (not a multiple of the workgroup). The same ranges without their views take the
// buffer-address kernel.
TEST_F(GpuTest, TexelReadsGiveTheBitsOfAddressReads) {
  if (!rt().device.texel_reads())
    GTEST_SKIP() << "texel reads are off (no push descriptors, GPU shapes, or Q3N_TEXEL_READS=0)";
  const CpuShapesForThisScope cpu_shapes(pipelines());
  const uint32_t k = 2080, n = 45;
  for (const ops::WeightType type :
       {ops::WeightType::BF16, ops::WeightType::F16, ops::WeightType::F32, ops::WeightType::Q8, ops::WeightType::Q4})
    for (const uint32_t tokens : {1u, 5u, 37u}) {
      auto w = random_floats(size_t(n) * k, 51, -0.5f, 0.5f);
      Allocation dw = upload_words(encode_weights(w, type));
      Allocation dx = upload(random_floats(size_t(tokens) * k, 52, -1, 1));
      std::vector<std::vector<float>> outputs;
      for (const bool texels : {true, false}) {
        Allocation dy = poisoned(size_t(tokens) * n);
        BufferRange x = dx.range(), weight = dw.range();
        if (!texels) x.texels = weight.texels = nullptr;
        ASSERT_TRUE(!texels || (x.quad_readable() && weight.quad_readable()));
        run([&](CommandBuffer& cb) {
          ops::record_linear(
              pipelines(), cb,
              {.x = x, .weight = weight, .y = dy.range(), .type = type, .tokens = tokens, .k = k, .n = n});
        });
        outputs.push_back(download(dy, size_t(tokens) * n));
      }
      EXPECT_TRUE(pipelines().built("linear_gemv_rowwise_texel"));
      for (size_t i = 0; i < outputs[0].size(); ++i)
        ASSERT_EQ(outputs[0][i], outputs[1][i])
            << ops::weight_type_name(type) << ", " << tokens << " tokens, output " << i;
    }
}

// The CPU shapes' products of one input in one dispatch (linear_gemv_rowwise_multi.comp) give the
// bits of separate record_linear calls: three matrices of different types and row counts that
// are not multiples of the workgroup (one smaller than a workgroup), and two; 1, 5 and 37 tokens.
TEST_F(GpuTest, ProductsSharingAnInputGiveTheBitsOfSeparateProducts) {
  if (!rt().device.texel_reads())
    GTEST_SKIP() << "texel reads are off (no push descriptors, GPU shapes, or Q3N_TEXEL_READS=0)";
  const CpuShapesForThisScope cpu_shapes(pipelines());
  const uint32_t k = 288;
  const std::vector<std::pair<uint32_t, ops::WeightType>> matrices = {
      {45, ops::WeightType::Q4}, {70, ops::WeightType::BF16}, {9, ops::WeightType::Q8}};
  std::vector<Allocation> weights;
  for (size_t i = 0; i < matrices.size(); ++i) {
    auto w = random_floats(size_t(matrices[i].first) * k, 81 + i, -0.5f, 0.5f);
    weights.push_back(upload_words(encode_weights(w, matrices[i].second)));
  }
  for (const size_t count : {size_t(3), size_t(2)})
    for (const uint32_t tokens : {1u, 5u, 37u}) {
      Allocation dx = upload(random_floats(size_t(tokens) * k, 80, -1, 1));
      std::vector<Allocation> fused, separate;
      std::vector<ops::LinearOutput> outputs;
      for (size_t i = 0; i < count; ++i) {
        fused.push_back(poisoned(size_t(tokens) * matrices[i].first));
        separate.push_back(poisoned(size_t(tokens) * matrices[i].first));
        outputs.push_back({weights[i].range(), matrices[i].second, fused[i].range(), matrices[i].first});
      }
      ASSERT_TRUE(ops::products_share_dispatch(pipelines(), dx.range(), k, outputs));
      run([&](CommandBuffer& cb) {
        ops::record_linears_sharing_input(pipelines(), cb, dx.range(), tokens, k, outputs);
        for (size_t i = 0; i < count; ++i)
          ops::record_linear(pipelines(), cb,
                             {.x = dx.range(),
                              .weight = weights[i].range(),
                              .y = separate[i].range(),
                              .type = matrices[i].second,
                              .tokens = tokens,
                              .k = k,
                              .n = matrices[i].first});
      });
      for (size_t i = 0; i < count; ++i) {
        const auto a = download(fused[i], size_t(tokens) * matrices[i].first),
                   b = download(separate[i], size_t(tokens) * matrices[i].first);
        for (size_t j = 0; j < a.size(); ++j)
          ASSERT_EQ(a[j], b[j]) << count << " products, " << tokens << " tokens, matrix " << i << ", output " << j;
      }
    }
  // Not served: more products than the kernel has slots, or k not a multiple of 8.
  Allocation dx = upload(random_floats(k, 80, -1, 1));
  const ops::LinearOutput one{weights[0].range(), matrices[0].second, dx.range(), matrices[0].first};
  EXPECT_FALSE(ops::products_share_dispatch(pipelines(), dx.range(), k, std::vector<ops::LinearOutput>(4, one)));
  EXPECT_FALSE(ops::products_share_dispatch(pipelines(), dx.range(), k - 4, std::vector<ops::LinearOutput>(1, one)));
}

class RowInvarianceTest : public GpuTest {
 protected:
  // Runs y = x W^T over the last `tokens` rows of one random x, for each count in `token_counts`,
  // and checks that the last row (present in every run) is bitwise the same in all of them.
  // `k_split`: each run with K-split scratch where its size splits (ops::linear_split_bytes).
  void expect_last_row_independent_of_count(uint32_t k, uint32_t n, ops::WeightType type,
                                            const std::vector<uint32_t>& token_counts, uint32_t gemv_max_tokens,
                                            bool k_split = false);
};

void RowInvarianceTest::expect_last_row_independent_of_count(uint32_t k, uint32_t n, ops::WeightType type,
                                                             const std::vector<uint32_t>& token_counts,
                                                             uint32_t gemv_max_tokens, bool k_split) {
  auto w = random_floats(size_t(n) * k, 41, -0.5f, 0.5f);
  Allocation dw = upload_words(encode_weights(w, type));
  const uint32_t most = *std::max_element(token_counts.begin(), token_counts.end());
  const auto x = random_floats(size_t(most) * k, 42, -1, 1);
  std::vector<std::vector<float>> by_count;
  for (const uint32_t tokens : token_counts) {
    std::vector<float> xs(x.end() - ptrdiff_t(tokens) * k, x.end());
    Allocation dx = upload(xs), dy = poisoned(size_t(tokens) * n);
    const uint64_t split_bytes = k_split ? ops::linear_split_bytes(tokens, n, k) : 0;
    Allocation parts = poisoned(std::max<uint64_t>(split_bytes / 4, 1));
    run([&](CommandBuffer& cb) {
      ops::record_linear(pipelines(), cb,
                         {.x = dx.range(),
                          .weight = dw.range(),
                          .y = dy.range(),
                          .type = type,
                          .tokens = tokens,
                          .k = k,
                          .n = n,
                          .gemv_max_tokens = gemv_max_tokens,
                          .k_split = split_bytes ? parts.range() : BufferRange{}});
    });
    const auto y = download(dy, size_t(tokens) * n);
    by_count.emplace_back(y.end() - n, y.end());
  }
  for (size_t i = 1; i < by_count.size(); ++i)
    for (uint32_t j = 0; j < n; ++j)
      ASSERT_EQ(by_count[i][j], by_count[0][j]) << ops::weight_type_name(type) << " n " << n << " k " << k << " tokens "
                                                << token_counts[i] << " output " << j;
}

// Batch invariance: a token's output row is bitwise the same whether it is computed alone or
// among up to kGemvMaxTokens others (in any pass of the GEMV), for every weight type, on a
// matrix with few rows (one row per workgroup, 256 invocations) and one with many (4 rows, 32).
TEST_F(RowInvarianceTest, GemvRowsDoNotDependOnTheTokenCount) {
  const uint32_t most = ops::kGemvMaxTokens;
  for (const ops::WeightType type :
       {ops::WeightType::BF16, ops::WeightType::F16, ops::WeightType::F32, ops::WeightType::Q8, ops::WeightType::Q4}) {
    expect_last_row_independent_of_count(2080, 45, type, {1, 2, 3, 4, 12, 37, 100, most}, most);
    expect_last_row_independent_of_count(256, 20000, type, {1, 2, 37, most}, most);
  }
}

// The matrix-unit GEMM gives an output the same sequence of products for any token count and any
// tile width (matrix_tile_features): a token's row is bitwise the same alone (64 features per
// workgroup at n = 20000), among 17 or 63 others, and among 129 (128 per workgroup, in 128-token
// tiles where matrix_tile_row_blocks gives them); and at n = 45 (32 per workgroup). Decode steps past
// kThroughputGemvMaxTokens rely on it.
TEST_F(RowInvarianceTest, MatrixRowsDoNotDependOnTheTokenCountOrTileWidth) {
  std::string why;
  if (!use_coopmat(true, &why)) GTEST_SKIP() << why;
  EXPECT_EQ(ops::matrix_tile_features(1, 20000), 64u);
  EXPECT_EQ(ops::matrix_tile_features(130, 20000), 128u);
  EXPECT_EQ(ops::matrix_tile_features(130, 45), 32u);
  for (const uint32_t n : {20000u, 45u})
    for (const ops::WeightType type : {ops::WeightType::BF16, ops::WeightType::Q4})
      expect_last_row_independent_of_count(256, n, type, {1, 18, 64, 130}, 0);
}

// Decode steps split K on the matrix units (LinearArgs::k_split) in parts that depend on the
// matrix alone, so a row is bitwise the same for every token count up to kSplitMaxTokens: at
// n = 20000 (2 parts of k = 2080) and n = 45 (7 parts of 320, the last 160), 1 to 128 tokens.
TEST_F(RowInvarianceTest, KSplitRowsDoNotDependOnTheTokenCount) {
  std::string why;
  if (!use_coopmat(true, &why)) GTEST_SKIP() << why;
  EXPECT_EQ(k_parts(20000, 2080), 2u);
  EXPECT_EQ(k_parts(45, 2080), 7u);
  for (const uint32_t n : {20000u, 45u})
    for (const ops::WeightType type : {ops::WeightType::BF16, ops::WeightType::Q4})
      expect_last_row_independent_of_count(2080, n, type, {1, 18, 64, 128}, 0, true);
}

// The K parts: enough for one row tile of 128-feature tiles to fill the GPU (256 workgroups), at
// least 256 values each, at most 16, each a multiple of 64; no split past kSplitMaxTokens.
TEST(LinearKPart, FillsTheGpuWithPartsOfWholeSlices) {
  EXPECT_EQ(ops::linear_k_part(12288, 2048), 704u);    // in_proj_qkvz: 96 tiles x 3 parts
  EXPECT_EQ(ops::linear_k_part(2048, 4096), 256u);     // out_proj: 16 tiles x 16 parts
  EXPECT_EQ(ops::linear_k_part(512, 2048), 256u);      // router: 4 tiles x 8 parts (k / 256)
  EXPECT_EQ(ops::linear_k_part(45, 300), 300u);        // too short to split
  EXPECT_EQ(ops::linear_k_part(151936, 2048), 2048u);  // lm_head: its tiles fill the GPU
  EXPECT_EQ(ops::linear_split_bytes(32, 2048, 4096), 16ull * 32 * 2048 * 4);
  EXPECT_EQ(ops::linear_split_bytes(ops::kSplitMaxTokens + 1, 2048, 4096), 0u);
  EXPECT_EQ(ops::linear_split_bytes(32, 45, 300), 0u);
}

// The matrix GEMM's tile width: 128 features where that gives the GPU enough workgroups, else
// narrower, never below 32.
TEST(MatrixTileFeatures, NarrowsForFewTokensAndFeatures) {
  EXPECT_EQ(ops::matrix_tile_features(512, 12288), 128u);  // prefill in_proj_qkvz: 96 x 8 tiles
  EXPECT_EQ(ops::matrix_tile_features(32, 151936), 128u);  // lm_head
  EXPECT_EQ(ops::matrix_tile_features(32, 12288), 32u);    // decode in_proj_qkvz: 384 tiles
  EXPECT_EQ(ops::matrix_tile_features(128, 2048), 32u);    // out_proj
  EXPECT_EQ(ops::matrix_tile_features(1, 1), 32u);
}

// The GEMV's workgroup shape at the 80B-A3B matrices: many rows take 4 per workgroup and 32
// invocations; fewer rows take more invocations, then one row per workgroup; never more
// invocations than a row has units.
TEST(GemvShape, FollowsTheMatrix) {
  auto shape = [](uint32_t n, uint32_t units) {
    const ops::GemvShape s = ops::gemv_shape(n, units);
    return std::pair{s.rows, s.threads};
  };
  EXPECT_EQ(shape(12288, 256), std::pair(4u, 64u));   // in_proj_qkvz
  EXPECT_EQ(shape(151936, 256), std::pair(4u, 32u));  // lm_head
  EXPECT_EQ(shape(2048, 512), std::pair(4u, 256u));   // out_proj
  EXPECT_EQ(shape(513, 256), std::pair(1u, 256u));    // router + shared-expert gate
  EXPECT_EQ(shape(64, 256), std::pair(1u, 256u));     // in_proj_ba
  EXPECT_EQ(shape(2048, 64), std::pair(1u, 64u));     // shared expert down (K = 512)
  EXPECT_EQ(shape(3, 5), std::pair(1u, 32u));         // tiny: the minimum
  for (uint32_t n : {1u, 7u, 100u, 5000u, 70000u})
    for (uint32_t units : {1u, 16u, 300u, 4096u}) {
      const ops::GemvShape s = ops::gemv_shape(n, units);
      EXPECT_TRUE(s.rows == 1 || s.rows == 4);
      EXPECT_TRUE(s.threads >= 32 && s.threads <= 256 && (s.threads & (s.threads - 1)) == 0);
      EXPECT_TRUE(s.threads == 32 || s.threads <= units) << n << " " << units;
    }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, LinearTest,
    ::testing::Values(Case{1, 2048, 67, ops::WeightType::BF16}, Case{1, 131, 300, ops::WeightType::F16},
                      Case{3, 257, 130, ops::WeightType::F32}, Case{8, 64, 63, ops::WeightType::BF16},
                      Case{9, 130, 65, ops::WeightType::BF16}, Case{63, 257, 129, ops::WeightType::F16},
                      Case{65, 100, 200, ops::WeightType::F32}, Case{130, 2048, 96, ops::WeightType::BF16},
                      Case{200, 96, 300, ops::WeightType::BF16},  // several tiles both ways
                      Case{1, 16, 70000, ops::WeightType::BF16},  // n over 65535 uses the 2-D grid
                      // Quantised rows (k a multiple of 32): the GEMV's block path, the GEMM's tiles.
                      Case{1, 2048, 67, ops::WeightType::Q8}, Case{5, 96, 131, ops::WeightType::Q8},
                      Case{1, 2048, 67, ops::WeightType::Q4}, Case{8, 4128, 33, ops::WeightType::Q4},
                      Case{70, 160, 129, ops::WeightType::Q8}, Case{130, 544, 70, ops::WeightType::Q4},
                      // GEMV up to 128 tokens for every weight type (passes of 8 tokens), GEMM from 129.
                      Case{32, 96, 67, ops::WeightType::Q4}, Case{33, 64, 40, ops::WeightType::Q8},
                      Case{128, 96, 67, ops::WeightType::Q4}, Case{129, 64, 40, ops::WeightType::Q8},
                      Case{20, 128, 35, ops::WeightType::Q8}, Case{128, 131, 70, ops::WeightType::BF16},
                      Case{129, 130, 65, ops::WeightType::BF16}, Case{17, 99, 41, ops::WeightType::F32},
                      Case{45, 72, 9, ops::WeightType::F16},     // units of 8, 16-bit
                      Case{20, 64, 20000, ops::WeightType::Q4},  // 64 features per matrix tile
                      // 128-token matrix tiles (matrix_tile_row_blocks: enough workgroups), the last partial.
                      Case{300, 64, 16500, ops::WeightType::F16}, Case{260, 96, 16400, ops::WeightType::BF16},
                      Case{300, 64, 16500, ops::WeightType::Q4},  // (quantised: 64-token tiles)
                      // K split on the matrix units (decode-sized, long K): 13, 7 and 3 parts.
                      Case{8, 4128, 33, ops::WeightType::BF16}, Case{40, 2080, 300, ops::WeightType::Q8},
                      Case{128, 2080, 12000, ops::WeightType::Q4}),
    [](const auto& info) {
      const Case& c = info.param;
      return std::to_string(c.tokens) + "x" + std::to_string(c.k) + "x" + std::to_string(c.n) + "_" +
             ops::weight_type_name(c.type);
    });

}  // namespace
}  // namespace q3n::test

namespace q3n::test {
namespace {

// LinearArgs::swiglu_input: the down projection of a SwiGLU MLP reads gate|up [tokens, 2k] and
// takes silu(gate) * up, fused into the GEMV's reads (decode steps) or written to `act` first
// (CPU shapes, and more tokens than the GEMV takes), against a double reference, for 16-bit and
// quantised weights and k with and without the 8-element units.
class LinearSwigluTest : public GpuTest {};

TEST_F(LinearSwigluTest, SwigluInputMatchesReference) {
  for (const ops::WeightType type : {ops::WeightType::BF16, ops::WeightType::Q8, ops::WeightType::F32})
    for (const uint32_t k : {96u, 52u})
      for (const uint32_t tokens : {1u, 2u, 5u, 140u}) {
        if (is_quantized(type) && k % 32) continue;
        const uint32_t n = 70;
        auto gu = random_floats(size_t(tokens) * 2 * k, 33, -3, 3);
        auto w = random_floats(size_t(n) * k, 34, -0.5f, 0.5f);
        const auto words = encode_weights(w, type);
        Allocation dx = upload(gu), dw = upload_words(words), dy = poisoned(size_t(tokens) * n),
                   dact = poisoned(size_t(tokens) * k);
        run([&](CommandBuffer& cb) {
          ops::record_linear(pipelines(), cb,
                             {.x = dx.range(),
                              .weight = dw.range(),
                              .y = dy.range(),
                              .type = type,
                              .tokens = tokens,
                              .k = k,
                              .n = n,
                              .swiglu_input = true,
                              .act = dact.range()});
        });
        const auto got = download(dy, size_t(tokens) * n);
        std::vector<double> want(got.size());
        double scale = 0;
        for (uint32_t t = 0; t < tokens; ++t)
          for (uint32_t j = 0; j < n; ++j) {
            double sum = 0, magnitude = 0;
            for (uint32_t i = 0; i < k; ++i) {
              const double g = gu[size_t(t) * 2 * k + i], up = gu[size_t(t) * 2 * k + k + i];
              const double term = g / (1 + std::exp(-g)) * up * w[size_t(j) * k + i];
              sum += term, magnitude += std::abs(term);
            }
            want[size_t(t) * n + j] = sum;
            scale = std::max(scale, magnitude);
          }
        // fp32 SiLU (a few ulps) and a k-term fp32 sum; past the GEMV's 128 tokens a device with
        // matrix units takes activations as fp16 (2^-11 relative each): bound 2^-10 of the terms.
        const bool matrix = tokens > ops::kGemvMaxTokens && pipelines().coopmat() && type != ops::WeightType::F32;
        const double tolerance = scale * (matrix ? std::ldexp(1.0, -10) : 4.0 * k * std::ldexp(1.0, -24));
        EXPECT_TRUE(all_close(got, want, tolerance, 0))
            << ops::weight_type_name(type) << " k " << k << " tokens " << tokens;
      }
}

}  // namespace
}  // namespace q3n::test

namespace q3n::test {
namespace {

// LinearArgs::conv: in_proj_qkv's GEMV applying the DeltaNet conv as it writes (decode steps of
// one token per sequence, GPU shapes). Its outputs and the state it leaves must be bitwise what
// the plain product followed by causal_conv1d.comp gives (speculative verification and mixed
// steps take that pair, and must compute as decode does), and the outputs must match a double
// conv of the plain product. Tokens on both sides of the GEMV's 4-token passes; n not a multiple
// of the rows per workgroup; 16-bit and quantised weights; k with and without 8-element units.
class LinearConvTest : public GpuTest {};

TEST_F(LinearConvTest, ConvOutputIsTheConvOfTheProductBitForBit) {
  if (!ops::linear_applies_conv(pipelines(), 1, ops::kGemvMaxTokens))
    GTEST_SKIP() << "the CPU shapes' row-wise GEMV does not apply the conv";
  const uint32_t kernel = 4, history = kernel - 1;
  for (const ops::WeightType type : {ops::WeightType::BF16, ops::WeightType::Q4})
    for (const uint32_t k : {96u, 52u})
      for (const uint32_t tokens : {1u, 6u}) {
        if (is_quantized(type) && k % 32) continue;
        SCOPED_TRACE(std::string(ops::weight_type_name(type)) + " k " + std::to_string(k) + " tokens " +
                     std::to_string(tokens));
        const uint32_t n = 75;
        const auto x = random_floats(size_t(tokens) * k, 35, -1, 1);
        auto w = random_floats(size_t(n) * k, 36, -0.5f, 0.5f);
        const auto words = encode_weights(w, type);
        auto conv_w = random_floats(size_t(n) * kernel, 37, -1, 1);
        const auto conv_words = encode_weights(conv_w, ops::WeightType::BF16);
        // tokens + 1 slots; token t (its own sequence) uses slot tokens - t: slot 0 stays untouched.
        const auto state = random_floats(size_t(tokens + 1) * history * n, 38, -2, 2);
        std::vector<uint32_t> seqs;
        for (uint32_t t = 0; t < tokens; ++t) seqs.insert(seqs.end(), {tokens - t, 5});
        Allocation dx = upload(x), dw = upload_words(words), dconv = upload_words(conv_words),
                   dseqs = upload_words(seqs), plain = poisoned(size_t(tokens) * n),
                   separate = poisoned(size_t(tokens) * n), fused = poisoned(size_t(tokens) * n),
                   separate_state = upload(state), fused_state = upload(state);
        const ops::LinearArgs product{
            .x = dx.range(), .weight = dw.range(), .y = plain.range(), .type = type, .tokens = tokens, .k = k, .n = n};
        run([&](CommandBuffer& cb) {
          ops::record_linear(pipelines(), cb, product);
          cb.barrier();
          ops::record_causal_conv1d(pipelines(), cb,
                                    {.x = plain.range(),
                                     .weight = dconv.range(),
                                     .state = separate_state.range(),
                                     .seqs = dseqs.range(),
                                     .y = separate.range(),
                                     .type = ops::WeightType::BF16,
                                     .batch = tokens,
                                     .tokens = 1,
                                     .channels = n,
                                     .kernel = kernel});
          ops::LinearArgs with_conv = product;
          with_conv.y = fused.range();
          with_conv.conv = ops::LinearArgs::ConvOutput{.weight = dconv.range(),
                                                       .type = ops::WeightType::BF16,
                                                       .state = fused_state.range(),
                                                       .seqs = dseqs.range(),
                                                       .kernel = kernel};
          ops::record_linear(pipelines(), cb, with_conv);
        });
        const auto y = download(plain, size_t(tokens) * n), got = download(fused, size_t(tokens) * n);
        EXPECT_EQ(got, download(separate, size_t(tokens) * n)) << "outputs: causal_conv1d's bits";
        const auto got_state = download(fused_state, state.size());
        EXPECT_EQ(got_state, download(separate_state, state.size())) << "state: causal_conv1d's";
        // The double conv of the plain product: 4 products of |terms| <= ~6 summed in fp32, then
        // SiLU with fp32 exp: a few ulps of values up to ~10 (as causal_conv1d's own test).
        std::vector<double> want(got.size()), want_state(state.begin(), state.end());
        for (uint32_t t = 0; t < tokens; ++t)
          for (uint32_t c = 0; c < n; ++c) {
            const size_t slot = tokens - t;
            double acc = double(conv_w[size_t(c) * kernel + history]) * y[size_t(t) * n + c];
            for (uint32_t j = 0; j < history; ++j)
              acc += double(conv_w[size_t(c) * kernel + j]) * state[(slot * history + j) * n + c];
            want[size_t(t) * n + c] = acc / (1.0 + std::exp(-acc));
            for (uint32_t j = 0; j + 1 < history; ++j)
              want_state[(slot * history + j) * n + c] = state[(slot * history + j + 1) * n + c];
            want_state[(slot * history + history - 1) * n + c] = y[size_t(t) * n + c];
          }
        EXPECT_TRUE(all_close(got, want, 4e-6, 2e-6)) << "outputs against the double conv";
        EXPECT_TRUE(all_close(got_state, want_state, 0, 0)) << "state: shifted, the product appended";
      }
}

}  // namespace
}  // namespace q3n::test

namespace q3n::test {
namespace {

// LinearArgs::conv in a verify step: T rows per sequence (b * T + t), the conv walked over each
// sequence's rows from its state, which stays as it was (causal_conv1d.comp's Keep); the product
// itself goes to pre_conv for the commit. Bitwise against the plain product followed by
// causal_conv1d with Keep, and the outputs against a double conv of the plain product; sequences
// straddling the GEMV's 4-row passes (T = 3) included.
TEST_F(LinearConvTest, VerifyRowsTakeTheConvAndKeepTheState) {
  if (!ops::linear_applies_conv(pipelines(), 1, ops::kGemvMaxTokens))
    GTEST_SKIP() << "the CPU shapes' row-wise GEMV does not apply the conv";
  const uint32_t kernel = 4, history = kernel - 1, k = 64, n = 75;
  for (const uint32_t per_sequence : {2u, 3u}) {
    const uint32_t sequences = 3, tokens = sequences * per_sequence;
    SCOPED_TRACE("tokens per sequence " + std::to_string(per_sequence));
    const auto x = random_floats(size_t(tokens) * k, 45, -1, 1);
    auto w = random_floats(size_t(n) * k, 46, -0.5f, 0.5f);
    const auto words = encode_weights(w, ops::WeightType::Q4);
    auto conv_w = random_floats(size_t(n) * kernel, 47, -1, 1);
    const auto conv_words = encode_weights(conv_w, ops::WeightType::BF16);
    const auto state = random_floats(size_t(sequences + 1) * history * n, 48, -2, 2);
    std::vector<uint32_t> seqs;
    for (uint32_t b = 0; b < sequences; ++b) seqs.insert(seqs.end(), {sequences - b, 9});
    Allocation dx = upload(x), dw = upload_words(words), dconv = upload_words(conv_words), dseqs = upload_words(seqs),
               plain = poisoned(size_t(tokens) * n), separate = poisoned(size_t(tokens) * n),
               fused = poisoned(size_t(tokens) * n), pre_conv = poisoned(size_t(tokens) * n), dstate = upload(state);
    const ops::LinearArgs product{.x = dx.range(),
                                  .weight = dw.range(),
                                  .y = plain.range(),
                                  .type = ops::WeightType::Q4,
                                  .tokens = tokens,
                                  .k = k,
                                  .n = n};
    run([&](CommandBuffer& cb) {
      ops::record_linear(pipelines(), cb, product);
      cb.barrier();
      ops::record_causal_conv1d(pipelines(), cb,
                                {.x = plain.range(),
                                 .weight = dconv.range(),
                                 .state = dstate.range(),
                                 .seqs = dseqs.range(),
                                 .y = separate.range(),
                                 .type = ops::WeightType::BF16,
                                 .batch = sequences,
                                 .tokens = per_sequence,
                                 .channels = n,
                                 .kernel = kernel,
                                 .update = ops::StateUpdate::Keep});
      ops::LinearArgs with_conv = product;
      with_conv.y = fused.range();
      with_conv.conv = ops::LinearArgs::ConvOutput{.weight = dconv.range(),
                                                   .type = ops::WeightType::BF16,
                                                   .state = dstate.range(),
                                                   .seqs = dseqs.range(),
                                                   .kernel = kernel,
                                                   .tokens_per_sequence = per_sequence,
                                                   .pre_conv = pre_conv.range()};
      ops::record_linear(pipelines(), cb, with_conv);
    });
    const auto y = download(plain, size_t(tokens) * n), got = download(fused, size_t(tokens) * n);
    EXPECT_EQ(got, download(separate, size_t(tokens) * n)) << "outputs: causal_conv1d's bits";
    EXPECT_EQ(download(pre_conv, y.size()), y) << "pre_conv: the product itself";
    EXPECT_TRUE(all_close(download(dstate, state.size()), std::vector<double>(state.begin(), state.end()), 0, 0))
        << "the state is left for the commit";
    std::vector<double> want(got.size());
    for (uint32_t b = 0; b < sequences; ++b)
      for (uint32_t c = 0; c < n; ++c) {
        std::vector<double> seq;  // the channel's inputs: the state's rows, then the sequence's tokens
        for (uint32_t j = 0; j < history; ++j) seq.push_back(state[((sequences - b) * history + j) * size_t(n) + c]);
        for (uint32_t t = 0; t < per_sequence; ++t) seq.push_back(y[(size_t(b) * per_sequence + t) * n + c]);
        for (uint32_t t = 0; t < per_sequence; ++t) {
          double acc = 0;
          for (uint32_t j = 0; j < kernel; ++j) acc += double(conv_w[size_t(c) * kernel + j]) * seq[t + j];
          want[(size_t(b) * per_sequence + t) * n + c] = acc / (1.0 + std::exp(-acc));
        }
      }
    EXPECT_TRUE(all_close(got, want, 4e-6, 2e-6)) << "outputs against the double conv";
  }
}

}  // namespace
}  // namespace q3n::test
