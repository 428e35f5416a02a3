// Shared declarations for every q3n compute shader.
//
// Tensors arrive as buffer device addresses in push constants (GL_EXT_buffer_reference); only
// the texel-read variants of the CPU shapes' products also bind views (texel_reads.glsl). Every shader takes its workgroup size from specialisation
// constants 0..2 and must work for any subgroup size (8 on lavapipe, 32 NVIDIA, 32/64 AMD).
#extension GL_EXT_buffer_reference : require
#extension GL_EXT_buffer_reference2 : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require

layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;

layout(buffer_reference, std430, buffer_reference_align = 4) buffer F32Buf { float v[]; };
layout(buffer_reference, std430, buffer_reference_align = 4) buffer U32Buf { uint v[]; };
layout(buffer_reference, std430, buffer_reference_align = 4) buffer I32Buf { int v[]; };
// An f32 tensor read four floats at a time; its address and every index used must be 16-byte
// aligned (tensors start 256-byte aligned; rows of quantised matrices are multiples of 32 long).
layout(buffer_reference, std430, buffer_reference_align = 16) buffer F32x4Buf { vec4 v[]; };

// Dot product of 8 weights with the 8 floats of x starting at element `at` (a multiple of 4).
float dot8(const float w[8], F32x4Buf x, uint at) {
  const vec4 a = x.v[at >> 2], b = x.v[(at >> 2) + 1u];
  return dot(vec4(w[0], w[1], w[2], w[3]), a) + dot(vec4(w[4], w[5], w[6], w[7]), b);
}

// Weight storage types, chosen per pipeline by a specialisation constant.
const uint DTYPE_F32 = 0;
const uint DTYPE_F16 = 1;
const uint DTYPE_BF16 = 2;
// Quantised blocks of 32 elements of a row (layouts in runtime/ops/weight_type.h):
const uint DTYPE_Q8 = 3;  // 9 words: fp16 scale, 32 x int8
const uint DTYPE_Q4 = 4;  // 5 words: fp16 scale | fp16 min, 32 x uint4

// bf16 is the top half of an fp32: widen by shifting (no extension needed).
float bf16_bits_to_f32(uint bits) { return uintBitsToFloat(bits << 16); }

// Element i of a tensor stored as `dtype`, read through 32-bit words. For the quantised types i
// is the element's index in the unquantised row-major tensor (rows a multiple of 32 long).
float load_weight(U32Buf w, uint dtype, uint i) {
  if (dtype == DTYPE_F32) return uintBitsToFloat(w.v[i]);
  if (dtype == DTYPE_Q8) {
    const uint block = (i >> 5) * 9u, j = i & 31u;
    const int q = bitfieldExtract(int(w.v[block + 1u + (j >> 2)]), int((j & 3u) * 8u), 8);
    return unpackHalf2x16(w.v[block]).x * float(q);
  }
  if (dtype == DTYPE_Q4) {
    const uint block = (i >> 5) * 5u, j = i & 31u;
    const vec2 scale_min = unpackHalf2x16(w.v[block]);
    const uint q = bitfieldExtract(w.v[block + 1u + (j >> 3)], int((j & 7u) * 4u), 4);
    return scale_min.x * float(q) + scale_min.y;
  }
  uint word = w.v[i >> 1];
  uint bits = (i & 1u) != 0u ? (word >> 16) : (word & 0xFFFFu);
  return dtype == DTYPE_BF16 ? bf16_bits_to_f32(bits) : unpackHalf2x16(bits).x;
}

// Eight values of a quantised block from its words: `scale` (the block's first word) and the
// unit's codes, in `lo` (Q4: eight nibbles; Q8: four bytes) and `hi` (Q8: the next four).
void decode_eighth(uint dtype, uint scale, uint lo, uint hi, out float v[8]) {
  if (dtype == DTYPE_Q8) {
    const float d = unpackHalf2x16(scale).x;
    for (uint j = 0; j < 4; ++j) {
      v[j] = d * float(bitfieldExtract(int(lo), int(8u * j), 8));
      v[j + 4] = d * float(bitfieldExtract(int(hi), int(8u * j), 8));
    }
  } else {
    const vec2 scale_min = unpackHalf2x16(scale);
    for (uint j = 0; j < 8; ++j) v[j] = scale_min.x * float(bitfieldExtract(lo, int(4u * j), 4)) + scale_min.y;
  }
}

