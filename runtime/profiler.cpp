#include "runtime/profiler.h"

#include <utility>

#include "runtime/error.h"

namespace q3n {

Profiler::Profiler(const Device& device, uint32_t max_marks)
    : device_(device), capacity_(max_marks + 1), available_(device.timestamp_valid_bits() > 0) {
  if (!available_) return;
  VkQueryPoolCreateInfo info{VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO};
  info.queryType = VK_QUERY_TYPE_TIMESTAMP;
  info.queryCount = capacity_;
  VkQueryPool pool;
  VK_CHECK(vkCreateQueryPool(device.get(), &info, nullptr, &pool));
  pool_ = OwnedQueryPool(device.get(), pool);
}

void Profiler::begin(CommandBuffer& commands) {
  labels_.clear();
  if (available_) commands.reset_queries(pool_, 0, capacity_);
}

void Profiler::mark(CommandBuffer& commands, const std::string& label) {
  if (!available_ || labels_.size() + 1 >= capacity_) return;
  commands.timestamp(pool_, static_cast<uint32_t>(labels_.size()));
  labels_.push_back(label);
}

void Profiler::finish(CommandBuffer& commands) {
  if (!available_ || labels_.empty()) return;
  commands.timestamp(pool_, static_cast<uint32_t>(labels_.size()));
}

const std::map<std::string, Profiler::Entry>& Profiler::read() {
  if (!available_ || labels_.empty()) return totals_;
  std::vector<uint64_t> ticks(labels_.size() + 1);
  VK_CHECK(vkGetQueryPoolResults(device_.get(), pool_, 0, static_cast<uint32_t>(ticks.size()),
                                 ticks.size() * sizeof(uint64_t), ticks.data(), sizeof(uint64_t),
                                 VK_QUERY_RESULT_64_BIT | VK_QUERY_RESULT_WAIT_BIT));
  const double ns_per_tick = device_.info().timestamp_period_ns;
  for (size_t i = 0; i < labels_.size(); ++i) {
    auto& e = totals_[labels_[i]];
    e.milliseconds += static_cast<double>(ticks[i + 1] - ticks[i]) * ns_per_tick * 1e-6;
    e.count++;
  }
  return totals_;
}

std::map<std::string, Profiler::Entry> Profiler::take() { return std::exchange(totals_, {}); }

}  // namespace q3n
