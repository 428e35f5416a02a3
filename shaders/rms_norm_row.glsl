// The RMSNorm of one row by one workgroup (spec §3.2), in an order that is the same whatever the
// workgroup and subgroup sizes:
//   h   = x (+ residual, when `add`; the sum is written back to residual)
//   out = h * rsqrt(mean(h^2) + eps) * (weight_offset + w) (* silu(gate), when `gated`)
// so that rms_norm.comp and the products that normalise the rows they write in their last
// workgroup (norm_tail.glsl) give the same bits, and a row's result never depends on which of
// them ran (batch invariance: a step of 1 row and one of 40 may take different ones).
//
// The fixed order: lane v of NORM_LANES sums h[v]^2, h[v + NORM_LANES]^2, ... one fma at a time;
// groups of NORM_GROUP consecutive lanes add their sums in order; then every invocation adds the
// group sums in order. An invocation of a workgroup of W takes lanes tid, tid + W, ...
//
// The includer defines NORM_ROW_USED (a constant: 0 leaves the shared arrays one float long).
// Needs uniform control flow: it has two barriers.
#extension GL_EXT_control_flow_attributes : require

// Loads and stores of the row go through coherent references: in a norm tail the addend was
// written by other workgroups of the same dispatch.
layout(buffer_reference, std430, buffer_reference_align = 4) coherent buffer NormF32 { float v[]; };

const uint NORM_LANES = 256u;
const uint NORM_GROUP = 8u;
const uint NORM_GROUPS = NORM_LANES / NORM_GROUP;
// Values an invocation keeps in registers between its loads and its stores: every load of the
// row is issued before any store (interleaved, each load would wait behind the previous store,
// which may alias it: bench/NOTES.md, session 19). Longer shares take the uncached loop, which
// does the same arithmetic in the same order.
const uint NORM_CACHED = 16u;

shared float norm_lane_sum[NORM_ROW_USED != 0u ? NORM_LANES : 1u];
shared float norm_group_sum[NORM_ROW_USED != 0u ? NORM_GROUPS : 1u];

struct NormRow {
  NormF32 x, residual, weight, gate, dst;  // residual when add, gate when gated: else any
  uint base;                               // the row's first element in x, residual, gate and dst
  uint n;
  float eps, weight_offset;
  bool add, gated;
};

// The scale of the row from every invocation's lane sums (written before): two barriers.
float norm_row_scale(NormRow r) {
  barrier();
  for (uint g = gl_LocalInvocationID.x; g < NORM_GROUPS; g += gl_WorkGroupSize.x) {
    float s = 0.0;
    for (uint l = 0; l < NORM_GROUP; ++l) s += norm_lane_sum[g * NORM_GROUP + l];
    norm_group_sum[g] = s;
  }
  barrier();
  float total = 0.0;
  for (uint g = 0; g < NORM_GROUPS; ++g) total += norm_group_sum[g];
  return inversesqrt(total / float(r.n) + r.eps);
}

void rms_norm_row(NormRow r) {
  const uint tid = gl_LocalInvocationID.x, threads = gl_WorkGroupSize.x;
  const uint lanes = (NORM_LANES + threads - 1u) / threads;   // lanes per invocation
  const uint per_lane = (r.n + NORM_LANES - 1u) / NORM_LANES;  // values per lane
  if (lanes * per_lane <= NORM_CACHED) {
    // Slot s holds value c = s % per_lane of the invocation's lane j = s / per_lane.
    float h[NORM_CACHED], w[NORM_CACHED], z[NORM_CACHED];
    [[unroll]] for (uint s = 0; s < NORM_CACHED; ++s) {
      h[s] = 0.0;
      const uint v = tid + (s / per_lane) * threads, i = v + (s % per_lane) * NORM_LANES;
      if (s >= lanes * per_lane || v >= NORM_LANES || i >= r.n) continue;
      h[s] = r.x.v[r.base + i];
      if (r.add) h[s] += r.residual.v[r.base + i];
      w[s] = r.weight.v[i];
      if (r.gated) z[s] = r.gate.v[r.base + i];
    }
    float lane_sum = 0.0;
    [[unroll]] for (uint s = 0; s < NORM_CACHED; ++s) {
      if (s >= lanes * per_lane) continue;
      const uint v = tid + (s / per_lane) * threads, c = s % per_lane, i = v + c * NORM_LANES;
      if (c == 0u) lane_sum = 0.0;
      if (r.add && v < NORM_LANES && i < r.n) r.residual.v[r.base + i] = h[s];
      lane_sum = fma(h[s], h[s], lane_sum);  // h = 0 past the row: adds exactly nothing
      if (c == per_lane - 1u && v < NORM_LANES) norm_lane_sum[v] = lane_sum;
    }
    const float scale = norm_row_scale(r);
    [[unroll]] for (uint s = 0; s < NORM_CACHED; ++s) {
      const uint v = tid + (s / per_lane) * threads, i = v + (s % per_lane) * NORM_LANES;
      if (s >= lanes * per_lane || v >= NORM_LANES || i >= r.n) continue;
      float y = h[s] * scale * (r.weight_offset + w[s]);
      if (r.gated) y *= silu(z[s]);
      r.dst.v[r.base + i] = y;
    }
    return;
  }
  for (uint v = tid; v < NORM_LANES; v += threads) {
    float lane_sum = 0.0;
    for (uint i = v; i < r.n; i += NORM_LANES) {
      float h = r.x.v[r.base + i];
      if (r.add) {
        h += r.residual.v[r.base + i];
        r.residual.v[r.base + i] = h;
      }
      lane_sum = fma(h, h, lane_sum);
    }
    norm_lane_sum[v] = lane_sum;
  }
  const float scale = norm_row_scale(r);
  for (uint v = tid; v < NORM_LANES; v += threads)
    for (uint i = v; i < r.n; i += NORM_LANES) {
      const float h = r.add ? r.residual.v[r.base + i] : r.x.v[r.base + i];
      float y = h * scale * (r.weight_offset + r.weight.v[i]);
      if (r.gated) y *= silu(r.gate.v[r.base + i]);
      r.dst.v[r.base + i] = y;
    }
}
