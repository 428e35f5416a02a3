// shaders/embedding.comp: rows gathered exactly (widening bf16/f16 to fp32 is exact).
#include "runtime/ops/embedding.h"
#include "tests/support/gpu_test.h"
#include "tests/support/numeric.h"

namespace q3n::test {
namespace {

class EmbeddingTest : public GpuTest, public ::testing::WithParamInterface<ops::WeightType> {};

TEST_P(EmbeddingTest, GathersRowsExactly) {
  const uint32_t rows = 301, dim = 130, tokens = 67;
  auto table = random_floats(size_t(rows) * dim, 21, -2, 2);
  const auto words = encode_weights(table, GetParam());
  std::vector<int32_t> ids(tokens);
  for (uint32_t t = 0; t < tokens; ++t) ids[t] = int32_t((t * 97 + 13) % rows);
  ids[5] = 0;
  ids[6] = rows - 1;
  Allocation dtable = upload_words(words), dids = upload_bytes(ids.data(), ids.size() * 4),
             dout = poisoned(size_t(tokens) * dim);
  run([&](CommandBuffer& cb) {
    ops::record_embedding(pipelines(), cb,
                          {.table = dtable.range(),
                           .ids = dids.range(),
                           .out = dout.range(),
                           .type = GetParam(),
                           .rows = rows,
                           .dim = dim,
                           .tokens = tokens});
  });
  std::vector<double> expected(size_t(tokens) * dim);
  for (uint32_t t = 0; t < tokens; ++t)
    for (uint32_t i = 0; i < dim; ++i) expected[t * dim + i] = table[size_t(ids[t]) * dim + i];
  EXPECT_TRUE(all_close(download(dout, expected.size()), expected, 0, 0));
}

INSTANTIATE_TEST_SUITE_P(Types, EmbeddingTest,
                         ::testing::Values(ops::WeightType::F32, ops::WeightType::F16, ops::WeightType::BF16));

}  // namespace
}  // namespace q3n::test
