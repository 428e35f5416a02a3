// Says "cannot run" before anything is loaded: the limits of q3n's kernels (runtime/ops) checked
// against a model's config, so that an unsupported checkpoint is refused in milliseconds rather
// than after minutes of loading, with the config field, its value and the limit in the message.
// The kernels keep their own checks as internal shape checks.
#pragma once

#include <string>

#include "loader/config.h"

namespace q3n::graph {

// Throws q3n::Error naming `source` (the config file), the field and the limit.
void check_supported(const ModelConfig& config, const std::string& source);

}  // namespace q3n::graph
