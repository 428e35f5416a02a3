// libFuzzer target: one line of a `q3n batch` input file. The reader never throws: every line is
// a request or a refusal with a message.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "loader/batch_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view line(reinterpret_cast<const char*>(data), size);
  q3n::parse_batch_line(line, 1);
  q3n::is_blank_line(line);
  return 0;
}
