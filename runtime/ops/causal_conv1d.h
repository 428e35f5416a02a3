// Host side of shaders/causal_conv1d.comp: the DeltaNet's causal depthwise conv + SiLU, continuing
// from and updating the per-sequence conv state (spec §3.3, §5).
#pragma once

#include <vector>

#include "runtime/command.h"
#include "runtime/ops/op_support.h"
#include "runtime/ops/state_update.h"
#include "runtime/ops/weight_type.h"
#include "runtime/pipeline.h"

namespace q3n::ops {

constexpr uint32_t kMaxConvKernel = 8;

struct CausalConv1dArgs {
  BufferRange x;       // f32 [batch, tokens, channels] pre-conv
  BufferRange weight;  // [channels, kernel] in `type`
  BufferRange state;   // f32 [slots, kernel-1, channels], updated in place
  BufferRange seqs;    // u32 [batch, 2] slot, position (shaders/common.glsl)
  BufferRange y;       // f32 [batch, tokens, channels]
  WeightType type = WeightType::BF16;
  uint32_t batch = 1, tokens = 0, channels = 0, kernel = 4;
  StateUpdate update = StateUpdate::Write;  // Commit reads `accepted`, u32 [batch]
  BufferRange accepted;
};

void record_causal_conv1d(PipelineLibrary& pipelines, CommandBuffer& commands, const CausalConv1dArgs& args);

// A verify step's commit (StateUpdate::Commit) of several layers in one dispatch: each layer has
// `args`' shape, seqs and accepted counts, and its own pre-conv rows and state (args.x, state,
// weight and y are not used). `table` receives the layers' addresses, 16 bytes per layer.
struct ConvCommitLayer {
  BufferRange x, state;
};
void record_causal_conv1d_commits(PipelineLibrary& pipelines, CommandBuffer& commands, const CausalConv1dArgs& args,
                                  const std::vector<ConvCommitLayer>& layers, const AddressTable& table);

}  // namespace q3n::ops
