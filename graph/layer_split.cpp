#include "graph/layer_split.h"

#include <cmath>
#include <cstdlib>

#include "runtime/error.h"

namespace q3n::graph {

std::string LayerSpan::describe(const ModelConfig& c) const {
  const uint32_t last = last_of(c);
  if (last == first + 1) return "layer " + std::to_string(first);
  return "layers " + std::to_string(first) + "-" + std::to_string(last - 1);
}

std::vector<LayerSpan> split_layers(const SplitCosts& costs, const std::vector<double>& shares) {
  const size_t devices = shares.size(), layers = costs.layers.size();
  if (devices == 0) throw Error("internal: a split over no devices");
  if (devices > layers)
    throw Error(std::to_string(devices) + " devices but the model has " + std::to_string(layers) +
                " layers; name at most one device per layer in --devices");
  double share_sum = 0;
  for (double s : shares) {
    if (!(s > 0) || !std::isfinite(s)) throw Error("every device's share of the layers must be positive");
    share_sum += s;
  }
  double total = double(costs.first_extra + costs.last_extra);
  for (uint64_t b : costs.layers) total += double(b);

  // Walk the layers in order; device d ends its span where the running total comes closest to
  // the running target (the shares up to and including d), leaving a layer for each device after.
  std::vector<LayerSpan> spans;
  double done = double(costs.first_extra), target = 0;
  uint32_t first = 0;
  for (size_t d = 0; d + 1 < devices; ++d) {
    target += total * shares[d] / share_sum;
    const uint32_t most = uint32_t(layers - (devices - 1 - d));  // one past the last layer d may take
    uint32_t end = first + 1;
    done += double(costs.layers[first]);
    while (end < most) {
      const double next = done + double(costs.layers[end]);
      if (std::abs(next - target) >= std::abs(done - target)) break;
      done = next;
      ++end;
    }
    spans.push_back({first, end});
    first = end;
  }
  spans.push_back({first, uint32_t(layers)});
  return spans;
}

std::vector<double> parse_split(const std::string& text, size_t devices) {
  std::vector<double> shares;
  size_t start = 0;
  while (start <= text.size()) {
    const size_t comma = std::min(text.find(',', start), text.size());
    const std::string part = text.substr(start, comma - start);
    char* end = nullptr;
    const double v = std::strtod(part.c_str(), &end);
    if (part.empty() || end != part.c_str() + part.size() || !(v > 0) || !std::isfinite(v))
      throw Error("--split " + text + ": '" + part +
                  "' is not a positive number (give one proportion per device, e.g. 3,1)");
    shares.push_back(v);
    start = comma + 1;
  }
  if (shares.size() != devices)
    throw Error("--split " + text + " gives " + std::to_string(shares.size()) + " proportions for " +
                std::to_string(devices) + " devices in --devices");
  return shares;
}

}  // namespace q3n::graph
