// Whether a model and its sequences fit in the devices' memory, decided before anything is
// allocated: on one device, or split across several by layers (--devices, graph/layer_split.h).
#pragma once

#include <memory>
#include <vector>

#include "graph/layer_split.h"
#include "graph/weights.h"
#include "runtime/ops/kv_type.h"
#include "runtime/runtime.h"

namespace q3n::cli {

class MemoryFit {
 public:
  // `shares`: the split's proportions (--split); empty = each device's free memory. A device
  // named more than once shares its free memory between its entries. `chunk`: the prefill chunk
  // asked for (0: each device's default), which sizes the activations' headroom.
  MemoryFit(const std::vector<std::unique_ptr<Runtime>>& devices, const ModelConfig& config,
            const graph::WeightParts& weights, graph::WeightFormat format, ops::KvType kv, std::vector<double> shares,
            bool mtp, uint32_t chunk);

  // Each device's layers for `slots` sequences of `context` positions (one device: the whole model).
  std::vector<graph::LayerSpan> spans(uint32_t slots, uint32_t context) const;
  bool fits(uint32_t slots, uint32_t context) const;
  // The largest context up to `wanted` at which `slots` sequences fit, but not below
  // default_context() (check() then runs fewer sequences or refuses), with a notice when lower.
  uint32_t context_that_fits(uint32_t wanted, uint32_t least, uint32_t slots) const;
  // Throws an Error naming what does not fit and what to change. With `fit_slots`, first lowers
  // `slots` (at least 1, with a notice) to what fits.
  void check(uint32_t context, uint32_t& slots, bool fit_slots) const;

  uint64_t free_bytes(size_t device) const { return free_.at(device); }
  uint64_t device_bytes(size_t device, const graph::LayerSpan& span, uint32_t slots, uint32_t context) const;

 private:
  const std::vector<std::unique_ptr<Runtime>>& devices_;
  const ModelConfig& config_;
  graph::WeightParts weights_;
  graph::WeightFormat format_;
  ops::KvType kv_;
  bool mtp_;  // the MTP head's KV cache too (with the last device's state)
  std::vector<double> shares_;
  std::vector<uint64_t> free_;
  std::vector<uint64_t> headroom_;  // per device: activations of a prefill step, step buffers, driver
};

}  // namespace q3n::cli
