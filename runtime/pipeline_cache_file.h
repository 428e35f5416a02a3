// The pipeline cache on disk: q3n's own header, then the driver's VkPipelineCache data. Drivers
// differ in how well they survive foreign or damaged data, so nothing reaches the driver unless
// the header's magic, size and checksum hold and the driver's own header inside names this
// device (vendor, device, pipeline-cache UUID). Pure byte handling: fuzzed (tests/fuzz).
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace q3n {

struct PipelineCacheIdentity {
  uint32_t vendor_id = 0, device_id = 0;
  std::array<uint8_t, 16> uuid{};
};

// The file's bytes for the driver's `data`.
std::vector<char> encode_pipeline_cache(const PipelineCacheIdentity& id, std::span<const char> data);

struct DecodedPipelineCache {
  std::span<const char> data;  // the driver's data, inside the file's bytes
  std::string problem;         // empty when the file is usable; else what is wrong, for a notice
};
DecodedPipelineCache decode_pipeline_cache(std::span<const char> file, const PipelineCacheIdentity& id);

}  // namespace q3n
