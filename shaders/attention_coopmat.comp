#version 460
// Causal softmax attention for prefill on cooperative-matrix units: the same operands and result
// as attention.comp with one split (spec §3.6: s = q . k / sqrt(hd) for keys u <= position(t),
// o = sum softmax(s) v, times the sigmoid output gate), for devices with 16x16x16 fp16 matrices.
// A workgroup takes one kv head g and BR = 32 rows (token, q head of g's group; GQA reads each
// K/V tile once for the whole group) and walks the keys BC = 32 at a time, twice:
//   pass 1: S = Q K^T on the matrix units; each row's running max m and sum l of exp(s - m);
//   pass 2: S again, P = exp(s - m) * 2^8 as fp16, O += P V on the matrix units.
// Two passes instead of the online rescaling of flash attention: a matrix accumulator's rows
// cannot be scaled one by one in GL_KHR_cooperative_matrix (which element holds which row is the
// driver's choice), and with the final max known up front O never needs it. The cost is one more
// Q K^T (3 products per key instead of 2), cheap on matrix units.
// Precision (coopmat.glsl): q (pre-scaled by 1/sqrt(hd)), k, v and p enter as fp16, products
// accumulate in fp32; m and l are fp32. P is scaled by 2^8 so that weights down to e^-20 of the
// row's largest stay in fp16's normal range (devices may flush fp16 denormals).
// Four subgroups: for S each owns one 16 x 16 block; for O each owns 16 rows x HEAD_DIM / 2.
#include "common.glsl"
#include "coopmat.glsl"

layout(constant_id = 3) const uint HEAD_DIM = 256;  // a multiple of 32
layout(constant_id = 4) const uint KV_DTYPE = DTYPE_F32;
#include "kv_cache.glsl"
const uint BR = 32, BC = 32;
const float P_SCALE = 256.0;
#define NEG_INF uintBitsToFloat(0xFF800000u)

#include "attention_push.glsl"

// One shared array in uvec4 units (8 fp16 or 4 fp32 each), carved into tiles; rows are padded by
// one unit so that neighbouring rows start in different banks.
const uint QS = HEAD_DIM / 8u + 1u;       // Q and K/V tile row stride: fp16 [row][d]
const uint SS = BC / 4u + 1u;             // S tile row stride: fp32 [row][key]
const uint PS = BC / 8u + 1u;             // P tile row stride: fp16 [row][key]
const uint OS = HEAD_DIM / 4u + 1u;       // O staging row stride: fp32 [row][d] (over Q and K/V)
const uint Q_AT = 0u, KV_AT = BR * QS, S_AT = KV_AT + BC * QS, P_AT = S_AT + BR * SS;
shared uvec4 smem[P_AT + BR * PS];
shared float row_max[BR];
shared float row_sum[BR];

float s_at(uint r, uint c) {
  const uint w = S_AT * 4u + r * SS * 4u + c;
  return uintBitsToFloat(smem[w >> 2][w & 3u]);
}

// Converts rows [key0, key0 + BC) of a slot's K or V rows (this kv head's start at kv_base) into
// the K/V tile as fp16, zero past key_end. An fp16 cache is copied as it is.
void load_kv_tile(U32Buf rows, uint kv_base, uint key0, uint key_end) {
  const uint units = HEAD_DIM / 8u;
  for (uint u = gl_LocalInvocationID.x; u < BC * units; u += gl_WorkGroupSize.x) {
    const uint c = u / units, d = (u % units) * 8u, key = key0 + c;
    const uint first = (kv_base + key) * HEAD_DIM + d;  // a multiple of 8
    if (key >= key_end) {
      smem[KV_AT + c * QS + d / 8u] = uvec4(0u);
    } else if (KV_DTYPE == DTYPE_F16) {
      smem[KV_AT + c * QS + d / 8u] = U32x4Buf(rows).v[first >> 3];
    } else if (KV_DTYPE == DTYPE_BF16) {
      const uvec4 w = U32x4Buf(rows).v[first >> 3];
      float v[8];
      for (uint j = 0; j < 4u; ++j) {
        const vec2 pair = kv_unpack_word(w[j]);
        v[2u * j] = pair.x;
        v[2u * j + 1u] = pair.y;
      }
      smem[KV_AT + c * QS + d / 8u] = round_store8(v);
    } else {
      const vec4 a = F32x4Buf(rows).v[first >> 2], b = F32x4Buf(rows).v[(first >> 2) + 1u];
      smem[KV_AT + c * QS + d / 8u] = round_store8(float[8](a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w));
    }
  }
}

