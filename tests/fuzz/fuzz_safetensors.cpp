// libFuzzer target: a safetensors file's bytes. Parsing either yields tensors that lie inside the
// bytes or throws q3n::Error; anything else (a crash, a sanitizer report, another exception) is a bug.
#include <cstddef>
#include <cstdint>

#include "loader/safetensors.h"
#include "runtime/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto* bytes = reinterpret_cast<const std::byte*>(data);
  try {
    for (const q3n::TensorView& t : q3n::parse_safetensors(bytes, size, "fuzz.safetensors"))
      if (t.data < bytes || t.data + t.bytes > bytes + size) __builtin_trap();  // a view outside the file
  } catch (const q3n::Error&) {
  }
  return 0;
}
