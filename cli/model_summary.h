// What `q3n info` reports about a checkpoint: parameters, bytes by dtype, memory to run it.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "loader/config.h"
#include "loader/safetensors.h"

namespace q3n {

struct ModelSummary {
  int64_t parameters = 0;         // every tensor of the main model (no MTP)
  int64_t active_parameters = 0;  // used per token: all but the unrouted experts
  int64_t mtp_parameters = 0;
  std::map<std::string, uint64_t> bytes_by_dtype;  // as stored
  uint64_t weight_bytes = 0;
};

ModelSummary summarize(const ModelConfig& config, const Checkpoint& checkpoint);
// Multi-line report: config, layer pattern, parameters, bytes on disk. (The memory a run needs is
// the graph's to say: `q3n info` adds it from graph::SequenceState.)
std::string describe_model(const ModelConfig& config, const ModelSummary& summary);

}  // namespace q3n
