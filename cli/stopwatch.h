// Wall-clock timing for the commands' reports (tok/s, progress, ETA).
#pragma once

#include <chrono>

namespace q3n::cli {

using Clock = std::chrono::steady_clock;
inline double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

}  // namespace q3n::cli
