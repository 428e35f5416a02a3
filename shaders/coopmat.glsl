// Shared pieces of the cooperative-matrix kernels: 16x16x16 products of fp16 matrices accumulated
// in fp32, one subgroup per matrix. Each kernel is built twice: with Q3N_KHR for
// GL_KHR_cooperative_matrix (AMD, Intel, NVIDIA, Mesa drivers: VK_KHR_cooperative_matrix) and
// without for GL_NV_cooperative_matrix (NVIDIA; the only matrix extension Debian 12's own glslc
// compiles). The host builds a variant only where glslc supports its extension and runs it only on
// devices that list the 16x16x16 f16 -> f32 subgroup shape for it (runtime/device.cpp).
//
// Precision: weights enter as fp16 — exact for bf16/f16 weights in fp16's normal range, within
// 2^-11 relative for dequantised Q8/Q4 values (far below their quantisation step). Activations
// enter either as one fp16 value (SPLIT = 0: rounded to 11 significant bits, what every peer
// engine does) or as two fp16 halves (SPLIT = 1: hi = x cut to fp16 and lo = fp16((x - hi) *
// 2^11), multiplied separately and summed in fp32, so they keep ~21 significant bits at twice the
// matrix work). The 2^11 keeps lo in fp16's normal range (devices may flush fp16 denormals). |x|
// above 65504 does not fit fp16: inputs of that size need the portable kernels (--no-coopmat).
// Products always accumulate in fp32.
#extension GL_KHR_memory_scope_semantics : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_EXT_control_flow_attributes : require

// A_MATRIX (M x K, loaded row-major), B_MATRIX (K x N, loaded column-major by LOAD_B: column n is
// row n of a weight tile; row-major by LOAD_B_ROWS), F32_MATRIX (the M x N accumulator); the
// loads and STORE_C take (matrix, shared array, first element, stride) in units of the array's
// elements.
#ifdef Q3N_KHR
#extension GL_KHR_cooperative_matrix : require
#define A_MATRIX coopmat<float16_t, gl_ScopeSubgroup, 16, 16, gl_MatrixUseA>
#define B_MATRIX coopmat<float16_t, gl_ScopeSubgroup, 16, 16, gl_MatrixUseB>
#define F32_MATRIX coopmat<float, gl_ScopeSubgroup, 16, 16, gl_MatrixUseAccumulator>
#define LOAD_A(m, buf, at, stride) coopMatLoad(m, buf, at, stride, gl_CooperativeMatrixLayoutRowMajor)
#define LOAD_B(m, buf, at, stride) coopMatLoad(m, buf, at, stride, gl_CooperativeMatrixLayoutColumnMajor)
#define LOAD_B_ROWS(m, buf, at, stride) coopMatLoad(m, buf, at, stride, gl_CooperativeMatrixLayoutRowMajor)
#define STORE_C(m, buf, at, stride) coopMatStore(m, buf, at, stride, gl_CooperativeMatrixLayoutRowMajor)
#define MUL_ADD(a, b, c) coopMatMulAdd(a, b, c)
#else
#extension GL_NV_cooperative_matrix : require
#define A_MATRIX fcoopmatNV<16, gl_ScopeSubgroup, 16, 16>
#define B_MATRIX fcoopmatNV<16, gl_ScopeSubgroup, 16, 16>
#define F32_MATRIX fcoopmatNV<32, gl_ScopeSubgroup, 16, 16>
#define LOAD_A(m, buf, at, stride) coopMatLoadNV(m, buf, at, stride, false)
#define LOAD_B(m, buf, at, stride) coopMatLoadNV(m, buf, at, stride, true)
#define LOAD_B_ROWS(m, buf, at, stride) coopMatLoadNV(m, buf, at, stride, false)
#define STORE_C(m, buf, at, stride) coopMatStoreNV(m, buf, at, stride, false)
#define MUL_ADD(a, b, c) coopMatMulAddNV(a, b, c)
#endif

const uint CM = 16;                  // the matrix shape, 16 x 16 x 16
const float LO_SCALE = 2048.0;       // 2^11
const float LO_UNSCALE = 1.0 / 2048.0;

// Shared-memory tiles: K slices of BK values per row, held as uvec4 words of 8 fp16 (a unit: one
// 16-byte store; the matrix loads reinterpret them), rows STRIDE words apart (80 bytes: 16-byte
// aligned for the matrix loads, banks staggered).
const uint BK = 32;
const uint STRIDE = (BK + 8u) / 8u;

