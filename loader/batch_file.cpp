#include "loader/batch_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "runtime/error.h"

namespace q3n {

namespace {

using nlohmann::json;

// A refusal of one line; caught inside parse_batch_line only.
struct LineError {
  std::string message;
};

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::optional<uint64_t> unsigned_field(const json& o, const char* name, uint64_t max) {
  if (!o.contains(name) || o[name].is_null()) return std::nullopt;
  const json& v = o[name];
  if (!v.is_number_integer()) throw LineError{std::string("\"") + name + "\" must be an integer"};
  if (!v.is_number_unsigned() && v.get<int64_t>() < 0)
    throw LineError{std::string("\"") + name + "\" must not be negative"};
  const uint64_t x = v.get<uint64_t>();  // non-negative from here
  if (x > max) throw LineError{std::string("\"") + name + "\" must be at most " + std::to_string(max)};
  return x;
}

std::optional<float> number_field(const json& o, const char* name, double lo, double hi, bool lo_open, bool hi_open) {
  if (!o.contains(name) || o[name].is_null()) return std::nullopt;
  const json& v = o[name];
  if (!v.is_number()) throw LineError{std::string("\"") + name + "\" must be a number"};
  const double x = v.get<double>();
  const bool ok = std::isfinite(x) && (lo_open ? x > lo : x >= lo) && (hi_open ? x < hi : x <= hi);
  if (!ok)
    throw LineError{std::string("\"") + name + "\" must be in " + (lo_open ? "(" : "[") +
                    std::to_string(lo).substr(0, 4) + ", " +
                    (std::isinf(hi) ? std::string("inf") : std::to_string(hi).substr(0, 4)) + (hi_open ? ")" : "]")};
  return float(x);
}

std::string string_field(const json& v, const std::string& what) {
  if (!v.is_string()) throw LineError{what + " must be a string"};
  return v.get<std::string>();
}

// Fields that would change what is asked for but q3n does not do: refused rather than ignored.
void refuse_unsupported(const json& o) {
  auto has_value = [&](const char* name, const json& neutral) {
    return o.contains(name) && !o[name].is_null() && o[name] != neutral;
  };
  if (has_value("n", json(1)) || has_value("best_of", json(1)))
    throw LineError{"only one completion per request (\"n\": 1) is supported"};
  if (has_value("stream", json(false))) throw LineError{"\"stream\": true is not supported in a batch"};
  if (has_value("logprobs", json(false)) && has_value("logprobs", json(0)))
    throw LineError{"\"logprobs\" is not supported"};
  for (const char* name : {"presence_penalty", "frequency_penalty"})
    if (has_value(name, json(0)) && has_value(name, json(0.0)))
      throw LineError{std::string("\"") + name + "\" is not supported"};
  if (has_value("repetition_penalty", json(1)) && has_value("repetition_penalty", json(1.0)))
    throw LineError{"\"repetition_penalty\" is not supported"};
  for (const char* name : {"tools", "functions", "logit_bias", "response_format", "suffix", "echo"})
    if (o.contains(name) && !o[name].is_null() && o[name] != json(false))
      throw LineError{std::string("\"") + name + "\" is not supported"};
}

std::vector<ChatMessage> parse_messages(const json& v) {
  if (!v.is_array() || v.empty()) throw LineError{"\"messages\" must be a non-empty array"};
  std::vector<ChatMessage> messages;
  for (const json& m : v) {
    if (!m.is_object() || !m.contains("role") || !m.contains("content"))
      throw LineError{"each message needs \"role\" and \"content\""};
    ChatMessage msg{string_field(m["role"], "a message's \"role\""),
                    string_field(m["content"], "a message's \"content\"")};
    if (msg.role != "system" && msg.role != "user" && msg.role != "assistant")
      throw LineError{"message role \"" + msg.role + "\" is not system, user or assistant"};
    messages.push_back(std::move(msg));
  }
  return messages;
}

// The request fields, from the line itself or from an OpenAI line's "body".
void parse_fields(const json& o, BatchRequest& r, const std::string& endpoint) {
  refuse_unsupported(o);
  const int forms = int(o.contains("prompt")) + int(o.contains("messages")) + int(o.contains("prompt_ids"));
  if (forms == 0) throw LineError{"no prompt: give \"prompt\", \"messages\" or \"prompt_ids\""};
  if (forms > 1) throw LineError{"give only one of \"prompt\", \"messages\" and \"prompt_ids\""};
  if (endpoint == "/v1/chat/completions" && !o.contains("messages"))
    throw LineError{"/v1/chat/completions needs \"messages\""};
  if (endpoint == "/v1/completions" && o.contains("messages"))
    throw LineError{"/v1/completions takes \"prompt\", not \"messages\""};
  if (o.contains("prompt")) {
    r.prompt = string_field(o["prompt"], "\"prompt\"");
    if (r.prompt->empty()) throw LineError{"the prompt is empty"};
  } else if (o.contains("messages")) {
    r.messages = parse_messages(o["messages"]);
  } else {
    const json& ids = o["prompt_ids"];
    if (!ids.is_array() || ids.empty()) throw LineError{"\"prompt_ids\" must be a non-empty array of token ids"};
    r.prompt_ids.emplace();
    for (const json& id : ids) {
      if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > INT32_MAX)
        throw LineError{"\"prompt_ids\" must hold non-negative integer token ids"};
      r.prompt_ids->push_back(int32_t(id.get<int64_t>()));
    }
  }
  const char* max_name = o.contains("max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
  if (const auto v = unsigned_field(o, max_name, 1u << 30)) r.max_tokens = uint32_t(*v);
  if (const auto v = unsigned_field(o, "top_k", 1u << 30)) r.top_k = uint32_t(*v);
  if (o.contains("seed") && !o["seed"].is_null()) {
    if (!o["seed"].is_number_integer()) throw LineError{"\"seed\" must be an integer"};
    r.seed = o["seed"].is_number_unsigned() ? o["seed"].get<uint64_t>() : uint64_t(o["seed"].get<int64_t>());
  }
  r.temperature = number_field(o, "temperature", 0, 100, false, false);
  r.top_p = number_field(o, "top_p", 0, 1, true, false);
  r.min_p = number_field(o, "min_p", 0, 1, false, true);
  if (o.contains("stop") && !o["stop"].is_null()) {
    const json& s = o["stop"];
    if (s.is_string()) {
      r.stop.push_back(s.get<std::string>());
    } else if (s.is_array()) {
      for (const json& x : s) r.stop.push_back(string_field(x, "each \"stop\" entry"));
    } else {
      throw LineError{"\"stop\" must be a string or an array of strings"};
    }
    for (const auto& x : r.stop)
      if (x.empty()) throw LineError{"a \"stop\" string is empty"};
  }
}

}  // namespace

bool is_blank_line(std::string_view text) {
  for (char c : text)
    if (c != ' ' && c != '\t' && c != '\r' && c != '\n') return false;
  return true;
}

BatchLine parse_batch_line(std::string_view text, size_t line_number) {
  BatchLine out;
  try {
    const json o = json::parse(text.begin(), text.end(), nullptr, false);
    if (o.is_discarded()) throw LineError{"not valid JSON"};
    if (!o.is_object()) throw LineError{"a request must be a JSON object"};
    if (!o.contains("custom_id")) throw LineError{"missing \"custom_id\""};
    const json& id = o["custom_id"];
    if (id.is_string())
      out.custom_id = id.get<std::string>();
    else if (id.is_number_integer())
      out.custom_id = id.dump();
    else
      throw LineError{"\"custom_id\" must be a string"};
    if (out.custom_id->empty()) throw LineError{"\"custom_id\" is empty"};
    BatchRequest r;
    r.line = line_number;
    r.custom_id = *out.custom_id;
    if (o.contains("body") || o.contains("url")) {
      if (!o.contains("body") || !o["body"].is_object())
        throw LineError{"an OpenAI batch line needs a \"body\" object"};
      if (o.contains("method") && o["method"] != "POST") throw LineError{"\"method\" must be \"POST\""};
      const std::string url = o.contains("url") ? string_field(o["url"], "\"url\"") : "";
      if (url != "/v1/chat/completions" && url != "/v1/completions")
        throw LineError{"\"url\" must be \"/v1/chat/completions\" or \"/v1/completions\""};
      parse_fields(o["body"], r, url);
    } else {
      parse_fields(o, r, "");
    }
    out.request = std::move(r);
  } catch (const LineError& e) {
    out.error = e.message;
  } catch (const std::exception& e) {  // nlohmann type errors on odd values
    out.error = std::string("unreadable request: ") + e.what();
  }
  return out;
}

BatchProgress recover_batch_output(const std::filesystem::path& path) {
  BatchProgress progress;
  std::ifstream in(path, std::ios::binary);
  if (!in) return progress;
  const std::string content{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  in.close();
  size_t start = 0, line = 0;
  while (start < content.size()) {
    ++line;
    const size_t end = content.find('\n', start);
    const bool complete = end != std::string::npos;
    const std::string_view text(content.data() + start, (complete ? end : content.size()) - start);
    const json record = json::parse(text.begin(), text.end(), nullptr, false);
    const bool valid = record.is_object() && record.contains("custom_id");
    const bool last = !complete || end + 1 == content.size();
    if (!complete || (!valid && last)) {
      // Torn by a crash while it was written: cut it off; its request is redone.
      std::filesystem::resize_file(path, start);
      progress.dropped_torn_line = true;
      break;
    }
    if (!valid)
      throw Error(path.string() + " line " + std::to_string(line) +
                  " is not a q3n batch record; give a new --output or repair that line");
    ++progress.records;
    if (record.contains("error")) {
      if (record.contains("line") && record["line"].is_number_unsigned())
        progress.failed_lines.insert(record["line"].get<size_t>());
    } else if (record["custom_id"].is_string()) {
      progress.finished_ids.insert(record["custom_id"].get<std::string>());
    }
    start = end + 1;
  }
  return progress;
}

void BatchProgress::add(const BatchProgress& other) {
  finished_ids.insert(other.finished_ids.begin(), other.finished_ids.end());
  failed_lines.insert(other.failed_lines.begin(), other.failed_lines.end());
  records += other.records;
  dropped_torn_line = dropped_torn_line || other.dropped_torn_line;
}

std::filesystem::path batch_part_path(const std::filesystem::path& output, int rank) {
  return output.string() + ".rank-" + std::to_string(rank);
}

std::vector<std::filesystem::path> batch_parts(const std::filesystem::path& output) {
  std::vector<std::pair<long, std::filesystem::path>> found;
  const std::filesystem::path dir = output.has_parent_path() ? output.parent_path() : ".";
  const std::string prefix = output.filename().string() + ".rank-";
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) continue;
    const std::string digits = name.substr(prefix.size());
    if (digits.size() > 9 || digits.find_first_not_of("0123456789") != std::string::npos) continue;
    found.emplace_back(std::stol(digits), entry.path());
  }
  std::sort(found.begin(), found.end());
  std::vector<std::filesystem::path> parts;
  for (auto& [rank, path] : found) parts.push_back(std::move(path));
  return parts;
}

