#version 460
// Phases of a chain of dependent steps, for measuring what a dependency between two small
// kernels costs (q3n_ops_bench --sweep-chains; bench/NOTES.md session 30). Not a model operator:
// it stands for a decode step's phases, which each read the whole of a small vector the phase
// before wrote.
//
// In phase i every invocation g reads NEEDS inputs spread over phase i-1's vector (phase 0: the
// input) and writes
//   row i [g] = 0.5 * mean(in[(g * 7 + j * 131) mod n_in], j < NEEDS) + 1.
// A dispatch runs phases [first_phase, first_phase + phases). How a phase waits for the one
// before is the host's choice:
//   - a pipeline barrier between one-phase dispatches (WAIT = 0, SIGNAL = 0);
//   - counters (WAIT = SIGNAL = 1): after its writes each workgroup adds one to its phase's
//     counter; before phase i the first invocation of each workgroup polls counter i-1 until
//     every workgroup has signalled this repetition (target = workgroups x epoch), and the inputs
//     are read through coherent loads. With one phase per dispatch this chains dispatches without
//     barriers; with every phase in one dispatch it is a persistent kernel with a grid-wide wait
//     between its phases (the grid must fit the GPU at once).
// A poll gives up after `spin_limit` reads and raises error (word 0 of `status`), so a device
// that does not run every workgroup at once cannot hang.
#include "common.glsl"

layout(constant_id = 3) const uint WAIT = 0;
layout(constant_id = 4) const uint SIGNAL = 0;
const uint NEEDS = 16u;

layout(buffer_reference, std430, buffer_reference_align = 4) coherent buffer CoherentF32 { float v[]; };
layout(buffer_reference, std430, buffer_reference_align = 4) coherent volatile buffer PolledU32 { uint v[]; };

layout(push_constant) uniform Push {
  CoherentF32 seed;     // n_in floats, read by phase 0
  CoherentF32 rows;     // [phases of the chain, width]: phase i writes row i
  PolledU32 counters;   // one per phase, monotonic over the repetitions
  U32Buf status;        // word 0: 1 when a poll gave up
  uint n_in;
  uint width;           // invocations of the grid
  uint first_phase;
  uint phases;          // run by this dispatch
  uint wait_target;     // workgroups x this repetition's epoch
  uint spin_limit;
} p;

shared bool gave_up;

void main() {
  const uint g = gl_GlobalInvocationID.x;
  for (uint i = p.first_phase; i < p.first_phase + p.phases; ++i) {
    if (WAIT != 0u && i > 0u) {
      if (gl_LocalInvocationIndex == 0u) {
        uint spins = 0u;
        gave_up = false;
        while (p.counters.v[i - 1u] < p.wait_target) {
          if (++spins == p.spin_limit) {
            atomicOr(p.status.v[0], 1u);
            gave_up = true;
            break;
          }
        }
      }
      memoryBarrierBuffer();
      barrier();
      if (gave_up) return;  // the rest of the chain would only poll again
    }
    float sum = 0.0;
    if (i == 0u) {
      for (uint j = 0u; j < NEEDS; ++j) sum += p.seed.v[(g * 7u + j * 131u) % p.n_in];
    } else {
      const uint from = (i - 1u) * p.width;
      for (uint j = 0u; j < NEEDS; ++j) sum += p.rows.v[from + (g * 7u + j * 131u) % p.width];
    }
    p.rows.v[i * p.width + g] = 0.5 * (sum / float(NEEDS)) + 1.0;
    if (SIGNAL != 0u) {
      memoryBarrierBuffer();
      barrier();
      if (gl_LocalInvocationIndex == 0u) atomicAdd(p.counters.v[i], 1u);
    }
  }
}
