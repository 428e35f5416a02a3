// Reading a JSON file whole, with errors that name the file.
#pragma once

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

namespace q3n {

// Throws an Error naming the file: "<path> <when_missing>" when it cannot be opened, "<path> is
// not valid JSON: ..." when it does not parse.
nlohmann::json read_json_file(const std::filesystem::path& path, const std::string& when_missing = "cannot be opened");
// As read_json_file, but a missing file gives a null value.
nlohmann::json read_json_file_if_present(const std::filesystem::path& path);

}  // namespace q3n