size_t merge_batch_parts(const std::filesystem::path& output, const std::vector<std::filesystem::path>& parts) {
  std::set<std::string> keys;
  std::string merged;
  size_t added = 0;
  // Records are whole lines already checked by recover_batch_output; the key names the request.
  const auto take = [&](const std::filesystem::path& path, bool count) {
    std::ifstream in(path, std::ios::binary);
    for (std::string line; std::getline(in, line);) {
      const json record = json::parse(line, nullptr, false);
      if (!record.is_object()) continue;
      const bool by_id = !record.contains("error") && record.contains("custom_id") && record["custom_id"].is_string();
      const std::string key = by_id ? "id:" + record["custom_id"].get<std::string>()
                                    : "line:" + (record.contains("line") ? record["line"].dump() : line);
      if (!keys.insert(key).second) continue;
      merged += line;
      merged += '\n';
      added += count;
    }
  };
  take(output, false);
  for (const auto& part : parts) take(part, true);
  const std::filesystem::path temporary = output.string() + ".merging";
  std::filesystem::remove(temporary);  // left by an interrupted merge
  {
    BatchOutput out(temporary, 0);
    if (!merged.empty()) out.append(merged.substr(0, merged.size() - 1));  // append() adds the last newline
  }
  std::filesystem::rename(temporary, output);
  for (const auto& part : parts) std::filesystem::remove(part);
  return added;
}