// S = Q K^T for the K tile: subgroup sg computes rows (sg & 1) * 16, keys (sg >> 1) * 16, and
// stores its block as fp32 into the S tile.
void scores_to_shared() {
  const uint rb = (gl_SubgroupID & 1u) * CM, cb = (gl_SubgroupID >> 1) * CM;
  F32_MATRIX acc = F32_MATRIX(0.0);
  [[unroll]] for (uint kk = 0; kk < HEAD_DIM / 8u; kk += CM / 8u) {
    A_MATRIX q;
    B_MATRIX k;  // column n is key n's row of the K tile
    LOAD_A(q, smem, Q_AT + rb * QS + kk, QS);
    LOAD_B(k, smem, KV_AT + cb * QS + kk, QS);
    acc = MUL_ADD(q, k, acc);
  }
  STORE_C(acc, smem, S_AT + rb * SS + cb / 4u, SS);
}

void main() {
  const uint tid = gl_LocalInvocationID.x, threads = gl_WorkGroupSize.x;
  const uint g = gl_WorkGroupID.y, b = gl_WorkGroupID.z;
  const uint group = p.heads / p.kv_heads;
  const uint rows = p.tokens * group;
  const uint first = gl_WorkGroupID.x * BR;
  const uint pos0 = seq_position(p.seqs, b);
  const uint kv_base = g * p.capacity;  // this kv head's first row in the slot's K and V rows
  U32Buf keys = kv_keys(p.kv, seq_slot(p.seqs, b)), values = kv_values(p.kv, seq_slot(p.seqs, b));
  // Keys the tile's last token may see, clipped to the slot's capacity (as attention.comp).
  const uint kv_len = min(pos0 + p.tokens, p.capacity);
  const uint last_row = min(first + BR, rows) - 1u;
  const uint key_end = min(kv_len, pos0 + last_row / group + 1u);

  // Q tile: row r is (token t, head h) = ((first + r) / group, g * group + (first + r) % group).
  const uint units = HEAD_DIM / 8u;
  for (uint u = tid; u < BR * units; u += threads) {
    const uint r = u / units, d = (u % units) * 8u, row = first + r;
    float v[8];
    for (uint j = 0; j < 8u; ++j) v[j] = 0.0;
    if (row < rows) {
      const uint t = row / group, h = g * group + row % group;
      const uint at = ((b * p.tokens + t) * p.heads + h) * HEAD_DIM + d;
      for (uint j = 0; j < 8u; ++j) v[j] = p.q.v[at + j] * p.scale;
    }
    smem[Q_AT + r * QS + d / 8u] = round_store8(v);
  }

  // Pass 1: each row's max and sum, kept by invocation r < BR.
  float m = NEG_INF, l = 0.0;
  const uint my_row = first + tid;
  const uint my_last_key = tid < BR && my_row < rows ? pos0 + my_row / group : 0u;
  for (uint k0 = 0; k0 < key_end; k0 += BC) {
    load_kv_tile(keys, kv_base, k0, key_end);
    barrier();
    scores_to_shared();
    barrier();
    if (tid < BR && my_row < rows) {
      float block_max = NEG_INF;
      for (uint c = 0; c < BC; ++c)
        if (k0 + c < key_end && k0 + c <= my_last_key) block_max = max(block_max, s_at(tid, c));
      if (block_max != NEG_INF) {
        const float new_max = max(m, block_max);
        float sum = 0.0;
        for (uint c = 0; c < BC; ++c)
          if (k0 + c < key_end && k0 + c <= my_last_key) sum += exp(s_at(tid, c) - new_max);
        l = l * exp(m - new_max) + sum;  // exp(-inf) = 0 on the first block
        m = new_max;
      }
    }
    // The next iteration writes the K tile (last read before the barrier above), and the S tile
    // only after its first barrier, which every row's statistics above precede.
  }
  if (tid < BR) {
    row_max[tid] = m;
    row_sum[tid] = l;
  }

  // Pass 2: O = sum over key tiles of P V, with P from the final max.
  const uint rb = (gl_SubgroupID & 1u) * CM, col0 = (gl_SubgroupID >> 1) * (HEAD_DIM / 2u);
  const uint NO = HEAD_DIM / 32u;  // 16-wide output blocks per subgroup
  F32_MATRIX o[8];                 // the first NO are used (HEAD_DIM <= 256)
  [[unroll]] for (uint j = 0; j < NO; ++j) o[j] = F32_MATRIX(0.0);
  for (uint k0 = 0; k0 < key_end; k0 += BC) {
    load_kv_tile(keys, kv_base, k0, key_end);
    barrier();  // also publishes row_max / row_sum
    scores_to_shared();
    barrier();
    // P tile (fp16 pairs) from S, and the V tile over the K tile.
    for (uint e = tid; e < BR * BC / 2u; e += threads) {
      const uint r = e / (BC / 2u), c = (e % (BC / 2u)) * 2u, row = first + r;
      vec2 w = vec2(0.0);
      if (row < rows && row_max[r] != NEG_INF) {
        const uint last_key = pos0 + row / group;
        for (uint j = 0; j < 2u; ++j) {
          const uint key = k0 + c + j;
          if (key < key_end && key <= last_key) w[j] = exp(s_at(r, c + j) - row_max[r]) * P_SCALE;
        }
      }
      const uint word = P_AT * 4u + r * PS * 4u + c / 2u;
      smem[word >> 2][word & 3u] = packFloat2x16(f16vec2(w));
    }
    load_kv_tile(values, kv_base, k0, key_end);
    barrier();
    [[unroll]] for (uint kk = 0; kk < BC; kk += CM) {
      A_MATRIX pa;
      LOAD_A(pa, smem, P_AT + rb * PS + kk / 8u, PS);
      [[unroll]] for (uint j = 0; j < NO; ++j) {
        B_MATRIX v;  // K x N = keys x dims: the V tile row-major
        LOAD_B_ROWS(v, smem, KV_AT + kk * QS + (col0 + j * CM) / 8u, QS);
        o[j] = MUL_ADD(pa, v, o[j]);
      }
    }
    barrier();
  }

  // O through shared memory (over the Q and K/V tiles: the loop ended with a barrier), then
  // normalised, gated and written.
  [[unroll]] for (uint j = 0; j < NO; ++j) STORE_C(o[j], smem, rb * OS + (col0 + j * CM) / 4u, OS);
  barrier();
  const uint width = (2u * p.heads + 2u * p.kv_heads) * HEAD_DIM;
  for (uint e = tid; e < BR * HEAD_DIM; e += threads) {
    const uint r = e / HEAD_DIM, d = e % HEAD_DIM, row = first + r;
    if (row >= rows) continue;
    const uint t = row / group, h = g * group + row % group, bt = b * p.tokens + t;
    const uint w = r * OS * 4u + d;
    const float sum = row_sum[r] * P_SCALE;
    const float o_d = sum > 0.0 ? uintBitsToFloat(smem[w >> 2][w & 3u]) / sum : 0.0;
    const float gate = p.qkv.v[bt * width + h * 2u * HEAD_DIM + HEAD_DIM + d];
    p.dst.v[(bt * p.heads + h) * HEAD_DIM + d] = o_d * sigmoid(gate);
  }
}
