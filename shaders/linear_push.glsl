// The push constants of every linear kernel (linear_gemv, linear_gemm, linear_gemm_coopmat);
// mirrored by `Push` in runtime/ops/linear.cpp, and with LINEAR_PUSH_CONV (linear_gemv) by
// `GemvPush` (the pipeline checks the sizes agree).
layout(push_constant) uniform Push {
  F32Buf x;       // [tokens, k]
  U32Buf weight;  // [n, k]
  F32Buf y;       // [tokens, n]
  uint k;
  uint n;
  uint tokens;
  uint weight_texel;  // first word of weight / x in its block's texel views (Q3N_TEXEL variants)
  uint x_texel;
#ifdef LINEAR_PUSH_CONV
  // linear_gemv.comp's CONV_KERNEL: the DeltaNet conv applied to the output as it is written.
  // Only the GEMV declares these: the matrix kernels keep the smaller block (with them, prefill
  // ran 9-12% slower on the H200, bench/NOTES.md session 25).
  U32Buf conv_weight;  // [n, kernel]
  F32Buf conv_state;   // [slots, kernel - 1, n] in each sequence's slot (written when CONV_TOKENS = 1)
  U32Buf seqs;         // [tokens / CONV_TOKENS, 2] slot, position of each sequence
  F32Buf pre_conv;     // CONV_TOKENS > 1: [tokens, n] the product itself (the verify commit reads it)
#endif
} p;
