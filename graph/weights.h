// The checkpoint on the device, in the layout the graph's operators read. Uploaded tensor by
// tensor (host memory stays at one tensor's size), with these load-time rearrangements:
//  - in_proj_qkvz rows are permuted from their per-key-head groups into [q; k; v] and [z], and
//    in_proj_ba into [b; a] (spec §2.6), so the conv reads contiguous channels;
//  - q_proj, k_proj, v_proj are concatenated into one projection; the router and the
//    shared-expert gate into one; each MoE layer's experts are packed into gate_up [E, 2I, H]
//    and down [E, H, I];
//  - norms, A_log and dt_bias become f32.
// Matrices keep their stored dtype (bf16/f16/f32) unless concatenated parts differ, then f32.
#pragma once

#include <memory>
#include <vector>

#include "loader/config.h"
#include "loader/safetensors.h"
#include "loader/progress.h"
#include "runtime/ops/weight_type.h"
#include "runtime/runtime.h"

namespace q3n::graph {

struct Matrix {
  BufferRange range;
  ops::WeightType type = ops::WeightType::F32;
  uint32_t rows = 0, cols = 0;
};

struct DeltaNetWeights {
  Matrix qkv, z, ba, out;   // ba rows: b (Hv) then a (Hv)
  BufferRange conv;         // [conv_dim, K] in conv_type
  ops::WeightType conv_type = ops::WeightType::F32;
  BufferRange a_log, dt_bias, norm;  // f32
};

struct AttentionWeights {
  Matrix qkv, out;
  BufferRange q_norm, k_norm;  // f32
};

struct MlpWeights {
  bool moe = false;
  // MoE
  Matrix router;                 // [E (+1 with a shared expert), H]: experts' logits, then the shared gate
  BufferRange experts_gate_up;   // [E, 2I, H]
  BufferRange experts_down;      // [E, H, I]
  ops::WeightType experts_type = ops::WeightType::F32;
  bool has_shared = false;
  Matrix shared_gate_up, shared_down;
  // Dense
  Matrix gate_up, down;
};

struct LayerWeights {
  LayerType type = LayerType::LinearAttention;
  BufferRange input_norm, post_norm;  // f32
  DeltaNetWeights delta;
  AttentionWeights attention;
  MlpWeights mlp;
};

class DeviceWeights {
 public:
  DeviceWeights(Runtime& runtime, const ModelConfig& config, const Checkpoint& checkpoint, ProgressBar* progress);

  Matrix embed, lm_head;
  BufferRange final_norm;
  BufferRange rope_inv_freq;  // f32 [rotary_dim / 2], HF's fp32 values (ops::rope_inv_freq)
  std::vector<LayerWeights> layers;
  uint64_t bytes() const { return bytes_; }

 private:
  std::vector<Allocation> storage_;
  uint64_t bytes_ = 0;
};

}  // namespace q3n::graph
