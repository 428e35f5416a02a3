// How Mesa's CPU Vulkan driver, lavapipe, runs q3n's dispatches: on its worker threads (its
// default) or inline, on the thread that executes the submission (LP_NUM_THREADS=0).
//
// Why a choice: lavapipe hands every dispatch to its worker threads and waits for them, which on
// the 2-core VM costs ~60 µs per dispatch whether it holds one workgroup or a hundred. A one-token
// decode step of kjv-demo is ~110 small dispatches, so the hand-offs cost more than the work, and
// inline dispatch decodes ~1.3-1.4x faster; a long prompt's dispatches are large and gain from
// the second core (bench/NOTES.md, session 19). Other drivers ignore the setting.
#pragma once

#include <cstdint>
#include <string>

namespace q3n {

enum class CpuDispatch { Threads, Inline };

// "threads" / "inline"; throws an Error naming the accepted values otherwise.
CpuDispatch parse_cpu_dispatch(const std::string& name);

// The faster mode for one sequence's job of `prompt_tokens` then up to `new_tokens` generated:
// inline where the prompt is no longer than the generation (the measured break-even on the
// 2-core VM is at about 1.6 times).
CpuDispatch cpu_dispatch_for_one_sequence(uint64_t prompt_tokens, uint64_t new_tokens);

// Applies `mode` to the Vulkan instances created from now on (lavapipe reads LP_NUM_THREADS when
// it opens its device, so call this before any Instance exists). Threads leaves the driver's
// default. Returns false and changes nothing where the user has set LP_NUM_THREADS: their value
// wins.
bool apply_cpu_dispatch(CpuDispatch mode);

}  // namespace q3n
