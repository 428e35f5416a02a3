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
  // linear_gemv.comp's epilogues: CONV_KERNEL, the DeltaNet conv applied to the output as it is
  // written, or NORM_TAIL, the residual add and norm after it (norm_tail.glsl). A product takes
  // one or the other, so the norm tail's operands ride in the conv's slots (the block stays
  // within the 128 bytes every device has). Only the GEMV declares these: the matrix kernels keep
  // the smaller block (with them, prefill ran 9-12% slower on the H200, bench/NOTES.md session 25).
  U32Buf conv_weight;  // [n, kernel]                    | NORM_TAIL: the norm's f32 weight [n]
  F32Buf conv_state;   // [slots, kernel - 1, n] in each sequence's slot (written when CONV_TOKENS = 1)
                       //                                | NORM_TAIL: the residual stream [tokens, n]
  U32Buf seqs;         // [tokens / CONV_TOKENS, 2] slot, position of each sequence
                       //                                | NORM_TAIL: the workgroup counter (u32)
  F32Buf pre_conv;     // CONV_TOKENS > 1: [tokens, n] the product itself (the verify commit reads it)
                       //                                | NORM_TAIL: the normalised rows [tokens, n]
  float norm_eps;      // NORM_TAIL
#endif
} p;
