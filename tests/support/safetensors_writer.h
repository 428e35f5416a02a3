// Writes small safetensors files for loader tests (and lets tests corrupt them).
#pragma once

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace q3n::test {

struct RawTensor {
  std::string name;
  std::string dtype;  // "F32", "BF16", ...
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
};

inline std::string safetensors_header(const std::vector<RawTensor>& tensors) {
  nlohmann::json h = nlohmann::json::object();
  uint64_t offset = 0;
  for (const auto& t : tensors) {
    h[t.name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {offset, offset + t.bytes.size()}}};
    offset += t.bytes.size();
  }
  h["__metadata__"] = {{"format", "pt"}};
  return h.dump();
}

// A file with `header` verbatim (for corrupt headers) followed by the tensors' bytes.
inline void write_safetensors_raw(const std::filesystem::path& path, const std::string& header,
                                  const std::vector<RawTensor>& tensors) {
  std::ofstream out(path, std::ios::binary);
  const uint64_t n = header.size();
  out.write(reinterpret_cast<const char*>(&n), 8);
  out.write(header.data(), static_cast<std::streamsize>(header.size()));
  for (const auto& t : tensors) out.write(reinterpret_cast<const char*>(t.bytes.data()), t.bytes.size());
}

inline void write_safetensors(const std::filesystem::path& path, const std::vector<RawTensor>& tensors) {
  write_safetensors_raw(path, safetensors_header(tensors), tensors);
}

inline RawTensor f32_tensor(const std::string& name, std::vector<int64_t> shape, float fill = 0.5f) {
  int64_t n = 1;
  for (auto d : shape) n *= d;
  RawTensor t{name, "F32", std::move(shape), std::vector<uint8_t>(n * 4)};
  for (int64_t i = 0; i < n; ++i) std::memcpy(t.bytes.data() + i * 4, &fill, 4);
  return t;
}

}  // namespace q3n::test
