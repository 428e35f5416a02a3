#include "loader/chat.h"

#include <algorithm>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>

#include "loader/json_file.h"
#include "runtime/error.h"

namespace q3n {

using nlohmann::json;

ChatTemplateKind detect_chat_template(const std::filesystem::path& dir) {
  std::string tmpl;
  const json tc = read_json_file_if_present(dir / "tokenizer_config.json");
  if (tc.is_object() && tc.contains("chat_template") && tc["chat_template"].is_string())
    tmpl = tc["chat_template"].get<std::string>();
  if (std::ifstream in(dir / "chat_template.jinja"); in) tmpl.assign(std::istreambuf_iterator<char>(in), {});
  // The Thinking-2507 templates end their generation prompt with '<|im_start|>assistant\n<think>\n'
  // (written with escaped newlines inside a Jinja string literal).
  const bool thinking = tmpl.find("<|im_start|>assistant\\n<think>\\n'") != std::string::npos;
  return thinking ? ChatTemplateKind::Thinking : ChatTemplateKind::Instruct;
}

std::string render_chat(const std::vector<ChatMessage>& messages, ChatTemplateKind kind) {
  std::string out;
  for (const auto& m : messages) {
    if (m.role != "system" && m.role != "user" && m.role != "assistant")
      throw Error("chat role \"" + m.role + "\" is not one of system, user, assistant");
    std::string content = m.content;
    if (m.role == "assistant") {  // history is rendered without its reasoning
      const auto end = content.find("</think>");
      if (end != std::string::npos) {
        content = content.substr(end + 8);
        content.erase(
            0, content.find_first_not_of('\n') == std::string::npos ? content.size() : content.find_first_not_of('\n'));
      }
    }
    out += "<|im_start|>" + m.role + "\n" + content + "<|im_end|>\n";
  }
  out += "<|im_start|>assistant\n";
  if (kind == ChatTemplateKind::Thinking) out += "<think>\n";
  return out;
}

// A function-try-block: a sampling field of the wrong JSON type (found by fuzzing) becomes a
// one-line error naming the file rather than an escaped json::type_error.
GenerationDefaults load_generation_defaults(const std::filesystem::path& dir, const ModelConfig& config) try {
  GenerationDefaults d;
  d.stop_token_ids = config.eos_token_ids;
  const json g = read_json_file_if_present(dir / "generation_config.json");
  if (g.is_object()) {
    if (g.contains("eos_token_id")) {
      const json& e = g["eos_token_id"];
      if (e.is_number_integer())
        d.stop_token_ids.push_back(e.get<int>());
      else if (e.is_array())
        for (const auto& x : e)
          if (x.is_number_integer()) d.stop_token_ids.push_back(x.get<int>());
    }
    if (g.value("do_sample", true)) {
      d.temperature = g.value("temperature", d.temperature);
      d.top_k = g.value("top_k", d.top_k);
      d.top_p = g.value("top_p", d.top_p);
      d.min_p = g.value("min_p", d.min_p);
    } else {
      d.temperature = 0.0;  // greedy
    }
  }
  std::sort(d.stop_token_ids.begin(), d.stop_token_ids.end());
  d.stop_token_ids.erase(std::unique(d.stop_token_ids.begin(), d.stop_token_ids.end()), d.stop_token_ids.end());
  return d;
} catch (const json::exception& e) {
  throw Error((dir / "generation_config.json").string() + " has a field of the wrong type: " + e.what());
}

}  // namespace q3n