// Unit u of a tile (BK / 8 = 4 units per row): eight neighbouring invocations take the same 8
// columns of eight neighbouring rows, so their 16-byte stores fall in distinct banks.
uint unit_row(uint u) { return (u & 7u) + ((u >> 5) << 3); }
uint unit_column(uint u) { return ((u >> 3) & 3u) * 8u; }
uint unit_word(uint u) { return unit_row(u) * STRIDE + unit_column(u) / 8u; }  // its uvec4 in the tile

// Splits x into the (hi, lo * 2^11) fp16 pair described above. hi is x with its fp32 mantissa
// cut to fp16's 10 bits — exactly representable, so nothing depends on how a driver rounds or
// folds fp32 -> fp16 -> fp32 conversions — and x - hi is exact in fp32. Below fp16's normal
// range (2^-14) hi is 0 and lo carries x.
f16vec2 split_f16(float x) {
  const float hi = abs(x) < 6.103515625e-05 ? 0.0 : uintBitsToFloat(floatBitsToUint(x) & 0xFFFFE000u);
  return f16vec2(float16_t(hi), float16_t((x - hi) * LO_SCALE));
}

// Eight values as fp16 in one uvec4 (the unit in which tiles are stored).
uvec4 pack_f16x8(const float v[8]) {
  return uvec4(packFloat2x16(f16vec2(v[0], v[1])), packFloat2x16(f16vec2(v[2], v[3])),
               packFloat2x16(f16vec2(v[4], v[5])), packFloat2x16(f16vec2(v[6], v[7])));
}

// Eight activations rounded to fp16 (the SPLIT = 0 path), clamped to fp16's finite range.
uvec4 round_store8(const float v[8]) {
  float c[8];
  for (uint j = 0; j < 8; ++j) c[j] = clamp(v[j], -65504.0, 65504.0);
  return pack_f16x8(c);
}

// Splits eight activations and stores their hi and lo halves.
void split_store8(const float v[8], out uvec4 hi, out uvec4 lo) {
  f16vec2 s[8];
  for (uint j = 0; j < 8; ++j) s[j] = split_f16(v[j]);
  hi = uvec4(packFloat2x16(f16vec2(s[0].x, s[1].x)), packFloat2x16(f16vec2(s[2].x, s[3].x)),
             packFloat2x16(f16vec2(s[4].x, s[5].x)), packFloat2x16(f16vec2(s[6].x, s[7].x)));
  lo = uvec4(packFloat2x16(f16vec2(s[0].y, s[1].y)), packFloat2x16(f16vec2(s[2].y, s[3].y)),
             packFloat2x16(f16vec2(s[4].y, s[5].y)), packFloat2x16(f16vec2(s[6].y, s[7].y)));
}

// acc_hi += acc_lo / 2^11, element by element. (Matrix + matrix crashes Debian 12's glslc
// optimiser; both matrices have the same type, so their elements correspond.)
void merge_lo(inout F32_MATRIX acc_hi, F32_MATRIX acc_lo) {
  for (int i = 0; i < acc_hi.length(); ++i) acc_hi[i] += acc_lo[i] * LO_UNSCALE;
}

// Elements col .. col + 7 of row `row` of a [rows, k] weight matrix (col a multiple of 8),
// zero past k. Quantised types need k a multiple of 32 (the host checks).
void load_weight8(U32Buf w, uint dtype, uint row, uint k, uint col, out float v[8]) {
  const uint first = row * k + col;
  const bool quantized = dtype == DTYPE_Q8 || dtype == DTYPE_Q4;
  if (quantized || (dtype != DTYPE_F32 && col + 8u <= k && (first & 1u) == 0u)) {
    load_weight_unit(w, dtype, row, k, col >> 3, v);  // whole blocks, or four aligned words
    return;
  }
  for (uint j = 0; j < 8; ++j) v[j] = col + j < k ? load_weight(w, dtype, first + j) : 0.0;
}

// Elements col .. col + 7 of row `row` of an f32 [rows, k] activation matrix, zero past k.
void load_activation8(F32Buf x, uint row, uint k, uint col, out float v[8]) {
  const uint first = row * k + col;
  if ((k & 3u) == 0u && col + 8u <= k) {
    const vec4 a = F32x4Buf(x).v[first >> 2], b = F32x4Buf(x).v[(first >> 2) + 1u];
    v = float[8](a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w);
    return;
  }
  for (uint j = 0; j < 8; ++j) v[j] = col + j < k ? x.v[first + j] : 0.0;
}

