// Host side of shaders/delta_rule_recurrent.comp: the gated delta rule token by token from a
// cached fp32 state (decode; spec §3.4).
#pragma once

#include "runtime/command.h"
#include "runtime/pipeline.h"

namespace q3n::ops {

struct DeltaRuleArgs {
  BufferRange q, k;   // f32 [batch, tokens, key_heads, dk]; q l2-normed and scaled, k l2-normed
  BufferRange v;      // f32 [batch, tokens, value_heads, dv]
  BufferRange g;      // f32 [batch, tokens, value_heads] log-decay
  BufferRange beta;   // f32 [batch, tokens, value_heads]
  BufferRange state;  // f32 [batch, value_heads, dk, dv], updated in place
  BufferRange out;    // f32 [batch, tokens, value_heads, dv]
  uint32_t batch = 1, tokens = 1, key_heads = 0, value_heads = 0, dk = 0, dv = 0;
};

void record_delta_rule_recurrent(PipelineLibrary& pipelines, CommandBuffer& commands, const DeltaRuleArgs& args);

}  // namespace q3n::ops
