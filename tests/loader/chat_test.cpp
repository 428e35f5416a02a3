// ChatML rendering (spec §7), Instruct/Thinking detection from the checkpoint's template, and the
// stop tokens / sampling defaults of generation_config.json.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "loader/chat.h"
#include "runtime/error.h"
#include "tests/support/temp_dir.h"

namespace q3n {
namespace {

using ChatTest = test::TempDirTest;

TEST_F(ChatTest, RendersChatMlWithGenerationPrompt) {
  const std::string text = render_chat({{"system", "Be brief."}, {"user", "Hi"}}, ChatTemplateKind::Instruct);
  EXPECT_EQ(text, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
}

TEST_F(ChatTest, ThinkingInjectsThinkAndDropsReasoningFromHistory) {
  const std::string text = render_chat(
      {{"user", "2+2?"}, {"assistant", "let me see</think>\n\n4"}, {"user", "and 3+3?"}}, ChatTemplateKind::Thinking);
  EXPECT_EQ(text,
            "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n"
            "<|im_start|>user\nand 3+3?<|im_end|>\n<|im_start|>assistant\n<think>\n");
  EXPECT_THROW(render_chat({{"tool", "x"}}, ChatTemplateKind::Instruct), Error);
}

TEST_F(ChatTest, DetectsTemplateKind) {
  EXPECT_EQ(detect_chat_template(dir_), ChatTemplateKind::Instruct);  // no files
  nlohmann::json tc = {
      {"chat_template",
       "{%- if add_generation_prompt %}\n    {{- '<|im_start|>assistant\\n<think>\\n' }}\n{%- endif %}"}};
  std::ofstream(dir_ / "tokenizer_config.json") << tc.dump();
  EXPECT_EQ(detect_chat_template(dir_), ChatTemplateKind::Thinking);
  tc["chat_template"] = "{%- if add_generation_prompt %}\n    {{- '<|im_start|>assistant\\n' }}\n{%- endif %}";
  std::ofstream(dir_ / "tokenizer_config.json") << tc.dump();
  EXPECT_EQ(detect_chat_template(dir_), ChatTemplateKind::Instruct);
}

TEST_F(ChatTest, StopTokensAreTheUnionOfBothConfigs) {
  ModelConfig config;
  config.eos_token_ids = {151645};
  std::ofstream(dir_ / "generation_config.json")
      << R"({"eos_token_id": [151645, 151643], "do_sample": true, "temperature": 0.7, "top_k": 20, "top_p": 0.8})";
  const GenerationDefaults d = load_generation_defaults(dir_, config);
  EXPECT_EQ(d.stop_token_ids, (std::vector<int>{151643, 151645}));
  EXPECT_DOUBLE_EQ(d.temperature, 0.7);
  EXPECT_EQ(d.top_k, 20);
  EXPECT_DOUBLE_EQ(d.top_p, 0.8);
  std::ofstream(dir_ / "generation_config.json") << R"({"eos_token_id": 7, "do_sample": false})";
  const GenerationDefaults greedy = load_generation_defaults(dir_, config);
  EXPECT_EQ(greedy.stop_token_ids, (std::vector<int>{7, 151645}));
  EXPECT_DOUBLE_EQ(greedy.temperature, 0.0);
}

}  // namespace
}  // namespace q3n
