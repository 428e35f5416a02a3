// The routing of one token (spec §3.8, §8.12), shared by moe_route.comp (a workgroup per token)
// and moe_route_group.comp (one workgroup routes one token, then groups its choices): softmax over ALL
// experts in fp32, then the top-k probabilities (ties to the lower expert id), then optionally
// renormalised to sum to one (norm_topk_prob). A NaN or +Inf logit (corrupt weights, fp16
// overflow) is routed as -inf and raises the step's status word, which the host turns into an
// error; expert ids are always < experts, so nothing downstream indexes out of bounds.
// The includer declares MAX_EXPERTS, MAX_CHOICES (>= top_k) and a push block `p` with logits,
// ids, weights, experts, top_k, logit_stride, normalise, status, has_status.

shared float prob[MAX_EXPERTS];
// The routed row's choices in order: expert ids and their probabilities (before renormalising).
shared uint choice_id[MAX_CHOICES];
shared float choice_probability[MAX_CHOICES];
// One entry per subgroup is used, in two buffers taken in turn: a call's writes cannot race the
// previous call's reads, so each call needs one barrier.
shared float best_value[2][gl_WorkGroupSize.x];
shared uint best_index[2][gl_WorkGroupSize.x];
uint argmax_calls = 0u;
shared float partial[gl_WorkGroupSize.x];
// The top-k selection: each invocation's largest probability, the k-th largest of those, and the
// experts at or above it, in no particular order.
shared float invocation_best[gl_WorkGroupSize.x];
shared float threshold;
shared uint candidates;
shared uint candidate[MAX_EXPERTS];

// The largest (value, -index) over the workgroup: ties go to the lowest index. Subgroup
// reductions first, then one entry per subgroup (any subgroup size). Every invocation receives it.
void workgroup_argmax(inout float v, inout uint index) {
  const uint b = argmax_calls++ & 1u;
  const float m = subgroupMax(v);
  const uint i = subgroupMin(v == m ? index : 0xFFFFFFFFu);
  if (subgroupElect()) {
    best_value[b][gl_SubgroupID] = m;
    best_index[b][gl_SubgroupID] = i;
  }
  barrier();
  v = best_value[b][0];
  index = best_index[b][0];
  for (uint s = 1u; s < gl_NumSubgroups; ++s)
    if (best_value[b][s] > v || (best_value[b][s] == v && best_index[b][s] < index)) {
      v = best_value[b][s];
      index = best_index[b][s];
    }
}

// Routes token `row`: every invocation of the workgroup calls it. On return choice_id holds the
// row's experts in order of choice (every invocation may read it).
void route_row(uint row) {
  const uint tid = gl_LocalInvocationID.x, threads = gl_WorkGroupSize.x;
  const float neg_inf = uintBitsToFloat(0xFF800000u);
  float row_max = neg_inf;
  uint unused = 0u;
  // Logits LOADS x threads at a time: each invocation's loads are in flight together.
  const uint LOADS = 8u;
  for (uint e0 = tid; e0 < p.experts; e0 += LOADS * threads) {
    float logit[LOADS];
    [[unroll]] for (uint c = 0; c < LOADS; ++c) {
      const uint e = e0 + c * threads;
      logit[c] = e < p.experts ? p.logits.v[row * p.logit_stride + e] : neg_inf;
    }
    [[unroll]] for (uint c = 0; c < LOADS; ++c) {
      const uint e = e0 + c * threads;
      if (e >= p.experts) continue;
      if (isnan(logit[c]) || (isinf(logit[c]) && logit[c] > 0.0)) {
        logit[c] = neg_inf;
        if (p.has_status != 0u) p.status.v[0] = 1u;  // every writer writes the same value
      }
      prob[e] = logit[c];
      row_max = max(row_max, logit[c]);
    }
  }
  workgroup_argmax(row_max, unused);
  const bool none_finite = row_max == neg_inf;  // then every expert gets the same probability
  float local_sum = 0.0;
  float own_best = -1.0;  // below every probability: an invocation without experts
  for (uint e = tid; e < p.experts; e += threads) {
    prob[e] = none_finite ? 1.0 : exp(prob[e] - row_max);
    local_sum += prob[e];
    own_best = max(own_best, prob[e]);
  }
  // The denominator as Q3N_WORKGROUP_SUM adds it (subgroup sums, then those in subgroup order),
  // its barrier shared with the top-k's first.
  const float subgroup_sum = subgroupAdd(local_sum);
  if (subgroupElect()) partial[gl_SubgroupID] = subgroup_sum;

  // The top-k in order of choice, as k serial argmaxes would pick them (largest probability
  // first, ties to the lower id), with a fixed number of barriers: the k-th largest of the
  // invocations' own maxima is a lower bound on the k-th largest probability (k invocations hold
  // a value at least that large), so only probabilities at or above it can be chosen; each such
  // candidate's place is its rank among the candidates, usually a few past k. Five barriers in all
  // where k serial workgroup argmaxes took k + 4 (bench/NOTES.md sessions 30 and 31).
  invocation_best[tid] = own_best;
  if (tid == 0u) {
    candidates = 0u;
    threshold = -1.0;  // every probability, where fewer than k invocations hold experts
  }
  for (uint j = tid; j < p.top_k; j += threads) {  // never read: every place is ranked below
    choice_id[j] = j;                               // (a valid id whatever happens: k <= experts)
    choice_probability[j] = 0.0;
  }
  barrier();
  float total = 0.0;
  for (uint s = 0u; s < gl_NumSubgroups; ++s) total += partial[s];
  uint above = 0u;
  for (uint s = 0u; s < threads; ++s) {
    const float other = invocation_best[s];
    above += other > own_best || (other == own_best && s < tid) ? 1u : 0u;
  }
  if (above == p.top_k - 1u && own_best >= 0.0) threshold = own_best;  // one invocation at most
  barrier();
  const float bound = threshold;
  for (uint e = tid; e < p.experts; e += threads)
    if (prob[e] >= bound) candidate[atomicAdd(candidates, 1u)] = e;
  barrier();
  const uint count = candidates;
  for (uint c = tid; c < count; c += threads) {
    const uint e = candidate[c];
    const float v = prob[e];
    uint rank = 0u;
    for (uint d = 0u; d < count; ++d) {
      const uint other = candidate[d];
      const float w = prob[other];
      rank += w > v || (w == v && other < e) ? 1u : 0u;
    }
    if (rank < p.top_k) {
      choice_id[rank] = e;
      choice_probability[rank] = v / total;
    }
  }
  barrier();
  float chosen_sum = 0.0;  // in order of choice, as the serial argmaxes added them
  for (uint j = 0u; j < p.top_k; ++j) chosen_sum += choice_probability[j];
  // The results in parallel, once: written one by one as they were chosen, then renormalised in
  // place, they were a chain of dependent memory round trips (most of this kernel's time).
  for (uint j = tid; j < p.top_k; j += threads) {
    p.ids.v[row * p.top_k + j] = choice_id[j];
    const float probability = choice_probability[j];
    p.weights.v[row * p.top_k + j] = p.normalise != 0u ? probability / chosen_sum : probability;
  }
}
