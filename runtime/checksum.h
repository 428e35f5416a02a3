// FNV-1a, 64-bit: the checksum and identity hash of q3n's cache files. Not cryptographic; it
// catches truncation, torn writes and bit rot, and keys a cache entry to what produced it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace q3n {

struct Fnv64 {
  uint64_t h = 14695981039346656037ull;
  void add(const void* data, size_t n) {
    const auto* p = static_cast<const unsigned char*>(data);
    for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
  }
  void add(const std::string& s) { add(s.data(), s.size() + 1); }  // with its terminator
  void add(uint64_t v) { add(&v, sizeof v); }
};

}  // namespace q3n
