// shaders/delta_rule_recurrent.comp against a double-precision recurrence (spec §3.4), from a
// non-zero state, over several tokens and sequences, for Hv/Hk of 1, 2 and 3 and dk != dv.
#include <cmath>

#include "runtime/ops/delta_rule.h"
#include "tests/support/gpu_test.h"

namespace q3n::test {
namespace {

struct Case {
  uint32_t batch, tokens, key_heads, value_heads, dk, dv;
};

class DeltaRuleTest : public GpuTest, public ::testing::WithParamInterface<Case> {};

// Realistic inputs: q, k unit-norm (q then scaled by dk^-1/2), beta in (0, 1), g < 0.
void make_inputs(const Case& c, std::vector<float>& q, std::vector<float>& k, std::vector<float>& v,
                 std::vector<float>& g, std::vector<float>& beta, std::vector<float>& state) {
  const size_t bt = size_t(c.batch) * c.tokens;
  q = random_floats(bt * c.key_heads * c.dk, 41);
  k = random_floats(bt * c.key_heads * c.dk, 42);
  for (size_t h = 0; h < bt * c.key_heads; ++h) {
    double nq = 0, nk = 0;
    for (uint32_t i = 0; i < c.dk; ++i) {
      nq += double(q[h * c.dk + i]) * q[h * c.dk + i];
      nk += double(k[h * c.dk + i]) * k[h * c.dk + i];
    }
    for (uint32_t i = 0; i < c.dk; ++i) {
      q[h * c.dk + i] = float(q[h * c.dk + i] / std::sqrt(nq) / std::sqrt(double(c.dk)));
      k[h * c.dk + i] = float(k[h * c.dk + i] / std::sqrt(nk));
    }
  }
  v = random_floats(bt * c.value_heads * c.dv, 43, -2, 2);
  g = random_floats(bt * c.value_heads, 44, -2.0f, -0.01f);
  beta = random_floats(bt * c.value_heads, 45, 0.05f, 0.95f);
  state = random_floats(size_t(c.batch) * c.value_heads * c.dk * c.dv, 46, -0.5f, 0.5f);
}

TEST_P(DeltaRuleTest, MatchesDoubleRecurrence) {
  const Case c = GetParam();
  std::vector<float> q, k, v, g, beta, state;
  make_inputs(c, q, k, v, g, beta, state);
  Allocation dq = upload(q), dk = upload(k), dv = upload(v), dg = upload(g), dbeta = upload(beta),
             dstate = upload(state), dout = poisoned(size_t(c.batch) * c.tokens * c.value_heads * c.dv);
  run([&](CommandBuffer& cb) {
    ops::record_delta_rule_recurrent(pipelines(), cb,
                                     {dq.range(), dk.range(), dv.range(), dg.range(), dbeta.range(), dstate.range(),
                                      dout.range(), c.batch, c.tokens, c.key_heads, c.value_heads, c.dk, c.dv});
  });

  std::vector<double> S(state.begin(), state.end());
  std::vector<double> out(size_t(c.batch) * c.tokens * c.value_heads * c.dv);
  const uint32_t group = c.value_heads / c.key_heads;
  for (uint32_t b = 0; b < c.batch; ++b)
    for (uint32_t j = 0; j < c.value_heads; ++j) {
      double* s = &S[(size_t(b) * c.value_heads + j) * c.dk * c.dv];
      for (uint32_t t = 0; t < c.tokens; ++t) {
        const size_t bt = size_t(b) * c.tokens + t;
        const float* kt = &k[(bt * c.key_heads + j / group) * c.dk];
        const float* qt = &q[(bt * c.key_heads + j / group) * c.dk];
        const float* vt = &v[(bt * c.value_heads + j) * c.dv];
        const double decay = std::exp(double(g[bt * c.value_heads + j])), bb = beta[bt * c.value_heads + j];
        for (size_t e = 0; e < size_t(c.dk) * c.dv; ++e) s[e] *= decay;
        for (uint32_t col = 0; col < c.dv; ++col) {
          double kv = 0;
          for (uint32_t i = 0; i < c.dk; ++i) kv += s[i * c.dv + col] * kt[i];
          const double u = bb * (vt[col] - kv);
          for (uint32_t i = 0; i < c.dk; ++i) s[i * c.dv + col] += kt[i] * u;
        }
        for (uint32_t col = 0; col < c.dv; ++col) {
          double o = 0;
          for (uint32_t i = 0; i < c.dk; ++i) o += s[i * c.dv + col] * qt[i];
          out[(bt * c.value_heads + j) * c.dv + col] = o;
        }
      }
    }
  // Each step does O(dk) fp32 operations per element and the update is contractive (decay < 1,
  // beta in (0,1), |k| = 1), so rounding grows at most linearly in tokens: tokens * dk * 2^-24
  // relative to the state's scale (~1 here). The bound below is that, with a floor.
  const double tol = std::max(1e-5, 2.0 * c.tokens * c.dk * std::ldexp(1.0, -24));
  EXPECT_TRUE(all_close(download(dout, out.size()), out, tol, 0)) << "outputs";
  EXPECT_TRUE(all_close(download(dstate, S.size()), S, tol, 0)) << "final state";
}

INSTANTIATE_TEST_SUITE_P(Shapes, DeltaRuleTest,
                         ::testing::Values(Case{1, 1, 2, 4, 32, 16},    // Hv/Hk = 2, dk != dv, one token
                                           Case{2, 7, 3, 3, 40, 24},    // Hv/Hk = 1, two sequences
                                           Case{1, 33, 1, 3, 16, 70},   // Hv/Hk = 3, dv > workgroup
                                           Case{3, 2, 2, 4, 128, 128},  // the 80B head size
                                           Case{1, 40, 2, 4, 130, 17}), // dk not a multiple of 64
                         [](const auto& info) {
                           const Case& c = info.param;
                           return "b" + std::to_string(c.batch) + "t" + std::to_string(c.tokens) + "hk" +
                                  std::to_string(c.key_heads) + "hv" + std::to_string(c.value_heads) + "dk" +
                                  std::to_string(c.dk) + "dv" + std::to_string(c.dv);
                         });

}  // namespace
}  // namespace q3n::test
