#include "cli/model_summary.h"

#include <cstdio>
#include <sstream>

#include "loader/tensor_schema.h"
#include "runtime/memory.h"

namespace q3n {

namespace {

std::string human(double v, const char* unit) {
  char buf[64];
  if (v >= 1e9)
    std::snprintf(buf, sizeof buf, "%.2f G%s", v / 1e9, unit);
  else if (v >= 1e6)
    std::snprintf(buf, sizeof buf, "%.2f M%s", v / 1e6, unit);
  else if (v >= 1e3)
    std::snprintf(buf, sizeof buf, "%.2f K%s", v / 1e3, unit);
  else
    std::snprintf(buf, sizeof buf, "%.0f %s", v, unit);
  return buf;
}

bool is_routed_expert(const std::string& name) { return name.find(".mlp.experts.") != std::string::npos; }

}  // namespace

ModelSummary summarize(const ModelConfig& c, const Checkpoint& checkpoint) {
  ModelSummary s;
  int64_t routed = 0;
  for (const auto& [name, t] : checkpoint.tensors()) {
    s.bytes_by_dtype[dtype_name(t.dtype)] += t.bytes;
    s.weight_bytes += t.bytes;
    if (name.rfind("mtp.", 0) == 0) {
      s.mtp_parameters += t.elements();
      continue;
    }
    s.parameters += t.elements();
    if (is_routed_expert(name)) routed += t.elements();
  }
  s.active_parameters = s.parameters - routed;
  if (c.num_experts > 0) s.active_parameters += routed / c.num_experts * c.num_experts_per_tok;
  return s;
}

std::string describe_model(const ModelConfig& c, const ModelSummary& s) {
  std::ostringstream o;
  o << "model_type: " << c.model_type << " (dtype " << c.dtype << ")\n";
  o << "hidden " << c.hidden_size << ", vocab " << c.vocab_size << ", layers " << c.num_hidden_layers
    << (c.tie_word_embeddings ? ", tied embeddings" : "") << ", rms_norm_eps " << c.rms_norm_eps << "\n";
  o << "layer pattern (L = Gated DeltaNet, A = gated attention; lower case = dense MLP):\n  ";
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    char ch = c.layer_types[l] == LayerType::FullAttention ? 'A' : 'L';
    o << static_cast<char>(c.is_moe_layer(l) ? ch : ch + ('a' - 'A'));
  }
  o << "\n";
  o << "attention: " << c.num_attention_heads << " q heads / " << c.num_key_value_heads << " kv heads of " << c.head_dim
    << ", rotary " << c.rotary_dim() << " dims, theta " << c.rope_theta << "\n";
  o << "delta net: " << c.linear_num_key_heads << " qk heads of " << c.linear_key_head_dim << ", "
    << c.linear_num_value_heads << " v heads of " << c.linear_value_head_dim << ", conv kernel "
    << c.linear_conv_kernel_dim << "\n";
  if (c.num_experts > 0)
    o << "moe: " << c.num_experts << " experts of " << c.moe_intermediate_size << ", top-" << c.num_experts_per_tok
      << (c.norm_topk_prob ? " (renormalised)" : "") << ", shared expert " << c.shared_expert_intermediate_size << "\n";
  if (!c.mlp_only_layers.empty() || c.num_experts == 0) o << "dense mlp: " << c.intermediate_size << "\n";
  o << "parameters: " << human(double(s.parameters), "") << " (" << human(double(s.active_parameters), "")
    << " active per token)";
  if (s.mtp_parameters) o << ", MTP head " << human(double(s.mtp_parameters), "");
  o << "\n";
  o << "weights on disk:";
  for (const auto& [dt, bytes] : s.bytes_by_dtype) o << " " << dt << " " << format_bytes(bytes);
  o << "\n";
  return o.str();
}

}  // namespace q3n
