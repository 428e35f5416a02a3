// config.json of a Qwen3-Next checkpoint, parsed into one typed struct (spec §1).
// Both spellings in the wild are accepted: the release format (rope_theta, partial_rotary_factor,
// rope_scaling, full_attention_interval, torch_dtype) and transformers 5 (rope_parameters,
// layer_types, dtype).
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace q3n {

enum class LayerType { LinearAttention, FullAttention };
const char* layer_type_name(LayerType t);

struct ModelConfig {
  std::string model_type;
  std::string dtype;  // "bfloat16" | "float16" | "float32"
  int vocab_size = 0;
  int hidden_size = 0;
  int num_hidden_layers = 0;
  std::vector<LayerType> layer_types;
  double rms_norm_eps = 1e-6;
  bool tie_word_embeddings = false;
  int max_position_embeddings = 0;

  // Gated attention (spec §3.6, §3.7).
  int num_attention_heads = 0;
  int num_key_value_heads = 0;
  int head_dim = 0;
  double rope_theta = 10000.0;
  double partial_rotary_factor = 1.0;

  // Gated DeltaNet (spec §3.3).
  int linear_num_key_heads = 0;
  int linear_num_value_heads = 0;
  int linear_key_head_dim = 0;
  int linear_value_head_dim = 0;
  int linear_conv_kernel_dim = 0;

  // MLP / MoE (spec §3.8).
  int intermediate_size = 0;  // dense MLP width (mlp_only_layers)
  int num_experts = 0;
  int num_experts_per_tok = 0;
  int moe_intermediate_size = 0;
  int shared_expert_intermediate_size = 0;
  int decoder_sparse_step = 1;
  bool norm_topk_prob = true;
  std::vector<int> mlp_only_layers;

  int bos_token_id = -1;
  std::vector<int> eos_token_ids;

  bool is_moe_layer(int layer) const;
  int rotary_dim() const;  // int(head_dim * partial_rotary_factor)
  int linear_key_dim() const { return linear_num_key_heads * linear_key_head_dim; }
  int linear_value_dim() const { return linear_num_value_heads * linear_value_head_dim; }
  int linear_conv_dim() const { return 2 * linear_key_dim() + linear_value_dim(); }
  int count_layers(LayerType t) const;
};

// Parses and validates; `source` names the file in error messages. Throws q3n::Error naming the
// offending field and what q3n accepts.
ModelConfig parse_config(const nlohmann::json& j, const std::string& source);
ModelConfig load_config(const std::filesystem::path& model_dir);  // model_dir/config.json
ModelConfig load_config_file(const std::filesystem::path& json_file);

}  // namespace q3n
