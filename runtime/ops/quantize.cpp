#include "runtime/ops/quantize.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "runtime/error.h"

namespace q3n::ops {
namespace {

uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
void put_word(std::byte*& out, uint32_t w) {
  std::memcpy(out, &w, 4);
  out += 4;
}
uint32_t word_at(const std::byte* data, size_t word) {
  uint32_t w;
  std::memcpy(&w, data + word * 4, 4);
  return w;
}

void encode_q8_block(const float* x, std::byte*& out) {
  float amax = 0;
  for (uint32_t j = 0; j < kQuantBlock; ++j) amax = std::max(amax, std::fabs(x[j]));
  const uint16_t d_bits = f32_to_f16_bits(amax / 127.0f);
  const float d = f16_bits_to_f32(d_bits);
  put_word(out, d_bits);
  for (uint32_t w = 0; w < 8; ++w) {
    uint32_t word = 0;
    for (uint32_t b = 0; b < 4; ++b) {
      const float v = x[w * 4 + b];
      const int q = d > 0 ? int(std::clamp(std::nearbyint(v / d), -127.0f, 127.0f)) : 0;
      word |= uint32_t(uint8_t(int8_t(q))) << (8 * b);
    }
    put_word(out, word);
  }
}

void encode_q4_block(const float* x, std::byte*& out) {
  float lo = x[0], hi = x[0];
  for (uint32_t j = 1; j < kQuantBlock; ++j) lo = std::min(lo, x[j]), hi = std::max(hi, x[j]);
  const uint16_t d_bits = f32_to_f16_bits((hi - lo) / 15.0f), m_bits = f32_to_f16_bits(lo);
  const float d = f16_bits_to_f32(d_bits), m = f16_bits_to_f32(m_bits);
  put_word(out, uint32_t(d_bits) | uint32_t(m_bits) << 16);
  for (uint32_t w = 0; w < 4; ++w) {
    uint32_t word = 0;
    for (uint32_t n = 0; n < 8; ++n) {
      const float v = x[w * 8 + n];
      const uint32_t q = d > 0 ? uint32_t(std::clamp(std::nearbyint((v - m) / d), 0.0f, 15.0f)) : 0;
      word |= q << (4 * n);
    }
    put_word(out, word);
  }
}

}  // namespace

uint16_t f32_to_f16_bits(float f) {
  const uint32_t x = float_bits(f);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t abs = x & 0x7FFFFFFFu;
  if (abs >= 0x7F800000u) return uint16_t(sign | 0x7C00u | (abs > 0x7F800000u ? 0x200u : 0u));  // inf / nan
  if (abs >= 0x477FF000u) return uint16_t(sign | 0x7C00u);  // rounds past 65504: infinity
  if (abs < 0x38800000u) {  // below the smallest normal half: a subnormal, rounded to nearest even
    const float scaled = bits_float(abs) * 16777216.0f;  // in units of 2^-24
    return uint16_t(sign | uint32_t(std::nearbyint(scaled)));
  }
  const uint32_t mant_odd = (abs >> 13) & 1u;
  const uint32_t rounded = abs + 0xFFFu + mant_odd;  // round to nearest even at bit 13
  return uint16_t(sign | ((rounded - 0x38000000u) >> 13));
}

float f16_bits_to_f32(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16, exp = (h >> 10) & 0x1Fu, mant = h & 0x3FFu;
  if (exp == 0) return bits_float(sign) + (sign ? -1.0f : 1.0f) * float(mant) * 5.9604644775390625e-8f;
  if (exp == 31) return bits_float(sign | 0x7F800000u | mant << 13);
  return bits_float(sign | (exp + 112) << 23 | mant << 13);
}

uint16_t f32_to_bf16_bits(float f) {
  const uint32_t x = float_bits(f);
  if ((x & 0x7FFFFFFFu) > 0x7F800000u) return uint16_t((x >> 16) | 0x40u);  // keep NaN a NaN
  return uint16_t((x + 0x7FFFu + ((x >> 16) & 1u)) >> 16);
}

void encode_weights(WeightType type, const float* x, size_t n, std::byte* out) {
  switch (type) {
    case WeightType::F32:
      std::memcpy(out, x, n * 4);
      return;
    case WeightType::F16:
    case WeightType::BF16:
      for (size_t i = 0; i < n; ++i) {
        const uint16_t h = type == WeightType::F16 ? f32_to_f16_bits(x[i]) : f32_to_bf16_bits(x[i]);
        std::memcpy(out + 2 * i, &h, 2);
      }
      return;
    case WeightType::Q8:
    case WeightType::Q4:
      if (n % kQuantBlock) throw Error("internal: quantised rows must be a multiple of 32 long");
      for (size_t b = 0; b < n; b += kQuantBlock)
        type == WeightType::Q8 ? encode_q8_block(x + b, out) : encode_q4_block(x + b, out);
      return;
  }
}

void encode_weights(WeightType type, const float* x, size_t n, std::vector<std::byte>& out) {
  const size_t at = out.size();
  out.resize(at + weight_storage_bytes(type, n));
  encode_weights(type, x, n, out.data() + at);
}

float decode_weight(WeightType type, const std::byte* data, size_t i) {
  switch (type) {
    case WeightType::F32: {
      float f;
      std::memcpy(&f, data + i * 4, 4);
      return f;
    }
    case WeightType::F16: {
      uint16_t h;
      std::memcpy(&h, data + i * 2, 2);
      return f16_bits_to_f32(h);
    }
    case WeightType::BF16: {
      uint16_t h;
      std::memcpy(&h, data + i * 2, 2);
      return bits_float(uint32_t(h) << 16);
    }
    case WeightType::Q8: {
      const size_t block = i / kQuantBlock * 9, j = i % kQuantBlock;
      const float d = f16_bits_to_f32(uint16_t(word_at(data, block)));
      return d * float(int8_t(uint8_t(word_at(data, block + 1 + j / 4) >> (8 * (j % 4)))));
    }
    case WeightType::Q4: {
      const size_t block = i / kQuantBlock * 5, j = i % kQuantBlock;
      const uint32_t head = word_at(data, block);
      const float d = f16_bits_to_f32(uint16_t(head)), m = f16_bits_to_f32(uint16_t(head >> 16));
      return d * float((word_at(data, block + 1 + j / 8) >> (4 * (j % 8))) & 0xFu) + m;
    }
  }
  return 0;
}

}  // namespace q3n::ops
