// A pipeline split (--devices): each device runs a contiguous span of the model's layers. The
// first device also embeds the token ids; the last also holds the final norm, lm_head and
// sampling. Between devices the hidden state and the last layer's pending MLP output cross
// through host-visible memory (graph/engine.cpp).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "loader/config.h"

namespace q3n::graph {

// Layers [first, end) of one device. The default span is the whole model.
struct LayerSpan {
  static constexpr uint32_t kToLast = UINT32_MAX;
  uint32_t first = 0, end = kToLast;

  uint32_t last_of(const ModelConfig& c) const {
    return end == kToLast ? uint32_t(c.num_hidden_layers) : end;  // one past the span's last layer
  }
  bool contains(const ModelConfig& c, int layer) const { return layer >= int(first) && uint32_t(layer) < last_of(c); }
  bool embeds() const { return first == 0; }                                                      // the first device
  bool heads(const ModelConfig& c) const { return last_of(c) == uint32_t(c.num_hidden_layers); }  // the last
  bool whole(const ModelConfig& c) const { return embeds() && heads(c); }
  std::string describe(const ModelConfig& c) const;  // "layers 0-23"
};

// What a device must hold, by part: `layers[L]` the bytes of layer L (weights and state), and the
// embeddings (first device) and head (last device) besides.
struct SplitCosts {
  std::vector<uint64_t> layers;
  uint64_t first_extra = 0, last_extra = 0;
};

// Contiguous spans, one per share, each device's bytes as close as the layer boundaries allow to
// its share (shares are relative: free memory, or --split proportions). Every device gets at
// least one layer; throws an Error when there are more devices than layers or a share is not
// positive.
std::vector<LayerSpan> split_layers(const SplitCosts& costs, const std::vector<double>& shares);

// "3,1" or "0.75,0.25" (--split): one positive proportion per device. Throws an Error naming the
// flag and the bad value.
std::vector<double> parse_split(const std::string& text, size_t devices);

}  // namespace q3n::graph
