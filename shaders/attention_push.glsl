// The push constants of the attention kernels (attention, attention_coopmat, attention_rowwise); mirrored by
// `AttentionPush` in runtime/ops/attention.cpp (the pipeline checks the sizes agree); the
// Q3N_TEXEL variant of attention_rowwise adds `AttentionTexelPush`'s three words.
layout(push_constant) uniform Push {
  F32Buf q;        // [B*T, Hq, hd] prepared
  KvSlotTable kv;  // per slot: its K and V rows [Hkv, capacity, hd] (kv_cache.glsl)
  U32Buf seqs;     // [B, 2]
  F32Buf qkv;      // the projection row, for the gate: [B*T, Hq*2*hd + 2*Hkv*hd]
  F32Buf dst;      // [B*T, Hq*hd] (one split)
  F32Buf part_o;   // [B, splits, T, Hq, hd] (several splits)
  F32Buf part_ml;  // [B, splits, T, Hq, 2]
  uint tokens;
  uint heads;
  uint kv_heads;
  uint capacity;
  uint splits;
  float scale;
#ifdef Q3N_TEXEL
  uint k_texel, v_texel;  // the layer's K and V rows' first words in their blocks' views
  uint slot_words;        // words from one slot's rows to the next (all slots in one block each)
#endif
} p;
