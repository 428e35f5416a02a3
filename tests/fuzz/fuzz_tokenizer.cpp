// libFuzzer target: a tokenizer.json. Loading either gives a tokenizer, which must then encode
// and decode a fixed text without crashing, or throws q3n::Error; anything else is a bug.
// (The tokenizer reads files: each input is written to a file of this process first.)
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

#include "loader/tokenizer.h"
#include "runtime/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::filesystem::path path =
      std::filesystem::temp_directory_path() / ("q3n_fuzz_tokenizer_" + std::to_string(getpid()) + ".json");
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(data), std::streamsize(size));
  try {
    const q3n::Tokenizer tokenizer(path);
    const auto ids = tokenizer.encode("In the beginning, 1234 naïve ☃ <|im_start|>user\n");
    tokenizer.decode(ids);
  } catch (const q3n::Error&) {
  }
  return 0;
}
