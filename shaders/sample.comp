#version 460
// Token sampling on the GPU, one workgroup per sequence, so only token ids go back to the host.
// temperature <= 0 or top_k == 1: argmax (lowest id on ties). Otherwise, on z = logits / T and
// in HF's order: top-k, then top-p over what top-k kept, then min-p. Each filter is a threshold
// on z found by bisection over value (count or probability mass above it), never a sort; then
// one token is drawn from the kept mass with a counter-based RNG keyed by (seed, counter), so a
// replayed step with the same parameters draws the same token.
//
// Passes over the row read it strided (neighbouring invocations, neighbouring ids: one cache line
// per subgroup load). Top-k's bisection narrows [lo, hi] with count(z >= lo) >= k kept; once at
// most CANDIDATES tokens have z >= lo they are copied to shared memory, and the remaining steps,
// top-p's and the draw run on those: the same counts, so the same top-k threshold, as passes over
// the whole row; top-p alone moves the same way, counting beside its mass. (Qwen3-Next's
// defaults, top-k 20 and top-p 0.8, cost ~3 ms per token with 96 passes over the 151,936 logits
// in slices per invocation; bench/NOTES.md, session 20.)
//
// A row with a NaN logit gets the id 0xFFFFFFFF, outside every vocabulary, which the host reports
// (Engine::check_sampled).
#include "common.glsl"
#extension GL_EXT_control_flow_attributes : require

const uint THREADS = gl_WorkGroupSize.x;
const uint BISECT_STEPS = 48;

layout(push_constant) uniform Push {
  F32Buf logits;  // [B, vocab]
  U32Buf params;  // [B, 8]: temperature, top_k, top_p, min_p (f32 bits except top_k), seed lo, seed hi, counter, -
  U32Buf ids;     // [B]
  uint vocab;
  uint logits_texel;  // first word of the logits in their block's view (Q3N_TEXEL variant)
} p;

// The Q3N_TEXEL variant, for the CPU shapes, reads the logits through a texel view of their block
// (see texel_reads.glsl for why): the same values, so the same ids.
#ifdef Q3N_TEXEL
layout(set = 0, binding = 0) uniform usamplerBuffer logit_words;  // R32_UINT
float logit(uint i) { return uintBitsToFloat(texelFetch(logit_words, int(p.logits_texel + i)).x); }
#else
float logit(uint i) { return p.logits.v[i]; }
#endif

shared float red_f[THREADS];
shared uint red_u[THREADS];

const uint CANDIDATES = 1024;  // shared memory: 16 KiB
shared float candidate_z[CANDIDATES];
shared uint candidate_id[CANDIDATES];
shared uint candidate_count;
shared float kept_mass[CANDIDATES];  // the draw: kept candidates in id order
shared uint kept_id[CANDIDATES];

// Workgroup reductions: subgroup operations, then one value per subgroup through shared memory
// (any subgroup size). Every invocation receives the result.
float workgroup_max(float v) {
  const float part = subgroupMax(v);
  if (subgroupElect()) red_f[gl_SubgroupID] = part;
  barrier();
  float m = red_f[0];
  for (uint i = 1; i < gl_NumSubgroups; ++i) m = max(m, red_f[i]);
  barrier();
  return m;
}
uint workgroup_count(uint v) {
  const uint part = subgroupAdd(v);
  if (subgroupElect()) red_u[gl_SubgroupID] = part;
  barrier();
  uint s = 0u;
  for (uint i = 0; i < gl_NumSubgroups; ++i) s += red_u[i];
  barrier();
  return s;
}

// Whether any invocation of the workgroup saw a NaN among its `nans`; if so the row's id is set to
// 0xFFFFFFFF. The answer is uniform (every invocation receives the same count), so the caller may
// return on it.
bool reported_nan_row(uint nans, uint b) {
  if (workgroup_count(nans) == 0u) return false;
  if (gl_LocalInvocationID.x == 0u) p.ids.v[b] = 0xFFFFFFFFu;
  return true;
}

// The state of a row's filters: z = logit * inv_t; candidates (when `compacted`) hold every id
// with z >= some value at or below every threshold probed since.
struct Row {
  uint base;
  float inv_t, z_max;
  bool compacted;
  uint count;  // candidates
};

float z_of(Row r, uint i) { return logit(r.base + i) * r.inv_t; }

// Passes over the whole row take UNROLL ids per invocation at a time, i0 + u THREADS for u <
// UNROLL, all loaded before any is used: one round trip to memory for UNROLL values rather than
// one each (a pass is ~600 values per invocation). Ids past the row read as -inf, and every pass
// skips them.
const uint UNROLL = 8;
void load_block(uint base, uint i0, out float v[UNROLL]) {
  [[unroll]] for (uint u = 0; u < UNROLL; ++u) {
    const uint i = i0 + u * THREADS;
    v[u] = i < p.vocab ? logit(base + i) : uintBitsToFloat(0xFF800000u);
  }
}