// A weight unit (8 values) as fetched for a later store into a tile: the raw words of a
// quantised unit, decoded when stored, or for 16-bit weights the values already as fp16. Raw
// words take fewer registers than 8 floats, which keeps more workgroups per multiprocessor while
// a slice is in flight.
struct RawUnit {
  uvec4 q;
  uint scale;
};

// Elements col .. col + 7 of row `row` of a [rows, k] weight matrix (col a multiple of 8), zero
// past k; quantised types need k a multiple of 32.
RawUnit fetch_weight_unit(U32Buf w, uint dtype, uint row, uint k, uint col) {
  RawUnit r = RawUnit(uvec4(0u), 0u);
  if (dtype == DTYPE_Q4 || dtype == DTYPE_Q8) {
    const uint unit = col >> 3, block = quantized_block_word(dtype, row, k, unit), part = unit & 3u;
    r.scale = w.v[block];
    if (dtype == DTYPE_Q4) r.q.x = w.v[block + 1u + part];
    else r.q.xy = uvec2(w.v[block + 1u + 2u * part], w.v[block + 2u + 2u * part]);
  } else {
    float v[8];
    load_weight8(w, dtype, row, k, col, v);
    r.q = pack_f16x8(v);
  }
  return r;
}

// Quantised units decode in fp16 arithmetic, two values per operation: a pair of codes masked
// into the low mantissa bits of 1024.0 (0x6400) is 1024 + code exactly (Q8: the signed byte plus
// 128), and subtracting the bias leaves the code; then one fp16 fma with the block's scale (and
// Q4's min), exact operands stored as fp16. No integer-to-float conversion, which runs at a
// quarter of the ALU rate and was a sixth of the expert kernel's time on the H200. A fused fma
// rounds once, as the fp32 decode's final rounding to fp16 did (for Q8 the product is exact in
// fp32, so the bits are the same); a driver that splits Q4's fma adds one rounding of q * scale
// (at most 2^-11 of 15 scale: under 1% of a quantisation step).
// The masks take codes that sit 16 bits apart, so a decoded unit holds its 8 values interleaved
// (Q4: 0 4 1 5 2 6 3 7; Q8: 0 2 1 3 4 6 5 7); the activations' units are stored in the same order
// (interleave8), so every product pairs the same values.
void interleave8(uint dtype, inout float v[8]) {
  if (dtype == DTYPE_Q4) v = float[8](v[0], v[4], v[1], v[5], v[2], v[6], v[3], v[7]);
  else if (dtype == DTYPE_Q8) v = float[8](v[0], v[2], v[1], v[3], v[4], v[6], v[5], v[7]);
}

uvec4 decode_q4_unit_interleaved(uint scale_min, uint codes) {
  const f16vec2 sm = unpackFloat2x16(scale_min), bias = f16vec2(1024.0);
  uvec4 r;
  [[unroll]] for (uint j = 0; j < 4; ++j) {
    const f16vec2 q = unpackFloat2x16(((codes >> (4u * j)) & 0x000F000Fu) | 0x64006400u) - bias;
    r[j] = packFloat2x16(fma(q, sm.xx, sm.yy));
  }
  return r;
}

uvec4 decode_q8_unit_interleaved(uint scale, uint lo, uint hi) {
  const f16vec2 d = unpackFloat2x16(scale).xx, bias = f16vec2(1152.0);  // 1024 + 128
  const uvec4 pairs = uvec4(lo, lo >> 8, hi, hi >> 8);
  uvec4 r;
  [[unroll]] for (uint j = 0; j < 4; ++j)
    r[j] = packFloat2x16((unpackFloat2x16((pairs[j] & 0x00FF00FFu) ^ 0x64806480u) - bias) * d);
  return r;
}

// The fp16 tile unit of a fetched weight unit (quantised: interleaved, above).
uvec4 decode_weight_unit(uint dtype, RawUnit r) {
  if (dtype == DTYPE_Q4) return decode_q4_unit_interleaved(r.scale, r.q.x);
  if (dtype == DTYPE_Q8) return decode_q8_unit_interleaved(r.scale, r.q.x, r.q.y);
  return r.q;
}
