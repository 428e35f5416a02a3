// Safetensors checkpoints: one file or shards listed by model.safetensors.index.json, memory-mapped
// so tensors stream to the GPU in any order without holding the model in host memory.
// Headers are validated in full before any tensor is used.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace q3n {

enum class DType { F32, F16, BF16 };
const char* dtype_name(DType t);
size_t dtype_size(DType t);

struct TensorView {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const std::byte* data = nullptr;  // inside the mapping
  size_t bytes = 0;
  std::string file;  // for error messages
  int64_t elements() const;
  std::string shape_string() const;  // "[8192, 2048]"
};

// One read-only mapping; unmapped on destruction.
class MappedFile {
 public:
  explicit MappedFile(const std::filesystem::path& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  const std::byte* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  const std::byte* data_ = nullptr;
  size_t size_ = 0;
};

// Parses and validates one file's header; returns its tensors.
std::vector<TensorView> parse_safetensors(const MappedFile& file);
// The same over bytes in memory (`path` names them in errors); the views point into `data`.
std::vector<TensorView> parse_safetensors(const std::byte* data, size_t size, const std::string& path);

class Checkpoint {
 public:
  // Opens `dir`: model.safetensors.index.json if present, else every *.safetensors in it.
  explicit Checkpoint(const std::filesystem::path& dir);
  const TensorView& tensor(const std::string& name) const;  // throws naming the tensor
  const TensorView* find(const std::string& name) const;
  const std::map<std::string, TensorView>& tensors() const { return tensors_; }
  size_t total_bytes() const;

 private:
  std::vector<std::unique_ptr<MappedFile>> files_;
  std::map<std::string, TensorView> tensors_;
};

struct TensorScan {
  uint64_t tensors = 0, values = 0, non_finite = 0;
  std::string first_non_finite;  // name of the first tensor holding a NaN or Inf
};
// Reads every byte of every tensor (in file order, so the page cache streams) and counts NaN/Inf
// values, telling `progress` of the bytes done: `q3n info --verify`.
TensorScan scan_tensors(const Checkpoint& checkpoint, const std::function<void(uint64_t bytes)>& progress = {});

}  // namespace q3n
