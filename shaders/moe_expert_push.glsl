// The push constants of every grouped expert kernel (moe_expert, moe_expert_coopmat,
// moe_expert_gemv); mirrored by `ExpertPush` in runtime/ops/moe.cpp (the pipeline checks the
// sizes agree).
layout(push_constant) uniform Push {
  F32Buf x;        // SWIGLU: [tokens, K]; else [assignments, K]
  U32Buf weight;   // [experts, (SWIGLU ? 2N : N), K]
  U32Buf offsets;  // [experts + 1]; moe_expert_gemv with DIRECT: the routing's ids [assignments]
  U32Buf sorted;   // [assignments]
  U32Buf live;     // [1 + experts + 6]: count, live experts, grids (moe_group.comp)
  F32Buf y;        // [assignments, N]
  uint k;
  uint n;
  uint top_k;
  uint weight_texel;  // first word of weight / x in its block's texel views (Q3N_TEXEL variants)
  uint x_texel;
#ifdef Q3N_COMBINE  // moe_expert_gemv_combine: moe_combine.comp's operands (`ExpertCombinePush`)
  F32Buf weights;       // [tokens, top_k]
  F32Buf shared_out;    // [tokens, N] (when has_shared)
  F32Buf shared_logit;  // element t * logit_stride (when has_shared)
  F32Buf dst;           // [tokens, N]
  uint logit_stride;
  uint has_shared;
#endif
} p;
