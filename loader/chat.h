// Chat formatting (ChatML, spec §7) and the stop tokens of generation_config.json.
//
// q3n does not run Jinja: it renders ChatML itself and reads from the checkpoint's template only
// which variant it is. Thinking checkpoints (their template injects "<think>\n" after the
// assistant header) get that prefix too. This is documented in README.md.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "loader/config.h"

namespace q3n {

struct ChatMessage {
  std::string role;  // "system" | "user" | "assistant"
  std::string content;
};

enum class ChatTemplateKind { Instruct, Thinking };

struct GenerationDefaults {
  std::vector<int> stop_token_ids;  // from generation_config.json and config.json
  double temperature = 1.0;
  int top_k = 0;
  double top_p = 1.0;
  double min_p = 0.0;
};

// Reads chat_template from tokenizer_config.json (or chat_template.jinja) to tell Instruct
// from Thinking. Missing files mean Instruct.
ChatTemplateKind detect_chat_template(const std::filesystem::path& model_dir);

// ChatML text for the messages followed by the assistant generation prompt.
std::string render_chat(const std::vector<ChatMessage>& messages, ChatTemplateKind kind);

GenerationDefaults load_generation_defaults(const std::filesystem::path& model_dir, const ModelConfig& config);

}  // namespace q3n
