// Speculative verification (Engine::verify, StepShape::verify) is lossless by construction: each
// verified row computes and draws as a decode step at its position, and only the accepted rows'
// DeltaNet state is committed. So whatever the drafts are, the emitted ids must be bitwise the
// ids of plain decoding, greedy and sampled, and the state afterwards must give bitwise the
// logits plain decoding's state gives. The drafts here are plain decoding's own continuation
// with one draft spoiled at a place that moves every step (some steps all accepted, some none).
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "graph/batch_scheduler.h"
#include "graph/engine.h"
#include "runtime/error.h"
#include "tests/support/gpu_test.h"
#include "tests/support/hf_fixture.h"

namespace q3n::test {
namespace {

class SpeculativeTest : public GpuTest, public ::testing::WithParamInterface<std::string> {
 protected:
  void SetUp() override {
    GpuTest::SetUp();
    f_ = load_hf_fixture(GetParam());
    config_ = load_config(f_.dir);
    checkpoint_ = std::make_unique<Checkpoint>(f_.dir);
  }
  std::unique_ptr<graph::Engine> engine() const {
    graph::EngineOptions o;
    o.context = 256;
    o.slots = 2;
    o.prefill_chunk = 64;  // the 70-token prompt crosses a chunk boundary
    return std::make_unique<graph::Engine>(runtime(), config_, *checkpoint_, o);
  }
  std::vector<int32_t> prompt() const {
    std::vector<int32_t> p = f_.all_ids();
    p.resize(std::min<size_t>(p.size(), 70));
    return p;
  }
  // Plain decoding: the first sampled token after the prompt, then `n - 1` decode steps.
  std::vector<int32_t> plain(graph::Engine& e, uint32_t slot, const ops::SamplingParams& params, size_t n) const {
    std::vector<int32_t> out = {e.feed_and_sample(slot, prompt(), params)};
    while (out.size() < n) {
      const uint32_t slots[1] = {slot};
      out.push_back(e.decode(slots, std::span(&out.back(), 1), params)[0]);
    }
    return out;
  }

