// The Gated DeltaNet core against double-precision references of spec §3.3, §3.4 and §6:
// delta_prepare (l2 norms, q scale, gates), the recurrent rule (also taking unprepared inputs and
// preparing them itself), and the chunked rule, which must equal the recurrence from a non-zero
// state (including 200 tokens = 3 chunks + a remainder).
#include <cmath>

#include "runtime/ops/delta_rule.h"
#include "tests/support/gpu_test.h"

namespace q3n::test {
namespace {

using ops::DeltaShape;

struct Inputs {
  std::vector<float> qkv, gates, state;
  std::vector<uint32_t> seqs;
  // Unprepared inputs (DeltaRuleArgs::raw_inputs): qkv holds q, k as the conv leaves them, gates
  // is unused, and these give g and beta.
  bool raw = false;
  std::vector<float> ba, a_log, dt_bias;
  // The gated norm in the rule (DeltaRuleArgs::gated_norm): z [rows, Hv, dv] and the weight [dv].
  bool gated_norm = false;
  std::vector<float> z, norm_weight;
};
constexpr float kNormEps = 1e-6f;

// Realistic prepared inputs: q, k unit-norm (q scaled by dk^-1/2), beta in (0, 1), g < 0, a
// non-zero state in `batch + 1` slots with sequence b in slot batch - b.
Inputs make_inputs(const DeltaShape& s, uint64_t seed) {
  Inputs in;
  const uint32_t width = s.qkv_width();
  in.qkv = random_floats(s.rows() * width, seed, -1, 1);
  for (uint64_t r = 0; r < s.rows(); ++r)
    for (uint32_t h = 0; h < 2 * s.key_heads; ++h) {
      float* x = &in.qkv[r * width + h * s.dk];
      double norm = 0;
      for (uint32_t i = 0; i < s.dk; ++i) norm += double(x[i]) * x[i];
      const double scale = 1.0 / std::sqrt(norm) / (h < s.key_heads ? std::sqrt(double(s.dk)) : 1.0);
      for (uint32_t i = 0; i < s.dk; ++i) x[i] = float(x[i] * scale);
    }
  in.gates = random_floats(s.rows() * 2 * s.value_heads, seed + 1, 0.05f, 0.95f);  // beta
  const auto g = random_floats(s.rows() * s.value_heads, seed + 2, -1.5f, -0.01f);
  for (uint64_t r = 0; r < s.rows(); ++r)
    for (uint32_t j = 0; j < s.value_heads; ++j) in.gates[r * 2 * s.value_heads + j] = g[r * s.value_heads + j];
  in.state = random_floats(uint64_t(s.batch + 1) * s.value_heads * s.dk * s.dv, seed + 3, -0.5f, 0.5f);
  for (uint32_t b = 0; b < s.batch; ++b) in.seqs.insert(in.seqs.end(), {s.batch - b, 0});
  return in;
}

// Spec §3.3's preparation in double: q, k l2-normalised (q scaled by dk^-1/2), g and beta.
void reference_prepare(const DeltaShape& s, const std::vector<float>& qkv, const std::vector<float>& ba,
                       const std::vector<float>& a_log, const std::vector<float>& dt_bias, std::vector<double>& qkv_out,
                       std::vector<double>& gates_out) {
  const uint32_t width = s.qkv_width(), hv = s.value_heads;
  qkv_out.assign(qkv.begin(), qkv.end());
  gates_out.assign(s.rows() * 2 * hv, 0.0);
  for (uint64_t r = 0; r < s.rows(); ++r) {
    for (uint32_t h = 0; h < 2 * s.key_heads; ++h) {
      double sum = 0;
      for (uint32_t i = 0; i < s.dk; ++i) sum += double(qkv[r * width + h * s.dk + i]) * qkv[r * width + h * s.dk + i];
      const double scale = 1.0 / std::sqrt(sum + 1e-6) / (h < s.key_heads ? std::sqrt(double(s.dk)) : 1.0);
      for (uint32_t i = 0; i < s.dk; ++i) qkv_out[r * width + h * s.dk + i] *= scale;
    }
    for (uint32_t j = 0; j < hv; ++j) {
      const double b = ba[r * 2 * hv + j], a = ba[r * 2 * hv + hv + j] + double(dt_bias[j]);
      const double softplus = a > 20 ? a : std::log1p(std::exp(a));
      gates_out[r * 2 * hv + j] = -std::exp(double(a_log[j])) * softplus;
      gates_out[r * 2 * hv + hv + j] = 1.0 / (1.0 + std::exp(-b));
    }
  }
}

// Unprepared inputs: q, k with norms from ~0.5 to ~5, b and a spread over the gates' useful range
// (A = exp(A_log) in (1, 5), so decays from ~0.99 down to ~e^-15).
Inputs make_raw_inputs(const DeltaShape& s, uint64_t seed) {
  Inputs in = make_inputs(s, seed);
  in.raw = true;
  in.qkv = random_floats(in.qkv.size(), seed + 4, -1.5f, 1.5f);
  in.gates.assign(in.gates.size(), std::nanf(""));  // unused
  in.ba = random_floats(s.rows() * 2 * s.value_heads, seed + 5, -3, 3);
  in.a_log = random_floats(s.value_heads, seed + 6, 0.0f, 1.6f);
  in.dt_bias = random_floats(s.value_heads, seed + 7, -1, 1);
  return in;
}

// Spec §3.4 token by token in double (after reference_prepare where the inputs are raw). Returns
// outputs; `state` is updated. With `counts`, sequence b stops after counts[b] tokens (its later
// outputs stay 0).
std::vector<double> reference_rule(const DeltaShape& s, const Inputs& in, std::vector<double>& state,
                                   const std::vector<uint32_t>& counts = {}) {
  const uint32_t width = s.qkv_width(), group = s.value_heads / s.key_heads;
  std::vector<double> qkv(in.qkv.begin(), in.qkv.end()), gates(in.gates.begin(), in.gates.end());
  if (in.raw) reference_prepare(s, in.qkv, in.ba, in.a_log, in.dt_bias, qkv, gates);
  std::vector<double> out(s.rows() * s.value_heads * s.dv);
  for (uint32_t b = 0; b < s.batch; ++b)
    for (uint32_t j = 0; j < s.value_heads; ++j) {
      double* S = &state[(uint64_t(in.seqs[2 * b]) * s.value_heads + j) * s.dk * s.dv];
      for (uint32_t t = 0; t < (counts.empty() ? s.tokens : counts[b]); ++t) {
        const uint64_t row = uint64_t(b) * s.tokens + t;
        const double* q = &qkv[row * width + (j / group) * s.dk];
        const double* k = &qkv[row * width + (s.key_heads + j / group) * s.dk];
        const double* v = &qkv[row * width + 2 * s.key_heads * s.dk + j * s.dv];
        const double decay = std::exp(gates[row * 2 * s.value_heads + j]);
        const double beta = gates[row * 2 * s.value_heads + s.value_heads + j];
        for (uint64_t e = 0; e < uint64_t(s.dk) * s.dv; ++e) S[e] *= decay;
        for (uint32_t c = 0; c < s.dv; ++c) {
          double kv = 0;
          for (uint32_t i = 0; i < s.dk; ++i) kv += S[i * s.dv + c] * k[i];
          const double u = beta * (v[c] - kv);
          for (uint32_t i = 0; i < s.dk; ++i) S[i * s.dv + c] += k[i] * u;
        }
        for (uint32_t c = 0; c < s.dv; ++c) {
          double o = 0;
          for (uint32_t i = 0; i < s.dk; ++i) o += S[i * s.dv + c] * q[i];
          out[(row * s.value_heads + j) * s.dv + c] = o;
        }
      }
    }
  return out;
}

// Spec §3.5's gated norm of the rule's outputs in double: per value head of each row,
// o * rsqrt(mean(o^2) + eps) * w * silu(z). `smallest_rms` receives the least head RMS.
std::vector<double> reference_gated_norm(const DeltaShape& s, const Inputs& in, const std::vector<double>& out,
                                         double& smallest_rms) {
  std::vector<double> normed(out.size());
  smallest_rms = INFINITY;
  for (uint64_t head = 0; head < s.rows() * s.value_heads; ++head) {
    double squares = 0;
    for (uint32_t c = 0; c < s.dv; ++c) squares += out[head * s.dv + c] * out[head * s.dv + c];
    const double rms = std::sqrt(squares / s.dv + kNormEps);
    smallest_rms = std::min(smallest_rms, rms);
    for (uint32_t c = 0; c < s.dv; ++c) {
      const double z = in.z[head * s.dv + c];
      normed[head * s.dv + c] = out[head * s.dv + c] / rms * in.norm_weight[c] * (z / (1.0 + std::exp(-z)));
    }
  }
  return normed;
}

struct RuleResult {
  std::vector<float> out, state;
};

class DeltaRuleTest : public GpuTest, public ::testing::WithParamInterface<DeltaShape> {
 protected:
  // `updates` run in order on the same buffers (the recurrent form; Commit reads `counts`).
  RuleResult run_rule(const DeltaShape& s, const Inputs& in, bool chunked,
                      const std::vector<ops::StateUpdate>& updates = {ops::StateUpdate::Write},
                      const std::vector<uint32_t>& counts = {}) {
    Allocation dqkv = upload(in.qkv), dgates = upload(in.gates), dstate = upload(in.state),
               dseqs = upload_words(in.seqs), dout = poisoned(s.rows() * s.value_heads * s.dv),
               dcounts = upload_words(counts.empty() ? std::vector<uint32_t>{0} : counts),
               dba = upload(in.raw ? in.ba : in.gates), dalog = upload(in.raw ? in.a_log : in.gates),
               ddt = upload(in.raw ? in.dt_bias : in.gates), dz = upload(in.gated_norm ? in.z : in.gates),
               dnorm = upload(in.gated_norm ? in.norm_weight : in.gates);
    const ops::DeltaChunkScratchFloats need = ops::delta_chunk_scratch_floats(s);
    Allocation gamma = poisoned(need.gamma), w = poisoned(need.w), kc = poisoned(need.kc), u = poisoned(need.u),
               snapshots = poisoned(need.snapshots);
    ops::DeltaRuleArgs args{.qkv = dqkv.range(),
                            .gates = dgates.range(),
                            .state = dstate.range(),
                            .seqs = dseqs.range(),
                            .out = dout.range(),
                            .shape = s,
                            .accepted = dcounts.range(),
                            .raw_inputs = in.raw,
                            .ba = dba.range(),
                            .a_log = dalog.range(),
                            .dt_bias = ddt.range()};
    if (in.gated_norm)
      args.gated_norm = ops::DeltaRuleArgs::GatedNorm{.gate = dz.range(), .weight = dnorm.range(), .eps = kNormEps};
    run([&](CommandBuffer& cb) {
      if (chunked) {
        ops::record_delta_rule_chunked(
            pipelines(), cb, args,
            {.gamma = gamma.range(), .w = w.range(), .kc = kc.range(), .u = u.range(), .snapshots = snapshots.range()});
        return;
      }
      for (size_t i = 0; i < updates.size(); ++i) {
        if (i) cb.barrier();
        args.update = updates[i];
        ops::record_delta_rule_recurrent(pipelines(), cb, args);
      }
    });
    return {download(dout, s.rows() * s.value_heads * s.dv), download(dstate, in.state.size())};
  }
};

// Each step does O(dk) fp32 operations per state element (|S| <= ~0.5 here), and the update is
// contractive (decay < 1, beta in (0,1), |k| = 1: I - beta k k^T has norm <= 1), so earlier
// rounding is not amplified: the error stays at a few dk ulps of the state's scale. The chunked
// form sums up to 64 more terms through the triangular solve; it gets 4x. (Measured on lavapipe:
// <= 1.6e-7 against bounds of 2e-6..6e-5.)
double rule_tolerance(const DeltaShape& s, double factor) {
  return factor * std::max(1e-6, 2.0 * s.dk * std::ldexp(1.0, -24));
}

TEST_P(DeltaRuleTest, RecurrentMatchesDoubleRecurrence) {
  const DeltaShape s = GetParam();
  const Inputs in = make_inputs(s, 41);
  std::vector<double> state(in.state.begin(), in.state.end());
  const std::vector<double> out = reference_rule(s, in, state);
  const RuleResult got = run_rule(s, in, false);
  EXPECT_TRUE(all_close(got.out, out, rule_tolerance(s, 1), 0)) << "outputs";
  EXPECT_TRUE(all_close(got.state, state, rule_tolerance(s, 1), 0)) << "final state (slot 0 untouched)";
}

// Unprepared inputs (q, k of any norm, gates from b, a): the kernel's own preparation and the
// recurrence against reference_prepare then the double recurrence. The norms scale sums the
// prepared form scales term by term: the same bound.
TEST_P(DeltaRuleTest, RecurrentPreparesRawInputsItself) {
  const DeltaShape s = GetParam();
  Inputs in = make_raw_inputs(s, 45);
  std::vector<double> state(in.state.begin(), in.state.end());
  const std::vector<double> out = reference_rule(s, in, state);
  const RuleResult got = run_rule(s, in, false);
  EXPECT_TRUE(all_close(got.out, out, rule_tolerance(s, 1), 0)) << "outputs";
  EXPECT_TRUE(all_close(got.state, state, rule_tolerance(s, 1), 0)) << "final state (slot 0 untouched)";
}

// The gated norm inside the rule (decode and verify steps): a whole head per workgroup. The
// state is bitwise the plain rule's (each column's arithmetic is unchanged), the outputs are the
// double reference's normed ones. Their error is the rule's (rule_tolerance, absolute) divided by
// the head's RMS and times |w silu(z)|, plus the norm's own fp32 rounding (a sum of dv squares,
// rsqrt, exp: tens of ulps of the result at most, rtol 1e-5 = ~84 ulps).
TEST_P(DeltaRuleTest, RecurrentAppliesTheGatedNormPerHead) {
  const DeltaShape s = GetParam();
  Inputs in = make_raw_inputs(s, 47);
  const RuleResult plain = run_rule(s, in, false);
  in.gated_norm = true;
  in.z = random_floats(s.rows() * s.value_heads * s.dv, 48, -3, 3);
  in.norm_weight = random_floats(s.dv, 49, 0.5f, 1.5f);
  std::vector<double> state(in.state.begin(), in.state.end());
  double smallest_rms = 0;
  const std::vector<double> out = reference_gated_norm(s, in, reference_rule(s, in, state), smallest_rms);
  const RuleResult got = run_rule(s, in, false);
  EXPECT_EQ(got.state, plain.state) << "the state is the plain rule's, bit for bit";
  const double gain = 1.5 * 3.0;  // |w| <= 1.5, |silu(z)| < 3
  const double tolerance = 2 * rule_tolerance(s, 1) / smallest_rms * gain + 8 * gain * std::ldexp(1.0, -24);
  EXPECT_TRUE(all_close(got.out, out, tolerance, 1e-5)) << "normed outputs (least head RMS " << smallest_rms << ")";
}

TEST_P(DeltaRuleTest, ChunkedMatchesDoubleRecurrence) {
  const DeltaShape s = GetParam();
  const Inputs in = make_inputs(s, 61);
  std::vector<double> state(in.state.begin(), in.state.end());
  const std::vector<double> out = reference_rule(s, in, state);
  const RuleResult got = run_rule(s, in, true);
  EXPECT_TRUE(all_close(got.out, out, rule_tolerance(s, 4), 0)) << "outputs";
  EXPECT_TRUE(all_close(got.state, state, rule_tolerance(s, 4), 0)) << "final state (slot 0 untouched)";
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, DeltaRuleTest,
    ::testing::Values(
        // Hv/Hk = 2, dk != dv, one token
        DeltaShape{.batch = 1, .tokens = 1, .key_heads = 2, .value_heads = 4, .dk = 32, .dv = 16},
        // Hv/Hk = 1, two sequences
        DeltaShape{.batch = 2, .tokens = 7, .key_heads = 3, .value_heads = 3, .dk = 40, .dv = 24},
        // Hv/Hk = 3, chunk + 1
        DeltaShape{.batch = 1, .tokens = 65, .key_heads = 1, .value_heads = 3, .dk = 16, .dv = 70},
        // the 80B head size
        DeltaShape{.batch = 1, .tokens = 63, .key_heads = 2, .value_heads = 2, .dk = 128, .dv = 128},
        // 2 chunks + remainder
        DeltaShape{.batch = 2, .tokens = 130, .key_heads = 2, .value_heads = 4, .dk = 33, .dv = 17},
        // exactly one chunk
        DeltaShape{.batch = 1, .tokens = 64, .key_heads = 1, .value_heads = 2, .dk = 130, .dv = 9}),
    [](const auto& info) {
      const DeltaShape& c = info.param;
      return "b" + std::to_string(c.batch) + "t" + std::to_string(c.tokens) + "hk" + std::to_string(c.key_heads) +
             "hv" + std::to_string(c.value_heads) + "dk" + std::to_string(c.dk) + "dv" + std::to_string(c.dv);
    });

// The acceptance case: 200 tokens (3 chunks + 8) from a non-zero state at the 80B head
// size, chunked against the double recurrence; and chunked against the GPU's own fp32 recurrence
// at a smaller head size. (lavapipe stops any outermost loop after 65535 nested iterations per
// invocation, so the token-serial recurrent shader cannot run 200 tokens of dk = dv = 128 there;
// decode runs it for one token at a time.)
class DeltaRuleLongTest : public DeltaRuleTest {};
TEST_F(DeltaRuleLongTest, ChunkedMatchesDoubleRecurrenceOver200Tokens) {
  const DeltaShape s{.batch = 1, .tokens = 200, .key_heads = 2, .value_heads = 4, .dk = 128, .dv = 128};
  const Inputs in = make_inputs(s, 81);
  std::vector<double> state(in.state.begin(), in.state.end());
  const std::vector<double> out = reference_rule(s, in, state);
  const RuleResult got = run_rule(s, in, true);
  EXPECT_TRUE(all_close(got.out, out, rule_tolerance(s, 4), 0)) << "outputs";
  EXPECT_TRUE(all_close(got.state, state, rule_tolerance(s, 4), 0)) << "final state";
}

TEST_F(DeltaRuleLongTest, ChunkedEqualsRecurrentOver200Tokens) {
  const DeltaShape s{.batch = 2, .tokens = 200, .key_heads = 2, .value_heads = 4, .dk = 32, .dv = 16};
  const Inputs in = make_inputs(s, 82);
  const RuleResult recurrent = run_rule(s, in, false), chunked = run_rule(s, in, true);
  const std::vector<double> expected_out(recurrent.out.begin(), recurrent.out.end());
  const std::vector<double> expected_state(recurrent.state.begin(), recurrent.state.end());
  EXPECT_TRUE(all_close(chunked.out, expected_out, rule_tolerance(s, 4), 0)) << "outputs";
  EXPECT_TRUE(all_close(chunked.state, expected_state, rule_tolerance(s, 4), 0)) << "final state";
}

// Speculative verification: Keep gives a plain step's outputs bit for bit and leaves the state;
// Commit then writes the state after each sequence's accepted prefix and no output; with prepared
// and with raw inputs (what verify steps take).
TEST_F(DeltaRuleLongTest, KeepThenCommitGivesTheAcceptedPrefixState) {
  for (const bool raw : {false, true})
    for (const DeltaShape s :
         {DeltaShape{.batch = 3, .tokens = 4, .key_heads = 2, .value_heads = 4, .dk = 40, .dv = 24},
          DeltaShape{.batch = 1, .tokens = 5, .key_heads = 1, .value_heads = 2, .dk = 128, .dv = 70}}) {
      SCOPED_TRACE(raw ? "raw inputs" : "prepared inputs");
      const Inputs in = raw ? make_raw_inputs(s, 84) : make_inputs(s, 83);
      std::vector<uint32_t> counts;
      for (uint32_t b = 0; b < s.batch; ++b) counts.push_back(1 + (b * 2 + 1) % s.tokens);
      const RuleResult plain = run_rule(s, in, false);
      const RuleResult keep = run_rule(s, in, false, {ops::StateUpdate::Keep});
      EXPECT_EQ(keep.out, plain.out) << "Keep's outputs are a plain step's, bit for bit";
      EXPECT_EQ(keep.state, in.state) << "Keep leaves the state";
      const RuleResult committed = run_rule(s, in, false, {ops::StateUpdate::Keep, ops::StateUpdate::Commit}, counts);
      EXPECT_EQ(committed.out, plain.out) << "Commit writes no output";
      std::vector<double> state(in.state.begin(), in.state.end());
      reference_rule(s, in, state, counts);
      EXPECT_TRUE(all_close(committed.state, state, rule_tolerance(s, 1), 0)) << "state after the accepted prefix";
      if (s.batch == 1) {
        // Bitwise the state a plain step of the accepted tokens alone reaches.
        DeltaShape prefix = s;
        prefix.tokens = counts[0];
        Inputs cut = in;
        cut.qkv.resize(prefix.rows() * s.qkv_width());
        cut.gates.resize(prefix.rows() * 2 * s.value_heads);
        if (raw) cut.ba.resize(prefix.rows() * 2 * s.value_heads);
        EXPECT_EQ(committed.state, run_rule(prefix, cut, false).state) << "bitwise the plain prefix's state";
      }
    }
}

// A verify step commits every DeltaNet layer in one dispatch, each layer's tensors found through
// an address table: each layer's state must be bitwise what its own Commit writes (the same
// arithmetic per column), over column slices that do not divide dv.
TEST_F(DeltaRuleLongTest, CommitsOfSeveralLayersInOneDispatchAreEachLayersCommit) {
  for (const DeltaShape s :
       {DeltaShape{.batch = 2, .tokens = 3, .key_heads = 2, .value_heads = 4, .dk = 40, .dv = 24},
        DeltaShape{.batch = 1, .tokens = 2, .key_heads = 1, .value_heads = 2, .dk = 128, .dv = 70}}) {
    SCOPED_TRACE("dv " + std::to_string(s.dv));
    const uint32_t layers = 3;
    std::vector<Inputs> in;
    for (uint32_t l = 0; l < layers; ++l) in.push_back(make_raw_inputs(s, 90 + 10 * l));
    const std::vector<uint32_t> counts = s.batch == 2 ? std::vector<uint32_t>{2, 3} : std::vector<uint32_t>{1};
    std::vector<std::vector<float>> want;
    for (uint32_t l = 0; l < layers; ++l) {
      want.push_back(run_rule(s, in[l], false, {ops::StateUpdate::Commit}, counts).state);
      ASSERT_NE(want.back(), in[l].state) << "the commit changed the state";
    }
    Allocation dseqs = upload_words(in[0].seqs), dcounts = upload_words(counts);
    std::vector<Allocation> owned;
    std::vector<ops::DeltaCommitLayer> tensors;
    for (uint32_t l = 0; l < layers; ++l) {
      for (const std::vector<float>* v : {&in[l].qkv, &in[l].state, &in[l].ba, &in[l].a_log, &in[l].dt_bias})
        owned.push_back(upload(*v));
      const size_t at = owned.size() - 5;
      tensors.push_back({owned[at].range(), owned[at + 1].range(), owned[at + 2].range(), owned[at + 3].range(),
                         owned[at + 4].range()});
    }
    Allocation table = rt().allocator.allocate(layers * 40, MemoryKind::Upload, "delta commit table");
    run([&](CommandBuffer& cb) {
      ops::record_delta_rule_commits(pipelines(), cb,
                                     {.seqs = dseqs.range(),
                                      .shape = s,
                                      .update = ops::StateUpdate::Commit,
                                      .accepted = dcounts.range(),
                                      .raw_inputs = true},
                                     tensors, {table.range(), table.mapped()});
    });
    for (uint32_t l = 0; l < layers; ++l)
      EXPECT_EQ(download(owned[5 * l + 1], in[l].state.size()), want[l]) << "layer " << l;
  }
}

class DeltaPrepareTest : public GpuTest {};
TEST_F(DeltaPrepareTest, NormalisesQkAndComputesGates) {
  const DeltaShape s{
      .batch = 1, .tokens = 67, .key_heads = 2, .value_heads = 6, .dk = 40, .dv = 24};  // Hv/Hk = 3, dk != dv
  const uint32_t width = s.qkv_width(), hv = s.value_heads;
  auto qkv = random_floats(s.rows() * width, 91, -3, 3);
  auto ba = random_floats(s.rows() * 2 * hv, 92, -4, 4);
  ba[hv] = 23.0f;                                  // a + dt_bias > 20: softplus's linear branch (spec §8.13)
  auto a_log = random_floats(hv, 93, 0.0f, 2.7f);  // A = exp(A_log) in (1, 16)
  auto dt_bias = random_floats(hv, 94, -1, 1);
  Allocation dqkv = upload(qkv), dba = upload(ba), dalog = upload(a_log), ddt = upload(dt_bias),
             dgates = poisoned(s.rows() * 2 * hv);
  run([&](CommandBuffer& cb) {
    ops::record_delta_prepare(pipelines(), cb,
                              {.qkv = dqkv.range(),
                               .ba = dba.range(),
                               .a_log = dalog.range(),
                               .dt_bias = ddt.range(),
                               .gates = dgates.range(),
                               .shape = s});
  });
  std::vector<double> want_qkv, want_gates;
  reference_prepare(s, qkv, ba, a_log, dt_bias, want_qkv, want_gates);
  // A 40-term fp32 sum and rsqrt: a few ulps of values <= 1; v passes through untouched.
  EXPECT_TRUE(all_close(download(dqkv, qkv.size()), want_qkv, 1e-6, 1e-5)) << "q, k normalised, v unchanged";
  // exp/log in fp32: relative 1e-5 of g (|g| up to ~16 * 23).
  EXPECT_TRUE(all_close(download(dgates, want_gates.size()), want_gates, 1e-6, 1e-5)) << "g | beta";
}

}  // namespace
}  // namespace q3n::test
