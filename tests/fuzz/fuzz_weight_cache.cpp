// libFuzzer target: the header of a `--cache` weights entry (graph/weight_cache.h). The input is
// the file size, key and planned payload size the reader would hold (8 bytes each), then the
// file's first bytes. The check names a problem or accepts, never reads past what it was given.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "graph/weight_cache.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 24) return 0;
  uint64_t file_bytes, key, payload;
  std::memcpy(&file_bytes, data, 8);
  std::memcpy(&key, data + 8, 8);
  std::memcpy(&payload, data + 16, 8);
  const std::span<const char> header(reinterpret_cast<const char*>(data + 24), size - 24);
  const std::string problem = q3n::graph::weight_cache_problem(header, file_bytes, key, payload);
  // Accepted only with a whole header, the file exactly header + payload long.
  if (problem.empty() && (header.size() < q3n::graph::kWeightCacheHeaderBytes ||
                          file_bytes != q3n::graph::kWeightCacheHeaderBytes + payload))
    std::abort();
  return 0;
}