// Tokens with z >= t (t at or above the compaction's value when compacted). Every invocation
// receives it.
uint count_at_least(Row r, float t) {
  uint n = 0u;
  if (r.compacted)
    for (uint c = gl_LocalInvocationID.x; c < r.count; c += THREADS) n += candidate_z[c] >= t ? 1u : 0u;
  else
    for (uint i0 = gl_LocalInvocationID.x; i0 < p.vocab; i0 += UNROLL * THREADS) {
      float v[UNROLL];
      load_block(r.base, i0, v);
      [[unroll]] for (uint u = 0; u < UNROLL; ++u) n += i0 + u * THREADS < p.vocab && v[u] * r.inv_t >= t ? 1u : 0u;
    }
  return workgroup_count(n);
}

// Probability mass (unnormalised: exp(z - z_max)) of the tokens with z >= t, and their count
// (exact in a float up to 2^24 tokens), in one reduction.
shared vec2 red_v[THREADS];
vec2 mass_count_at_least(Row r, float t) {
  vec2 m = vec2(0.0);
  if (r.compacted) {
    for (uint c = gl_LocalInvocationID.x; c < r.count; c += THREADS)
      if (candidate_z[c] >= t) m += vec2(exp(candidate_z[c] - r.z_max), 1.0);
  } else {
    for (uint i0 = gl_LocalInvocationID.x; i0 < p.vocab; i0 += UNROLL * THREADS) {
      float v[UNROLL];
      load_block(r.base, i0, v);
      [[unroll]] for (uint u = 0; u < UNROLL; ++u) {
        const float z = v[u] * r.inv_t;
        if (i0 + u * THREADS < p.vocab && z >= t) m += vec2(exp(z - r.z_max), 1.0);
      }
    }
  }
  const vec2 part = subgroupAdd(m);
  if (subgroupElect()) red_v[gl_SubgroupID] = part;
  barrier();
  vec2 total = vec2(0.0);
  for (uint s = 0u; s < gl_NumSubgroups; ++s) total += red_v[s];
  barrier();
  return total;
}

// Copies every token with z >= t (at most CANDIDATES of them: the caller counted) to shared memory.
void compact(inout Row r, float t) {
  if (gl_LocalInvocationID.x == 0u) candidate_count = 0u;
  barrier();
  for (uint i0 = gl_LocalInvocationID.x; i0 < p.vocab; i0 += UNROLL * THREADS) {
    float v[UNROLL];
    load_block(r.base, i0, v);
    [[unroll]] for (uint u = 0; u < UNROLL; ++u) {
      const float z = v[u] * r.inv_t;
      if (i0 + u * THREADS < p.vocab && z >= t) {
        const uint at = atomicAdd(candidate_count, 1u);
        candidate_z[at] = z;
        candidate_id[at] = i0 + u * THREADS;
      }
    }
  }
  barrier();
  r.count = candidate_count;
  r.compacted = true;
  barrier();  // every invocation has read candidate_count
}

// The counter-based uniform draw in [0, 1) of row b.
float uniform_draw(uint b) {
  const uint seed_lo = p.params.v[b * 8u + 4u], seed_hi = p.params.v[b * 8u + 5u], counter = p.params.v[b * 8u + 6u];
  const uint bits = hash32(seed_lo ^ hash32(seed_hi ^ hash32(counter + 0x9e3779b9u)));
  return float(bits >> 8) * (1.0 / 16777216.0);
}

