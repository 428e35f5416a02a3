// shaders/copy.comp: an exact copy of random words, of a size that is not a multiple of the
// workgroup, into a poisoned buffer whose tail must stay untouched.
#include "runtime/ops/copy.h"
#include "tests/support/gpu_test.h"

namespace q3n::test {
namespace {

using CopyTest = GpuTest;

TEST_F(CopyTest, CopiesExactlyTheRange) {
  const size_t words = 4 * 1001;  // 1001 16-byte vectors
  std::vector<uint32_t> src(words);
  for (size_t i = 0; i < words; ++i) src[i] = uint32_t(i * 2654435761u) ^ 0x5bd1e995u;
  Allocation dsrc = upload_words(src), ddst = poisoned(words + 4);
  run([&](CommandBuffer& cb) { ops::record_copy(pipelines(), cb, dsrc.range(), ddst.range(), words * 4); });
  const auto got = download_words(ddst, words + 4);
  for (size_t i = 0; i < words; ++i) ASSERT_EQ(got[i], src[i]) << "word " << i;
  for (size_t i = words; i < words + 4; ++i) EXPECT_EQ(got[i], kPoison) << "word " << i << " past the end";
}

}  // namespace
}  // namespace q3n::test
