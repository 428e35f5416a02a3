// Host side of shaders/chain_probe.comp: a chain of small dependent dispatches, for measuring
// what the dependency between two kernels of a decode step costs (q3n_ops_bench --sweep-chains).
#pragma once

#include "runtime/command.h"
#include "runtime/pipeline.h"

namespace q3n::ops {

// How each phase of the chain waits for the one before.
enum class ChainWait {
  Barrier,     // a pipeline barrier between the dispatches
  Counter,     // no barrier: each workgroup polls the previous phase's counter (see the shader)
  Persistent,  // every phase in one dispatch, a grid-wide counter wait between them; the
               // workgroups must all fit the device at once (else the polls give up)
  None,        // no barrier and no wait: the results race; only the dispatches' own cost is left
};

struct ChainProbeArgs {
  BufferRange input;     // f32 [input_floats], read by phase 0
  BufferRange vectors;   // f32 [phases, workgroups x 128]: phase i writes row i
  BufferRange counters;  // u32 [phases], zero before the first epoch
  BufferRange status;    // u32 [1]: 1 when a poll gave up
  uint32_t input_floats = 0;
  uint32_t phases = 0, workgroups = 0;
  uint32_t epoch = 1;  // 1, 2, ... for successive recordings against the same counters
  ChainWait wait = ChainWait::Barrier;
  uint32_t spin_limit = 1u << 22;
};

constexpr uint32_t kChainProbeWorkgroup = 128;

void record_chain_probe(PipelineLibrary& pipelines, CommandBuffer& commands, const ChainProbeArgs& args);

}  // namespace q3n::ops
