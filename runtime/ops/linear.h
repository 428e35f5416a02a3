// Host side of shaders/linear_gemv.comp and linear_gemm.comp: y = x W^T with W [n, k] read in
// place. Few tokens (<= LinearArgs::gemv_max_tokens) take the GEMV path, more take the tiled GEMM:
// linear_gemm_coopmat.comp where the pipelines use cooperative matrices and the weights are 16-bit
// or quantised, else the fp32 linear_gemm.comp. With the CPU shapes (PipelineLibrary::cpu_shapes)
// linear_gemv_rowwise.comp replaces the GEMV and the fp32 GEMM.
#pragma once

#include <optional>
#include <span>

#include "runtime/command.h"
#include "runtime/ops/weight_type.h"
#include "runtime/pipeline.h"

namespace q3n::ops {

// The most tokens the GEMV serves. Below it, each row is reduced in the same order for any row
// count (batch invariance): a graph that keeps every decode step at or below it gives a sequence
// the same arithmetic whatever else shares its steps. The GEMV reads each weight from memory once
// and from cache once per further 4 tokens, so it is instruction-bound long before 128 tokens.
constexpr uint32_t kGemvMaxTokens = 128;
// Where the matrix units are faster than the GEMV: steps of more tokens take them when the graph
// does not ask for batch invariance (measured on the H100, bench/NOTES.md session 10).
constexpr uint32_t kThroughputGemvMaxTokens = 16;

// linear_gemv.comp's workgroup for a matrix of n rows and `units` K-steps per row (K / 8 for
// rows read 8 elements at a time): output rows per workgroup (4 or 1) and invocations (32-256).
struct GemvShape {
  uint32_t rows, threads;
};
GemvShape gemv_shape(uint32_t n, uint32_t units);

struct LinearArgs {
  BufferRange x;       // f32 [tokens, k]
  BufferRange weight;  // [n, k] in `type`
  BufferRange y;       // f32 [tokens, n]
  WeightType type = WeightType::BF16;
  uint32_t tokens = 0, k = 0, n = 0;
  // More tokens take the matrix units where they run (<= kGemvMaxTokens; the fp32 tiled GEMM
  // starts past kGemvMaxTokens whatever this is).
  uint32_t gemv_max_tokens = kGemvMaxTokens;
  // The down projection of a SwiGLU MLP: x is its gate|up projection [tokens, 2k] and the product
  // takes silu(gate) * up. The GEMV computes it as it reads x; every other path first writes it
  // to `act` ([tokens, k], f32; required) with shaders/swiglu.comp.
  bool swiglu_input = false;
  BufferRange act;
  // Scratch for the partial sums of a K-split product (linear_split_bytes): a decode-sized step
  // on the matrix units splits K so that its few output tiles still fill the GPU. Without it the
  // product is not split.
  BufferRange k_split;
  // Decode and verify steps on the GPU shapes' GEMV (linear_applies_conv): each output row (a
  // DeltaNet conv channel) goes through the causal conv + SiLU over its sequence's conv state, as
  // causal_conv1d.comp computes it (the same bits), so in_proj_qkv's product is the conv's output.
  // One token per sequence: the state is shifted in place. More (a verify step's rows, b * T + t):
  // the state is left as it was (causal_conv1d's Keep) and the product itself goes to pre_conv,
  // which the commit reads.
  struct ConvOutput {
    BufferRange weight;  // [n, kernel] in `type`
    WeightType type = WeightType::BF16;
    BufferRange state;  // f32 [slots, kernel - 1, n]
    BufferRange seqs;   // u32 [tokens / tokens_per_sequence, 2]: slot, position
    uint32_t kernel = 0;
    uint32_t tokens_per_sequence = 1;
    BufferRange pre_conv;  // f32 [tokens, n], with tokens_per_sequence > 1
  };
  std::optional<ConvOutput> conv;
};
// Whether a product of `tokens` rows can take LinearArgs::conv: the GEMV serves it whatever the
// matrix units (tokens <= gemv_max_tokens and kGemvMaxTokens) and the pipelines have the GPU
// shapes (the CPU shapes' row-wise kernel does not apply it).
bool linear_applies_conv(const PipelineLibrary& pipelines, uint32_t tokens, uint32_t gemv_max_tokens);

// Matrix-unit products of at most this many tokens split K (with LinearArgs::k_split).
constexpr uint32_t kSplitMaxTokens = 128;
// K values per part of a split product of n features and k inputs (a multiple of 64), or k where
// it is not split. A function of the matrix alone, so an output's parts, and the order they are
// added in, are the same for every token count up to kSplitMaxTokens.
uint32_t linear_k_part(uint32_t n, uint32_t k);
// Bytes of LinearArgs::k_split that a product of `tokens` rows needs (0: it is not split).
uint64_t linear_split_bytes(uint32_t tokens, uint32_t n, uint32_t k);

// Output features per workgroup of linear_gemm_coopmat.comp for a product of `tokens` rows and
// n features: 128, or 64 / 32 when wider tiles would leave the GPU with few workgroups.
uint32_t matrix_tile_features(uint32_t tokens, uint32_t n);
// Row blocks of 64 tokens per workgroup of that kernel (its BM_TILES): 2 for 16-bit and f32
// weights where 128-token tiles still fill the GPU and the kernel's limits allow them (fp16
// activations, >= 256 invocations).
uint32_t matrix_tile_row_blocks(const PipelineLibrary& pipelines, WeightType type, uint32_t tokens, uint32_t n,
                                uint32_t features);

void record_linear(PipelineLibrary& pipelines, CommandBuffer& commands, const LinearArgs& args);

// One of several products of the same input (record_linears_sharing_input).
struct LinearOutput {
  BufferRange weight;  // [n, k] in `type`
  WeightType type = WeightType::BF16;
  BufferRange y;  // f32 [tokens, n]
  uint32_t n = 0;
};
constexpr uint32_t kMaxSharedInputProducts = 3;
// Whether the CPU shapes can compute these products of x [tokens, k] in one dispatch
// (linear_gemv_rowwise_multi.comp): CPU shapes with texel reads, at most kMaxSharedInputProducts
// products, every range readable through its block's views, k a multiple of 8, and a grid
// within the device's limit.
bool products_share_dispatch(const PipelineLibrary& pipelines, const BufferRange& x, uint32_t k,
                             std::span<const LinearOutput> outputs);
// The products in one dispatch; each output is bitwise what record_linear computes for it on the
// CPU shapes. Requires products_share_dispatch.
void record_linears_sharing_input(PipelineLibrary& pipelines, CommandBuffer& commands, const BufferRange& x,
                                  uint32_t tokens, uint32_t k, std::span<const LinearOutput> outputs);

}  // namespace q3n::ops
