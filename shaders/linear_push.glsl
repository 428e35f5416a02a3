// The push constants of every linear kernel (linear_gemv, linear_gemm, linear_gemm_coopmat);
// mirrored by `Push` in runtime/ops/linear.cpp (the pipeline checks the sizes agree).
layout(push_constant) uniform Push {
  F32Buf x;       // [tokens, k]
  U32Buf weight;  // [n, k]
  F32Buf y;       // [tokens, n]
  uint k;
  uint n;
  uint tokens;
  uint weight_texel;  // first word of weight / x in its block's texel views (Q3N_TEXEL variants)
  uint x_texel;
} p;
