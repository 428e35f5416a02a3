// The MoE family against a double-precision reference of spec §3.8: softmax over all experts,
// top-k, optional renormalisation, SwiGLU experts, weighted combine and the sigmoid-gated
// shared expert; plus the dense SwiGLU. Includes a routing where one expert receives every
// token and others none.
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <optional>
#include <string>

#include "runtime/ops/moe.h"
#include "tests/support/gpu_test.h"
#include "tests/support/numeric.h"

namespace q3n::test {
namespace {

struct Case {
  uint32_t tokens, hidden, experts, top_k, expert_dim;
  bool normalise, shared;
  ops::WeightType type;
  bool skewed;  // expert 1 wins every token; the last three experts never win
};

double silu(double x) { return x / (1.0 + std::exp(-x)); }

// What the matrix units multiply by: the weight rounded to fp16 (exact for 16-bit weights).
float fp16_rounded(float w) { return ops::f16_bits_to_f32(ops::f32_to_f16_bits(w)); }

// Every routing intermediate of one MoE call, poisoned.
struct MoeScratchBuffers {
  Allocation ids, weights, offsets, sorted, active, h, y;
  ops::MoeScratch ranges() const {
    return {.ids = ids.range(),
            .weights = weights.range(),
            .offsets = offsets.range(),
            .sorted = sorted.range(),
            .active = active.range(),
            .h = h.range(),
            .y = y.range()};
  }
};

class MoeOpTest : public GpuTest {
 protected:
  MoeScratchBuffers poisoned_scratch(const ops::MoeShape& s) {
    const ops::MoeScratchBytes need = ops::moe_scratch_bytes(s);
    return {.ids = poisoned(need.ids / 4),
            .weights = poisoned(need.weights / 4),
            .offsets = poisoned(need.offsets / 4),
            .sorted = poisoned(need.sorted / 4),
            .active = poisoned(need.active / 4),
            .h = poisoned(need.h / 4),
            .y = poisoned(need.y / 4)};
  }
};

class MoeTest : public MoeOpTest, public ::testing::WithParamInterface<Case> {
 protected:
  void check(bool matrix_units, std::optional<ops::ExpertGemvShape> gemv = std::nullopt);
};

TEST_P(MoeTest, MatchesReference) {
  use_coopmat(false);
  check(false);
}

// The cooperative-matrix expert GEMM, on devices that have it, for the cases with 16-bit or
// quantised weights (at every token count, as decode steps past gemv_max_tokens take it), with
// activations rounded to fp16 and split in halves.
TEST_P(MoeTest, CoopmatMatchesReference) {
  const Case c = GetParam();
  if (c.type == ops::WeightType::F32) GTEST_SKIP() << "fp32 weights take no matrix units";
  std::string why;
  if (!use_coopmat(true, &why)) GTEST_SKIP() << why;
  for (MatrixActivations a : {MatrixActivations::Fp16, MatrixActivations::Split}) {
    SCOPED_TRACE(matrix_activations_name(a));
    use_matrix_activations(a);
    check(true);
  }
}

// The expert GEMV at shapes other than the default (lane groups narrower than the workgroup,
// several rows per group, several expert rows per pass, wider workgroups), on GPU shapes, for the
// cases it serves; both products take the shape.
TEST_P(MoeTest, ExpertGemvShapesMatchReference) {
  const Case c = GetParam();
  if (c.tokens > ops::kExpertGemvMaxTokens) GTEST_SKIP() << "prefill steps take the tiled kernels";
  if (pipelines().cpu_shapes()) GTEST_SKIP() << "CPU shapes take moe_expert_gemv_rowwise";
  use_coopmat(false);
  // {128, 128, 1, 1}: a direct step of top-10 cannot take the combine inside the down product (10 x
  // 128 invocations) and takes moe_combine.comp after it.
  for (const ops::ExpertGemvShape shape :
       {ops::ExpertGemvShape{64, 8, 2, 3}, ops::ExpertGemvShape{128, 16, 3, 2}, ops::ExpertGemvShape{32, 32, 5, 4},
        ops::ExpertGemvShape{64, 4, 1, 1}, ops::ExpertGemvShape{128, 128, 1, 1}}) {
    SCOPED_TRACE("threads " + std::to_string(shape.threads) + ", lanes " + std::to_string(shape.lanes) + ", rows " +
                 std::to_string(shape.rows) + ", chunk " + std::to_string(shape.chunk));
    check(false, shape);
  }
}

void MoeTest::check(bool matrix_units, std::optional<ops::ExpertGemvShape> gemv) {
  const Case c = GetParam();
  const ops::MoeShape s{.tokens = c.tokens,
                        .hidden = c.hidden,
                        .experts = c.experts,
                        .top_k = c.top_k,
                        .expert_dim = c.expert_dim,
                        .normalise = c.normalise};
  const uint32_t stride = c.experts + 1, H = c.hidden, I = c.expert_dim;
  auto x = random_floats(size_t(c.tokens) * H, 21, -1, 1);
  auto logits = random_floats(size_t(c.tokens) * stride, 22, -3, 3);
  if (c.skewed)
    for (uint32_t t = 0; t < c.tokens; ++t) {
      logits[t * stride + 1] += 10;
      for (uint32_t e = c.experts - 3; e < c.experts; ++e) logits[t * stride + e] -= 10;
    }
  auto gate_up = random_floats(size_t(c.experts) * 2 * I * H, 23, -0.2f, 0.2f);
  auto down = random_floats(size_t(c.experts) * H * I, 24, -0.2f, 0.2f);
  const auto gate_up_words = encode_weights(gate_up, c.type), down_words = encode_weights(down, c.type);
  if (matrix_units) {  // the reference takes the weights as the matrix units read them
    for (float& w : gate_up) w = fp16_rounded(w);
    for (float& w : down) w = fp16_rounded(w);
  }
  auto shared_out = random_floats(size_t(c.tokens) * H, 25, -1, 1);

  Allocation dx = upload(x), dlogits = upload(logits), dgu = upload_words(gate_up_words),
             ddown = upload_words(down_words), dshared = upload(shared_out), dout = poisoned(size_t(c.tokens) * H);
  const MoeScratchBuffers scratch = poisoned_scratch(s);
  const ops::MoeArgs args{.x = dx.range(),
                          .logits = dlogits.range(),
                          .logit_stride = stride,
                          .gate_up = dgu.range(),
                          .down = ddown.range(),
                          .type = c.type,
                          .shared_out = c.shared ? dshared.range() : BufferRange{},
                          .shared_logit_column = c.experts,
                          .out = dout.range(),
                          .shape = s,
                          .gemv_max_tokens = matrix_units ? 0u : ops::kExpertGemvMaxTokens,
                          .gate_up_gemv = gemv,
                          .down_gemv = gemv};
  run([&](CommandBuffer& cb) { ops::record_moe(pipelines(), cb, args, scratch.ranges()); });

  std::vector<double> want(size_t(c.tokens) * H, 0.0);
  // With activations rounded to fp16, each x and h the matrix units read is off by up to 2^-11 of
  // itself, or 2^-14 absolute where fp16 flushes; `bound` carries that error through both
  // products and SwiGLU (|silu'| <= 1.1) to every output. Split activations add nothing visible.
  const bool fp16_x = matrix_units && pipelines().matrix_activations() == MatrixActivations::Fp16;
  const double u16 = std::ldexp(1.0, -11), flush16 = std::ldexp(1.0, -14);
  std::vector<double> bound(want.size(), 0.0);
  std::vector<uint32_t> count(c.experts, 0);
  for (uint32_t t = 0; t < c.tokens; ++t) {
    std::vector<double> p(c.experts);
    double m = -1e300, sum = 0;
    for (uint32_t e = 0; e < c.experts; ++e) m = std::max(m, double(logits[t * stride + e]));
    for (uint32_t e = 0; e < c.experts; ++e) sum += (p[e] = std::exp(logits[t * stride + e] - m));
    for (auto& v : p) v /= sum;
    std::vector<uint32_t> order(c.experts);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) { return p[a] > p[b]; });
    double chosen = 0;
    for (uint32_t j = 0; j < c.top_k; ++j) chosen += p[order[j]];
    for (uint32_t j = 0; j < c.top_k; ++j) {
      const uint32_t e = order[j];
      ++count[e];
      const double w = c.normalise ? p[e] / chosen : p[e];
      std::vector<double> hh(I), dh(I);
      for (uint32_t i = 0; i < I; ++i) {
        double g = 0, u = 0, eg = 0, eu = 0;
        for (uint32_t k = 0; k < H; ++k) {
          const double xv = x[t * H + k], wg = gate_up[(size_t(e) * 2 * I + i) * H + k],
                       wu = gate_up[(size_t(e) * 2 * I + I + i) * H + k];
          g += xv * wg;
          u += xv * wu;
          const double dx = u16 * std::fabs(xv) + flush16;
          eg += dx * std::fabs(wg);
          eu += dx * std::fabs(wu);
        }
        hh[i] = silu(g) * u;
        dh[i] = 1.1 * eg * (std::fabs(u) + eu) + std::fabs(silu(g)) * eu;
      }
      for (uint32_t d = 0; d < H; ++d) {
        double o = 0, eo = 0;
        for (uint32_t i = 0; i < I; ++i) {
          const double wd = down[(size_t(e) * H + d) * I + i];
          o += hh[i] * wd;
          eo += (dh[i] + u16 * (std::fabs(hh[i]) + dh[i]) + flush16) * std::fabs(wd);
        }
        want[t * H + d] += w * o;
        bound[t * H + d] += w * eo;
      }
    }
    if (c.shared)
      for (uint32_t d = 0; d < H; ++d)
        want[t * H + d] += shared_out[t * H + d] / (1.0 + std::exp(-double(logits[t * stride + c.experts])));
  }
  // The scenario really happened: check the GPU's own grouping (direct steps have none).
  if (c.skewed && !ops::moe_skips_grouping(pipelines(), args, scratch.ranges())) {
    const auto got_offsets = download_words(scratch.offsets, c.experts + 1);
    EXPECT_EQ(got_offsets[2] - got_offsets[1], c.tokens) << "expert 1 receives every token";
    for (uint32_t e = c.experts - 3; e < c.experts; ++e) EXPECT_EQ(got_offsets[e + 1], got_offsets[e]) << e;
    EXPECT_EQ(count[1], c.tokens);
  }
  // Two fp32 dot products of H and I terms (|terms| <= 0.2) and the weighted sum of top_k
  // experts: ~ (H + I) ulps of outputs of size ~0.5. The matrix units' other roundings sit far
  // below: activations as hi + lo fp16 (2^-21 relative), and a weight under 2^-14 that a device
  // flushes moves an output by < 2^-14 x 0.2 x |h| ~ 1e-6.
  const auto got = download(dout, want.size());
  if (!fp16_x) {
    EXPECT_TRUE(all_close(got, want, 2e-5, 1e-4));
    return;
  }
  size_t bad = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double tol = 2e-5 + 1e-4 * std::fabs(want[i]) + bound[i];
    if (!(std::fabs(got[i] - want[i]) <= tol) && bad++ < 3)
      ADD_FAILURE() << "out[" << i << "] = " << got[i] << ", expected " << want[i] << " (tolerance " << tol << ")";
  }
  EXPECT_EQ(bad, 0u);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, MoeTest,
    ::testing::Values(Case{1, 67, 8, 2, 33, true, true, ops::WeightType::BF16,
                           false},  // one decode token
                                    // Up to kDirectExpertMaxTokens (16) tokens take the direct path on GPU shapes (no
                                    // grouping, the combine inside the down product); CPU shapes route and group
                                    // 1 token in one workgroup (moe_route_group.comp), more take a routing
                                    // workgroup each.
                      Case{3, 64, 20, 10, 24, true, true, ops::WeightType::BF16, false},    // top-10: 30 assignments
                      Case{4, 33, 10, 2, 17, true, true, ops::WeightType::F16, true},       // one expert takes all
                      Case{2, 67, 12, 3, 33, false, false, ops::WeightType::F32, false},    // no renormalisation
                      Case{5, 130, 16, 4, 65, false, true, ops::WeightType::F32, false},    // norm_topk_prob false
                      Case{70, 64, 12, 3, 40, true, false, ops::WeightType::F16, false},    // prefill tiles, no shared
                      Case{45, 33, 10, 2, 17, true, true, ops::WeightType::BF16, true},     // one expert takes all
                      Case{130, 48, 20, 10, 24, true, true, ops::WeightType::BF16, false},  // top-10 like the 80B
                      // Quantised experts (hidden and expert sizes multiples of 32).
                      Case{1, 96, 8, 2, 64, true, true, ops::WeightType::Q4, false},
                      Case{37, 64, 9, 3, 32, true, true, ops::WeightType::Q8, false},
                      // 8 tokens over 6 experts: the decode kernel with experts holding all 8 rows.
                      Case{8, 64, 6, 3, 96, true, true, ops::WeightType::Q8, false},
                      Case{8, 67, 6, 4, 33, false, true, ops::WeightType::BF16, false},
                      // Up to 128 tokens take the decode kernel, its experts' rows in passes of 4.
                      Case{32, 96, 5, 2, 64, true, true, ops::WeightType::Q4, false},
                      Case{33, 64, 7, 2, 40, true, true, ops::WeightType::F16, false},
                      Case{40, 96, 10, 2, 64, true, true, ops::WeightType::Q4, false},
                      Case{128, 64, 9, 3, 32, true, true, ops::WeightType::Q8, true},
                      // 129 and up: the tiles (matrix-unit tiles where the device has them).
                      Case{129, 64, 12, 3, 40, true, false, ops::WeightType::F16, false},  // no shared
                      Case{150, 33, 10, 2, 17, true, true, ops::WeightType::BF16, true},   // one expert takes all
                      // ~8 rows per expert: the 8-row tile.
                      Case{160, 64, 40, 2, 48, true, false, ops::WeightType::BF16, false},
                      Case{160, 96, 40, 2, 64, true, true, ops::WeightType::Q4, false},  // tiled q4
                      // Several column tiles of the matrix-unit kernel (128 wide), odd K in down.
                      Case{140, 160, 6, 2, 136, true, true, ops::WeightType::BF16, false},
                      // Down columns past one matrix-unit down tile (256 wide), q4 (multiples of 32).
                      Case{140, 288, 6, 2, 64, true, true, ops::WeightType::Q4, false},
                      // ~67 rows per expert: 32-row tiles, several per expert.
                      Case{200, 160, 6, 2, 96, true, true, ops::WeightType::Q8, false}),
    [](const auto& info) {
      const Case& c = info.param;
      return "t" + std::to_string(c.tokens) + "h" + std::to_string(c.hidden) + "e" + std::to_string(c.experts) + "k" +
             std::to_string(c.top_k) + "i" + std::to_string(c.expert_dim) + "_" + ops::weight_type_name(c.type) +
             (c.skewed ? "_skewed" : "");
    });

