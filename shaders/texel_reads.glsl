// Weights and activations read through texel-buffer views of their memory blocks
// (runtime/memory.h TexelViews), for the Q3N_TEXEL variants of the CPU shapes' products.
//
// Why: lavapipe (Mesa 22) compiles a per-lane load from a buffer address into a loop over the
// SIMD lanes, one scalar load and bounds check at a time, but a texel fetch into one gather; on
// its products the fetches run ~3x faster (bench/NOTES.md, session 18). The values and the order
// of every operation are those of load_weight_unit and dot8 (common.glsl), so both variants give
// the same bits. Each tensor's first word in its block's view arrives in the push constants.
uint texel_word(usamplerBuffer words, uint i) { return texelFetch(words, int(i)).x; }

// Elements `element` .. element + 7 (element a multiple of 8) of an f32, f16 or bf16 array whose
// first word is word `first` of `quads` (a multiple of 4): one 16-byte texel, two for f32.
void texel_unit8_of(usamplerBuffer quads, uint first, uint dtype, uint element, out float v[8]) {
  if (dtype == DTYPE_F32) {
    const int quad = int((first + element) >> 2);
    const uvec4 a = texelFetch(quads, quad), b = texelFetch(quads, quad + 1);
    v = float[8](uintBitsToFloat(a.x), uintBitsToFloat(a.y), uintBitsToFloat(a.z), uintBitsToFloat(a.w),
                 uintBitsToFloat(b.x), uintBitsToFloat(b.y), uintBitsToFloat(b.z), uintBitsToFloat(b.w));
  } else {
    const uvec4 words4 = texelFetch(quads, int((first + (element >> 1)) >> 2));
    for (uint j = 0; j < 4; ++j) {
      const uint word = words4[j];
      v[2 * j] = dtype == DTYPE_BF16 ? bf16_bits_to_f32(word & 0xFFFFu) : unpackHalf2x16(word).x;
      v[2 * j + 1] = dtype == DTYPE_BF16 ? bf16_bits_to_f32(word >> 16) : unpackHalf2x16(word).y;
    }
  }
}

// load_weight_unit of the matrix whose first word is word `first` of `words` and `quads` (views of
// the same block; first a multiple of 4).
void texel_weight_unit_of(usamplerBuffer words, usamplerBuffer quads, uint first, uint dtype, uint row, uint k,
                          uint unit, out float v[8]) {
  if (dtype == DTYPE_Q8 || dtype == DTYPE_Q4) {
    const uint block = first + quantized_block_word(dtype, row, k, unit), part = unit & 3u;
    if (dtype == DTYPE_Q8)
      decode_eighth(dtype, texel_word(words, block), texel_word(words, block + 1u + 2u * part),
                    texel_word(words, block + 2u + 2u * part), v);
    else
      decode_eighth(dtype, texel_word(words, block), texel_word(words, block + 1u + part), 0u, v);
  } else {
    texel_unit8_of(quads, first, dtype, row * k + unit * 8u, v);
  }
}

// dot8 with x's elements at .. at + 7 of the float tensor whose first float is float `first` of
// `floats` (both multiples of 4).
float texel_dot8_of(samplerBuffer floats, const float w[8], uint first, uint at) {
  const int quad = int((first + at) >> 2);
  const vec4 a = texelFetch(floats, quad), b = texelFetch(floats, quad + 1);
  return dot(vec4(w[0], w[1], w[2], w[3]), a) + dot(vec4(w[4], w[5], w[6], w[7]), b);
}

// The usual bindings: one weight matrix's block and one input's block. A kernel with other
// bindings defines Q3N_TEXEL_OWN_BINDINGS and calls the functions above.
#ifndef Q3N_TEXEL_OWN_BINDINGS
layout(set = 0, binding = 0) uniform usamplerBuffer weight_words;  // R32_UINT
layout(set = 0, binding = 1) uniform usamplerBuffer weight_quads;  // R32G32B32A32_UINT
layout(set = 0, binding = 2) uniform samplerBuffer x_quads;        // R32G32B32A32_SFLOAT

void texel_weight_unit(uint first, uint dtype, uint row, uint k, uint unit, out float v[8]) {
  texel_weight_unit_of(weight_words, weight_quads, first, dtype, row, k, unit, v);
}
float texel_dot8(const float w[8], uint first, uint at) { return texel_dot8_of(x_quads, w, first, at); }
#endif
