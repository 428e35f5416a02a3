#include "cli/memory_fit.h"

#include <algorithm>
#include <cstdio>
#include <map>

#include "cli/model_session.h"
#include "graph/engine.h"
#include "graph/state.h"
#include "runtime/error.h"

namespace q3n::cli {

namespace {
// Per device and 512 prefill tokens: the activations of a prefill step (the scratch arena grows
// with the chunk), step buffers, driver.
constexpr uint64_t kHeadroomPer512 = 256ull << 20;
}  // namespace

MemoryFit::MemoryFit(const std::vector<std::unique_ptr<Runtime>>& devices, const ModelConfig& config,
                     const graph::WeightParts& weights, graph::WeightFormat format, ops::KvType kv,
                     std::vector<double> shares, bool mtp, uint32_t chunk)
    : devices_(devices),
      config_(config),
      weights_(weights),
      format_(format),
      kv_(kv),
      mtp_(mtp),
      shares_(std::move(shares)) {
  std::map<uint32_t, uint64_t> entries;  // physical device index -> times named
  for (const auto& d : devices_) ++entries[d->device.info().index];
  for (const auto& d : devices_) {
    free_.push_back(d->device.free_device_memory() / entries[d->device.info().index]);
    const uint32_t tokens = chunk ? chunk : graph::default_prefill_chunk(d->device);
    headroom_.push_back(kHeadroomPer512 * std::max<uint64_t>(1, (tokens + 511) / 512));
  }
  if (shares_.empty())
    for (uint64_t f : free_) shares_.push_back(double(f));
}

std::vector<graph::LayerSpan> MemoryFit::spans(uint32_t slots, uint32_t context) const {
  if (devices_.size() == 1) return {graph::LayerSpan{}};
  graph::SplitCosts costs;
  for (int L = 0; L < config_.num_hidden_layers; ++L)
    costs.layers.push_back(weights_.layers.at(size_t(L)) +
                           graph::SequenceState::planned_layer_bytes(config_, L, slots, context, kv_));
  costs.first_extra = weights_.embed;
  costs.last_extra = weights_.head + (weights_.tied ? weights_.embed : 0);
  return graph::split_layers(costs, shares_);
}

uint64_t MemoryFit::device_bytes(size_t device, const graph::LayerSpan& span, uint32_t slots, uint32_t context) const {
  return weights_.on_device(config_, span) +
         graph::SequenceState::planned_bytes(config_, slots, context, kv_, span, mtp_) + headroom_.at(device);
}

bool MemoryFit::fits(uint32_t slots, uint32_t context) const {
  const auto s = spans(slots, context);
  for (size_t d = 0; d < s.size(); ++d)
    if (device_bytes(d, s[d], slots, context) > free_[d]) return false;
  return true;
}

uint32_t MemoryFit::context_that_fits(uint32_t wanted, uint32_t least, uint32_t slots) const {
  least = std::min(wanted, least);
  if (fits(slots, wanted)) return wanted;
  if (!fits(slots, least)) return least;
  uint32_t lo = least, hi = wanted;  // fits(lo), !fits(hi)
  while (hi - lo > 1) {
    const uint32_t mid = lo + (hi - lo) / 2;
    (fits(slots, mid) ? lo : hi) = mid;
  }
  std::fprintf(stderr,
               "[q3n] %u sequences of %u positions do not fit in %s's %.2f GiB free; the context is %u positions "
               "(requests that need more get an error record; --ctx and --max-batch set both)\n",
               slots, wanted, devices_[0]->device.info().name.c_str(), gib(free_[0]), lo);
  return lo;
}

void MemoryFit::check(uint32_t context, uint32_t& slots, bool fit_slots) const {
  const std::string& first_name = devices_[0]->device.info().name;
  if (fit_slots && slots > 1) {
    const uint32_t wanted = slots;
    while (slots > 1 && !fits(slots, context)) --slots;
    if (slots < wanted)
      std::fprintf(stderr, "[q3n] %u sequences of %u positions do not fit in %s's %.2f GiB free; running %u at once\n",
                   wanted, context, first_name.c_str(), gib(free_[0]), slots);
  }
  const auto s = spans(slots, context);
  for (size_t d = 0; d < s.size(); ++d) {
    const uint64_t need = device_bytes(d, s[d], slots, context);
    if (need <= free_[d]) continue;
    const uint64_t weights = weights_.on_device(config_, s[d]);
    const uint64_t state = graph::SequenceState::planned_bytes(config_, slots, context, kv_, s[d], mtp_);
    // A split names the device's share; one device, the whole model.
    const std::string what = s.size() > 1 ? s[d].describe(config_) + " of the model need" : "it needs";
    char msg[640];
    std::snprintf(msg, sizeof msg,
                  "the model does not fit: %s %.2f GiB of device memory (weights %.2f GiB as %s, state and %s KV "
                  "cache %.2f GiB for %u sequence(s) of %u tokens, %.2f GiB for activations) but %s has %.2f GiB free; "
                  "use %s%sa smaller --ctx, fewer sequences%s or a device with more memory",
                  what.c_str(), gib(need), gib(weights), graph::weight_format_name(format_), ops::kv_type_name(kv_),
                  gib(state), slots, context, gib(headroom_[d]), devices_[d]->device.info().name.c_str(), gib(free_[d]),
                  kv_ == ops::KvType::F32 ? "--kv f16, " : "",
                  format_ == graph::WeightFormat::Q4   ? ""
                  : format_ == graph::WeightFormat::Q8 ? "--weights q4, "
                                                       : "--weights q4 or q8, ",
                  s.size() > 1 ? ", another --split" : ", --devices to split the layers over several GPUs");
    throw Error(msg);
  }
}

}  // namespace q3n::cli
