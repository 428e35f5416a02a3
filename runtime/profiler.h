// Optional per-dispatch GPU timing with timestamp queries: mark() before each dispatch,
// finish() after the last, then read() once after every completed submission. The marks belong
// to the recording, so a command buffer recorded once may be submitted and read many times.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "runtime/command.h"

namespace q3n {

class Profiler {
 public:
  Profiler(const Device& device, uint32_t max_marks);
  void begin(CommandBuffer& commands);                           // resets the queries
  void mark(CommandBuffer& commands, const std::string& label);  // starts timing `label`
  void finish(CommandBuffer& commands);                          // ends the last label
  struct Entry {
    double milliseconds = 0;
    uint32_t count = 0;
  };
  // Accumulated GPU time per label over every completed submission read so far.
  const std::map<std::string, Entry>& read();
  // The accumulated totals, which start again from zero.
  std::map<std::string, Entry> take();
  bool available() const { return available_; }

 private:
  const Device& device_;
  OwnedQueryPool pool_;
  uint32_t capacity_;
  bool available_;
  std::vector<std::string> labels_;
  std::map<std::string, Entry> totals_;
};

}  // namespace q3n
