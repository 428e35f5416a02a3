// libFuzzer target: a pipeline cache file (runtime/pipeline_cache_file.h). Decoding yields the
// driver's data or a problem, nothing else; a file it accepts must encode back to the same bytes.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "runtime/pipeline_cache_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // The identity the seeds were written for (tools/make_fuzz_seeds.py).
  q3n::PipelineCacheIdentity id{0x10de, 0x2330, {}};
  for (size_t i = 0; i < id.uuid.size(); ++i) id.uuid[i] = uint8_t(0xa0 + i);
  const std::span<const char> file(reinterpret_cast<const char*>(data), size);
  const q3n::DecodedPipelineCache decoded = q3n::decode_pipeline_cache(file, id);
  if (decoded.problem.empty()) {
    const std::vector<char> again = q3n::encode_pipeline_cache(id, decoded.data);
    if (again.size() != size || std::memcmp(again.data(), data, size) != 0) std::abort();
  } else if (!decoded.data.empty()) {
    std::abort();  // a refused file must hand nothing to the driver
  }
  return 0;
}
