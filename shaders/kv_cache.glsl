// The KV cache of one attention layer, as the attention kernels see it (runtime/ops/attention.h).
//
// Each slot's K rows and V rows, [kv_heads, capacity, head_dim] each, start at the addresses the
// layer's slot table gives: entry 2 s is slot s's K, 2 s + 1 its V. A slot's rows are contiguous,
// but slots may lie in different allocations, so a cache is not bounded by one allocation's size
// and indices within a slot stay 32-bit. Elements are stored as KV_DTYPE, a specialisation
// constant the including shader declares: DTYPE_F32, DTYPE_F16 (round to nearest, clamped to
// fp16's finite range) or DTYPE_BF16 (round to nearest even), read back as fp32.
#extension GL_EXT_buffer_reference_uvec2 : require

layout(buffer_reference, std430, buffer_reference_align = 8) buffer KvSlotTable { uvec2 v[]; };
// Cache rows read 16 bytes at a time (slot rows start 256-byte aligned).
layout(buffer_reference, std430, buffer_reference_align = 16) buffer U32x4Buf { uvec4 v[]; };

U32Buf kv_keys(KvSlotTable table, uint slot) { return U32Buf(table.v[2u * slot]); }
U32Buf kv_values(KvSlotTable table, uint slot) { return U32Buf(table.v[2u * slot + 1u]); }

// Element i of a slot's K or V rows.
float kv_load(U32Buf rows, uint i) {
  if (KV_DTYPE == DTYPE_F32) return uintBitsToFloat(rows.v[i]);
  const uint word = rows.v[i >> 1];
  const uint bits = (i & 1u) != 0u ? word >> 16 : word & 0xFFFFu;
  return KV_DTYPE == DTYPE_BF16 ? bf16_bits_to_f32(bits) : unpackHalf2x16(bits).x;
}

// The two elements of one word of a 16-bit cache (low half first), as fp32.
vec2 kv_unpack_word(uint word) {
  return KV_DTYPE == DTYPE_BF16 ? vec2(bf16_bits_to_f32(word & 0xFFFFu), bf16_bits_to_f32(word >> 16))
                                : unpackHalf2x16(word);
}

// Elements i and i + 1 (i even) of a slot's K or V rows: one word of a 16-bit cache.
vec2 kv_load_pair(U32Buf rows, uint i) {
  if (KV_DTYPE == DTYPE_F32) return vec2(uintBitsToFloat(rows.v[i]), uintBitsToFloat(rows.v[i + 1u]));
  return kv_unpack_word(rows.v[i >> 1]);
}

// fp32 -> bf16 bits, rounded to nearest even (NaN stays NaN).
uint f32_to_bf16_bits(float x) {
  const uint bits = floatBitsToUint(x);
  if (isnan(x)) return (bits >> 16) | 0x40u;
  return (bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16;
}

// Stores elements i and i + 1 (i even: 16-bit types share one word per pair, so a pair is
// written by one invocation).
void kv_store_pair(U32Buf rows, uint i, vec2 v) {
  if (KV_DTYPE == DTYPE_F32) {
    rows.v[i] = floatBitsToUint(v.x);
    rows.v[i + 1u] = floatBitsToUint(v.y);
  } else if (KV_DTYPE == DTYPE_F16) {
    rows.v[i >> 1] = packHalf2x16(clamp(v, -65504.0, 65504.0));
  } else {
    rows.v[i >> 1] = f32_to_bf16_bits(v.x) | (f32_to_bf16_bits(v.y) << 16);
  }
}
