// libFuzzer target: a checkpoint's tokenizer_config.json and generation_config.json (the input is
// written as both). Reading them gives a chat template kind and sampling defaults, or throws
// q3n::Error; anything else is a bug.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

#include "loader/chat.h"
#include "loader/config.h"
#include "runtime/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::filesystem::path dir = [] {
    auto d = std::filesystem::temp_directory_path() / ("q3n_fuzz_chat_" + std::to_string(getpid()));
    std::filesystem::create_directories(d);
    return d;
  }();
  for (const char* name : {"tokenizer_config.json", "generation_config.json"})
    std::ofstream(dir / name, std::ios::binary).write(reinterpret_cast<const char*>(data), std::streamsize(size));
  q3n::ModelConfig config;
  config.vocab_size = 1000;
  try {
    q3n::detect_chat_template(dir);
    q3n::load_generation_defaults(dir, config);
  } catch (const q3n::Error&) {
  }
  return 0;
}
