#include "cli/progress.h"

#include <unistd.h>

#include <cstdio>

namespace q3n {

ProgressBar::ProgressBar(std::string label, uint64_t total, uint64_t show_above)
    : label_(std::move(label)),
      total_(total),
      visible_(total >= show_above && ::isatty(STDERR_FILENO)),
      start_(std::chrono::steady_clock::now()),
      last_draw_(start_) {}

ProgressBar::~ProgressBar() {
  if (visible_) draw(true);
}

void ProgressBar::advance(uint64_t bytes) {
  done_ += bytes;
  const auto now = std::chrono::steady_clock::now();
  if (visible_ && now - last_draw_ > std::chrono::milliseconds(100)) {
    last_draw_ = now;
    draw(false);
  }
}

void ProgressBar::draw(bool final) {
  const double fraction = total_ ? double(done_) / double(total_) : 1.0;
  const int width = 30, filled = int(fraction * width + 0.5);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  std::fprintf(stderr, "\r%s [%s%s] %5.1f%% %.2f/%.2f GiB %.0f MB/s%s", label_.c_str(),
               std::string(filled, '#').c_str(), std::string(width - filled, '.').c_str(), 100 * fraction,
               done_ / 1073741824.0, total_ / 1073741824.0, seconds > 0 ? done_ / seconds / 1e6 : 0.0,
               final ? "\n" : "");
  std::fflush(stderr);
}

}  // namespace q3n
