#include "loader/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>
#include <tuple>

#include "loader/json_file.h"
#include "runtime/error.h"

namespace q3n {

using nlohmann::json;

namespace {
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;  // same cap as the reference implementation
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32:
      return "F32";
    case DType::F16:
      return "F16";
    case DType::BF16:
      return "BF16";
  }
  return "?";
}

size_t dtype_size(DType t) { return t == DType::F32 ? 4 : 2; }

int64_t TensorView::elements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string TensorView::shape_string() const {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

MappedFile::MappedFile(const std::filesystem::path& path) : path_(path.string()) {
  const int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error("cannot open " + path_ + ": " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    throw Error("cannot stat " + path_ + ": " + std::strerror(errno));
  }
  size_ = static_cast<size_t>(st.st_size);
  if (size_ > 0) {
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      ::close(fd);
      throw Error("cannot map " + path_ + ": " + std::strerror(errno));
    }
    data_ = static_cast<const std::byte*>(p);
  }
  ::close(fd);
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(const_cast<std::byte*>(data_), size_);
}

std::vector<TensorView> parse_safetensors(const MappedFile& file) {
  return parse_safetensors(file.data(), file.size(), file.path());
}

std::vector<TensorView> parse_safetensors(const std::byte* data, size_t size, const std::string& path) {
  auto bad = [&](const std::string& why) -> Error {
    return Error(path + " is not a valid safetensors file: " + why + " (re-download or re-save it)");
  };
  if (size < 8) throw bad("it is truncated (" + std::to_string(size) + " bytes, no header)");
  uint64_t header_len = 0;
  std::memcpy(&header_len, data, 8);  // little-endian u64; q3n runs on little-endian hosts
  if (header_len > kMaxHeaderBytes)
    throw bad("its header claims " + std::to_string(header_len) + " bytes (over 100 MB)");
  if (header_len > size - 8) throw bad("it is truncated inside the header");
  const char* text = reinterpret_cast<const char*>(data + 8);
  json header;
  try {
    header = json::parse(text, text + header_len);  // rejects invalid UTF-8
  } catch (const json::exception& e) {              // parse_error, or out_of_range for a number past double
    throw bad(std::string("its header is not valid UTF-8 JSON (") + e.what() + ")");
  }
  if (!header.is_object()) throw bad("its header is not a JSON object");

  const std::byte* section = data + 8 + header_len;
  const uint64_t data_size = size - 8 - header_len;
  std::vector<TensorView> out;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") continue;
    const std::string& name = it.key();
    const json& e = it.value();
    if (!e.is_object() || !e.contains("dtype") || !e.contains("shape") || !e.contains("data_offsets"))
      throw bad("tensor " + name + " lacks dtype, shape or data_offsets");
    TensorView t;
    t.name = name;
    t.file = path;
    const std::string dt = e["dtype"].is_string() ? e["dtype"].get<std::string>() : "?";
    if (dt == "F32")
      t.dtype = DType::F32;
    else if (dt == "F16")
      t.dtype = DType::F16;
    else if (dt == "BF16")
      t.dtype = DType::BF16;
    else
      throw Error(path + ": tensor " + name + " has dtype " + dt +
                  ", which q3n does not read yet (supported: BF16, F16, F32)");
    if (!e["shape"].is_array()) throw bad("tensor " + name + " has a shape that is not a list");
    for (const auto& d : e["shape"]) {
      if (!d.is_number_integer() || d.get<int64_t>() < 0)
        throw bad("tensor " + name + " has a bad dimension " + d.dump());
      t.shape.push_back(d.get<int64_t>());
    }
    const json& off = e["data_offsets"];
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
      throw bad("tensor " + name + " has malformed data_offsets");
    const uint64_t begin = off[0].get<uint64_t>(), end = off[1].get<uint64_t>();
    if (begin > end || end > data_size)
      throw bad("tensor " + name + " has data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) +
                ") outside the " + std::to_string(data_size) + "-byte data section (truncated file?)");
    // Overflow-safe size check.
    uint64_t expected = dtype_size(t.dtype);
    for (int64_t d : t.shape) {
      if (d != 0 && expected > UINT64_MAX / static_cast<uint64_t>(d))
        throw bad("tensor " + name + " is impossibly large");
      expected *= static_cast<uint64_t>(d);
    }
    if (end - begin != expected)
      throw bad("tensor " + name + " " + t.shape_string() + " " + dt + " needs " + std::to_string(expected) +
                " bytes but its data_offsets span " + std::to_string(end - begin));
    t.data = section + begin;
    t.bytes = end - begin;
    out.push_back(std::move(t));
  }
  // No two tensors may share bytes.
  std::vector<const TensorView*> sorted;
  for (const auto& t : out) sorted.push_back(&t);
  std::sort(sorted.begin(), sorted.end(), [](auto* a, auto* b) { return a->data < b->data; });
  for (size_t i = 1; i < sorted.size(); ++i)
    if (sorted[i]->data < sorted[i - 1]->data + sorted[i - 1]->bytes)
      throw bad("tensors " + sorted[i - 1]->name + " and " + sorted[i]->name + " overlap");
  return out;
}

