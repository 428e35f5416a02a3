// Host side of shaders/spec_accept.comp: how many of each sequence's verified tokens a
// speculative step keeps (graph/model_graph.cpp, a verify step).
#pragma once

#include "runtime/command.h"
#include "runtime/pipeline.h"

namespace q3n::ops {

struct SpecAcceptArgs {
  BufferRange ids;      // i32 [batch * tokens]: each sequence's last token, then its drafts
  BufferRange sampled;  // u32 [batch * tokens]: the target's sample after each row
  BufferRange count;    // u32 [batch] out: 1 + the drafts accepted (leading drafts equal to the sample before them)
  uint32_t batch = 1, tokens = 1;
};

void record_spec_accept(PipelineLibrary& pipelines, CommandBuffer& commands, const SpecAcceptArgs& args);

}  // namespace q3n::ops
