// Reading the command line's input files: whole text files and whitespace-separated token ids.
#pragma once

#include <string>
#include <vector>

#include "loader/tokenizer.h"

namespace q3n::cli {

std::string read_text_file(const std::string& path);
std::vector<TokenId> parse_token_ids(const std::string& text);
// A NumPy .npy file of float32 [rows, cols].
void write_npy(const std::string& path, const std::vector<float>& values, size_t rows, size_t cols);
struct NpyMatrix {
  std::vector<float> values;
  size_t rows = 0, cols = 0;
};
// Reads a little-endian float32, C-order, two-dimensional .npy file (what write_npy writes and
// numpy.save writes for such an array); anything else is refused with a message.
NpyMatrix read_npy(const std::string& path);

}  // namespace q3n::cli
