// How a kernel that carries per-sequence state (the DeltaNet conv and recurrent state) treats it
// in a step. Speculative verification (graph/model_graph.cpp, a verify step) must not keep the
// state of rejected draft tokens, so it runs each such kernel twice: over every verified token
// with the state left as it was (Keep), then, once the accepted count of each sequence is known
// on the GPU, over the accepted prefix writing only the state (Commit). Both runs do the same
// per-token arithmetic as a plain step (Write), so the committed state is bitwise the state plain
// decoding reaches.
#pragma once

#include <cstdint>

namespace q3n::ops {

enum class StateUpdate {
  Write,   // outputs for every token; the state after the last one
  Keep,    // outputs for every token; the state is read, never written
  Commit,  // no outputs; the state after accepted[b] tokens (u32 per sequence, on the GPU)
};

// The shaders' `flags` push constant.
inline uint32_t state_update_flags(StateUpdate u) {
  constexpr uint32_t kWriteOutput = 1, kWriteState = 2, kTokensFromCount = 4;
  switch (u) {
    case StateUpdate::Keep:
      return kWriteOutput;
    case StateUpdate::Commit:
      return kWriteState | kTokensFromCount;
    case StateUpdate::Write:
      break;
  }
  return kWriteOutput | kWriteState;
}

}  // namespace q3n::ops
