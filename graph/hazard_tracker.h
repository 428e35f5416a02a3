// Where a recorded program needs a barrier: the memory hazards since the last one, checked on
// byte ranges rather than tensor ids, because the memory plan lets different tensors share bytes.
#pragma once

#include <vulkan/vulkan.h>

#include <vector>

#include "runtime/memory.h"

namespace q3n::graph {

struct Span {
  VkBuffer buffer;
  VkDeviceSize begin, end;
  bool overlaps(const Span& o) const { return buffer == o.buffer && begin < o.end && o.begin < end; }
};
inline Span span_of(const BufferRange& r) { return {r.buffer, r.offset, r.offset + r.size}; }

class HazardTracker {
 public:
  // Whether a node reading `reads` and writing `writes` must wait for the nodes added since the
  // last clear(): read after write, write after write, write after read. Reads after reads never.
  bool needs_barrier(const std::vector<Span>& reads, const std::vector<Span>& writes) const {
    for (const Span& r : reads)
      for (const Span& w : written_)
        if (r.overlaps(w)) return true;
    for (const Span& w : writes) {
      for (const Span& o : written_)
        if (w.overlaps(o)) return true;
      for (const Span& o : read_)
        if (w.overlaps(o)) return true;
    }
    return false;
  }
  void clear() { read_.clear(), written_.clear(); }
  void add(const std::vector<Span>& reads, const std::vector<Span>& writes) {
    read_.insert(read_.end(), reads.begin(), reads.end());
    written_.insert(written_.end(), writes.begin(), writes.end());
  }

 private:
  std::vector<Span> read_, written_;
};

}  // namespace q3n::graph
