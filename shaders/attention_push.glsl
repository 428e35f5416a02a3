// The push constants of the attention kernels (attention, attention_coopmat, attention_rowwise); mirrored by
// `AttentionPush` in runtime/ops/attention.cpp (the pipeline checks the sizes agree).
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
} p;
