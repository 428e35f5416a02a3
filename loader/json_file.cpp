#include "loader/json_file.h"

#include <fstream>

#include "runtime/error.h"

namespace q3n {

namespace {
nlohmann::json parse(std::ifstream& in, const std::filesystem::path& path) {
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {  // parse_error, or out_of_range for a number past double
    throw Error(path.string() + " is not valid JSON: " + e.what());
  }
}
}  // namespace

nlohmann::json read_json_file(const std::filesystem::path& path, const std::string& when_missing) {
  std::ifstream in(path);
  if (!in) throw Error(path.string() + " " + when_missing);
  return parse(in, path);
}

nlohmann::json read_json_file_if_present(const std::filesystem::path& path) {
  std::ifstream in(path);
  if (!in) return nullptr;
  return parse(in, path);
}

}  // namespace q3n