// Elements 8 part .. 8 part + 7 (part 0..3) of the quantised block starting at word `block`:
// the unit in which GEMV-shaped kernels read Q8/Q4 rows (neighbouring invocations, neighbouring
// words).
void dequantize_eighth(U32Buf w, uint dtype, uint block, uint part, out float v[8]) {
  if (dtype == DTYPE_Q8) decode_eighth(dtype, w.v[block], w.v[block + 1u + 2u * part], w.v[block + 2u + 2u * part], v);
  else decode_eighth(dtype, w.v[block], w.v[block + 1u + part], 0u, v);
}
// Word index of the block holding element `unit * 8` of row `row` of a [rows, k] quantised matrix.
uint quantized_block_word(uint dtype, uint row, uint k, uint unit) {
  const uint words = dtype == DTYPE_Q8 ? 9u : 5u;
  return (row * (k >> 5) + (unit >> 2)) * words;
}

// The codes of one unit of a quantised row as floats (elements 8 unit .. 8 unit + 3 in `lo`, the
// next four in `hi`) and the block's scale and min (Q8: min 0), so that a dot product with x is
// scale * (codes . x) + min * sum(x): the GEMVs multiply by the scale once per unit, not per
// element.
// Fetched in two steps: the unit's raw words (scale word, code words; Q4 uses one), loaded
// ahead of their use so several units' loads are in flight at once, then decoded.
uvec3 fetch_codes_unit(U32Buf w, uint dtype, uint row, uint k, uint unit) {
  const uint block = quantized_block_word(dtype, row, k, unit), part = unit & 3u;
  if (dtype == DTYPE_Q8) return uvec3(w.v[block], w.v[block + 1u + 2u * part], w.v[block + 2u + 2u * part]);
  return uvec3(w.v[block], w.v[block + 1u + part], 0u);
}

void decode_codes_unit(uint dtype, uvec3 raw, out vec4 lo, out vec4 hi, out vec2 scale_min) {
  if (dtype == DTYPE_Q8) {
    const ivec4 a = ivec4(raw.y), b = ivec4(raw.z);
    lo = vec4((a << ivec4(24, 16, 8, 0)) >> 24);  // sign-extended bytes
    hi = vec4((b << ivec4(24, 16, 8, 0)) >> 24);
    scale_min = vec2(unpackHalf2x16(raw.x).x, 0.0);
  } else {
    lo = vec4((uvec4(raw.y) >> uvec4(0, 4, 8, 12)) & 15u);
    hi = vec4((uvec4(raw.y) >> uvec4(16, 20, 24, 28)) & 15u);
    scale_min = unpackHalf2x16(raw.x);
  }
}

// Elements 8 unit .. 8 unit + 7 of row `row` of a [rows, k] weight matrix: the unit in which the
// GEMVs and the matrix tiles read weights. Needs them inside the row; quantised rows a multiple of
// 32 long; 16-bit types an even first element (row k + 8 unit), as k % 8 == 0 gives.
void load_weight_unit(U32Buf w, uint dtype, uint row, uint k, uint unit, out float v[8]) {
  if (dtype == DTYPE_Q8 || dtype == DTYPE_Q4) {
    dequantize_eighth(w, dtype, quantized_block_word(dtype, row, k, unit), unit & 3u, v);
  } else if (dtype == DTYPE_F32) {
    for (uint j = 0; j < 8; ++j) v[j] = uintBitsToFloat(w.v[row * k + unit * 8u + j]);
  } else {
    const uint first = (row * k + unit * 8u) >> 1;
    for (uint j = 0; j < 4; ++j) {
      const uint word = w.v[first + j];
      v[2 * j] = dtype == DTYPE_BF16 ? bf16_bits_to_f32(word & 0xFFFFu) : unpackHalf2x16(word).x;
      v[2 * j + 1] = dtype == DTYPE_BF16 ? bf16_bits_to_f32(word >> 16) : unpackHalf2x16(word).y;
    }
  }
}

