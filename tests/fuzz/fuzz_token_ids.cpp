// libFuzzer target: a token-id file (`q3n run --prompt-ids`). Parsing yields ids or throws
// q3n::Error; anything else is a bug.
#include <cstddef>
#include <cstdint>
#include <string>

#include "cli/input_files.h"
#include "runtime/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    q3n::cli::parse_token_ids(std::string(reinterpret_cast<const char*>(data), size));
  } catch (const q3n::Error&) {
  }
  return 0;
}
