// Host side of shaders/copy.comp: a plain device copy, used to measure memory bandwidth.
#pragma once

#include "runtime/command.h"
#include "runtime/pipeline.h"

namespace q3n::ops {

// Copies `bytes` (a multiple of 16; both ranges 16-byte aligned) from src to dst.
void record_copy(PipelineLibrary& pipelines, CommandBuffer& commands, const BufferRange& src, const BufferRange& dst,
                 uint64_t bytes);

}  // namespace q3n::ops
