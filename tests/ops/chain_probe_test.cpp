// shaders/chain_probe.comp: every phase of a chain against a double reference, with a pipeline
// barrier between the phases, with counter polls between one-phase dispatches, and with every
// phase in one persistent dispatch (two epochs against the same counters each), at a width that is
// not a power of two and into a poisoned buffer.
#include <cmath>

#include "runtime/ops/chain_probe.h"
#include "tests/support/gpu_test.h"

namespace q3n::test {
namespace {

using ChainProbeTest = GpuTest;

// Row i of the chain: out[g] = 0.5 * mean(in[(7 g + 131 j) mod n], j < 16) + 1.
std::vector<std::vector<double>> reference_chain(const std::vector<float>& input, uint32_t phases, uint32_t width) {
  std::vector<std::vector<double>> rows;
  std::vector<double> in(input.begin(), input.end());
  for (uint32_t i = 0; i < phases; ++i) {
    std::vector<double> out(width);
    for (uint32_t g = 0; g < width; ++g) {
      double sum = 0;
      for (uint32_t j = 0; j < 16; ++j) sum += in[(uint64_t(g) * 7 + j * 131) % in.size()];
      out[g] = 0.5 * sum / 16 + 1;
    }
    rows.push_back(out);
    in = out;
  }
  return rows;
}

TEST_F(ChainProbeTest, EveryPhaseMatchesTheReferenceWithBarriersCountersAndOnePersistentDispatch) {
  const uint32_t phases = 5, n = 1001;
  const std::vector<float> input = random_floats(n, 91, -4, 4);
  for (const ops::ChainWait wait : {ops::ChainWait::Barrier, ops::ChainWait::Counter, ops::ChainWait::Persistent}) {
    // A persistent grid must fit the device at once: a CPU driver may run one workgroup per
    // thread to its end, so there the grid is one workgroup.
    const bool cpu = rt().device.info().type == VK_PHYSICAL_DEVICE_TYPE_CPU;
    const uint32_t workgroups = wait == ops::ChainWait::Persistent && cpu ? 1 : 3;
    const uint32_t width = workgroups * ops::kChainProbeWorkgroup;
    const auto expected = reference_chain(input, phases, width);
    SCOPED_TRACE(wait == ops::ChainWait::Barrier   ? "barrier"
                 : wait == ops::ChainWait::Counter ? "counter"
                                                   : "persistent");
    Allocation din = upload(input), dvec = poisoned(size_t(phases) * width),
               dcount = upload_words(std::vector<uint32_t>(phases, 0)), dstatus = upload_words({0});
    // Two epochs against the same counters: the second's polls must wait for the second's writes.
    for (const uint32_t epoch : {1u, 2u}) {
      run([&](CommandBuffer& cb) {
        ops::record_chain_probe(pipelines(), cb,
                                {.input = din.range(),
                                 .vectors = dvec.range(),
                                 .counters = dcount.range(),
                                 .status = dstatus.range(),
                                 .input_floats = n,
                                 .phases = phases,
                                 .workgroups = workgroups,
                                 .epoch = epoch,
                                 .wait = wait});
      });
      const auto got = download(dvec, size_t(phases) * width);
      // Each value is a 16-term f32 sum of values in [-4, 5], halved: rounding ~16 ulp of 40.
      for (uint32_t i = 0; i < phases; ++i) {
        const std::vector<float> row(got.begin() + ptrdiff_t(i) * width, got.begin() + ptrdiff_t(i + 1) * width);
        EXPECT_TRUE(all_close(row, expected[i], 1e-5, 1e-5)) << "phase " << i << ", epoch " << epoch;
      }
    }
    EXPECT_EQ(download_words(dstatus, 1)[0], 0u) << "a poll gave up";
    const auto counters = download_words(dcount, phases);
    for (uint32_t i = 0; i < phases; ++i)
      EXPECT_EQ(counters[i], wait == ops::ChainWait::Barrier ? 0u : 2 * workgroups) << "phase " << i;
  }
}

}  // namespace
}  // namespace q3n::test
