#include "runtime/cpu_dispatch.h"

#include <cstdlib>

#include "runtime/error.h"

namespace q3n {

CpuDispatch parse_cpu_dispatch(const std::string& name) {
  if (name == "threads") return CpuDispatch::Threads;
  if (name == "inline") return CpuDispatch::Inline;
  throw Error("unknown CPU dispatch mode '" + name + "': use threads or inline");
}

const char* cpu_dispatch_name(CpuDispatch mode) { return mode == CpuDispatch::Inline ? "inline" : "threads"; }

CpuDispatch cpu_dispatch_for_one_sequence(uint64_t prompt_tokens, uint64_t new_tokens) {
  // Measured on kjv-demo, 2 cores (bench/NOTES.md, session 19): a prompt token costs ~1.4 ms more
  // inline, a generated one ~3 ms less at short contexts, so the totals break even near prompts
  // of twice the generated tokens; past ~600 positions attention's keys make inline decode the
  // slower one. Kept to half those bounds: a wrong "threads" costs less than a wrong "inline".
  constexpr uint64_t kMaxInlineContext = 512;
  const bool generation_dominates = prompt_tokens <= new_tokens;
  const bool short_context = prompt_tokens + new_tokens <= kMaxInlineContext;
  return generation_dominates && short_context ? CpuDispatch::Inline : CpuDispatch::Threads;
}

bool apply_cpu_dispatch(CpuDispatch mode) {
  if (std::getenv("LP_NUM_THREADS")) return false;
  if (mode == CpuDispatch::Inline) setenv("LP_NUM_THREADS", "0", 0);
  return true;
}

}  // namespace q3n
