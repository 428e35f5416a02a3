// shaders/fill_random.comp: the words it writes against the same counter hash computed on the
// CPU, for every storage type, at a size that is not a multiple of the workgroup.
#include <cmath>

#include "runtime/ops/fill_random.h"
#include "tests/support/gpu_test.h"
#include "tests/support/numeric.h"

namespace q3n::test {
namespace {

uint32_t hash32(uint32_t x) {  // lowbias32, as in shaders/common.glsl
  x ^= x >> 16;
  x *= 0x7feb352du;
  x ^= x >> 15;
  x *= 0x846ca68bu;
  x ^= x >> 16;
  return x;
}
double unit_interval(uint32_t h) { return double(h >> 8) / 16777216.0; }

class FillRandomTest : public GpuTest, public ::testing::WithParamInterface<ops::WeightType> {};

TEST_P(FillRandomTest, MatchesCounterHash) {
  const ops::WeightType type = GetParam();
  const uint64_t elements = 32 * 1001;  // 1001 blocks; word counts not multiples of 256
  const float lo = -0.3f, hi = 0.5f;
  const uint32_t seed = 12345;
  const size_t words = ops::weight_storage_bytes(type, elements) / 4;
  Allocation dst = poisoned(words);
  run([&](CommandBuffer& cb) {
    ops::record_fill_random(pipelines(), cb,
                            {.dst = dst.range(), .type = type, .elements = elements, .seed = seed, .lo = lo, .hi = hi});
  });
  const auto got = download_words(dst, words);
  const uint32_t key = hash32(seed);
  // Values are lo + (hi - lo) u in fp32, then rounded to the type (bf16 truncates: 2^-8 relative).
  const double rel = type == ops::WeightType::F32 ? 1e-6 : type == ops::WeightType::F16 ? 1e-3 : 8e-3;
  size_t bad = 0;
  for (size_t w = 0; w < words; ++w) {
    const uint32_t h = hash32(uint32_t(w) ^ key);
    std::vector<double> want;  // values this word encodes
    if (type == ops::WeightType::F32) want = {lo + (hi - lo) * unit_interval(h)};
    if (type == ops::WeightType::F16 || type == ops::WeightType::BF16)
      want = {lo + (hi - lo) * unit_interval(h), lo + (hi - lo) * unit_interval(hash32(h))};
    if (ops::is_quantized(type)) {
      const bool header = w % ops::block_words(type) == 0;
      if (!header && got[w] != h && bad++ < 3) ADD_FAILURE() << "code word " << w << " is not the hash";
      if (header) {
        const double scale = type == ops::WeightType::Q8 ? 0.5 / 127 : (hi - lo) / 15.0;
        const double d = ops::f16_bits_to_f32(uint16_t(got[w])), m = ops::f16_bits_to_f32(uint16_t(got[w] >> 16));
        const double want_m = type == ops::WeightType::Q8 ? 0.0 : lo;
        if ((std::fabs(d - scale) > 1e-3 * scale || std::fabs(m - want_m) > 1e-3) && bad++ < 3)
          ADD_FAILURE() << "header " << w << ": scale " << d << " min " << m;
      }
      continue;
    }
    for (size_t i = 0; i < want.size(); ++i) {
      const std::vector<uint32_t> one = {got[w]};
      const auto* bytes = reinterpret_cast<const std::byte*>(one.data());
      const double v = ops::decode_weight(type, bytes, i);
      if (!(std::fabs(v - want[i]) <= rel * std::fabs(want[i]) + 1e-7) && bad++ < 3)
        ADD_FAILURE() << "word " << w << " value " << i << " = " << v << ", expected " << want[i];
    }
  }
  EXPECT_EQ(bad, 0u);
}

INSTANTIATE_TEST_SUITE_P(Types, FillRandomTest,
                         ::testing::Values(ops::WeightType::F32, ops::WeightType::F16, ops::WeightType::BF16,
                                           ops::WeightType::Q8, ops::WeightType::Q4),
                         [](const auto& info) { return std::string(ops::weight_type_name(info.param)); });

}  // namespace
}  // namespace q3n::test