// Batch invariance of the decode expert kernel: the last token's MoE output is bitwise the same
// whether its experts hold only its row or rows of up to 127 other tokens (several passes of the
// kernel), for each weight type. Routing favours experts 1 and 2 so that they fill up. On GPU
// shapes 1, 2 and 6 tokens take the direct path (the combine inside the down product) and 37
// and 128 the grouped one (moe_combine.comp): the same bits.
TEST_F(MoeOpTest, ExpertGemvRowsDoNotDependOnTheOtherRows) {
  const uint32_t H = 96, E = 12, K = 3, I = 64, most = ops::kExpertGemvMaxTokens;
  for (const ops::WeightType type :
       {ops::WeightType::BF16, ops::WeightType::F32, ops::WeightType::Q8, ops::WeightType::Q4}) {
    // Logit column E is the shared expert's gate.
    auto x = random_floats(size_t(most) * H, 61, -1, 1), logits = random_floats(size_t(most) * (E + 1), 62, -3, 3),
         shared = random_floats(size_t(most) * H, 65, -1, 1);
    for (uint32_t t = 0; t < most; ++t) logits[t * (E + 1) + 1] += 4, logits[t * (E + 1) + 2] += 4;
    auto gate_up = random_floats(size_t(E) * 2 * I * H, 63, -0.2f, 0.2f),
         down = random_floats(size_t(E) * H * I, 64, -0.2f, 0.2f);
    Allocation dgu = upload_words(encode_weights(gate_up, type)), ddn = upload_words(encode_weights(down, type));
    std::vector<std::vector<float>> last_rows;
    for (const uint32_t tokens : {1u, 2u, 6u, 37u, most}) {
      const ops::MoeShape s{
          .tokens = tokens, .hidden = H, .experts = E, .top_k = K, .expert_dim = I, .normalise = true};
      std::vector<float> xs(x.end() - ptrdiff_t(tokens) * H, x.end()),
          ls(logits.end() - ptrdiff_t(tokens) * (E + 1), logits.end()),
          ss(shared.end() - ptrdiff_t(tokens) * H, shared.end());
      Allocation dx = upload(xs), dl = upload(ls), ds = upload(ss), dout = poisoned(size_t(tokens) * H);
      const MoeScratchBuffers scratch = poisoned_scratch(s);
      run([&](CommandBuffer& cb) {
        ops::record_moe(pipelines(), cb,
                        {.x = dx.range(),
                         .logits = dl.range(),
                         .logit_stride = E + 1,
                         .gate_up = dgu.range(),
                         .down = ddn.range(),
                         .type = type,
                         .shared_out = ds.range(),
                         .shared_logit_column = E,
                         .out = dout.range(),
                         .shape = s},
                        scratch.ranges());
      });
      const auto out = download(dout, size_t(tokens) * H);
      last_rows.emplace_back(out.end() - H, out.end());
    }
    for (size_t i = 1; i < last_rows.size(); ++i)
      for (uint32_t d = 0; d < H; ++d)
        ASSERT_EQ(last_rows[i][d], last_rows[0][d]) << ops::weight_type_name(type) << " run " << i << " output " << d;
  }
}

