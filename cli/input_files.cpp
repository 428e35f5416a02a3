#include "cli/input_files.h"

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <sstream>

#include "runtime/error.h"

namespace q3n::cli {

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot read " + path + ": no such file or not readable");
  return std::string(std::istreambuf_iterator<char>(in), {});
}

std::vector<TokenId> parse_token_ids(const std::string& text) {
  std::vector<TokenId> ids;
  std::istringstream in(text);
  std::string word;
  while (in >> word) {
    size_t used = 0;
    long long v = -1;
    try {
      v = std::stoll(word, &used);
    } catch (const std::exception&) {
    }
    if (used != word.size() || v < 0 || v > INT32_MAX)
      throw Error("\"" + word + "\" is not a token id (expected whitespace-separated non-negative integers)");
    ids.push_back(static_cast<TokenId>(v));
  }
  return ids;
}

void write_npy(const std::string& path, const std::vector<float>& values, size_t rows, size_t cols) {
  if (values.size() != rows * cols) throw Error("internal: npy shape does not match the data");
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + std::to_string(rows) + ", " +
                       std::to_string(cols) + "), }";
  // Magic (6) + version (2) + length (2) + header, padded with spaces to a multiple of 64, '\n' last.
  const size_t total = (10 + header.size() + 1 + 63) / 64 * 64;
  header.append(total - 10 - header.size() - 1, ' ');
  header += '\n';
  std::ofstream out(path, std::ios::binary);
  if (!out) throw Error("cannot write " + path);
  out.write("\x93NUMPY\x01\x00", 8);
  const uint16_t length = static_cast<uint16_t>(header.size());
  const char len_bytes[2] = {static_cast<char>(length & 0xFF), static_cast<char>(length >> 8)};
  out.write(len_bytes, 2);
  out.write(header.data(), static_cast<std::streamsize>(header.size()));
  out.write(reinterpret_cast<const char*>(values.data()), static_cast<std::streamsize>(values.size() * 4));
  if (!out) throw Error("writing " + path + " failed (disk full?)");
}

NpyMatrix read_npy(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot open " + path);
  char preamble[10];
  in.read(preamble, 10);
  if (!in || std::string(preamble, 6) != "\x93NUMPY" || preamble[6] != 1)
    throw Error(path + " is not a version-1 NumPy .npy file");
  const size_t header_len = size_t(uint8_t(preamble[8])) | size_t(uint8_t(preamble[9])) << 8;
  std::string header(header_len, '\0');
  in.read(header.data(), std::streamsize(header_len));
  if (!in) throw Error(path + ": truncated .npy header");
  if (header.find("'descr': '<f4'") == std::string::npos || header.find("'fortran_order': False") == std::string::npos)
    throw Error(path + ": expected little-endian float32 in C order (numpy.save of a float32 array), got " + header);
  NpyMatrix m;
  const size_t open = header.find("'shape': (");
  if (open == std::string::npos || std::sscanf(header.c_str() + open, "'shape': (%zu, %zu)", &m.rows, &m.cols) != 2)
    throw Error(path + ": expected a two-dimensional array [tokens, vocab], got " + header);
  m.values.resize(m.rows * m.cols);
  in.read(reinterpret_cast<char*>(m.values.data()), std::streamsize(m.values.size() * 4));
  if (!in)
    throw Error(path + ": truncated: the header promises " + std::to_string(m.rows) + " x " + std::to_string(m.cols) +
                " floats");
  return m;
}

}  // namespace q3n::cli
