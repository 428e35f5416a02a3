// A one-line progress bar on stderr for long loads (only when stderr is a terminal and the work
// is large enough to be worth watching).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace q3n {

class ProgressBar {
 public:
  ProgressBar(std::string label, uint64_t total_bytes, uint64_t show_above_bytes = 1ull << 30);
  ~ProgressBar();  // finishes the line
  void advance(uint64_t bytes);

 private:
  void draw(bool final);
  std::string label_;
  uint64_t total_, done_ = 0;
  bool visible_;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

}  // namespace q3n