// The texel-read variant of the CPU shapes' expert GEMV (shaders/texel_reads.glsl) gives the bits
// of the buffer-address one, for every weight type and 1, 6 and 37 tokens (experts holding one
// row and several); the same ranges without their views take the buffer-address kernel.
TEST_F(MoeOpTest, TexelReadsGiveTheBitsOfAddressReads) {
  if (!rt().device.texel_reads())
    GTEST_SKIP() << "texel reads are off (no push descriptors, GPU shapes, or Q3N_TEXEL_READS=0)";
  const CpuShapesForThisScope cpu_shapes(pipelines());
  const uint32_t H = 96, E = 12, K = 3, I = 64;
  for (const ops::WeightType type :
       {ops::WeightType::BF16, ops::WeightType::F32, ops::WeightType::Q8, ops::WeightType::Q4})
    for (const uint32_t tokens : {1u, 6u, 37u}) {
      const ops::MoeShape s{
          .tokens = tokens, .hidden = H, .experts = E, .top_k = K, .expert_dim = I, .normalise = true};
      auto gate_up_w = random_floats(size_t(E) * 2 * I * H, 73, -0.2f, 0.2f),
           down_w = random_floats(size_t(E) * H * I, 74, -0.2f, 0.2f);
      Allocation dx = upload(random_floats(size_t(tokens) * H, 71, -1, 1)),
                 dl = upload(random_floats(size_t(tokens) * E, 72, -3, 3)),
                 dgu = upload_words(encode_weights(gate_up_w, type)), ddn = upload_words(encode_weights(down_w, type));
      std::vector<std::vector<float>> outputs;
      for (const bool texels : {true, false}) {
        Allocation dout = poisoned(size_t(tokens) * H);
        const MoeScratchBuffers scratch = poisoned_scratch(s);
        ops::MoeScratch ranges = scratch.ranges();
        BufferRange x = dx.range(), gate_up = dgu.range(), down = ddn.range();
        if (!texels) x.texels = gate_up.texels = down.texels = ranges.h.texels = nullptr;
        run([&](CommandBuffer& cb) {
          ops::record_moe(pipelines(), cb,
                          {.x = x,
                           .logits = dl.range(),
                           .logit_stride = E,
                           .gate_up = gate_up,
                           .down = down,
                           .type = type,
                           .out = dout.range(),
                           .shape = s},
                          ranges);
        });
        outputs.push_back(download(dout, size_t(tokens) * H));
      }
      EXPECT_TRUE(pipelines().built("moe_expert_gemv_rowwise_texel"));
      for (size_t i = 0; i < outputs[0].size(); ++i)
        ASSERT_EQ(outputs[0][i], outputs[1][i])
            << ops::weight_type_name(type) << ", " << tokens << " tokens, output " << i;
    }
}

