// config.json parsing: both spellings in the wild, the derived layer pattern, and every rejection.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "loader/config.h"
#include "runtime/error.h"

namespace q3n {
namespace {

using nlohmann::json;

json release_80b() {
  std::ifstream in(std::string(Q3N_SOURCE_DIR) + "/assets/configs/qwen3-next-80b-a3b.json");
  return json::parse(in);
}

// The tiny test config of spec §9 in the transformers 5 spelling.
json tiny_v5() {
  return json::parse(R"({
    "model_type": "qwen3_next", "dtype": "float32", "vocab_size": 512, "hidden_size": 128,
    "intermediate_size": 256, "num_hidden_layers": 8, "num_attention_heads": 4, "num_key_value_heads": 2,
    "head_dim": 64, "hidden_act": "silu", "max_position_embeddings": 4096, "rms_norm_eps": 1e-6,
    "tie_word_embeddings": false, "attention_bias": false, "linear_conv_kernel_dim": 4,
    "linear_key_head_dim": 32, "linear_value_head_dim": 16, "linear_num_key_heads": 2, "linear_num_value_heads": 4,
    "decoder_sparse_step": 1, "moe_intermediate_size": 64, "shared_expert_intermediate_size": 96,
    "num_experts_per_tok": 2, "num_experts": 8, "norm_topk_prob": true, "mlp_only_layers": [1],
    "rope_parameters": {"rope_type": "default", "rope_theta": 10000000.0, "partial_rotary_factor": 0.25},
    "layer_types": ["linear_attention", "linear_attention", "linear_attention", "full_attention",
                    "linear_attention", "linear_attention", "linear_attention", "full_attention"]
  })");
}

std::string rejection(const json& j) {
  try {
    parse_config(j, "config.json");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(ConfigTest, ReleaseSpellingOf80B) {
  const ModelConfig c = parse_config(release_80b(), "80b");
  EXPECT_EQ(c.num_hidden_layers, 48);
  EXPECT_EQ(c.hidden_size, 2048);
  EXPECT_EQ(c.dtype, "bfloat16");
  EXPECT_DOUBLE_EQ(c.rope_theta, 1e7);
  EXPECT_EQ(c.rotary_dim(), 64);
  EXPECT_EQ(c.count_layers(LayerType::FullAttention), 12);
  for (int l = 0; l < 48; ++l) {
    EXPECT_EQ(c.layer_types[l] == LayerType::FullAttention, l % 4 == 3) << "layer " << l;
    EXPECT_TRUE(c.is_moe_layer(l));
  }
  EXPECT_EQ(c.linear_conv_dim(), 8192);
  EXPECT_EQ(c.eos_token_ids, std::vector<int>{151645});
  EXPECT_FALSE(c.tie_word_embeddings);
}

TEST(ConfigTest, TransformersFiveSpelling) {
  const ModelConfig c = parse_config(tiny_v5(), "tiny");
  EXPECT_EQ(c.dtype, "float32");
  EXPECT_DOUBLE_EQ(c.rope_theta, 1e7);
  EXPECT_DOUBLE_EQ(c.partial_rotary_factor, 0.25);
  EXPECT_EQ(c.rotary_dim(), 16);
  EXPECT_EQ(c.layer_types[3], LayerType::FullAttention);
  EXPECT_EQ(c.layer_types[2], LayerType::LinearAttention);
  EXPECT_FALSE(c.is_moe_layer(1));  // mlp_only_layers
  EXPECT_TRUE(c.is_moe_layer(0));
}

// The config.json transformers 5.17 wrote for the spec §9 tiny model (null ids, both rope spellings).
TEST(ConfigTest, RealTransformersFiveOutput) {
  std::ifstream in(std::string(Q3N_SOURCE_DIR) + "/tests/data/config_transformers5.json");
  const ModelConfig c = parse_config(json::parse(in), "config_transformers5.json");
  EXPECT_EQ(c.num_hidden_layers, 8);
  EXPECT_EQ(c.layer_types[7], LayerType::FullAttention);
  EXPECT_EQ(c.rotary_dim(), 16);
  EXPECT_EQ(c.bos_token_id, -1);
  EXPECT_TRUE(c.eos_token_ids.empty());
}

TEST(ConfigTest, DecoderSparseStepAndExplicitLayerTypesWin) {
  json j = tiny_v5();
  j["decoder_sparse_step"] = 2;
  j["mlp_only_layers"] = json::array();
  j["layer_types"] = json::array();
  for (int i = 0; i < 8; ++i) j["layer_types"].push_back(i == 0 ? "full_attention" : "linear_attention");
  const ModelConfig c = parse_config(j, "tiny");
  EXPECT_EQ(c.layer_types[0], LayerType::FullAttention);
  EXPECT_EQ(c.layer_types[3], LayerType::LinearAttention);
  EXPECT_FALSE(c.is_moe_layer(0));
  EXPECT_TRUE(c.is_moe_layer(1));
}

TEST(ConfigTest, Rejections) {
  struct Case {
    const char* field;
    std::function<void(json&)> edit;
  };
  const std::vector<Case> cases = {
      {"model_type", [](json& j) { j["model_type"] = "llama"; }},
      {"model_type", [](json& j) { j.erase("model_type"); }},
      {"layer_types", [](json& j) { j["layer_types"][2] = "sliding_attention"; }},
      {"layer_types", [](json& j) { j["layer_types"].erase(0); }},
      {"rope_scaling", [](json& j) { j["rope_parameters"]["rope_type"] = "yarn"; }},
      {"rope_scaling",
       [](json& j) {
         j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}};
       }},
      {"dtype", [](json& j) { j["dtype"] = "int8"; }},
      {"hidden_size", [](json& j) { j["hidden_size"] = "128"; }},
      {"hidden_size", [](json& j) { j["hidden_size"] = 0; }},
      {"num_hidden_layers", [](json& j) { j.erase("num_hidden_layers"); }},
      {"num_key_value_heads", [](json& j) { j["num_key_value_heads"] = 3; }},
      {"linear_num_key_heads", [](json& j) { j["linear_num_key_heads"] = 3; }},
      {"num_experts_per_tok", [](json& j) { j["num_experts_per_tok"] = 9; }},
      {"mlp_only_layers", [](json& j) { j["mlp_only_layers"] = json::array({8}); }},
      {"partial_rotary_factor", [](json& j) { j["rope_parameters"]["partial_rotary_factor"] = 1.5; }},
      {"attention_bias", [](json& j) { j["attention_bias"] = true; }},
      {"hidden_act", [](json& j) { j["hidden_act"] = "gelu"; }},
      {"intermediate_size", [](json& j) { j["intermediate_size"] = 0; }},
      {"eos_token_id", [](json& j) { j["eos_token_id"] = 99999; }},
      // Past int's range: refused, not wrapped to a small id.
      {"eos_token_id", [](json& j) { j["eos_token_id"] = json::array({(1ll << 32) + 5}); }},
      {"eos_token_id", [](json& j) { j["eos_token_id"] = 8.8e52; }},
      {"mlp_only_layers", [](json& j) { j["mlp_only_layers"] = json::array({(1ll << 32) + 1}); }},
      // Absurd sizes are refused by the parser, before anything scales with them.
      {"num_experts", [](json& j) { j["num_experts"] = 1000000000; }},
      {"num_hidden_layers", [](json& j) { j["num_hidden_layers"] = 5000000; }},
      {"vocab_size", [](json& j) { j["vocab_size"] = 2000000000; }},
      {"hidden_size", [](json& j) { j["hidden_size"] = 1 << 20; }},
      {"moe_intermediate_size", [](json& j) { j["moe_intermediate_size"] = 1 << 28; }},
      {"linear_conv_kernel_dim", [](json& j) { j["linear_conv_kernel_dim"] = 100000; }},
      {"max_position_embeddings", [](json& j) { j["max_position_embeddings"] = 1 << 30; }},
  };
  for (const auto& c : cases) {
    json j = tiny_v5();
    c.edit(j);
    const std::string msg = rejection(j);
    EXPECT_NE(msg.find(std::string("\"") + c.field + "\""), std::string::npos)
        << "expected a rejection naming " << c.field << ", got: " << (msg.empty() ? "(accepted)" : msg);
  }
}

TEST(ConfigTest, MissingFolderAndFile) {
  try {
    load_config("/nonexistent/model");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("does not exist"), std::string::npos) << e.what();
  }
}

// A number past double's range is a JSON error of its own kind (out_of_range, not parse_error):
// found by fuzzing (tests/fuzz/regressions), it must still be a one-line q3n::Error.
TEST(ConfigTest, NumberOverflowIsAClearError) {
  const auto path = std::filesystem::temp_directory_path() / "q3n_config_overflow.json";
  std::ofstream(path) << R"({"model_type": "qwen3_next", "vocab_size": 1e999})";
  try {
    load_config_file(path);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("is not valid JSON"), std::string::npos) << e.what();
  }
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace q3n
