#include "graph/weight_cache.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <set>

#include "runtime/checksum.h"
#include "runtime/error.h"

namespace q3n::graph {
namespace {

constexpr char kMagic[16] = "q3n-weights-v1";

uint64_t checkpoint_key(const Checkpoint& ck, const std::string& format) {
  Fnv64 f;
  f.add(std::string(kMagic));
  f.add(format);
  std::set<std::string> files;
  for (const auto& [name, t] : ck.tensors()) {
    f.add(name);
    f.add(uint64_t(t.dtype));
    for (int64_t d : t.shape) f.add(uint64_t(d));
    f.add(uint64_t(t.bytes));
    f.add(t.file);
    files.insert(t.file);
  }
  for (const std::string& file : files) {
    std::error_code ec;
    f.add(uint64_t(std::filesystem::file_size(file, ec)));
    const auto mtime = std::filesystem::last_write_time(file, ec);
    f.add(uint64_t(mtime.time_since_epoch().count()));
  }
  return f.h;
}

}  // namespace

std::string weight_cache_problem(std::span<const char> header, uint64_t file_bytes, uint64_t key,
                                 uint64_t payload_bytes) {
  if (header.size() < kWeightCacheHeaderBytes || std::memcmp(header.data(), kMagic, sizeof kMagic) != 0)
    return "is not a q3n weights cache of this version";
  uint64_t stored_key = 0, stored_bytes = 0;
  std::memcpy(&stored_key, header.data() + 16, 8);
  std::memcpy(&stored_bytes, header.data() + 24, 8);
  if (stored_key != key) return "was written for another checkpoint or format";
  if (stored_bytes != payload_bytes) return "holds another amount of weights than this q3n plans";
  if (file_bytes != kWeightCacheHeaderBytes + payload_bytes)
    return "is truncated or has trailing bytes (" + std::to_string(file_bytes) + " bytes, expected " +
           std::to_string(kWeightCacheHeaderBytes + payload_bytes) + ")";
  return "";
}

WeightCache::WeightCache(const std::filesystem::path& dir, const Checkpoint& ck, const std::string& format_name,
                         uint64_t payload_bytes)
    : payload_(payload_bytes) {
  const uint64_t key = checkpoint_key(ck, format_name);
  char name[64];
  std::string format_tag = format_name;  // "as stored" -> "as-stored": no spaces in file names
  std::replace(format_tag.begin(), format_tag.end(), ' ', '-');
  std::snprintf(name, sizeof name, "%016llx-%s.q3nw", static_cast<unsigned long long>(key), format_tag.c_str());
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw Error("--cache: cannot create " + dir.string() + ": " + ec.message());
  path_ = dir / name;

  // Header: magic, key, payload size; read only when all of it and the file size agree.
  if (std::filesystem::exists(path_)) {
    const uint64_t file_bytes = std::filesystem::file_size(path_, ec);
    in_.open(path_, std::ios::binary);
    char header[kWeightCacheHeaderBytes] = {};
    in_.read(header, sizeof header);
    const std::string problem = weight_cache_problem(std::span<const char>(header, size_t(in_.gcount())),
                                                     ec ? 0 : file_bytes, key, payload_bytes);
    reading_ = problem.empty();
    if (!reading_) {
      in_.close();
      rebuilt_because_ = "the weights cache " + path_.string() + " " + problem + "; rebuilding it";
    }
  }
  if (reading_) return;
  temp_ = path_;
  temp_ += ".tmp-" + std::to_string(::getpid());
  out_.open(temp_, std::ios::binary | std::ios::trunc);
  if (!out_) throw Error("--cache: cannot write " + temp_.string() + " (is the folder writable?)");
  out_.write(kMagic, 16);
  out_.write(reinterpret_cast<const char*>(&key), 8);
  out_.write(reinterpret_cast<const char*>(&payload_bytes), 8);
}

WeightCache::~WeightCache() {
  if (!reading_ && !committed_) {
    out_.close();
    std::error_code ec;
    std::filesystem::remove(temp_, ec);
  }
}

void WeightCache::read(void* dst, size_t bytes) {
  in_.read(static_cast<char*>(dst), std::streamsize(bytes));
  if (!in_) throw Error("--cache: " + path_.string() + " ended early; delete it and start again");
  done_ += bytes;
}

void WeightCache::write(const void* src, size_t bytes) {
  out_.write(static_cast<const char*>(src), std::streamsize(bytes));
  if (!out_) throw Error("--cache: writing " + temp_.string() + " failed (disk full?)");
  done_ += bytes;
}

void WeightCache::commit() {
  if (reading_ || committed_) return;
  if (done_ != payload_)
    throw Error("internal: weight cache got " + std::to_string(done_) + " bytes, planned " + std::to_string(payload_));
  out_.close();
  if (!out_) throw Error("--cache: writing " + temp_.string() + " failed (disk full?)");
  std::filesystem::rename(temp_, path_);
  committed_ = true;
}

}  // namespace q3n::graph
