// shaders/spec_accept.comp against a plain reference: the accepted count of each sequence is 1 +
// its leading drafts that equal the target's sample before them, on random ids and matches
// planted at random depths (none, some, all), for more sequences than one workgroup.
#include <random>

#include "runtime/ops/spec_accept.h"
#include "tests/support/gpu_test.h"

namespace q3n::test {
namespace {

class SpecAcceptTest : public GpuTest {};

TEST_F(SpecAcceptTest, CountsTheLeadingAcceptedDrafts) {
  for (const uint32_t tokens : {1u, 2u, 4u}) {
    const uint32_t batch = 67;
    std::mt19937 rng(tokens);
    std::vector<uint32_t> ids(batch * tokens), sampled(batch * tokens);
    std::vector<uint32_t> want(batch);
    for (uint32_t b = 0; b < batch; ++b) {
      const uint32_t depth = rng() % tokens;  // drafts planted to match
      for (uint32_t t = 0; t < tokens; ++t) ids[b * tokens + t] = 1 + rng() % 1000;
      for (uint32_t t = 0; t < tokens; ++t) sampled[b * tokens + t] = 1001 + rng() % 1000;  // never a draft
      for (uint32_t t = 0; t + 1 < tokens && t < depth; ++t) sampled[b * tokens + t] = ids[b * tokens + t + 1];
      if (b % 5 == 0 && tokens > 1) sampled[b * tokens] = 0xFFFFFFFFu;  // a NaN row rejects
      uint32_t n = 1;
      while (n < tokens && sampled[b * tokens + n - 1] == ids[b * tokens + n]) ++n;
      want[b] = n;
    }
    Allocation dids = upload_words(ids), dsampled = upload_words(sampled);
    Allocation dcount = poisoned(batch);
    run([&](CommandBuffer& cb) {
      ops::record_spec_accept(pipelines(), cb,
                              {.ids = dids.range(),
                               .sampled = dsampled.range(),
                               .count = dcount.range(),
                               .batch = batch,
                               .tokens = tokens});
    });
    EXPECT_EQ(download_words(dcount, batch), want) << tokens << " tokens per sequence";
  }
}

}  // namespace
}  // namespace q3n::test
