#include "loader/config.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdint>

#include "loader/json_file.h"
#include "runtime/error.h"

namespace q3n {

using nlohmann::json;

const char* layer_type_name(LayerType t) {
  return t == LayerType::FullAttention ? "full_attention" : "linear_attention";
}

bool ModelConfig::is_moe_layer(int layer) const {
  for (int l : mlp_only_layers)
    if (l == layer) return false;
  return num_experts > 0 && (layer + 1) % decoder_sparse_step == 0;
}

int ModelConfig::rotary_dim() const { return static_cast<int>(head_dim * partial_rotary_factor); }

int ModelConfig::count_layers(LayerType t) const {
  int n = 0;
  for (auto lt : layer_types) n += lt == t;
  return n;
}

namespace {

struct Reader {
  const json& j;
  const std::string& source;

  [[noreturn]] void fail(const std::string& field, const std::string& why) const {
    throw Error(source + ": field \"" + field + "\" " + why);
  }
  const json* find(const char* key) const {
    auto it = j.find(key);
    return it == j.end() || it->is_null() ? nullptr : &*it;
  }
  // Every size has a ceiling far above any released checkpoint (Limits below), so an absurd value
  // is refused here, before anything loops or allocates in proportion to it.
  int integer(const char* key, bool required = true, int fallback = 0, int min = 1, int max = (1 << 30)) const {
    const json* v = find(key);
    if (!v) {
      if (required) fail(key, "is missing");
      return fallback;
    }
    if (!v->is_number_integer()) fail(key, "must be an integer, got " + v->dump());
    const long long x = v->get<long long>();
    if (x < min || x > max)
      fail(key, "is " + std::to_string(x) + ", outside " + std::to_string(min) + ".." + std::to_string(max) +
                    " (no Qwen3-Next checkpoint comes near; is this the right config.json?)");
    return static_cast<int>(x);
  }
  double number(const char* key, double fallback) const {
    const json* v = find(key);
    if (!v) return fallback;
    if (!v->is_number()) fail(key, "must be a number, got " + v->dump());
    return v->get<double>();
  }
  bool boolean(const char* key, bool fallback) const {
    const json* v = find(key);
    if (!v) return fallback;
    if (!v->is_boolean()) fail(key, "must be true or false, got " + v->dump());
    return v->get<bool>();
  }
  std::string string(const char* key, const std::string& fallback) const {
    const json* v = find(key);
    if (!v) return fallback;
    if (!v->is_string()) fail(key, "must be a string, got " + v->dump());
    return v->get<std::string>();
  }
};

// Ceilings of the size fields: tens to thousands of times the 80B-A3B's values.
namespace limits {
constexpr int kVocab = 1 << 22, kHidden = 1 << 16, kLayers = 1024, kPositions = 1 << 24, kHeads = 1024;
constexpr int kHeadDim = 4096, kConvKernel = 64, kIntermediate = 1 << 20, kExperts = 1 << 16;
}  // namespace limits

std::vector<int> token_ids(const Reader& r, const char* key) {
  const json* v = r.find(key);
  std::vector<int> ids;
  if (!v) return ids;
  // Read as 64-bit first, so that an id past int's range is refused rather than wrapped.
  const auto id = [&](const json& x) {
    if (!x.is_number_integer() || x.get<int64_t>() < 0 || x.get<int64_t>() > INT32_MAX)
      r.fail(key, "must hold token ids (integers from 0), not " + x.dump());
    return int(x.get<int64_t>());
  };
  if (v->is_number_integer())
    ids.push_back(id(*v));
  else if (v->is_array()) {
    for (const auto& x : *v) ids.push_back(id(x));
  } else
    r.fail(key, "must be a token id or a list of them");
  return ids;
}

void parse_rope(const Reader& r, ModelConfig& c) {
  c.rope_theta = r.number("rope_theta", 10000.0);
  c.partial_rotary_factor = r.number("partial_rotary_factor", 1.0);
  std::string rope_type = "default";
  if (const json* rp = r.find("rope_parameters")) {  // transformers 5
    if (!rp->is_object()) r.fail("rope_parameters", "must be an object");
    Reader sub{*rp, r.source};
    c.rope_theta = sub.number("rope_theta", c.rope_theta);
    c.partial_rotary_factor = sub.number("partial_rotary_factor", c.partial_rotary_factor);
    rope_type = sub.string("rope_type", sub.string("type", "default"));
  }
  if (const json* rs = r.find("rope_scaling")) {  // release format; null = plain RoPE
    if (!rs->is_object()) r.fail("rope_scaling", "must be an object or null");
    Reader sub{*rs, r.source};
    rope_type = sub.string("rope_type", sub.string("type", "default"));
  }
  if (rope_type != "default")
    r.fail("rope_scaling", "asks for RoPE type \"" + rope_type +
                               "\", which q3n does not implement (only plain RoPE: set it to null / \"default\")");
  if (!(c.rope_theta > 0)) r.fail("rope_theta", "must be positive");
  if (!(c.partial_rotary_factor > 0 && c.partial_rotary_factor <= 1))
    r.fail("partial_rotary_factor", "must be in (0, 1]");
}

void parse_layer_types(const Reader& r, ModelConfig& c) {
  if (const json* lt = r.find("layer_types")) {
    if (!lt->is_array()) r.fail("layer_types", "must be a list");
    for (const auto& v : *lt) {
      const std::string s = v.is_string() ? v.get<std::string>() : v.dump();
      if (s == "linear_attention")
        c.layer_types.push_back(LayerType::LinearAttention);
      else if (s == "full_attention" || s == "attention")
        c.layer_types.push_back(LayerType::FullAttention);
      else
        r.fail("layer_types", "has unknown layer type " + v.dump() + " (q3n runs linear_attention and full_attention)");
    }
    if (static_cast<int>(c.layer_types.size()) != c.num_hidden_layers)
      r.fail("layer_types", "lists " + std::to_string(c.layer_types.size()) + " layers but num_hidden_layers is " +
                                std::to_string(c.num_hidden_layers));
  } else {
    const int interval = r.integer("full_attention_interval", false, 4, 1, limits::kLayers);
    for (int i = 0; i < c.num_hidden_layers; ++i)
      c.layer_types.push_back((i + 1) % interval == 0 ? LayerType::FullAttention : LayerType::LinearAttention);
  }
}

}  // namespace

ModelConfig parse_config(const json& j, const std::string& source) {
  if (!j.is_object()) throw Error(source + ": expected a JSON object");
  Reader r{j, source};
  ModelConfig c;
  c.model_type = r.string("model_type", "");
  if (c.model_type != "qwen3_next")
    r.fail("model_type", c.model_type.empty() ? "is missing (q3n runs model_type \"qwen3_next\")"
                                              : "is \"" + c.model_type + "\"; q3n runs only \"qwen3_next\"");
  c.dtype = r.string("dtype", r.string("torch_dtype", "bfloat16"));
  if (c.dtype != "bfloat16" && c.dtype != "float16" && c.dtype != "float32")
    r.fail("dtype", "is \"" + c.dtype + "\"; q3n reads bfloat16, float16 and float32 checkpoints");
  if (r.string("hidden_act", "silu") != "silu") r.fail("hidden_act", "must be \"silu\"");
  if (r.boolean("attention_bias", false))
    r.fail("attention_bias", "is true; Qwen3-Next attention has no biases and q3n does not load them");

  using namespace limits;
  c.vocab_size = r.integer("vocab_size", true, 0, 1, kVocab);
  c.hidden_size = r.integer("hidden_size", true, 0, 1, kHidden);
  c.num_hidden_layers = r.integer("num_hidden_layers", true, 0, 1, kLayers);
  c.rms_norm_eps = r.number("rms_norm_eps", 1e-6);
  if (!(c.rms_norm_eps > 0 && c.rms_norm_eps < 1)) r.fail("rms_norm_eps", "must be in (0, 1)");
  c.tie_word_embeddings = r.boolean("tie_word_embeddings", false);
  c.max_position_embeddings = r.integer("max_position_embeddings", false, 262144, 1, kPositions);

  c.num_attention_heads = r.integer("num_attention_heads", true, 0, 1, kHeads);
  c.num_key_value_heads = r.integer("num_key_value_heads", true, 0, 1, kHeads);
  c.head_dim = r.integer("head_dim", false, c.hidden_size / c.num_attention_heads, 1, kHeadDim);
  parse_rope(r, c);

  c.linear_num_key_heads = r.integer("linear_num_key_heads", true, 0, 1, kHeads);
  c.linear_num_value_heads = r.integer("linear_num_value_heads", true, 0, 1, kHeads);
  c.linear_key_head_dim = r.integer("linear_key_head_dim", true, 0, 1, kHeadDim);
  c.linear_value_head_dim = r.integer("linear_value_head_dim", true, 0, 1, kHeadDim);
  c.linear_conv_kernel_dim = r.integer("linear_conv_kernel_dim", true, 0, 1, kConvKernel);

  c.intermediate_size = r.integer("intermediate_size", false, 0, 0, kIntermediate);
  c.num_experts = r.integer("num_experts", false, 0, 0, kExperts);
  c.num_experts_per_tok = r.integer("num_experts_per_tok", c.num_experts > 0, 0, 0, kExperts);
  c.moe_intermediate_size = r.integer("moe_intermediate_size", c.num_experts > 0, 0, 0, kIntermediate);
  c.shared_expert_intermediate_size = r.integer("shared_expert_intermediate_size", false, 0, 0, kIntermediate);
  c.decoder_sparse_step = r.integer("decoder_sparse_step", false, 1, 1, kLayers);
  c.norm_topk_prob = r.boolean("norm_topk_prob", true);
  if (const json* m = r.find("mlp_only_layers")) {
    if (!m->is_array()) r.fail("mlp_only_layers", "must be a list of layer indices");
    for (const auto& v : *m) {
      if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() >= c.num_hidden_layers)
        r.fail("mlp_only_layers", "holds " + v.dump() + ", not a layer index below num_hidden_layers");
      c.mlp_only_layers.push_back(int(v.get<int64_t>()));
    }
  }
  parse_layer_types(r, c);
  const auto bos = token_ids(r, "bos_token_id");
  c.bos_token_id = bos.empty() ? -1 : bos[0];
  c.eos_token_ids = token_ids(r, "eos_token_id");

