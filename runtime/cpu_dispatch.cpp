#include "runtime/cpu_dispatch.h"

#include <cstdlib>

#include "runtime/error.h"

namespace q3n {

CpuDispatch parse_cpu_dispatch(const std::string& name) {
  if (name == "threads") return CpuDispatch::Threads;
  if (name == "inline") return CpuDispatch::Inline;
  throw Error("unknown CPU dispatch mode '" + name + "': use threads or inline");
}

CpuDispatch cpu_dispatch_for_one_sequence(uint64_t prompt_tokens, uint64_t new_tokens) {
  // Measured on kjv-demo, 2 cores (bench/NOTES.md, session 19): a prompt token costs ~1 ms more
  // inline, a generated one ~1.7 ms less, at every depth up to the model's 2048 positions, so
  // the totals break even near prompts of 1.6x the generated tokens. Kept to 1x: a wrong
  // "threads" costs less than a wrong "inline".
  return prompt_tokens <= new_tokens ? CpuDispatch::Inline : CpuDispatch::Threads;
}

bool apply_cpu_dispatch(CpuDispatch mode) {
  if (std::getenv("LP_NUM_THREADS")) return false;
  if (mode == CpuDispatch::Inline) setenv("LP_NUM_THREADS", "0", 0);
  return true;
}

}  // namespace q3n
