#include "runtime/pipeline_cache_file.h"

#include <cstring>

#include "runtime/checksum.h"

namespace q3n {
namespace {

constexpr char kMagic[16] = "q3n-pipelines-1";
// magic, data size, data checksum, vendor, device, UUID
constexpr size_t kHeaderBytes = 16 + 8 + 8 + 4 + 4 + 16;
// VkPipelineCacheHeaderVersionOne: header size, header version, vendor, device, UUID.
constexpr size_t kDriverHeaderBytes = 4 + 4 + 4 + 4 + 16;
constexpr uint32_t kDriverHeaderVersionOne = 1;

template <typename T>
T read_at(std::span<const char> bytes, size_t at) {
  T v;
  std::memcpy(&v, bytes.data() + at, sizeof v);
  return v;
}
template <typename T>
void write_at(std::vector<char>& out, size_t at, const T& v) {
  std::memcpy(out.data() + at, &v, sizeof v);
}
uint64_t checksum(std::span<const char> data) {
  Fnv64 f;
  f.add(data.data(), data.size());
  return f.h;
}

}  // namespace

std::vector<char> encode_pipeline_cache(const PipelineCacheIdentity& id, std::span<const char> data) {
  std::vector<char> out(kHeaderBytes + data.size());
  std::memcpy(out.data(), kMagic, sizeof kMagic);
  write_at(out, 16, uint64_t(data.size()));
  write_at(out, 24, checksum(data));
  write_at(out, 32, id.vendor_id);
  write_at(out, 36, id.device_id);
  write_at(out, 40, id.uuid);
  if (!data.empty()) std::memcpy(out.data() + kHeaderBytes, data.data(), data.size());
  return out;
}

DecodedPipelineCache decode_pipeline_cache(std::span<const char> file, const PipelineCacheIdentity& id) {
  if (file.size() < kHeaderBytes || std::memcmp(file.data(), kMagic, sizeof kMagic) != 0)
    return {{}, "is not a q3n pipeline cache (an older q3n's, or another file)"};
  const uint64_t size = read_at<uint64_t>(file, 16);
  if (size != file.size() - kHeaderBytes)
    return {{},
            "is truncated or has trailing bytes (" + std::to_string(file.size() - kHeaderBytes) + " data bytes, " +
                "header says " + std::to_string(size) + ")"};
  const std::span<const char> data = file.subspan(kHeaderBytes);
  if (read_at<uint64_t>(file, 24) != checksum(data)) return {{}, "fails its checksum (damaged)"};
  if (read_at<uint32_t>(file, 32) != id.vendor_id || read_at<uint32_t>(file, 36) != id.device_id ||
      std::memcmp(file.data() + 40, id.uuid.data(), id.uuid.size()) != 0)
    return {{}, "was written for another device or driver version"};
  // The driver's own header must agree too: it is what the driver reads first.
  if (data.size() < kDriverHeaderBytes) return {{}, "holds no driver header"};
  const uint32_t header_size = read_at<uint32_t>(data, 0), version = read_at<uint32_t>(data, 4);
  if (header_size < kDriverHeaderBytes || header_size > data.size() || version != kDriverHeaderVersionOne ||
      read_at<uint32_t>(data, 8) != id.vendor_id || read_at<uint32_t>(data, 12) != id.device_id ||
      std::memcmp(data.data() + 16, id.uuid.data(), id.uuid.size()) != 0)
    return {{}, "holds a driver header for another device or of an unknown version"};
  return {data, ""};
}

}  // namespace q3n