BatchOutput::BatchOutput(const std::filesystem::path& path, double sync_seconds)
    : path_(path), sync_seconds_(sync_seconds) {
  fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd_ < 0) throw Error("cannot open " + path.string() + " for writing: " + std::strerror(errno));
  last_sync_ = now_seconds();
}

BatchOutput::~BatchOutput() {
  if (fd_ < 0) return;
  if (dirty_) ::fsync(fd_);
  ::close(fd_);
}

void BatchOutput::append(const std::string& json_line) {
  const std::string line = json_line + "\n";
  size_t done = 0;
  while (done < line.size()) {
    const ssize_t n = ::write(fd_, line.data() + done, line.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw Error("cannot write to " + path_.string() + ": " + std::strerror(errno));
    done += size_t(n);
  }
  dirty_ = true;
  if (now_seconds() - last_sync_ >= sync_seconds_) sync();
}

void BatchOutput::sync() {
  if (dirty_ && ::fsync(fd_) != 0) throw Error("cannot sync " + path_.string() + ": " + std::strerror(errno));
  dirty_ = false;
  last_sync_ = now_seconds();
}

std::string batch_result_record(const std::string& custom_id, const std::string& text, bool stopped,
                                uint32_t prompt_tokens, uint32_t completion_tokens, const std::vector<int32_t>* ids) {
  json r = {{"custom_id", custom_id},
            {"text", text},
            {"finish_reason", stopped ? "stop" : "length"},
            {"usage", {{"prompt_tokens", prompt_tokens}, {"completion_tokens", completion_tokens}}}};
  if (ids) r["token_ids"] = *ids;
  // Generated bytes need not be valid UTF-8 (a stop in the middle of a character): replace them.
  return r.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string batch_error_record(const std::optional<std::string>& custom_id, size_t line, const std::string& message) {
  json r = {
      {"custom_id", custom_id ? json(*custom_id) : json(nullptr)}, {"line", line}, {"error", {{"message", message}}}};
  return r.dump(-1, ' ', false, json::error_handler_t::replace);
}

uint64_t seed_from_custom_id(std::string_view custom_id) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : custom_id) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

}  // namespace q3n
