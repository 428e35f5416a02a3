#version 460
// Grouped expert matrix-vector products for decode steps and small batches, where each expert
// holds a few rows (assignments). Same operands and results as moe_expert.comp:
//   SWIGLU = 1: h[assignment, n] = silu(x . gate_n) * (x . up_n), x rows by token
//   SWIGLU = 0: y[assignment, n] = h[assignment] . down_n
// One workgroup per (block of output rows, active-expert slot). Its invocations form lane groups
// of LANES that share one output row's K: group g owns ROWS output rows and each lane strides
// over K in units of 8 elements (VEC8 = 1, as in linear_gemv.comp) or single elements
// (VEC8 = 0). The expert's rows are taken CHUNK at a time, so each weight is read and decoded
// once per pass and multiplied into every row of the pass.
//
// Why lane groups: at the 80B shapes an expert's matrices are short (down: K = 512, 64 units), so
// one workgroup striding K with all its invocations reads only a few weights each and spends its
// time in the preamble (live list -> offsets -> sorted ids) and the reduction; groups of LANES
// give every invocation ROWS rows' worth of loads in flight.
//
// Batch invariance: each invocation sums its units in order, and a row's LANES partial sums are
// added in lane order, so an assignment's result depends on LANES alone — not on ROWS, CHUNK,
// the workgroup size or the other rows its expert holds. The host keeps LANES a function of the
// matrix, and may pick the rest by step size.
//
// DIRECT = 1 (steps of a few tokens): no grouping. Slot s is assignment s (token s / top_k's
// choice s % top_k), its expert the routing's ids[s] (passed in `offsets`), its one row the
// token's input (gate/up) or h row s (down). Experts two tokens share are read twice, from L2;
// in return the step skips moe_group's dispatch and barrier, and a workgroup reaches its first
// weight after one load (the expert id) instead of a chain of four (live count, expert,
// offsets, sorted).
//
// Q3N_COMBINE (the down product, with DIRECT): the workgroup's lane groups are one token's
// top_k assignments (GROUPS = top_k), all on the same ROWS output rows, and the workgroup then
// adds them as moe_combine.comp does, in choice order with the same terms, plus the shared
// expert: out[t, d] = sum_j w[t, j] y[t top_k + j, d] + sigmoid(shared_logit[t]) shared[t, d].
// One dispatch and barrier fewer per MoE layer, and the bits of the two kernels.
#include "common.glsl"
#include "moe_combine_terms.glsl"
#extension GL_EXT_control_flow_attributes : require

layout(constant_id = 3) const uint WEIGHT_DTYPE = DTYPE_BF16;
layout(constant_id = 4) const uint SWIGLU = 1;
layout(constant_id = 5) const uint ROWS = 4;   // output rows per lane group
layout(constant_id = 6) const uint CHUNK = 1;  // expert rows per pass
layout(constant_id = 7) const uint VEC8 = 1;
layout(constant_id = 8) const uint LANES = 64;  // invocations per output row; divides the workgroup
layout(constant_id = 9) const uint DIRECT = 0;  // slot = assignment, no grouping (see above)

#include "moe_expert_push.glsl"

const uint MATRICES = SWIGLU != 0u ? 2u : 1u;  // gate and up, or down
const uint THREADS = gl_WorkGroupSize.x;
const uint GROUPS = THREADS / LANES;
const uint SUMS = MATRICES * ROWS * CHUNK;  // partial sums per invocation and pass
// Every invocation's partial sums, [sum][invocation]; an invocation's index is swizzled by the
// sum's low bits so that the reducing invocations (one per sum, reading consecutive lanes) hit
// different banks. The swizzle stays inside the largest power-of-two block (at most 32) that
// divides the workgroup: Q3N_COMBINE's workgroups are top_k lane groups, 160 invocations at top-10.
shared float partial[SUMS * THREADS];
const uint THREADS_LOW_BIT = THREADS & (~THREADS + 1u);
const uint SWIZZLE = (THREADS_LOW_BIT < 32u ? THREADS_LOW_BIT : 32u) - 1u;
uint partial_at(uint sum, uint tid) { return sum * THREADS + (tid ^ (sum & SWIZZLE)); }
#ifdef Q3N_COMBINE
shared float expert_out[GROUPS * ROWS];  // [choice][output row] of the workgroup's token
#endif