  // Consistency between sizes.
  if (c.num_attention_heads % c.num_key_value_heads != 0)
    r.fail("num_key_value_heads", "(" + std::to_string(c.num_key_value_heads) + ") must divide num_attention_heads (" +
                                      std::to_string(c.num_attention_heads) + ")");
  if (c.linear_num_value_heads % c.linear_num_key_heads != 0)
    r.fail("linear_num_key_heads", "must divide linear_num_value_heads");
  if (c.head_dim % 2 != 0) r.fail("head_dim", "must be even");
  if (c.rotary_dim() % 2 != 0 || c.rotary_dim() == 0)
    r.fail("partial_rotary_factor", "gives an odd or empty rotary dimension (" + std::to_string(c.rotary_dim()) + ")");
  if (c.num_experts > 0 && (c.num_experts_per_tok < 1 || c.num_experts_per_tok > c.num_experts))
    r.fail("num_experts_per_tok", "must be between 1 and num_experts");
  for (int l = 0; l < c.num_hidden_layers; ++l)
    if (!c.is_moe_layer(l) && c.intermediate_size <= 0)
      r.fail("intermediate_size", "must be positive: layer " + std::to_string(l) + " uses the dense MLP");
  for (int id : c.eos_token_ids)
    if (id < 0 || id >= c.vocab_size)
      r.fail("eos_token_id", "holds " + std::to_string(id) + ", outside the vocabulary");
  return c;
}

ModelConfig load_config(const std::filesystem::path& model_dir) {
  const auto path = model_dir / "config.json";
  if (!std::filesystem::exists(path)) {
    if (!std::filesystem::exists(model_dir)) throw Error("model folder " + model_dir.string() + " does not exist");
    throw Error(path.string() + " is missing: -m must name a Hugging Face checkpoint folder with config.json");
  }
  return load_config_file(path);
}

ModelConfig load_config_file(const std::filesystem::path& path) {
  return parse_config(read_json_file(path, "cannot be opened: the model folder needs its config.json"), path.string());
}

}  // namespace q3n
