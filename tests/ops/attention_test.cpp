// The gated attention family against a double-precision reference of spec §3.6-3.7: q/k
// zero-centred norms, partial NeoX RoPE at absolute positions, the KV-cache append into a slot,
// causal softmax attention with GQA, the sigmoid output gate, and the split-K combine; prefill
// again on the cooperative-matrix kernel (attention_coopmat.comp) where the device has one. Cases
// run with the KV cache stored as f32, f16 and bf16 (kv_types), each slot in its own allocation.
#include <cmath>
#include <cstring>

#include "runtime/ops/attention.h"
#include "tests/support/gpu_test.h"
#include "tests/support/numeric.h"

namespace q3n::test {
namespace {

struct Case {
  uint32_t batch, tokens, heads, kv_heads, head_dim, rot_dim, past, capacity, splits;
  uint32_t rope_offset = 0;  // RoPE angles at position + rope_offset (AttentionShape::rope_offset)
};

// Zero-centred RMSNorm then rotate-half RoPE of the first rot dims, angle in fp32 as HF does.
std::vector<double> norm_rope(const float* x, const std::vector<float>& w, uint32_t hd, uint32_t rot, uint32_t pos,
                              double theta) {
  double ss = 0;
  for (uint32_t d = 0; d < hd; ++d) ss += double(x[d]) * x[d];
  const double scale = 1.0 / std::sqrt(ss / hd + 1e-6);
  std::vector<double> n(hd), out(hd);
  for (uint32_t d = 0; d < hd; ++d) n[d] = x[d] * scale * (1.0 + w[d]);
  out = n;
  for (uint32_t i = 0; i < rot / 2; ++i) {
    const float inv_freq = 1.0f / float(std::pow(theta, double(float(2 * i) / float(rot))));  // HF's fp32 steps
    const double angle = float(pos) * inv_freq;                                               // the fp32 product
    out[i] = n[i] * std::cos(angle) - n[i + rot / 2] * std::sin(angle);
    out[i + rot / 2] = n[i + rot / 2] * std::cos(angle) + n[i] * std::sin(angle);
  }
  return out;
}

// A KV cache's per-slot allocations and its slot table.
struct KvCache {
  std::vector<Allocation> k, v;
  Allocation table;
};

class AttentionTest : public GpuTest, public ::testing::WithParamInterface<Case> {
 protected:
  // Each slot's K and V rows in their own allocation (as SequenceState places slots that do not
  // share one), stored as `type`, and the slot table pointing at them.
  KvCache upload_kv_cache(std::vector<float>& k, std::vector<float>& v, uint32_t slots, ops::KvType type) {
    const auto wtype = static_cast<ops::WeightType>(type);  // KvType values are the shaders' DTYPE_*
    const size_t per_slot = k.size() / slots;
    KvCache cache;
    std::vector<ops::KvSlotAddresses> table(slots);
    for (uint32_t slot = slots; slot-- > 0;) {  // reverse order: slot addresses need not ascend
      std::vector<float> ks(k.begin() + slot * per_slot, k.begin() + (slot + 1) * per_slot);
      std::vector<float> vs(v.begin() + slot * per_slot, v.begin() + (slot + 1) * per_slot);
      cache.k.push_back(upload_words(encode_weights(ks, wtype)));
      cache.v.push_back(upload_words(encode_weights(vs, wtype)));
      std::copy(ks.begin(), ks.end(), k.begin() + slot * per_slot);  // what the GPU reads back
      std::copy(vs.begin(), vs.end(), v.begin() + slot * per_slot);
      table[slot] = {cache.k.back().range().address, cache.v.back().range().address};
    }
    std::vector<uint32_t> words(table.size() * 4);
    std::memcpy(words.data(), table.data(), table.size() * sizeof(table[0]));
    cache.table = upload_words(words);
    return cache;
  }
  // The cache as the GPU holds it now, decoded to floats [slots, kv_heads, capacity, hd].
  std::vector<float> download_kv(const std::vector<Allocation>& rows, size_t per_slot, ops::KvType type) {
    std::vector<float> out(rows.size() * per_slot);
    const size_t words = ops::weight_storage_bytes(static_cast<ops::WeightType>(type), per_slot) / 4;
    for (size_t i = 0; i < rows.size(); ++i) {
      const size_t slot = rows.size() - 1 - i;  // upload_kv_cache's order
      const auto w = download_words(rows[i], words);
      for (size_t e = 0; e < per_slot; ++e)
        out[slot * per_slot + e] =
            ops::decode_weight(static_cast<ops::WeightType>(type), reinterpret_cast<const std::byte*>(w.data()), e);
    }
    return out;
  }
  // Runs the case with the KV cache stored as `kv_type` and checks the cache append against a
  // double reference (to the storage type's rounding), then the output against a double reference
  // over the cache as stored, with the tolerance of fp32 arithmetic or (`matrix_units`) of fp16
  // operands on the matrix units.
  void check(bool matrix_units, ops::KvType kv_type);
};

// f32, and the 16-bit KV types at head dims 64 and 256 (every other code path of the cases; each
// (head dim, type) pair is a pipeline to compile, seconds each on lavapipe).
std::vector<ops::KvType> kv_types(const Case& c) {
  if (c.head_dim != 64 && c.head_dim != 256) return {ops::KvType::F32};
  return {ops::KvType::F32, ops::KvType::F16, ops::KvType::BF16};
}

TEST_P(AttentionTest, MatchesReference) {
  use_coopmat(false);
  for (const ops::KvType type : kv_types(GetParam())) {
    SCOPED_TRACE(std::string("KV cache ") + ops::kv_type_name(type));
    check(false, type);
  }
}

// Prefill cases (several tokens, one split) on the matrix units, on devices that have them.
TEST_P(AttentionTest, CoopmatMatchesReference) {
  const Case c = GetParam();
  if (c.tokens < 2 || c.splits != 1 || c.head_dim % 32 != 0) GTEST_SKIP() << "this case takes no matrix units";
  std::string why;
  if (!use_coopmat(true, &why)) GTEST_SKIP() << why;
  for (const ops::KvType type : kv_types(c)) {
    SCOPED_TRACE(std::string("KV cache ") + ops::kv_type_name(type));
    check(true, type);
  }
}

void AttentionTest::check(bool matrix_units, ops::KvType kv_type) {
  const Case c = GetParam();
  ops::AttentionShape s{.batch = c.batch,
                        .tokens = c.tokens,
                        .heads = c.heads,
                        .kv_heads = c.kv_heads,
                        .head_dim = c.head_dim,
                        .rot_dim = c.rot_dim,
                        .capacity = c.capacity,
                        .splits = c.splits,
                        .kv_type = kv_type,
                        .rope_offset = c.rope_offset};
  const uint32_t hd = c.head_dim, width = s.qkv_width(), slots = c.batch + 1, group = c.heads / c.kv_heads;
  auto qkv = random_floats(s.rows() * width, 11, -2, 2);
  auto q_norm = random_floats(hd, 12, -0.5f, 0.5f), k_norm = random_floats(hd, 13, -0.5f, 0.5f);
  auto inv_freq = ops::rope_inv_freq(1e7, c.rot_dim);
  // Earlier positions hold cached (already normalised) keys and values of plausible size.
  const size_t slot_floats = size_t(c.kv_heads) * c.capacity * hd, cache_floats = slots * slot_floats;
  auto cache_k = random_floats(cache_floats, 14, -1.5f, 1.5f), cache_v = random_floats(cache_floats, 15, -1, 1);
  const KvCache cache = upload_kv_cache(cache_k, cache_v, slots, kv_type);  // cache_k/v: as stored
  std::vector<uint32_t> seqs;
  for (uint32_t b = 0; b < c.batch; ++b) seqs.insert(seqs.end(), {c.batch - b, c.past + b});  // positions differ

  Allocation dqkv = upload(qkv), dqn = upload(q_norm), dkn = upload(k_norm), dfreq = upload(inv_freq),
             dseqs = upload_words(seqs), dq = poisoned(s.rows() * c.heads * hd),
             part_o = poisoned(size_t(c.batch) * c.splits * c.tokens * c.heads * hd),
             part_ml = poisoned(size_t(c.batch) * c.splits * c.tokens * c.heads * 2),
             dout = poisoned(s.rows() * c.heads * hd);
  run([&](CommandBuffer& cb) {
    ops::record_attention(pipelines(), cb,
                          {.qkv = dqkv.range(),
                           .q_norm = dqn.range(),
                           .k_norm = dkn.range(),
                           .inv_freq = dfreq.range(),
                           .seqs = dseqs.range(),
                           .kv_slots = cache.table.range(),
                           .q = dq.range(),
                           .part_o = part_o.range(),
                           .part_ml = part_ml.range(),
                           .out = dout.range(),
                           .shape = s});
  });

  // The append: rows at the step's positions replaced by the normalised, rotated k and the raw v,
  // rounded to the storage type; the other rows untouched.
  std::vector<double> want_k(cache_k.begin(), cache_k.end()), want_v(cache_v.begin(), cache_v.end());
  for (uint32_t b = 0; b < c.batch; ++b) {
    const uint32_t slot = seqs[2 * b], pos0 = seqs[2 * b + 1];
    for (uint32_t t = 0; t < c.tokens; ++t) {
      const float* row = &qkv[(size_t(b) * c.tokens + t) * width];
      for (uint32_t g = 0; g < c.kv_heads; ++g) {
        const auto k = norm_rope(row + (2 * c.heads + g) * hd, k_norm, hd, c.rot_dim, c.rope_offset + pos0 + t, 1e7);
        const size_t at = ((size_t(slot) * c.kv_heads + g) * c.capacity + pos0 + t) * hd;
        for (uint32_t d = 0; d < hd; ++d) {
          want_k[at + d] = k[d];
          want_v[at + d] = row[(2 * c.heads + c.kv_heads + g) * hd + d];
        }
      }
    }
  }
  const auto got_k = download_kv(cache.k, slot_floats, kv_type);
  const auto got_v = download_kv(cache.v, slot_floats, kv_type);
  // Norm + RoPE: fp32 sums over hd and a reduced-angle cos/sin, a few 1e-6 of values <= ~4; then
  // the storage rounding: half an ulp (fp16 2^-11, bf16 2^-8 relative), one ulp where the fp32
  // value and the exact one round apart. v is copied, so only the storage rounding moves it.
  const double ulp = kv_type == ops::KvType::F32 ? 0 : kv_type == ops::KvType::F16 ? 0x1p-10 : 0x1p-7;
  // (fp16 subnormals below 2^-14 round by 2^-25 absolute.)
  const double subnormal = kv_type == ops::KvType::F16 ? 0x1p-24 : 0;
  EXPECT_TRUE(all_close(got_k, want_k, 2e-5, 1e-5 + ulp)) << "K cache (appended rows; others untouched)";
  // (packHalf2x16's rounding mode is the driver's: allow a whole ulp.)
  EXPECT_TRUE(all_close(got_v, want_v, subnormal, ulp)) << "V cache (copies rounded to the storage type)";

  // The attention output over the cache as stored.
  std::vector<double> want_out(s.rows() * c.heads * hd);
  std::vector<double> tolerance(want_out.size());
  for (uint32_t b = 0; b < c.batch; ++b) {
    const uint32_t slot = seqs[2 * b], pos0 = seqs[2 * b + 1];
    for (uint32_t t = 0; t < c.tokens; ++t) {
      const float* row = &qkv[(size_t(b) * c.tokens + t) * width];
      for (uint32_t h = 0; h < c.heads; ++h) {
        const auto q = norm_rope(row + h * 2 * hd, q_norm, hd, c.rot_dim, c.rope_offset + pos0 + t, 1e7);
        const size_t kv = (size_t(slot) * c.kv_heads + h / group) * c.capacity;
        std::vector<double> scores(pos0 + t + 1);
        double m = -1e300, sum = 0, score_error = 0;
        for (uint32_t u = 0; u <= pos0 + t; ++u) {
          double dot = 0, abs_dot = 0;
          for (uint32_t d = 0; d < hd; ++d) {
            dot += q[d] * got_k[(kv + u) * hd + d];
            abs_dot += std::fabs(q[d] * got_k[(kv + u) * hd + d]);
          }
          scores[u] = dot / std::sqrt(double(hd));
          m = std::max(m, scores[u]);
          // Matrix units: q and k rounded to fp16 (2^-11 relative each), fp32 sums.
          score_error = std::max(
              score_error, (2 * std::ldexp(1.0, -11) + hd * std::ldexp(1.0, -23)) * abs_dot / std::sqrt(double(hd)));
        }
        for (auto& x : scores) sum += (x = std::exp(x - m));
        for (uint32_t d = 0; d < hd; ++d) {
          double o = 0, v_max = 0;
          for (uint32_t u = 0; u <= pos0 + t; ++u) {
            o += scores[u] * got_v[(kv + u) * hd + d];
            v_max = std::max(v_max, std::fabs(double(got_v[(kv + u) * hd + d])));
          }
          const double gate = 1.0 / (1.0 + std::exp(-double(row[h * 2 * hd + hd + d])));
          const size_t at = ((size_t(b) * c.tokens + t) * c.heads + h) * hd + d;
          want_out[at] = o / sum * gate;
          // fp32: scores are dots of hd terms (|score| <~ 4) -> ~hd ulps, inherited relatively by
          // the weighted mean of |v| <= 1. Matrix units: each weight moves by e^(score errors of
          // its key and of the max) and by fp16 rounding of p, and the sum l (fp32) does not see
          // that rounding: 2 score errors + 2 x 2^-11 relative, plus v rounded to fp16 (2^-11).
          tolerance[at] = matrix_units ? 1.5 * (2 * score_error + 3 * std::ldexp(1.0, -11)) * v_max * gate + 1e-6
                                       : 3e-5 * std::fabs(want_out[at]) + 1e-4;
        }
      }
    }
  }
  const auto got = download(dout, want_out.size());
  size_t bad = 0;
  for (size_t i = 0; i < got.size(); ++i)
    if (!(std::fabs(got[i] - want_out[i]) <= tolerance[i]) && bad++ < 3)
      ADD_FAILURE() << "gated attention output " << i << " = " << got[i] << ", expected " << want_out[i]
                    << " (tolerance " << tolerance[i] << ")";
  EXPECT_EQ(bad, 0u);
}

// record_attention's arguments over one step's test buffers, q and k sharing one norm weight.
ops::AttentionArgs step_args(const ops::AttentionShape& s, const Allocation& qkv, const Allocation& norms,
                             const Allocation& inv_freq, const Allocation& seqs, const Allocation& table,
                             const Allocation& q, const Allocation& part_o, const Allocation& part_ml,
                             const Allocation& out) {
  return {.qkv = qkv.range(),
          .q_norm = norms.range(),
          .k_norm = norms.range(),
          .inv_freq = inv_freq.range(),
          .seqs = seqs.range(),
          .kv_slots = table.range(),
          .q = q.range(),
          .part_o = part_o.range(),
          .part_ml = part_ml.range(),
          .out = out.range(),
          .shape = s};
}

// A step that runs past its slot's capacity (a host bug the shader must contain): its rows read
// the slot's own keys only, never the next slot's cache, which holds NaNs here.
TEST_F(GpuTest, AttentionReadsStayInsideTheSlot) {
  for (const uint32_t splits : {1u, 3u}) {
    ops::AttentionShape s{.batch = 1,
                          .tokens = 4,
                          .heads = 4,
                          .kv_heads = 1,
                          .head_dim = 64,
                          .rot_dim = 32,
                          .capacity = 40,
                          .splits = splits};
    const uint32_t hd = s.head_dim, slots = 2;
    auto qkv = random_floats(s.rows() * s.qkv_width(), 21, -2, 2);
    auto norms = random_floats(hd, 22, -0.5f, 0.5f);
    auto inv_freq = ops::rope_inv_freq(1e7, s.rot_dim);
    const size_t slot_floats = size_t(s.kv_heads) * s.capacity * hd;
    auto cache = random_floats(slots * slot_floats, 23, -1, 1);
    std::fill(cache.begin() + slot_floats, cache.end(), std::nanf(""));  // slot 1
    // Both slots in one allocation, slot 1 right after slot 0 (as SequenceState packs them).
    Allocation dk = upload(cache), dv = upload(cache);
    const std::vector<ops::KvSlotAddresses> table = {
        {dk.range().address, dv.range().address},
        {dk.range().address + slot_floats * 4, dv.range().address + slot_floats * 4}};
    std::vector<uint32_t> table_words(8);
    std::memcpy(table_words.data(), table.data(), sizeof(ops::KvSlotAddresses) * 2);
    const std::vector<uint32_t> seqs = {0, s.capacity - 2};  // slot 0; rows 2 and 3 fall past the end
    Allocation dqkv = upload(qkv), dn = upload(norms), dfreq = upload(inv_freq), dtable = upload_words(table_words),
               dseqs = upload_words(seqs), dq = poisoned(s.rows() * s.heads * hd),
               part_o = poisoned(size_t(splits) * s.tokens * s.heads * hd),
               part_ml = poisoned(size_t(splits) * s.tokens * s.heads * 2), dout = poisoned(s.rows() * s.heads * hd);
    run([&](CommandBuffer& cb) {
      ops::record_attention(pipelines(), cb, step_args(s, dqkv, dn, dfreq, dseqs, dtable, dq, part_o, part_ml, dout));
    });
    const auto out = download(dout, s.rows() * s.heads * hd);
    for (size_t i = 0; i < out.size(); ++i)
      ASSERT_TRUE(std::isfinite(out[i])) << "splits " << splits << ", output " << i;
    const auto k = download(dk, slots * slot_floats);
    for (size_t i = slot_floats; i < k.size(); ++i) ASSERT_TRUE(std::isnan(k[i])) << "slot 1 was written at " << i;
  }
}

// The CPU shapes' attention reading K and V through texel views of the layer's K and V blocks
// (AttentionArgs::k_rows) gives the bits of reads through the slot table: every KV type, decode
// and a 3-token step, one split and two, sequences in slots 2 and 0 of three packed in one block.
TEST_F(GpuTest, AttentionTexelReadsGiveTheBitsOfAddressReads) {
  if (!rt().device.texel_reads())
    GTEST_SKIP() << "texel reads are off (no push descriptors, GPU shapes, or Q3N_TEXEL_READS=0)";
  const CpuShapesForThisScope cpu_shapes(pipelines());
  for (const ops::KvType type : {ops::KvType::F32, ops::KvType::F16, ops::KvType::BF16})
    for (const uint32_t tokens : {1u, 3u})
      for (const uint32_t splits : {1u, 2u}) {
        SCOPED_TRACE(std::string(ops::kv_type_name(type)) + ", " + std::to_string(tokens) + " tokens, " +
                     std::to_string(splits) + " splits");
        ops::AttentionShape s{.batch = 2,
                              .tokens = tokens,
                              .heads = 6,
                              .kv_heads = 2,
                              .head_dim = 64,
                              .rot_dim = 16,
                              .capacity = 37,
                              .splits = splits,
                              .kv_type = type};
        const uint32_t hd = s.head_dim, slots = 3;
        const size_t slot_floats = size_t(s.kv_heads) * s.capacity * hd, out_floats = s.rows() * s.heads * hd;
        const uint64_t stride = s.kv_slot_bytes();
        auto qkv = random_floats(s.rows() * s.qkv_width(), 31, -2, 2);
        auto norms = random_floats(hd, 32, -0.5f, 0.5f);
        auto inv_freq = ops::rope_inv_freq(1e7, s.rot_dim);
        auto k_floats = random_floats(slots * slot_floats, 33, -1.5f, 1.5f);
        auto v_floats = random_floats(slots * slot_floats, 34, -1, 1);
        const auto wtype = static_cast<ops::WeightType>(type);  // KvType values are the shaders' DTYPE_*
        const auto k = encode_weights(k_floats, wtype), v = encode_weights(v_floats, wtype);
        const std::vector<uint32_t> seqs = {2, 20, 0, 9};  // slot, position of each sequence
        Allocation dqkv = upload(qkv), dn = upload(norms), dfreq = upload(inv_freq), dseqs = upload_words(seqs);
        std::vector<std::vector<float>> outputs;
        for (const bool texels : {true, false}) {
          Allocation dk = upload_words(k), dv = upload_words(v), dq = poisoned(out_floats),
                     part_o = poisoned(size_t(s.batch) * splits * tokens * s.heads * hd),
                     part_ml = poisoned(size_t(s.batch) * splits * tokens * s.heads * 2), dout = poisoned(out_floats);
          std::vector<ops::KvSlotAddresses> table;
          for (uint32_t slot = 0; slot < slots; ++slot)
            table.push_back({dk.range().address + slot * stride, dv.range().address + slot * stride});
          std::vector<uint32_t> table_words(table.size() * 4);
          std::memcpy(table_words.data(), table.data(), table.size() * sizeof(table[0]));
          Allocation dtable = upload_words(table_words);
          ASSERT_TRUE(dk.range().quad_readable() && dv.range().quad_readable());
          ops::AttentionArgs args = step_args(s, dqkv, dn, dfreq, dseqs, dtable, dq, part_o, part_ml, dout);
          if (texels) args.k_rows = dk.range(), args.v_rows = dv.range(), args.kv_slot_stride = stride;
          run([&](CommandBuffer& cb) { ops::record_attention(pipelines(), cb, args); });
          outputs.push_back(download(dout, out_floats));
        }
        EXPECT_TRUE(pipelines().built("attention_rowwise_texel"));
        for (size_t i = 0; i < out_floats; ++i) ASSERT_EQ(outputs[0][i], outputs[1][i]) << "output " << i;
      }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, AttentionTest,
    ::testing::Values(Case{1, 65, 4, 2, 64, 16, 0, 80, 1},        // prefill from empty, GQA 2, rotary 0.25
                      Case{1, 63, 3, 1, 128, 64, 70, 140, 1},     // continuation chunk, GQA 3, rotary 0.5
                      Case{1, 17, 2, 2, 256, 128, 5, 30, 1},      // head_dim 256, no GQA
                      Case{1, 20, 4, 2, 64, 16, 30, 60, 3},       // prefill split across workgroups
                      Case{3, 1, 16, 2, 256, 64, 100, 130, 1},    // batched decode, 80B head shape
                      Case{2, 1, 16, 2, 256, 64, 4200, 4300, 9},  // decode at a cache > 4096, split-K
                      Case{2, 2, 4, 1, 64, 32, 4100, 4110, 16},   // 2-token verify step, many splits
                      Case{1, 5, 4, 1, 64, 32, 75, 80, 1},        // a chunk that ends at the last position
                      Case{1, 40, 16, 2, 256, 64, 33, 100, 1},    // prefill at the 80B head shape (GQA 8)
                      Case{2, 9, 4, 2, 96, 32, 10, 40, 1},        // two sequences' pieces, head_dim 96
                      Case{2, 1, 4, 1, 64, 32, 98, 100, 4},       // decode of the last position, split-K
                      // RoPE at positions near 200,000 and up to 262,143 (angles to 2.6e5 rad):
                      Case{1, 21, 4, 2, 64, 32, 20, 50, 1, 200000}, Case{2, 1, 16, 2, 256, 64, 100, 130, 1, 262014}),
    [](const auto& info) {
      const Case& c = info.param;
      return "b" + std::to_string(c.batch) + "t" + std::to_string(c.tokens) + "h" + std::to_string(c.heads) + "kv" +
             std::to_string(c.kv_heads) + "d" + std::to_string(c.head_dim) + "past" + std::to_string(c.past) + "s" +
             std::to_string(c.splits) + (c.rope_offset ? "rope" + std::to_string(c.rope_offset) : "");
    });

}  // namespace
}  // namespace q3n::test