// NaN and +Inf router logits (corrupt weights, fp16 overflow): routing raises the status word and
// keeps every expert id in range, finite rows are routed as before, and finite logits leave the
// status word alone; with 5 tokens (a routing workgroup per token) and 1 (moe_route_group.comp).
TEST_F(MoeOpTest, NonFiniteRouterLogitsAreFlaggedAndContained) {
  for (const uint32_t tokens : {5u, 1u}) {
    const uint32_t H = 64, E = 9, K = 3, I = 32;
    const ops::MoeShape s{.tokens = tokens, .hidden = H, .experts = E, .top_k = K, .expert_dim = I, .normalise = true};
    auto x = random_floats(size_t(tokens) * H, 51, -1, 1);
    auto gate_up = random_floats(size_t(E) * 2 * I * H, 52, -0.2f, 0.2f),
         down = random_floats(size_t(E) * H * I, 53, -0.2f, 0.2f);
    for (const bool poison : {false, true}) {
      auto logits = random_floats(size_t(tokens) * E, 54, -3, 3);
      if (poison) {
        const uint32_t nan_row = tokens > 1 ? 1 : 0;
        for (uint32_t e = 0; e < E; ++e) logits[nan_row * E + e] = std::nanf("");    // a row of NaN
        if (tokens > 3) logits[3 * E + 4] = std::numeric_limits<float>::infinity();  // one +Inf
        if (tokens > 4) logits[4 * E + 2] = std::nanf("");                           // one NaN
      }
      Allocation dx = upload(x), dl = upload(logits), dgu = upload(gate_up), ddn = upload(down),
                 dout = poisoned(size_t(tokens) * H), status = upload_words({0});
      const MoeScratchBuffers scratch = poisoned_scratch(s);
      run([&](CommandBuffer& cb) {
        ops::record_moe(pipelines(), cb,
                        {.x = dx.range(),
                         .logits = dl.range(),
                         .logit_stride = E,
                         .gate_up = dgu.range(),
                         .down = ddn.range(),
                         .type = ops::WeightType::F32,
                         .out = dout.range(),
                         .shape = s,
                         .status = status.range()},
                        scratch.ranges());
      });
      EXPECT_EQ(download_words(status, 1)[0], poison ? 1u : 0u);
      const auto got = download_words(scratch.ids, size_t(tokens) * K);
      for (uint32_t i = 0; i < got.size(); ++i) ASSERT_LT(got[i], E) << "id " << i << (poison ? " (poisoned)" : "");
      // Row 0 is finite in both runs: the same experts.
      if (poison && tokens > 3) {
        EXPECT_NE(got[3 * K], 4u) << "the +Inf logit was routed as -inf";
      }
    }
  }
}