Checkpoint::Checkpoint(const std::filesystem::path& dir) {
  namespace fs = std::filesystem;
  std::vector<fs::path> paths;
  std::map<std::string, std::string> index;  // tensor -> shard file name
  const fs::path index_path = dir / "model.safetensors.index.json";
  if (fs::exists(index_path)) {
    const json j = read_json_file(index_path);
    if (!j.contains("weight_map") || !j["weight_map"].is_object())
      throw Error(index_path.string() + " has no \"weight_map\" object");
    std::set<std::string> shards;
    for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
      if (!it.value().is_string())
        throw Error(index_path.string() + ": weight_map entry " + it.key() + " is not a file name");
      index[it.key()] = it.value().get<std::string>();
      shards.insert(it.value().get<std::string>());
    }
    for (const auto& s : shards) {
      if (s.find('/') != std::string::npos || s.find("..") != std::string::npos)
        throw Error(index_path.string() + " names shard \"" + s + "\" outside the model folder");
      if (!fs::exists(dir / s)) throw Error("shard " + (dir / s).string() + " listed in the index is missing");
      paths.push_back(dir / s);
    }
  } else {
    if (!fs::is_directory(dir)) throw Error("model folder " + dir.string() + " does not exist");
    for (const auto& entry : fs::directory_iterator(dir))
      if (entry.path().extension() == ".safetensors") paths.push_back(entry.path());
    std::sort(paths.begin(), paths.end());
    if (paths.empty()) throw Error("no *.safetensors files in " + dir.string());
  }

  for (const auto& p : paths) {
    files_.push_back(std::make_unique<MappedFile>(p));
    for (auto& t : parse_safetensors(*files_.back())) {
      if (tensors_.count(t.name))
        throw Error("tensor " + t.name + " appears in both " + tensors_[t.name].file + " and " + t.file);
      if (!index.empty()) {
        auto it = index.find(t.name);
        if (it == index.end() || it->second != p.filename().string())
          throw Error("tensor " + t.name + " is in " + p.string() + " but the index places it " +
                      (it == index.end() ? std::string("nowhere") : "in " + it->second));
      }
      tensors_[t.name] = std::move(t);
    }
  }
  for (const auto& [name, shard] : index)
    if (!tensors_.count(name)) throw Error("tensor " + name + " is listed in the index but missing from " + shard);
}

const TensorView* Checkpoint::find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

const TensorView& Checkpoint::tensor(const std::string& name) const {
  if (const TensorView* t = find(name)) return *t;
  throw Error("the checkpoint has no tensor " + name);
}

size_t Checkpoint::total_bytes() const {
  size_t n = 0;
  for (const auto& [_, t] : tensors_) n += t.bytes;
  return n;
}

namespace {
bool finite_value(const std::byte* p, DType t) {
  uint32_t bits = 0;
  switch (t) {
    case DType::F32:
      std::memcpy(&bits, p, 4);
      return (bits & 0x7F800000u) != 0x7F800000u;
    case DType::BF16: {
      uint16_t h;
      std::memcpy(&h, p, 2);
      return (h & 0x7F80u) != 0x7F80u;
    }
    case DType::F16: {
      uint16_t h;
      std::memcpy(&h, p, 2);
      return (h & 0x7C00u) != 0x7C00u;
    }
  }
  return true;
}
}  // namespace

TensorScan scan_tensors(const Checkpoint& checkpoint, const std::function<void(uint64_t bytes)>& progress) {
  std::vector<const TensorView*> order;
  for (const auto& [_, t] : checkpoint.tensors()) order.push_back(&t);
  std::sort(order.begin(), order.end(),
            [](auto* a, auto* b) { return std::tie(a->file, a->data) < std::tie(b->file, b->data); });
  TensorScan scan;
  for (const TensorView* t : order) {
    const size_t size = dtype_size(t->dtype);
    uint64_t bad = 0;
    for (size_t off = 0; off < t->bytes; off += size) bad += !finite_value(t->data + off, t->dtype);
    if (bad && scan.first_non_finite.empty()) scan.first_non_finite = t->name;
    scan.non_finite += bad;
    scan.values += t->bytes / size;
    scan.tensors++;
    if (progress) progress(t->bytes);
  }
  return scan;
}

}  // namespace q3n
