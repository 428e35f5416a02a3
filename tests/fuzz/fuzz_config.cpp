// libFuzzer target: config.json text. Any JSON either parses into a ModelConfig or is refused
// with q3n::Error naming the field; anything else is a bug.
#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>

#include "loader/config.h"
#include "runtime/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const nlohmann::json j = nlohmann::json::parse(data, data + size, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return 0;
  try {
    q3n::parse_config(j, "fuzz/config.json");
  } catch (const q3n::Error&) {
  }
  return 0;
}
