#include "loader/tensor_schema.h"

#include <map>
#include <set>

#include "runtime/error.h"

namespace q3n {

namespace {

using Shape = std::vector<int64_t>;

std::string shape_string(const Shape& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

void add_attention(std::vector<ExpectedTensor>& out, const std::string& p, const ModelConfig& c) {
  const int64_t H = c.hidden_size, hd = c.head_dim;
  out.push_back({p + "q_proj.weight", {2 * c.num_attention_heads * hd, H}});  // query and gate per head
  out.push_back({p + "k_proj.weight", {c.num_key_value_heads * hd, H}});
  out.push_back({p + "v_proj.weight", {c.num_key_value_heads * hd, H}});
  out.push_back({p + "o_proj.weight", {H, c.num_attention_heads * hd}});
  out.push_back({p + "q_norm.weight", {hd}});
  out.push_back({p + "k_norm.weight", {hd}});
}

void add_swiglu(std::vector<ExpectedTensor>& out, const std::string& p, int64_t H, int64_t I) {
  out.push_back({p + "gate_proj.weight", {I, H}});
  out.push_back({p + "up_proj.weight", {I, H}});
  out.push_back({p + "down_proj.weight", {H, I}});
}

void add_moe(std::vector<ExpectedTensor>& out, const std::string& p, const ModelConfig& c) {
  const int64_t H = c.hidden_size;
  out.push_back({p + "gate.weight", {c.num_experts, H}});
  for (int e = 0; e < c.num_experts; ++e)
    add_swiglu(out, p + "experts." + std::to_string(e) + ".", H, c.moe_intermediate_size);
  if (c.shared_expert_intermediate_size > 0) {
    add_swiglu(out, p + "shared_expert.", H, c.shared_expert_intermediate_size);
    out.push_back({p + "shared_expert_gate.weight", {1, H}});
  }
}

}  // namespace

std::vector<ExpectedTensor> expected_tensors(const ModelConfig& c, bool mtp) {
  std::vector<ExpectedTensor> out;
  const int64_t H = c.hidden_size;
  out.push_back({"model.embed_tokens.weight", {c.vocab_size, H}});
  out.push_back({"model.norm.weight", {H}});
  if (!c.tie_word_embeddings) out.push_back({"lm_head.weight", {c.vocab_size, H}});
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    out.push_back({p + "input_layernorm.weight", {H}});
    out.push_back({p + "post_attention_layernorm.weight", {H}});
    if (c.layer_types[l] == LayerType::FullAttention) {
      add_attention(out, p + "self_attn.", c);
    } else {
      const std::string a = p + "linear_attn.";
      const int64_t kd = c.linear_key_dim(), vd = c.linear_value_dim(), hv = c.linear_num_value_heads;
      out.push_back({a + "in_proj_qkvz.weight", {2 * kd + 2 * vd, H}});
      out.push_back({a + "in_proj_ba.weight", {2 * hv, H}});
      out.push_back({a + "conv1d.weight", {c.linear_conv_dim(), 1, c.linear_conv_kernel_dim}});
      out.push_back({a + "dt_bias", {hv}});
      out.push_back({a + "A_log", {hv}});
      out.push_back({a + "norm.weight", {c.linear_value_head_dim}});
      out.push_back({a + "out_proj.weight", {H, vd}});
    }
    if (c.is_moe_layer(l))
      add_moe(out, p + "mlp.", c);
    else
      add_swiglu(out, p + "mlp.", H, c.intermediate_size);
  }
  if (mtp) {
    out.push_back({"mtp.fc.weight", {H, 2 * H}});
    out.push_back({"mtp.pre_fc_norm_embedding.weight", {H}});
    out.push_back({"mtp.pre_fc_norm_hidden.weight", {H}});
    out.push_back({"mtp.norm.weight", {H}});
    out.push_back({"mtp.layers.0.input_layernorm.weight", {H}});
    out.push_back({"mtp.layers.0.post_attention_layernorm.weight", {H}});
    add_attention(out, "mtp.layers.0.self_attn.", c);
    if (c.num_experts > 0)
      add_moe(out, "mtp.layers.0.mlp.", c);
    else
      add_swiglu(out, "mtp.layers.0.mlp.", H, c.intermediate_size);
  }
  return out;
}

bool has_mtp_tensors(const Checkpoint& checkpoint) {
  auto it = checkpoint.tensors().lower_bound("mtp.");
  return it != checkpoint.tensors().end() && it->first.rfind("mtp.", 0) == 0;
}

void validate_checkpoint(const Checkpoint& checkpoint, const ModelConfig& config) {
  // Counted before the schema is listed: a config whose layers and experts alone name more
  // tensors than the checkpoint holds cannot describe it (and num_experts = 65536 over 1024
  // layers would take minutes to list). Each layer has two norms, a mixer and an MLP of 3
  // matrices, or a router and 3 matrices per routed expert.
  uint64_t lower_bound = 2;  // embedding, final norm
  for (int l = 0; l < config.num_hidden_layers; ++l)
    lower_bound += 3 + (config.is_moe_layer(l) ? 1 + 3ull * uint64_t(config.num_experts) : 3);
  if (lower_bound > checkpoint.tensors().size())
    throw Error("the checkpoint does not match its config.json: the config describes at least " +
                std::to_string(lower_bound) + " tensors (num_hidden_layers " +
                std::to_string(config.num_hidden_layers) + ", num_experts " + std::to_string(config.num_experts) +
                ") but the checkpoint holds " + std::to_string(checkpoint.tensors().size()) +
                "; check that config.json belongs to these weights");
  const auto expected = expected_tensors(config, has_mtp_tensors(checkpoint));
  std::vector<std::string> missing, wrong, unexpected;
  std::set<std::string> known;
  for (const auto& e : expected) {
    known.insert(e.name);
    const TensorView* t = checkpoint.find(e.name);
    if (!t)
      missing.push_back(e.name);
    else if (t->shape != e.shape)
      wrong.push_back(e.name + " is " + t->shape_string() + ", expected " + shape_string(e.shape));
  }
  for (const auto& [name, _] : checkpoint.tensors())
    if (!known.count(name)) unexpected.push_back(name);
  if (missing.empty() && wrong.empty() && unexpected.empty()) return;

  auto list = [](const std::vector<std::string>& v) {
    std::string s;
    for (size_t i = 0; i < v.size() && i < 8; ++i) s += (i ? ", " : "") + v[i];
    if (v.size() > 8) s += ", ... (" + std::to_string(v.size()) + " in all)";
    return s;
  };
  std::string msg = "the checkpoint does not match its config.json:";
  if (!missing.empty()) msg += " missing tensors: " + list(missing) + ";";
  if (!wrong.empty()) msg += " wrong shapes: " + list(wrong) + ";";
  if (!unexpected.empty()) msg += " unexpected tensors: " + list(unexpected) + ";";
  msg += " check that config.json belongs to these weights";
  throw Error(msg);
}

}  // namespace q3n
