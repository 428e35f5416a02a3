// A disk cache of device-ready weights (`--cache DIR`): the bytes of every tensor DeviceWeights
// uploads, after conversion or quantisation, in upload order. The next start with the same
// checkpoint and format reads them back instead of converting again. An entry is keyed by the
// checkpoint's identity (tensor names, dtypes, shapes, file names, sizes and modification times)
// and the format; it is written to a temporary file and renamed only when complete, so an
// interrupted run never leaves a half-written entry that a later run would trust.
#pragma once

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <span>
#include <string>

#include "loader/safetensors.h"

namespace q3n::graph {

// An entry's header: magic (16 bytes), key (8), payload size (8).
constexpr uint64_t kWeightCacheHeaderBytes = 32;
// Why an entry whose file starts with `header` and is `file_bytes` long cannot serve `key` with
// `payload_bytes` of weights, or "" if it can. Pure byte handling: fuzzed (tests/fuzz).
std::string weight_cache_problem(std::span<const char> header, uint64_t file_bytes, uint64_t key,
                                 uint64_t payload_bytes);

class WeightCache {
 public:
  // Opens the entry for `checkpoint` in `format_name` under `dir` (created if needed): for
  // reading if a complete entry of exactly `payload_bytes` exists, else for writing.
  WeightCache(const std::filesystem::path& dir, const Checkpoint& checkpoint, const std::string& format_name,
              uint64_t payload_bytes);
  ~WeightCache();  // an uncommitted temporary file is removed
  WeightCache(const WeightCache&) = delete;
  WeightCache& operator=(const WeightCache&) = delete;

  bool reading() const { return reading_; }
  // Set when a file existed under this entry's name but could not be used: why, for a notice.
  const std::string& rebuilt_because() const { return rebuilt_because_; }
  void read(void* dst, size_t bytes);
  void write(const void* src, size_t bytes);
  // Writer: checks that exactly the promised bytes were written, then publishes the entry.
  void commit();
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_, temp_;
  std::string rebuilt_because_;
  std::ifstream in_;
  std::ofstream out_;
  bool reading_ = false, committed_ = false;
  uint64_t payload_ = 0, done_ = 0;
};

}  // namespace q3n::graph
