#include "graph/support_check.h"

#include <algorithm>

#include "runtime/error.h"
#include "runtime/ops/attention.h"
#include "runtime/ops/causal_conv1d.h"
#include "runtime/ops/delta_rule.h"
#include "runtime/ops/moe.h"

namespace q3n::graph {

void check_supported(const ModelConfig& c, const std::string& source) {
  auto refuse = [&](const char* field, int value, const std::string& limit) {
    throw Error(source + ": field \"" + field + "\" is " + std::to_string(value) + "; " + limit +
                " (this q3n cannot run the model)");
  };
  const bool attention = std::count(c.layer_types.begin(), c.layer_types.end(), LayerType::FullAttention) > 0;
  const bool delta = std::count(c.layer_types.begin(), c.layer_types.end(), LayerType::LinearAttention) > 0;
  if (attention && c.head_dim > int(ops::kMaxAttentionHeadDim))
    refuse("head_dim", c.head_dim,
           "q3n's attention kernels take heads of at most " + std::to_string(ops::kMaxAttentionHeadDim));
  if (c.num_experts > int(ops::kMaxExperts))
    refuse("num_experts", c.num_experts,
           "q3n's routing kernels take at most " + std::to_string(ops::kMaxExperts) + " experts");
  if (delta) {
    if (c.linear_key_head_dim < 1 || c.linear_key_head_dim > int(ops::kMaxDeltaHeadDim))
      refuse("linear_key_head_dim", c.linear_key_head_dim,
             "q3n's delta-rule kernels take head dims of 1 to " + std::to_string(ops::kMaxDeltaHeadDim));
    if (c.linear_value_head_dim < 1 || c.linear_value_head_dim > int(ops::kMaxDeltaHeadDim))
      refuse("linear_value_head_dim", c.linear_value_head_dim,
             "q3n's delta-rule kernels take head dims of 1 to " + std::to_string(ops::kMaxDeltaHeadDim));
    if (c.linear_conv_kernel_dim < 1 || c.linear_conv_kernel_dim > int(ops::kMaxConvKernel))
      refuse("linear_conv_kernel_dim", c.linear_conv_kernel_dim,
             "q3n's causal-conv kernel takes widths of 1 to " + std::to_string(ops::kMaxConvKernel));
  }
}

}  // namespace q3n::graph
