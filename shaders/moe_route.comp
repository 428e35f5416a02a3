#version 460
// MoE routing for one token per workgroup (spec §3.8, §8.12): softmax over ALL experts in fp32,
// then the top-k probabilities (ties to the lower expert id), then optionally renormalised to
// sum to one (norm_topk_prob).
#include "common.glsl"

layout(constant_id = 3) const uint MAX_EXPERTS = 512;

layout(push_constant) uniform Push {
  F32Buf logits;   // [rows, logit_stride]; experts in columns [0, experts)
  U32Buf ids;      // [rows, top_k]
  F32Buf weights;  // [rows, top_k]
  uint experts;
  uint top_k;
  uint logit_stride;
  uint normalise;
} p;

shared float prob[MAX_EXPERTS];
shared float best_value[gl_WorkGroupSize.x];
shared uint best_index[gl_WorkGroupSize.x];
shared float partial[gl_WorkGroupSize.x];

void main() {
  const uint row = gl_WorkGroupID.x, tid = gl_LocalInvocationID.x;
  float local_max = uintBitsToFloat(0xFF800000u);
  for (uint e = tid; e < p.experts; e += gl_WorkGroupSize.x) {
    prob[e] = p.logits.v[row * p.logit_stride + e];
    local_max = max(local_max, prob[e]);
  }
  best_value[tid] = local_max;
  barrier();
  float row_max = best_value[0];
  for (uint i = 1; i < gl_WorkGroupSize.x; ++i) row_max = max(row_max, best_value[i]);
  float local_sum = 0.0;
  for (uint e = tid; e < p.experts; e += gl_WorkGroupSize.x) {
    prob[e] = exp(prob[e] - row_max);
    local_sum += prob[e];
  }
  float total;
  Q3N_WORKGROUP_SUM(local_sum, partial, total);  // its barriers also publish prob[]

  float chosen_sum = 0.0;  // meaningful in invocation 0
  for (uint j = 0; j < p.top_k; ++j) {
    float v = -1.0;
    uint index = 0xFFFFFFFFu;
    for (uint e = tid; e < p.experts; e += gl_WorkGroupSize.x)
      if (prob[e] > v) {  // strict: the lowest id wins a tie within an invocation
        v = prob[e];
        index = e;
      }
    best_value[tid] = v;
    best_index[tid] = index;
    barrier();
    if (tid == 0u) {
      for (uint i = 1; i < gl_WorkGroupSize.x; ++i)
        if (best_value[i] > v || (best_value[i] == v && best_index[i] < index)) {
          v = best_value[i];
          index = best_index[i];
        }
      p.ids.v[row * p.top_k + j] = index;
      p.weights.v[row * p.top_k + j] = v / total;
      chosen_sum += v / total;
      prob[index] = -1.0;  // taken
    }
    barrier();
  }
  if (tid == 0u && p.normalise != 0u)
    for (uint j = 0; j < p.top_k; ++j) p.weights.v[row * p.top_k + j] /= chosen_sum;
}
