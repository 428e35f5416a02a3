// runtime/ops/quantize: fp16 conversion (exhaustively), the Q8/Q4 block layouts (against blocks
// built by hand from weight_type.h's description) and the quantisers' error bounds. CPU only; the
// shaders' reading of the same layouts is tested through linear_test and moe_test.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "runtime/ops/quantize.h"

namespace q3n::test {
namespace {

using ops::WeightType;

std::vector<std::byte> words_to_bytes(const std::vector<uint32_t>& words) {
  std::vector<std::byte> bytes(words.size() * 4);
  std::memcpy(bytes.data(), words.data(), bytes.size());
  return bytes;
}

TEST(Quantize, HalfConversionRoundTripsEveryFiniteHalf) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    if ((h & 0x7C00) == 0x7C00) continue;  // inf / nan
    const float f = ops::f16_bits_to_f32(uint16_t(h));
    ASSERT_EQ(ops::f32_to_f16_bits(f), h) << "half 0x" << std::hex << h << " = " << f;
  }
  EXPECT_EQ(ops::f16_bits_to_f32(0x3C00), 1.0f);
  EXPECT_EQ(ops::f16_bits_to_f32(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
  // Ties go to even: 1 + 2^-11 lies halfway between 1 and 1 + 2^-10.
  EXPECT_EQ(ops::f32_to_f16_bits(1.0f + std::ldexp(1.0f, -11)), 0x3C00);
  EXPECT_EQ(ops::f32_to_f16_bits(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3C02);
  EXPECT_EQ(ops::f32_to_f16_bits(70000.0f), 0x7C00);  // overflow to infinity
}

TEST(Quantize, Q8LayoutAsDocumented) {
  // d = 0.5 (fp16 0x3800); q_j = j - 16.
  std::vector<uint32_t> words = {0x3800};
  for (int w = 0; w < 8; ++w) {
    uint32_t word = 0;
    for (int b = 0; b < 4; ++b) word |= uint32_t(uint8_t(int8_t(w * 4 + b - 16))) << (8 * b);
    words.push_back(word);
  }
  const auto bytes = words_to_bytes(words);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(ops::decode_weight(WeightType::Q8, bytes.data(), j), 0.5f * (j - 16)) << j;
}

TEST(Quantize, Q4LayoutAsDocumented) {
  // d = 0.25 (0x3400), m = -2 (0xC000); q_j = j mod 16.
  std::vector<uint32_t> words = {0x3400u | 0xC000u << 16};
  for (int w = 0; w < 4; ++w) {
    uint32_t word = 0;
    for (int n = 0; n < 8; ++n) word |= uint32_t((w * 8 + n) % 16) << (4 * n);
    words.push_back(word);
  }
  const auto bytes = words_to_bytes(words);
  for (int j = 0; j < 32; ++j)
    EXPECT_EQ(ops::decode_weight(WeightType::Q4, bytes.data(), j), 0.25f * (j % 16) - 2.0f) << j;
}

// Every element reconstructs within half a step of its block's scale (plus the fp16 rounding of
// the scale and minimum), for blocks of very different magnitudes, a constant and a zero block.
TEST(Quantize, ErrorWithinHalfAStep) {
  std::mt19937 rng(7);
  std::vector<float> x;
  for (float magnitude : {1e-3f, 0.05f, 1.0f, 300.0f}) {
    std::uniform_real_distribution<float> u(-magnitude, magnitude);
    for (int i = 0; i < 32 * 5; ++i) x.push_back(u(rng));
  }
  for (int i = 0; i < 32; ++i) x.push_back(0.0f);
  for (int i = 0; i < 32; ++i) x.push_back(-0.7f);
  for (WeightType type : {WeightType::Q8, WeightType::Q4}) {
    std::vector<std::byte> bytes;
    ops::encode_weights(type, x.data(), x.size(), bytes);
    ASSERT_EQ(bytes.size(), ops::weight_storage_bytes(type, x.size()));
    for (size_t b = 0; b < x.size(); b += 32) {
      double lo = x[b], hi = x[b], amax = 0;
      for (size_t j = b; j < b + 32; ++j)
        lo = std::min(lo, double(x[j])), hi = std::max(hi, double(x[j])),
        amax = std::max(amax, std::fabs(double(x[j])));
      // Step: amax/127 or (hi-lo)/15; fp16 keeps 11 significant bits, so the stored scale and
      // minimum are off by at most 2^-11 relative, which moves the extreme codes by that much.
      const double step = type == WeightType::Q8 ? amax / 127 : (hi - lo) / 15;
      const double fp16 = std::ldexp(1.0, -11) * (type == WeightType::Q8 ? amax : std::fabs(lo) + (hi - lo));
      for (size_t j = b; j < b + 32; ++j) {
        const double err = std::fabs(ops::decode_weight(type, bytes.data(), j) - double(x[j]));
        ASSERT_LE(err, step / 2 * 1.0001 + fp16 + 1e-30) << ops::weight_type_name(type) << " element " << j;
      }
    }
  }
}

TEST(Quantize, SixteenBitTypesRoundToNearest) {
  const std::vector<float> x = {1.0f, -2.5f, 3.14159265f, 1e-3f, 65504.0f};
  for (WeightType type : {WeightType::F16, WeightType::BF16}) {
    std::vector<std::byte> bytes;
    ops::encode_weights(type, x.data(), x.size(), bytes);
    ASSERT_EQ(bytes.size(), 10u);
    const double rel = type == WeightType::F16 ? std::ldexp(1.0, -11) : std::ldexp(1.0, -8);
    for (size_t i = 0; i < x.size(); ++i)
      EXPECT_LE(std::fabs(ops::decode_weight(type, bytes.data(), i) - x[i]), rel * std::fabs(x[i])) << i;
  }
}

}  // namespace
}  // namespace q3n::test