// Routing alone, at the 80B's width and past it: 300 and 512 experts (not multiples of any
// subgroup size's share), top-10, with tied logits, against a double reference: ids in order of
// probability with ties to the lower id, weights renormalised (or not) within 1e-6 relative (fp32
// exp and sums of <= 512 terms: ~512 ulps), and the grouping of the assignments by expert; for 1
// token (moe_route_group.comp on CPU shapes), 6 (moe_route.comp, then moe_group.comp; GPU shapes
// route it directly, without grouping) and 20 (grouped on both).
TEST_F(MoeOpTest, RoutingPicksTopKWithTiesToTheLowerId) {
  for (const uint32_t E : {300u, 512u})
    for (const uint32_t tokens : {1u, 6u, 20u})
      for (const bool normalise : {true, false}) {
        const uint32_t H = 32, K = 10, I = 32, stride = E + 3;
        const ops::MoeShape s{
            .tokens = tokens, .hidden = H, .experts = E, .top_k = K, .expert_dim = I, .normalise = normalise};
        auto logits = random_floats(size_t(tokens) * stride, 71 + E, -4, 4);
        for (uint32_t t = 0; t < tokens; ++t) {  // ties among the top: equal logits at scattered ids
          for (const uint32_t e : {E - 1, 7u, 130u, 33u}) logits[t * stride + e] = 5.0f;
          for (const uint32_t e : {200u + t, 9u, 64u}) logits[t * stride + e] = 4.5f;
        }
        Allocation dx = upload(random_floats(size_t(tokens) * H, 72, -1, 1)), dl = upload(logits),
                   dgu = upload(random_floats(size_t(E) * 2 * I * H, 73, -0.2f, 0.2f)),
                   ddn = upload(random_floats(size_t(E) * H * I, 74, -0.2f, 0.2f)), dout = poisoned(size_t(tokens) * H);
        const MoeScratchBuffers scratch = poisoned_scratch(s);
        const ops::MoeArgs args{.x = dx.range(),
                                .logits = dl.range(),
                                .logit_stride = stride,
                                .gate_up = dgu.range(),
                                .down = ddn.range(),
                                .type = ops::WeightType::F32,
                                .out = dout.range(),
                                .shape = s};
        run([&](CommandBuffer& cb) { ops::record_moe(pipelines(), cb, args, scratch.ranges()); });
        const auto ids = download_words(scratch.ids, size_t(tokens) * K);
        const auto weights = download(scratch.weights, size_t(tokens) * K);
        for (uint32_t t = 0; t < tokens; ++t) {
          std::vector<double> p(E);
          double m = -1e300, sum = 0;
          for (uint32_t e = 0; e < E; ++e) m = std::max(m, double(logits[t * stride + e]));
          for (uint32_t e = 0; e < E; ++e) sum += (p[e] = std::exp(double(logits[t * stride + e]) - m));
          std::vector<uint32_t> order(E);
          std::iota(order.begin(), order.end(), 0);
          std::stable_sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) { return p[a] > p[b]; });
          double chosen = 0;
          for (uint32_t j = 0; j < K; ++j) chosen += p[order[j]] / sum;
          for (uint32_t j = 0; j < K; ++j) {
            const std::string at = "experts " + std::to_string(E) + " token " + std::to_string(t) + " choice " +
                                   std::to_string(j) + (normalise ? "" : " (not renormalised)");
            ASSERT_EQ(ids[t * K + j], order[j]) << at;
            const double want = p[order[j]] / sum / (normalise ? chosen : 1.0);
            EXPECT_NEAR(weights[t * K + j], want, 1e-6 * want) << at;
          }
        }
        if (ops::moe_skips_grouping(pipelines(), args, scratch.ranges())) continue;
        // The grouping the expert kernels read, against the ids: offsets are the exclusive prefix
        // sums of the assignments per expert, `sorted` holds each expert's assignments in its span,
        // and the live list names the experts with any, ascending.
        const std::string at = "experts " + std::to_string(E) + ", " + std::to_string(tokens) + " token(s)";
        std::vector<uint32_t> per_expert(E, 0);
        for (const uint32_t id : ids) ++per_expert[id];
        const auto offsets = download_words(scratch.offsets, E + 1),
                   sorted = download_words(scratch.sorted, ids.size());
        const auto live = download_words(scratch.active, E + 1);
        uint32_t below = 0, listed = 0;
        for (uint32_t e = 0; e <= E; ++e) {
          ASSERT_EQ(offsets[e], below) << at << ": offset of expert " << e;
          if (e == E) break;
          if (per_expert[e]) {
            ASSERT_EQ(live[1 + listed], e) << at << ": live expert " << listed;
            ++listed;
          }
          for (uint32_t r = offsets[e]; r < offsets[e] + per_expert[e]; ++r)
            ASSERT_EQ(ids[sorted[r]], e) << at << ": sorted entry " << r;
          below += per_expert[e];
        }
        EXPECT_EQ(live[0], listed) << at;
      }
}

class SwigluTest : public GpuTest {};
TEST_F(SwigluTest, MatchesReference) {
  const uint32_t rows = 5, n = 300;
  auto x = random_floats(size_t(rows) * 2 * n, 31, -4, 4);
  Allocation dx = upload(x), dh = poisoned(size_t(rows) * n);
  run([&](CommandBuffer& cb) { ops::record_swiglu(pipelines(), cb, dx.range(), dh.range(), rows, n); });
  std::vector<double> want(size_t(rows) * n);
  for (uint32_t r = 0; r < rows; ++r)
    for (uint32_t i = 0; i < n; ++i) want[r * n + i] = silu(x[r * 2 * n + i]) * x[r * 2 * n + n + i];
  EXPECT_TRUE(all_close(download(dh, want.size()), want, 1e-6, 1e-6));  // one fp32 exp, divide, multiply
}

}  // namespace
}  // namespace q3n::test