// Sum over the workgroup for any subgroup size. `scratch` holds one float per subgroup;
// every invocation receives the total.
#define Q3N_WORKGROUP_SUM(value, scratch, result)                         \
  {                                                                       \
    float q3n_part = subgroupAdd(value);                                  \
    if (subgroupElect()) scratch[gl_SubgroupID] = q3n_part;               \
    barrier();                                                            \
    float q3n_total = 0.0;                                                \
    for (uint q3n_s = 0u; q3n_s < gl_NumSubgroups; ++q3n_s) q3n_total += scratch[q3n_s]; \
    barrier();                                                            \
    result = q3n_total;                                                   \
  }

// Per-sequence step table, written by the host before each submission so that recorded command
// buffers replay unchanged: sequence b of the step uses state slot seqs[2b] and its first token
// of the step sits at absolute position seqs[2b+1] (= tokens already in its caches).
uint seq_slot(U32Buf seqs, uint b) { return seqs.v[2u * b]; }
uint seq_position(U32Buf seqs, uint b) { return seqs.v[2u * b + 1u]; }

// A bijective 32-bit integer hash (lowbias32): counter-based random numbers for sampling and
// synthetic weights.
uint hash32(uint x) {
  x ^= x >> 16; x *= 0x7feb352du; x ^= x >> 15; x *= 0x846ca68bu; x ^= x >> 16;
  return x;
}

float sigmoid(float x) { return 1.0 / (1.0 + exp(-x)); }
float silu(float x) { return x / (1.0 + exp(-x)); }
vec4 silu4(vec4 x) { return vec4(silu(x.x), silu(x.y), silu(x.z), silu(x.w)); }  // the same per element
// torch's softplus with threshold 20 (spec §8.13).
float softplus(float x) { return x > 20.0 ? x : log(1.0 + exp(x)); }

// lavapipe (llvmpipe) ends an outermost loop after 65535 iterations of everything nested in it,
// per invocation, without an error. Loops whose trip count grows with the sequence length must
// stay under that on CPU devices; the graph bounds its prefill chunk accordingly.

// sin and cos of an fp32 angle to a few 1e-8, on every device: reduction by pi/2 with pi/2 split
// into parts of 6 significant bits, so each k * part is exact for k < 2^18 (|x| < 4e5) without
// relying on a fused fma (lavapipe does not fuse), then polynomials on [-pi/4, pi/4]. Native
// sin/cos are only specified near [-pi, pi] and differ between drivers; RoPE angles reach 2.6e5.
void sincos_accurate(float x, out float s, out float c) {
  precise const float k = round(x * 0.63661977236758134);
  precise float r = x - k * 1.5625;
  r -= k * 0.008056640625;
  r -= k * 0.00023651123046875;
  r -= k * 3.159046173095703e-06;
  r -= k * 1.5832483768463135e-08;
  r -= k * 6.07710062827671e-11;
  const float r2 = r * r;
  // Taylor series to r^11 / r^12: truncation < 2e-10 for |r| <= pi/4.
  const float sin_r = r * (1.0 + r2 * (-1.0 / 6.0 + r2 * (1.0 / 120.0 + r2 * (-1.0 / 5040.0 + r2 * (1.0 / 362880.0 + r2 * (-1.0 / 39916800.0))))));
  const float cos_r = 1.0 + r2 * (-0.5 + r2 * (1.0 / 24.0 + r2 * (-1.0 / 720.0 + r2 * (1.0 / 40320.0 + r2 * (-1.0 / 3628800.0 + r2 * (1.0 / 479001600.0))))));
  const int quadrant = int(k) & 3;
  s = quadrant == 0 ? sin_r : quadrant == 1 ? cos_r : quadrant == 2 ? -sin_r : -cos_r;
  c = quadrant == 0 ? cos_r : quadrant == 1 ? -sin_r : quadrant == 2 ? -cos_r : sin_r;
}
