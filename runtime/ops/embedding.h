// Host side of shaders/embedding.comp: gather rows of an embedding table into fp32 activations.
#pragma once

#include "runtime/command.h"
#include "runtime/ops/weight_type.h"
#include "runtime/pipeline.h"

namespace q3n::ops {

struct EmbeddingArgs {
  BufferRange table;  // [rows, dim] in `type`
  BufferRange ids;    // int32 [tokens], each < rows (checked by the caller on the host)
  BufferRange out;    // f32 [tokens, dim]
  WeightType type = WeightType::BF16;
  uint32_t rows = 0, dim = 0, tokens = 0;
};

void record_embedding(PipelineLibrary& pipelines, CommandBuffer& commands, const EmbeddingArgs& args);

}  // namespace q3n::ops
