// The checkpoint on the device, in the layout the graph's operators read. Uploaded tensor by
// tensor (host memory stays at one tensor's size), with these load-time rearrangements:
//  - in_proj_qkvz rows are permuted from their per-key-head groups into [q; k; v] and [z], and
//    in_proj_ba into [b; a] (spec §2.6), so the conv reads contiguous channels;
//  - q_proj, k_proj, v_proj are concatenated into one projection; the router and the
//    shared-expert gate into one; each MoE layer's experts are packed into gate_up [E, 2I, H]
//    and down [E, H, I];
//  - norms, A_log and dt_bias become f32.
// Matrices keep their stored dtype (bf16/f16/f32) unless concatenated parts differ, then f32,
// or, with a WeightFormat, are converted/quantised row by row as they stream (see weight_type.h
// for the Q8/Q4 blocks). The router, the DeltaNet gate projection in_proj_ba, the conv weights,
// the embeddings, norms, A_log and dt_bias always keep their precision; with Q4 the lm_head is
// stored as Q8 (the logits are the most quantisation-sensitive matrix).
//
// A synthetic model has the config's shapes and deterministic random values generated on the
// GPU (shaders/fill_random.comp): full-size benchmarks without a checkpoint.
#pragma once

#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "graph/layer_split.h"
#include "loader/config.h"
#include "loader/safetensors.h"
#include "runtime/ops/weight_type.h"
#include "runtime/runtime.h"

namespace q3n::graph {

enum class WeightFormat { AsStored, BF16, Q8, Q4 };
// "bf16", "q8", "q4" (or "stored"); throws naming the accepted values.
WeightFormat parse_weight_format(const std::string& name);
const char* weight_format_name(WeightFormat format);

struct WeightOptions {
  WeightFormat format = WeightFormat::AsStored;
  std::function<void(uint64_t bytes)> progress;  // told of checkpoint bytes done (planned bytes, synthetic)
  std::filesystem::path cache_dir;               // checkpoints only: read/write converted weights here (weight_cache.h)
  // A pipeline split's share: only these layers (and the embeddings on the first device, the
  // final norm and lm_head on the last) are put on the device. Synthetic values do not depend on
  // the span: a split model has the unsplit model's weights.
  LayerSpan layers;
  // Also the MTP head (mtp.*, spec §2.7) for speculative decoding; a checkpoint without one is an
  // error naming --mtp.
  bool mtp = false;
};

// Device bytes of a model's parts (memory-fit checks and the pipeline split).
struct WeightParts {
  uint64_t embed = 0;  // embed_tokens
  uint64_t head = 0;   // final norm and lm_head (0 for a tied lm_head: it is the embedding table)
  uint64_t rope = 0;   // RoPE inverse frequencies (every device)
  uint64_t mtp = 0;    // the MTP head (WeightOptions::mtp), on the last device
  bool tied = false;   // lm_head is the embedding table
  std::vector<uint64_t> layers;
  uint64_t total() const;
  uint64_t on_device(const ModelConfig& c, const LayerSpan& span) const;  // what one device of a split holds
};

struct Matrix {
  BufferRange range;
  ops::WeightType type = ops::WeightType::F32;
  uint32_t rows = 0, cols = 0;
};

struct DeltaNetWeights {
  Matrix qkv, z, ba, out;  // ba rows: b (Hv) then a (Hv)
  BufferRange conv;        // [conv_dim, K] in conv_type
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
  Matrix router;                // [E (+1 with a shared expert), H]: experts' logits, then the shared gate
  BufferRange experts_gate_up;  // [E, 2I, H]
  BufferRange experts_down;     // [E, H, I]
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

// The MTP head: one more full-attention decoder layer fed by fc([norm(embed(x_{t+1})) |
// norm(h_t)]); it shares the model's embedding and lm_head (spec §4.2).
struct MtpWeights {
  Matrix fc;                                            // [H, 2H]
  BufferRange norm_embedding, norm_hidden, final_norm;  // f32 [H]
  LayerWeights layer;
};

class DeviceWeights {
 public:
  // From a checkpoint, streamed tensor by tensor.
  DeviceWeights(Runtime& runtime, const ModelConfig& config, const Checkpoint& checkpoint,
                const WeightOptions& options);
  // Synthetic: random weights of the config's shapes (stored dtype: bf16), generated on the GPU.
  DeviceWeights(Runtime& runtime, const ModelConfig& config, uint32_t seed, const WeightOptions& options);
  DeviceWeights(DeviceWeights&&) = default;

  // Device bytes the weights will take, computed without touching the GPU (memory-fit checks);
  // `checkpoint` null = synthetic.
  static uint64_t planned_bytes(const ModelConfig& config, const Checkpoint* checkpoint, WeightFormat format,
                                bool mtp = false);
  static WeightParts planned_parts(const ModelConfig& config, const Checkpoint* checkpoint, WeightFormat format,
                                   bool mtp = false);

  // Outside the span of WeightOptions::layers, tensors have their shapes but no memory.
  Matrix embed, lm_head;
  BufferRange final_norm;
  BufferRange rope_inv_freq;  // f32 [rotary_dim / 2], HF's fp32 values (ops::rope_inv_freq)
  std::vector<LayerWeights> layers;
  std::optional<MtpWeights> mtp;  // WeightOptions::mtp
  uint64_t bytes() const { return bytes_; }
  // With a cache: whether the weights came from it or were written to it, and where.
  const std::string& cache_note() const { return cache_note_; }

 private:
  DeviceWeights(Runtime* runtime, const ModelConfig& config, const Checkpoint* checkpoint, uint32_t seed,
                const WeightOptions& options);
  std::vector<Allocation> storage_;
  uint64_t bytes_ = 0;
  WeightParts parts_;  // filled while planning
  std::string cache_note_;
};

}  // namespace q3n::graph