void main() {
#ifdef Q3N_COMBINE
  const uint token = gl_WorkGroupID.y;
  const uint block0 = gl_WorkGroupID.x * ROWS;  // every lane group takes the same rows
#else
  const uint block0 = gl_WorkGroupID.x * (GROUPS * ROWS);  // first output row of the workgroup
#endif
  const uint tid = gl_LocalInvocationID.x, group = tid / LANES, lane = tid % LANES;
#ifdef Q3N_COMBINE
  const uint slot = token * p.top_k + group;  // the lane group's assignment
  const uint row0 = block0;
#else
  const uint slot = gl_WorkGroupID.y;
  const uint row0 = block0 + group * ROWS;  // this lane group's first output row
#endif
  if (DIRECT == 0u && slot >= p.live.v[0]) return;  // uniform per workgroup (DIRECT: every slot is live)
  const uint e = DIRECT != 0u ? p.offsets.v[slot] : p.live.v[1u + slot];
  const uint first = DIRECT != 0u ? slot : p.offsets.v[e];  // DIRECT: `sorted` is not read
  const uint expert_rows = DIRECT != 0u ? 1u : p.offsets.v[e + 1u] - first;
  if (block0 >= p.n) return;
  const uint weight_rows = SWIGLU != 0u ? 2u * p.n : p.n;
  const uint gate_row0 = e * weight_rows + row0;  // up rows follow the gate rows, p.n later

  for (uint m0 = 0; m0 < expert_rows; m0 += CHUNK) {
    const uint count = min(CHUNK, expert_rows - m0);  // rows in this pass (uniform)
    uint src[CHUNK];  // first element of each row's input
    [[unroll]] for (uint c = 0; c < CHUNK; ++c) {
      const uint assignment = DIRECT != 0u ? slot : c < count ? p.sorted.v[first + m0 + c] : 0u;
      src[c] = (SWIGLU != 0u ? assignment / p.top_k : assignment) * p.k;
    }
    float acc[2][ROWS][CHUNK];  // [gate/up][output row][expert row]
    [[unroll]] for (uint m = 0; m < 2; ++m)
      [[unroll]] for (uint r = 0; r < ROWS; ++r)
        [[unroll]] for (uint c = 0; c < CHUNK; ++c) acc[m][r][c] = 0.0;

    if (VEC8 != 0u) {
      // Quantised rows: the raw words of the next unit's rows are fetched before this unit is
      // multiplied, as in linear_gemv.comp; each lane still adds its units in order.
      const bool quantized = WEIGHT_DTYPE == DTYPE_Q4 || WEIGHT_DTYPE == DTYPE_Q8;
      uvec3 next[MATRICES][ROWS];
      if (quantized && lane < (p.k >> 3))
        [[unroll]] for (uint m = 0; m < MATRICES; ++m)
          [[unroll]] for (uint r = 0; r < ROWS; ++r)
            if (row0 + r < p.n) next[m][r] = fetch_codes_unit(p.weight, WEIGHT_DTYPE, gate_row0 + m * p.n + r, p.k, lane);
      for (uint u = lane; u < (p.k >> 3); u += LANES) {
        vec4 xa[CHUNK], xb[CHUNK];
        [[unroll]] for (uint c = 0; c < CHUNK; ++c) {
          if (c >= count) continue;
          const uint at = (src[c] + u * 8u) >> 2;
          xa[c] = F32x4Buf(p.x).v[at];
          xb[c] = F32x4Buf(p.x).v[at + 1u];
        }
        if (quantized) {
          uvec3 raw[MATRICES][ROWS];
          [[unroll]] for (uint m = 0; m < MATRICES; ++m)
            [[unroll]] for (uint r = 0; r < ROWS; ++r) raw[m][r] = next[m][r];
          const uint ahead = u + LANES;
          if (ahead < (p.k >> 3))
            [[unroll]] for (uint m = 0; m < MATRICES; ++m)
              [[unroll]] for (uint r = 0; r < ROWS; ++r)
                if (row0 + r < p.n)
                  next[m][r] = fetch_codes_unit(p.weight, WEIGHT_DTYPE, gate_row0 + m * p.n + r, p.k, ahead);
          // scale * (codes . x) + min * sum(x): the scale and min once per unit and row.
          float xsum[CHUNK];
          [[unroll]] for (uint c = 0; c < CHUNK; ++c) xsum[c] = dot(xa[c] + xb[c], vec4(1.0));
          [[unroll]] for (uint m = 0; m < MATRICES; ++m)
            [[unroll]] for (uint r = 0; r < ROWS; ++r) {
              if (row0 + r >= p.n) continue;
              vec4 qa, qb;
              vec2 scale_min;
              decode_codes_unit(WEIGHT_DTYPE, raw[m][r], qa, qb, scale_min);
              [[unroll]] for (uint c = 0; c < CHUNK; ++c) {
                if (c >= count) continue;
                const float codes_x = dot(qa, xa[c]) + dot(qb, xb[c]);
                acc[m][r][c] += WEIGHT_DTYPE == DTYPE_Q4 ? scale_min.x * codes_x + scale_min.y * xsum[c]
                                                         : scale_min.x * codes_x;
              }
            }
        } else {
          [[unroll]] for (uint m = 0; m < MATRICES; ++m)
            [[unroll]] for (uint r = 0; r < ROWS; ++r) {
              if (row0 + r >= p.n) continue;
              float w[8];
              load_weight_unit(p.weight, WEIGHT_DTYPE, gate_row0 + m * p.n + r, p.k, u, w);
              const vec4 wa = vec4(w[0], w[1], w[2], w[3]), wb = vec4(w[4], w[5], w[6], w[7]);
              [[unroll]] for (uint c = 0; c < CHUNK; ++c) {
                if (c >= count) continue;
                acc[m][r][c] += dot(wa, xa[c]) + dot(wb, xb[c]);
              }
            }
        }
      }
    } else {
      for (uint i = lane; i < p.k; i += LANES) {
        float xv[CHUNK];
        [[unroll]] for (uint c = 0; c < CHUNK; ++c) xv[c] = c < count ? p.x.v[src[c] + i] : 0.0;
        [[unroll]] for (uint m = 0; m < MATRICES; ++m)
          [[unroll]] for (uint r = 0; r < ROWS; ++r) {
            if (row0 + r >= p.n) continue;
            const float w = load_weight(p.weight, WEIGHT_DTYPE, (gate_row0 + m * p.n + r) * p.k + i);
            [[unroll]] for (uint c = 0; c < CHUNK; ++c) acc[m][r][c] += w * xv[c];
          }
      }
    }

    [[unroll]] for (uint m = 0; m < MATRICES; ++m)
      [[unroll]] for (uint r = 0; r < ROWS; ++r)
        [[unroll]] for (uint c = 0; c < CHUNK; ++c) partial[partial_at((m * ROWS + r) * CHUNK + c, tid)] = acc[m][r][c];
    barrier();
    // One invocation per (expert row, output row) of the pass adds each sum's LANES partials in
    // lane order; neighbouring invocations take neighbouring output rows of one expert row.
    for (uint q = tid; q < CHUNK * GROUPS * ROWS; q += THREADS) {
      const uint c = q / (GROUPS * ROWS), g = (q / ROWS) % GROUPS, r = q % ROWS;
#ifdef Q3N_COMBINE
      const uint col = block0 + r;
#else
      const uint col = block0 + g * ROWS + r;
#endif
      if (c >= count || col >= p.n) continue;
      float sums[2] = float[2](0.0, 0.0);
      [[unroll]] for (uint m = 0; m < MATRICES; ++m) {
        const uint sum = (m * ROWS + r) * CHUNK + c;
        float total = 0.0;
        for (uint l = 0; l < LANES; ++l) total += partial[partial_at(sum, g * LANES + l)];
        sums[m] = total;
      }
#ifdef Q3N_COMBINE
      expert_out[g * ROWS + r] = sums[0];
#else
      const uint assignment = DIRECT != 0u ? slot : p.sorted.v[first + m0 + c];
      p.y.v[assignment * p.n + col] = SWIGLU != 0u ? silu(sums[0]) * sums[1] : sums[0];
#endif
    }
    barrier();
  }
#ifdef Q3N_COMBINE
  // moe_combine.comp's sum for the workgroup's rows (moe_combine_terms.glsl).
  if (tid < ROWS && block0 + tid < p.n) {
    const uint col = block0 + tid;
    float sum = 0.0;
    for (uint j = 0; j < p.top_k; ++j) sum = combine_choice(sum, p.weights.v[token * p.top_k + j], expert_out[j * ROWS + tid]);
    if (p.has_shared != 0u)
      sum = combine_shared_expert(sum, p.shared_logit.v[token * p.logit_stride], p.shared_out.v[token * p.n + col]);
    p.dst.v[token * p.n + col] = sum;
  }
#endif
}