  HfFixture f_;
  ModelConfig config_;
  std::unique_ptr<Checkpoint> checkpoint_;
};

TEST_P(SpeculativeTest, VerifyEmitsPlainDecodingsIds) {
  const ops::SamplingParams greedy, sampled{.temperature = 0.9f, .top_k = 40, .top_p = 0.95f, .seed = 11};
  for (const ops::SamplingParams& params : {greedy, sampled})
    for (const uint32_t drafts : {1u, 2u, 3u}) {
      SCOPED_TRACE((params.temperature > 0 ? "sampled, " : "greedy, ") + std::to_string(drafts) + " drafts");
      const size_t n = 40;
      auto reference_engine = engine();
      const std::vector<int32_t> want = plain(*reference_engine, 1, params, n + drafts + 1);

      auto e = engine();
      std::vector<int32_t> got = {e->feed_and_sample(0, prompt(), params)};
      uint32_t steps = 0, accepted = 0;
      while (got.size() < n) {
        // The last emitted token, then the true continuation with draft `spoil` replaced.
        std::vector<int32_t> ids = {got.back()};
        const size_t spoil = 1 + steps % (drafts + 1);  // drafts + 1: none spoiled
        for (uint32_t d = 1; d <= drafts; ++d) {
          const int32_t truth = want[got.size() - 1 + d];
          ids.push_back(d == spoil ? (truth + 1) % int32_t(config_.vocab_size) : truth);
        }
        const uint32_t slots[1] = {0};
        const std::vector<int32_t> emitted = e->verify(slots, ids, drafts + 1, std::span(&params, 1))[0];
        ASSERT_GE(emitted.size(), 1u);
        EXPECT_EQ(emitted.size(), std::min<size_t>(spoil, drafts + 1)) << "step " << steps;
        got.insert(got.end(), emitted.begin(), emitted.end());
        accepted += uint32_t(emitted.size() - 1), ++steps;
      }
      ASSERT_EQ(got, std::vector<int32_t>(want.begin(), want.begin() + ptrdiff_t(got.size())));
      EXPECT_GT(accepted, 0u);
      EXPECT_EQ(e->position(0), prompt().size() + got.size() - 1);

      // The committed state is plain decoding's: bring the reference to the same position and
      // compare the logits of one more token, bit for bit.
      auto again = engine();
      ASSERT_EQ(plain(*again, 0, params, got.size()), got);
      ASSERT_EQ(again->position(0), e->position(0));
      const std::vector<float> a = e->feed_logits(0, std::span(&got.back(), 1), false);
      const std::vector<float> b = again->feed_logits(0, std::span(&got.back(), 1), false);
      EXPECT_EQ(a, b) << "logits after the speculative run";
    }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, SpeculativeTest, ::testing::Values("f32_untied", "bf16_tied"),
                         [](const auto& info) { return info.param; });

// MTP speculative decoding on the shipped demo model (its trained MTP head): for 1, 2 and 3
// drafts per step, greedy and sampled, the emitted ids are plain decoding's, with a prompt that
// crosses prefill chunk boundaries; the head's drafts are accepted often enough to matter.
class MtpTest : public GpuTest {
 protected:
  void SetUp() override {
    GpuTest::SetUp();
    dir_ = std::filesystem::path(Q3N_SOURCE_DIR) / "assets/models/kjv-demo";
    config_ = load_config(dir_);
    checkpoint_ = std::make_unique<Checkpoint>(dir_);
  }
  std::unique_ptr<graph::Engine> engine(bool mtp) const {
    graph::EngineOptions o;
    o.context = 512;
    o.prefill_chunk = 64;
    o.slots = 3;
    o.mtp = mtp;
    graph::WeightOptions wo;
    wo.mtp = mtp;
    return std::make_unique<graph::Engine>(runtime(), config_,
                                           graph::DeviceWeights(runtime(), config_, *checkpoint_, wo), o);
  }
  std::filesystem::path dir_;
  ModelConfig config_;
  std::unique_ptr<Checkpoint> checkpoint_;
};

TEST_F(MtpTest, EmitsPlainDecodingsIdsAndAcceptsDrafts) {
  // The held-out text's first 150 ids: chunks of 64 + 64 + 16 + 4 + 2.
  std::ifstream in(dir_ / "heldout.json");
  std::vector<int32_t> prompt = nlohmann::json::parse(in).at("token_ids").get<std::vector<int32_t>>();
  ASSERT_GE(prompt.size(), 150u);
  prompt.resize(150);
  const ops::SamplingParams greedy, sampled{.temperature = 0.8f, .top_k = 30, .seed = 3};
  const size_t n = 60;
  for (const ops::SamplingParams& params : {greedy, sampled}) {
    auto plain_engine = engine(false);
    std::vector<int32_t> want = {plain_engine->feed_and_sample(0, prompt, params)};
    while (want.size() < n + 8) {
      const uint32_t slot = 0;
      want.push_back(plain_engine->decode(std::span(&slot, 1), std::span(&want.back(), 1), params)[0]);
    }
    for (const uint32_t drafts : {1u, 2u, 3u}) {
      SCOPED_TRACE((params.temperature > 0 ? "sampled, " : "greedy, ") + std::to_string(drafts) + " drafts");
      auto e = engine(true);
      graph::Engine::Speculation s = e->mtp_prompt(0, prompt, params, drafts);
      ASSERT_EQ(s.drafts.size(), drafts);
      std::vector<int32_t> got = s.emitted;
      size_t steps = 0, accepted = 0;
      while (got.size() < n) {
        s = e->mtp_step(0, got.back(), s.drafts, params);
        ASSERT_EQ(s.drafts.size(), drafts);
        got.insert(got.end(), s.emitted.begin(), s.emitted.end());
        ++steps, accepted += s.emitted.size() - 1;
      }
      ASSERT_EQ(got, std::vector<int32_t>(want.begin(), want.begin() + ptrdiff_t(got.size())));
      const double rate = double(accepted) / double(steps * drafts);
      std::printf("[mtp] %s, %u drafts: %zu steps, %.1f%% of drafts accepted\n",
                  params.temperature > 0 ? "sampled" : "greedy", drafts, steps, 100 * rate);
      if (params.temperature == 0 && drafts == 1) {
        EXPECT_GT(rate, 0.1) << "the trained head barely drafts";
      }
    }
  }
}

// Engine::mtp_steps drafts for several sequences at once what mtp_step drafts for each alone (the
// head's rows in other step shapes, so equal up to rounding: an argmax may flip at a near-tie).
// Each sequence is compared step by step for as long as both engines emitted the same tokens
// and drafted the same; the first 25 steps of every sequence must agree.
TEST_F(MtpTest, DraftsOfSeveralSequencesAreThoseOfEachAlone) {
  std::ifstream in(dir_ / "heldout.json");
  const std::vector<int32_t> text = nlohmann::json::parse(in).at("token_ids").get<std::vector<int32_t>>();
  const std::vector<std::pair<size_t, size_t>> prompts = {{0, 70}, {300, 9}, {500, 33}};
  const ops::SamplingParams greedy;
  for (const uint32_t drafts : {1u, 2u}) {
    SCOPED_TRACE(std::to_string(drafts) + " drafts");
    auto alone = engine(true), together = engine(true);
    std::vector<uint32_t> slots;
    std::vector<int32_t> lasts;
    std::vector<std::vector<int32_t>> alone_drafts, together_drafts;
    for (uint32_t b = 0; b < prompts.size(); ++b) {
      const std::vector<int32_t> prompt(text.begin() + ptrdiff_t(prompts[b].first),
                                        text.begin() + ptrdiff_t(prompts[b].first + prompts[b].second));
      const graph::Engine::Speculation a = alone->mtp_prompt(b, prompt, greedy, drafts);
      const graph::Engine::Speculation t = together->mtp_prompt(b, prompt, greedy, drafts);
      ASSERT_EQ(a.emitted, t.emitted);
      ASSERT_EQ(a.drafts, t.drafts);
      slots.push_back(b);
      lasts.push_back(a.emitted.back());
      alone_drafts.push_back(a.drafts);
      together_drafts.push_back(t.drafts);
    }
    // Until the first disagreement (after it the two engines hold different drafts).
    std::vector<uint32_t> agreed(prompts.size(), 0);
    bool same = true;
    for (int step = 0; step < 30 && same; ++step) {
      const std::vector<graph::Engine::Speculation> t =
          together->mtp_steps(slots, lasts, together_drafts, {&greedy, 1});
      for (uint32_t b = 0; b < prompts.size() && same; ++b) {
        ASSERT_EQ(t[b].drafts.size(), drafts);
        const graph::Engine::Speculation a = alone->mtp_step(b, lasts[b], alone_drafts[b], greedy);
        same = a.emitted == t[b].emitted && a.drafts == t[b].drafts;
        agreed[b] += same ? 1 : 0;
        lasts[b] = a.emitted.back();
        alone_drafts[b] = a.drafts;
        together_drafts[b] = t[b].drafts;
      }
    }
    for (uint32_t b = 0; b < prompts.size(); ++b) EXPECT_GE(agreed[b], 25u) << "sequence " << b;
  }
}

// q3n batch with the head (SchedulerOptions::mtp_drafts): several sequences verify and draft in
// the same steps, verify steps of several sequences (decode_rows 4: one to two sequences each),
// sequences that stop speculating when too many generate at once,
// requests queued behind a full batch, a stop token, max_tokens ending inside a verify step, and
// requests that reach the end of the context (their last steps run plainly; one's prompt leaves
// no room for the head's drafts, so all of it runs plainly). Every request's
// tokens and end must be those of the scheduler without the head.
TEST_F(MtpTest, BatchSchedulerGivesPlainDecodingsTokens) {
  std::ifstream in(dir_ / "heldout.json");
  const std::vector<int32_t> text = nlohmann::json::parse(in).at("token_ids").get<std::vector<int32_t>>();
  ASSERT_GE(text.size(), 700u);
  struct Request {
    size_t from, length;
    uint32_t max_tokens;
    bool sampled;
  };
  const std::vector<Request> requests = {{0, 150, 40, false}, {200, 37, 33, true},  {300, 5, 1, false},
                                         {320, 90, 26, true}, {420, 12, 45, false}, {100, 200, 56, false},
                                         {150, 252, 3, true}};
  struct Result {
    std::vector<int32_t> ids;
    graph::FinishReason reason = graph::FinishReason::Length;
    bool finished = false;
  };
  const auto run = [&](uint32_t drafts, const std::set<int32_t>& stops, graph::SchedulerStats* stats,
                       uint32_t verify_steps = 1) {
    graph::EngineOptions eo;
    eo.context = 256;
    eo.prefill_chunk = 64;
    eo.slots = 3;
    eo.decode_rows = 4;
    eo.mtp = drafts > 0;
    graph::WeightOptions wo;
    wo.mtp = drafts > 0;
    graph::Engine e(runtime(), config_, graph::DeviceWeights(runtime(), config_, *checkpoint_, wo), eo);
    std::vector<Result> out(requests.size());
    graph::SchedulerOptions so;
    so.max_batch = 3;
    so.prefill_budget = 100;
    so.stop_ids = stops;
    so.mtp_drafts = drafts;
    so.mtp_verify_steps = verify_steps;
    graph::BatchScheduler scheduler(
        e, so,
        [&](uint64_t tag, int32_t id) {
          out[tag].ids.push_back(id);
          return false;
        },
        [&](uint64_t tag, graph::FinishReason reason, uint32_t, uint32_t generated) {
          EXPECT_EQ(generated, out[tag].ids.size());
          out[tag].reason = reason;
          out[tag].finished = true;
        });
    for (size_t r = 0; r < requests.size(); ++r) {
      graph::GenerationRequest g;
      g.tag = r;
      g.prompt.assign(text.begin() + ptrdiff_t(requests[r].from),
                      text.begin() + ptrdiff_t(requests[r].from + requests[r].length));
      g.max_tokens = requests[r].max_tokens;
      if (requests[r].sampled) g.sampling = {.temperature = 0.8f, .top_k = 30, .seed = 11 + r};
      scheduler.add(std::move(g));
    }
    while (scheduler.step()) {
    }
    if (stats) *stats = scheduler.stats();
    return out;
  };
  // A stop token: one the first request generates halfway through its plain run.
  const int32_t stop = run(0, {}, nullptr)[0].ids.at(20);
  const std::vector<Result> want = run(0, {stop}, nullptr);
  ASSERT_EQ(want[0].reason, graph::FinishReason::Stop);
  // One verify step: 1 draft, up to two sequences speculate (decode_rows 4); when three generate,
  // they go plain for good. Many verify steps: all three speculate in one to three of them.
  for (const auto& [drafts, verify_steps] : {std::pair{1u, 1u}, {1u, 8u}, {3u, 8u}}) {
    SCOPED_TRACE(std::to_string(drafts) + " drafts, " + std::to_string(verify_steps) + " verify steps");
    graph::SchedulerStats stats;
    const std::vector<Result> got = run(drafts, {stop}, &stats, verify_steps);
    for (size_t r = 0; r < requests.size(); ++r) {
      EXPECT_TRUE(got[r].finished) << "request " << r;
      EXPECT_EQ(got[r].ids, want[r].ids) << "request " << r;
      EXPECT_EQ(got[r].reason, want[r].reason) << "request " << r;
    }
    EXPECT_GT(stats.spec_steps, 0u);
    EXPECT_GT(stats.spec_accepted, 0u) << "no draft was ever accepted";
    std::printf("[mtp] batch, %u drafts, %u verify steps: %llu sequence steps, %.1f%% of drafts accepted\n", drafts,
                verify_steps, (unsigned long long)stats.spec_steps, 100.0 * stats.spec_accepted / stats.spec_drafted);
  }
}

// The memory-fit check (cli/memory_fit) counts the head's KV cache: what an MTP engine allocates
// for its sequences is SequenceState::planned_bytes with mtp, one more attention layer's cache
// (beside it the state holds small per-slot address tables, under 1 KiB here, which the plan
// leaves to the fit's headroom).
TEST_F(MtpTest, PlannedStateBytesCountTheHeadsKvCache) {
  const uint64_t plain = graph::SequenceState::planned_bytes(config_, 3, 512);
  const uint64_t with_head = graph::SequenceState::planned_bytes(config_, 3, 512, ops::KvType::F32, {}, true);
  const uint64_t got_plain = engine(false)->state_bytes(), got_with_head = engine(true)->state_bytes();
  EXPECT_GE(got_plain, plain);
  EXPECT_LT(got_plain, plain + 1024);
  EXPECT_GE(got_with_head, with_head);
  EXPECT_LT(got_with_head, with_head + 1024);
  EXPECT_EQ(with_head - plain, 3 * 2 * graph::SequenceState::kv_slot_stride(config_, 512, ops::KvType::F32));
}

TEST_F(MtpTest, CheckpointWithoutTheHeadIsRefused) {
  const std::filesystem::path fixture = std::filesystem::path(Q3N_SOURCE_DIR) / "tests/data/fixtures/f32_untied";
  const ModelConfig config = load_config(fixture);
  const Checkpoint checkpoint(fixture);
  graph::WeightOptions wo;
  wo.mtp = true;
  try {
    graph::DeviceWeights(runtime(), config, checkpoint, wo);
    FAIL() << "weights without mtp.* loaded as an MTP model";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--mtp"), std::string::npos) << e.what();
  }
}
}  // namespace
}  // namespace q3n::test
