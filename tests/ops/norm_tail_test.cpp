// shaders/norm_tail.glsl (ops::NormTail): a product that writes a residual branch adds it into
// the residual stream and normalises the sum in its last workgroup. Each case is checked bitwise
// against the same product followed by a barrier and rms_norm.comp (the fallback every other
// kernel takes, and the path of steps of other sizes: batch invariance needs the same bits), the
// norm against a double reference, and the counters left at zero for the next replay. Where the
// kernel takes the tail itself, the step must have no norm dispatch.
#include <cmath>
#include <string>
#include <vector>

#include "runtime/ops/linear.h"
#include "runtime/ops/moe.h"
#include "runtime/ops/rms_norm.h"
#include "tests/support/gpu_test.h"
#include "tests/support/numeric.h"

namespace q3n::test {
namespace {

// The residual stream before and after, the norm's weight and the normalised rows.
struct TailBuffers {
  Allocation residual, weight, out, counters;
  ops::NormTail tail(bool zero_centred) const {
    return {.residual = residual.range(),
            .weight = weight.range(),
            .out = out.range(),
            .counters = counters.range(),
            .eps = 1e-6f,
            .zero_centred = zero_centred};
  }
};

class NormTailTest : public GpuTest {
 protected:
  TailBuffers buffers(const std::vector<float>& residual, const std::vector<float>& weight) {
    return {upload(residual), upload(weight), poisoned(residual.size()),
            upload_words(std::vector<uint32_t>(ops::kNormTailCounters, 0))};
  }
  // `tailed` and `separate` (the product, then record_norm_after) agree bit for bit; the norm of
  // the branch plus the old residual matches a double reference; the counters are back at zero.
  void expect_same(const TailBuffers& tailed, const TailBuffers& separate, const Allocation& branch,
                   const std::vector<float>& residual, const std::vector<float>& weight, uint32_t rows, uint32_t n,
                   bool zero_centred) {
    const size_t count = size_t(rows) * n;
    const auto got_residual = download(tailed.residual, count), got = download(tailed.out, count);
    EXPECT_EQ(got_residual, download(separate.residual, count)) << "residual stream: the norm kernel's bits";
    EXPECT_EQ(got, download(separate.out, count)) << "normalised rows: the norm kernel's bits";
    EXPECT_EQ(download_words(tailed.counters, ops::kNormTailCounters), std::vector<uint32_t>(ops::kNormTailCounters, 0))
        << "counters left for the next replay";
    const auto y = download(branch, count);
    std::vector<double> sum(count), want(count);
    for (uint32_t r = 0; r < rows; ++r) {
      double squares = 0;
      for (uint32_t i = 0; i < n; ++i) {
        const size_t at = size_t(r) * n + i;
        sum[at] = double(y[at]) + residual[at];
        squares += sum[at] * sum[at];
      }
      const double scale = 1.0 / std::sqrt(squares / n + 1e-6);
      for (uint32_t i = 0; i < n; ++i) {
        const size_t at = size_t(r) * n + i;
        want[at] = sum[at] * scale * ((zero_centred ? 1.0 : 0.0) + weight[i]);
      }
    }
    // One fp32 add per sum; the norm's tolerance as rms_norm_test.cpp's (a sum of n squares in
    // fp32: ~n 2^-24 relative; 2e-5 is ~100x that at n = 4099).
    EXPECT_TRUE(all_close(got_residual, sum, 1e-6, 1e-6));
    EXPECT_TRUE(all_close(got, want, 1e-6, 2e-5));
  }
};

// The GEMV's tail (out_proj, o_proj): 1 and 2 rows take it; 3 rows are normalised by the norm
// kernel after a barrier. Outputs n not a multiple of the GEMV's rows per workgroup nor of the
// norm's 256 lanes; 4100 takes rms_norm_row.glsl's uncached loop.
TEST_F(NormTailTest, GemvTailGivesTheNormKernelsBits) {
  for (const ops::WeightType type : {ops::WeightType::BF16, ops::WeightType::Q4})
    for (const uint32_t n : {77u, 2051u, 4100u})
      for (const uint32_t tokens : {1u, 2u, 3u})
        for (const bool zero_centred : {true, false}) {
          const uint32_t k = type == ops::WeightType::Q4 ? 128 : 96;
          SCOPED_TRACE(std::string(ops::weight_type_name(type)) + " n " + std::to_string(n) + " tokens " +
                       std::to_string(tokens) + (zero_centred ? " zero-centred" : " plain"));
          const auto x = random_floats(size_t(tokens) * k, 81, -1, 1);
          auto w = random_floats(size_t(n) * k, 82, -0.5f, 0.5f);
          const auto words = encode_weights(w, type);
          const auto residual = random_floats(size_t(tokens) * n, 83, -4, 4);
          const auto norm_w = zero_centred ? random_floats(n, 84, -0.5f, 0.5f) : random_floats(n, 84, 0.5f, 1.5f);
          Allocation dx = upload(x), dw = upload_words(words), y_tailed = poisoned(size_t(tokens) * n),
                     y_separate = poisoned(size_t(tokens) * n);
          const TailBuffers tailed = buffers(residual, norm_w), separate = buffers(residual, norm_w);
          const ops::LinearArgs product{
              .x = dx.range(), .weight = dw.range(), .type = type, .tokens = tokens, .k = k, .n = n};
          uint32_t dispatches = 0;
          run([&](CommandBuffer& cb) {
            ops::LinearArgs with_tail = product;
            with_tail.y = y_tailed.range();
            with_tail.norm_tail = tailed.tail(zero_centred);
            ops::record_linear(pipelines(), cb, with_tail);
            dispatches = cb.dispatch_count();
            ops::LinearArgs plain = product;
            plain.y = y_separate.range();
            ops::record_linear(pipelines(), cb, plain);
            ops::record_norm_after(pipelines(), cb, y_separate.range(), separate.tail(zero_centred), tokens, n);
          });
          const bool in_kernel = !pipelines().cpu_shapes() && tokens <= ops::kNormTailGemvMaxTokens;
          EXPECT_EQ(dispatches, in_kernel ? 1u : 2u) << "the norm inside the GEMV where it takes it";
          EXPECT_EQ(download(y_tailed, size_t(tokens) * n), download(y_separate, size_t(tokens) * n));
          expect_same(tailed, separate, y_tailed, residual, norm_w, tokens, n, zero_centred);
        }
}

// The combining down product's tail (the MoE of a direct step): a counter per token, 1, 3 and 16
// tokens; 17 tokens take the grouped path and the norm kernel after it.
TEST_F(NormTailTest, CombiningDownProductTailGivesTheNormKernelsBits) {
  struct Case {
    ops::WeightType type;
    uint32_t hidden, experts, top_k, expert_dim;
  };
  for (const Case c : {Case{ops::WeightType::BF16, 300, 20, 10, 24}, Case{ops::WeightType::Q4, 2080, 12, 4, 64}})
    for (const uint32_t tokens : {1u, 3u, 16u, 17u}) {
      SCOPED_TRACE(std::string(ops::weight_type_name(c.type)) + " hidden " + std::to_string(c.hidden) + " tokens " +
                   std::to_string(tokens));
      const uint32_t H = c.hidden, E = c.experts, I = c.expert_dim, stride = E + 1;
      const ops::MoeShape s{
          .tokens = tokens, .hidden = H, .experts = E, .top_k = c.top_k, .expert_dim = I, .normalise = true};
      const auto x = random_floats(size_t(tokens) * H, 91, -1, 1),
                 logits = random_floats(size_t(tokens) * stride, 92, -3, 3),
                 shared = random_floats(size_t(tokens) * H, 95, -1, 1);
      auto gate_up = random_floats(size_t(E) * 2 * I * H, 93, -0.2f, 0.2f),
           down = random_floats(size_t(E) * H * I, 94, -0.2f, 0.2f);
      const auto residual = random_floats(size_t(tokens) * H, 96, -4, 4);
      const auto norm_w = random_floats(H, 97, -0.5f, 0.5f);
      Allocation dx = upload(x), dl = upload(logits), ds = upload(shared),
                 dgu = upload_words(encode_weights(gate_up, c.type)), ddn = upload_words(encode_weights(down, c.type)),
                 out_tailed = poisoned(size_t(tokens) * H), out_separate = poisoned(size_t(tokens) * H);
      const ops::MoeScratchBytes need = ops::moe_scratch_bytes(s);
      std::vector<Allocation> scratch_buffers;
      const auto scratch = [&] {
        for (const uint64_t bytes : {need.ids, need.weights, need.offsets, need.sorted, need.active, need.h, need.y})
          scratch_buffers.push_back(poisoned(bytes / 4));
        const size_t at = scratch_buffers.size() - 7;
        return ops::MoeScratch{.ids = scratch_buffers[at].range(),
                               .weights = scratch_buffers[at + 1].range(),
                               .offsets = scratch_buffers[at + 2].range(),
                               .sorted = scratch_buffers[at + 3].range(),
                               .active = scratch_buffers[at + 4].range(),
                               .h = scratch_buffers[at + 5].range(),
                               .y = scratch_buffers[at + 6].range()};
      };
      const ops::MoeScratch scratch_tailed = scratch(), scratch_separate = scratch();
      const TailBuffers tailed = buffers(residual, norm_w), separate = buffers(residual, norm_w);
      const ops::MoeArgs moe{.x = dx.range(),
                             .logits = dl.range(),
                             .logit_stride = stride,
                             .gate_up = dgu.range(),
                             .down = ddn.range(),
                             .type = c.type,
                             .shared_out = ds.range(),
                             .shared_logit_column = E,
                             .shape = s};
      uint32_t tailed_dispatches = 0, plain_dispatches = 0;
      run([&](CommandBuffer& cb) {
        ops::MoeArgs with_tail = moe;
        with_tail.out = out_tailed.range();
        with_tail.norm_tail = tailed.tail(true);
        ops::record_moe(pipelines(), cb, with_tail, scratch_tailed);
        tailed_dispatches = cb.dispatch_count();
        ops::MoeArgs plain = moe;
        plain.out = out_separate.range();
        ops::record_moe(pipelines(), cb, plain, scratch_separate);
        plain_dispatches = cb.dispatch_count() - tailed_dispatches;
        ops::record_norm_after(pipelines(), cb, out_separate.range(), separate.tail(true), tokens, H);
      });
      const bool in_kernel = !pipelines().cpu_shapes() && ops::moe_skips_grouping(pipelines(), moe, scratch_tailed);
      EXPECT_EQ(tailed_dispatches, plain_dispatches + (in_kernel ? 0u : 1u))
          << "the norm inside the down product where it takes it";
      if (tokens <= ops::kDirectExpertMaxTokens && !pipelines().cpu_shapes()) {
        EXPECT_TRUE(in_kernel) << "a direct step: the tail ran inside the down product";
      }
      EXPECT_EQ(download(out_tailed, size_t(tokens) * H), download(out_separate, size_t(tokens) * H));
      expect_same(tailed, separate, out_tailed, residual, norm_w, tokens, H, true);
    }
}

}  // namespace
}  // namespace q3n::test
