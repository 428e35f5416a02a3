// A norm tail: the product that writes a residual branch (out_proj, o_proj, the MoE's down
// product) adds it into the residual stream and normalises the sum in its last workgroup, instead
// of a norm dispatch after a barrier (ops::NormTail). Every workgroup counts itself done after its
// writes; the one that brings the count to `workgroups` sees every other workgroup's output,
// normalises the rows (rms_norm_row.glsl: the norm kernel's bits) and sets the counter back to
// zero for the next replay. No workgroup waits for another, so the tail needs no promise that the
// grid runs at once.
//
// The includer writes its outputs through NormF32 (coherent) references and calls
// norm_tail_is_last in uniform control flow after its last write.
#include "rms_norm_row.glsl"

shared bool norm_tail_last;

bool norm_tail_is_last(U32Buf counter, uint index, uint workgroups) {
  memoryBarrierBuffer();  // this workgroup's writes before its count
  barrier();
  if (gl_LocalInvocationIndex == 0u) norm_tail_last = atomicAdd(counter.v[index], 1u) == workgroups - 1u;
  barrier();
  if (!norm_tail_last) return false;
  memoryBarrierBuffer();  // every count seen: the other workgroups' writes are visible
  if (gl_LocalInvocationIndex == 0u) atomicExchange(counter.v[index], 0u);
  return true;
}
