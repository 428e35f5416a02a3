// Every tensor a Qwen3-Next checkpoint must hold, with its shape, derived from the config
// (spec §2). Used to validate a checkpoint before anything is uploaded.
#pragma once

#include <string>
#include <vector>

#include "loader/config.h"
#include "loader/safetensors.h"

namespace q3n {

struct ExpectedTensor {
  std::string name;
  std::vector<int64_t> shape;
};

// Main-model tensors; with `mtp`, also the mtp.* module (spec §2.7).
std::vector<ExpectedTensor> expected_tensors(const ModelConfig& config, bool mtp);

// True when the checkpoint carries an MTP head (any mtp.* tensor).
bool has_mtp_tensors(const Checkpoint& checkpoint);

// Throws one error listing missing tensors, tensors of the wrong shape and unexpected tensors.
void validate_checkpoint(const Checkpoint& checkpoint, const ModelConfig& config);

}  // namespace q3n