void main() {
  const uint b = gl_WorkGroupID.x, tid = gl_LocalInvocationID.x;
  const uint base = b * p.vocab;
  const float temperature = uintBitsToFloat(p.params.v[b * 8u]);
  const uint top_k = p.params.v[b * 8u + 1u];
  const float top_p = uintBitsToFloat(p.params.v[b * 8u + 2u]);
  const float min_p = uintBitsToFloat(p.params.v[b * 8u + 3u]);

  if (temperature <= 0.0 || top_k == 1u) {
    float best = uintBitsToFloat(0xFF800000u);
    uint best_id = 0xFFFFFFFFu, nans = 0u;
    for (uint i0 = tid; i0 < p.vocab; i0 += UNROLL * THREADS) {  // ascending ids: strict > keeps the lowest on ties
      float v[UNROLL];
      load_block(base, i0, v);
      [[unroll]] for (uint u = 0; u < UNROLL; ++u) {
        nans += isnan(v[u]) ? 1u : 0u;  // past the row: -inf, never NaN nor the best
        if (v[u] > best) {
          best = v[u];
          best_id = i0 + u * THREADS;
        }
      }
    }
    if (reported_nan_row(nans, b)) return;
    const float m = workgroup_max(best);
    red_u[tid] = best == m ? best_id : 0xFFFFFFFFu;
    barrier();
    if (tid == 0u) {
      uint id = red_u[0];
      for (uint i = 1; i < THREADS; ++i) id = min(id, red_u[i]);
      p.ids.v[b] = id;
    }
    return;
  }

  Row r = Row(base, 1.0 / temperature, 0.0, false, 0u);
  float local_max = uintBitsToFloat(0xFF800000u), local_min = uintBitsToFloat(0x7F800000u);
  uint nans = 0u;
  for (uint i0 = tid; i0 < p.vocab; i0 += UNROLL * THREADS) {
    float v[UNROLL];
    load_block(base, i0, v);
    [[unroll]] for (uint u = 0; u < UNROLL; ++u) {
      if (i0 + u * THREADS >= p.vocab) continue;  // past the row
      const float z = v[u] * r.inv_t;
      nans += isnan(z) ? 1u : 0u;
      local_max = max(local_max, z);
      local_min = min(local_min, z);
    }
  }
  if (reported_nan_row(nans, b)) return;
  r.z_max = workgroup_max(local_max);
  const float z_min = -workgroup_max(-local_min);

  // top-k: the largest threshold keeping at least k tokens.
  float threshold = z_min;
  if (top_k > 1u && top_k < p.vocab) {
    float lo = z_min, hi = r.z_max;
    uint kept = p.vocab;  // count(z >= lo)
    for (uint step = 0; step < BISECT_STEPS; ++step) {
      if (!r.compacted && kept <= CANDIDATES) compact(r, lo);  // uniform
      const float mid = 0.5 * (lo + hi);
      const uint n = count_at_least(r, mid);
      if (n >= top_k) {
        lo = mid;
        kept = n;
      } else {
        hi = mid;
      }
    }
    threshold = lo;
  }
  // top-p: the largest threshold whose mass is at least top_p of the top-k mass.
  // Its bisection moves to the candidates too once few enough tokens are at or above lo.
  if (top_p > 0.0 && top_p < 1.0) {
    const vec2 all = mass_count_at_least(r, threshold);
    const float target = top_p * all.x;
    float lo = threshold, hi = r.z_max, kept = all.y;  // kept: count(z >= lo)
    for (uint step = 0; step < BISECT_STEPS; ++step) {
      if (!r.compacted && kept <= float(CANDIDATES)) compact(r, lo);  // uniform
      const float mid = 0.5 * (lo + hi);
      const vec2 above = mass_count_at_least(r, mid);
      if (above.x >= target) {
        lo = mid;
        kept = above.y;
      } else {
        hi = mid;
      }
    }
    threshold = lo;
  }
  // min-p: probability at least min_p times the largest, i.e. z >= z_max + log(min_p).
  if (min_p > 0.0) threshold = max(threshold, r.z_max + log(min_p));

  if (r.compacted) {
    // The kept candidates in id order (each one's rank: the kept candidates of lower id), then
    // one walk over their mass.
    for (uint c = tid; c < r.count; c += THREADS) {
      if (candidate_z[c] < threshold) continue;
      uint rank = 0u;
      for (uint o = 0; o < r.count; ++o)
        rank += candidate_z[o] >= threshold && candidate_id[o] < candidate_id[c] ? 1u : 0u;
      kept_mass[rank] = exp(candidate_z[c] - r.z_max);
      kept_id[rank] = candidate_id[c];
    }
    const uint kept = count_at_least(r, threshold);  // its barriers publish kept_*
    if (tid == 0u) {
      float total = 0.0;
      for (uint k = 0; k < kept; ++k) total += kept_mass[k];
      const float target = uniform_draw(b) * total;
      float running = 0.0;
      uint chosen = kept_id[kept - 1u];  // the last kept token, should rounding leave `target` unreached
      for (uint k = 0; k < kept; ++k) {
        running += kept_mass[k];
        if (running > target) {
          chosen = kept_id[k];
          break;
        }
      }
      p.ids.v[b] = chosen;
    }
    return;
  }

  // The whole row: each invocation's kept mass over a contiguous slice, so the walk visits ids
  // in order; the slice holding the draw is walked by its owner.
  const uint per = (p.vocab + THREADS - 1u) / THREADS;
  const uint begin = min(tid * per, p.vocab), end = min(begin + per, p.vocab);
  float kept = 0.0;
  for (uint i = begin; i < end; ++i) {
    const float z = z_of(r, i);
    if (z >= threshold) kept += exp(z - r.z_max);
  }
  red_f[tid] = kept;
  barrier();
  if (tid == 0u) {
    float total = 0.0;
    for (uint i = 0; i < THREADS; ++i) total += red_f[i];
    float target = uniform_draw(b) * total, running = 0.0;
    uint owner = THREADS - 1u;
    for (uint i = 0; i < THREADS; ++i) {
      if (red_f[i] > 0.0 && running + red_f[i] > target) {
        owner = i;
        break;
      }
      running += red_f[i];
    }
    red_u[0] = owner;
    red_f[0] = target - running;  // mass still to walk inside the owner's slice
  }
  barrier();
  if (tid == red_u[0]) {
    const float remaining = red_f[0];
    float running = 0.0;
    uint chosen = 0xFFFFFFFFu;
    for (uint i = begin; i < end; ++i) {
      const float z = z_of(r, i);
      if (z < threshold) continue;
      chosen = i;  // the last kept token, should rounding leave `remaining` unreached
      running += exp(z - r.z_max);
      if (running > remaining) break;
    }
    p.ids.v[b] = chosen;
  }
}
