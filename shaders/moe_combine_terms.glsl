// The terms of the MoE combine (spec §3.8), for every kernel that adds them: moe_combine.comp,
// moe_expert_down_combine_rowwise.comp and moe_expert_gemv.comp's Q3N_COMBINE variant. A sum
// starts at 0, takes each choice's term in choice order, then the gated shared expert's, each
// one fma, so the three kernels give the same bits (tests/ops/moe_test.cpp).
float combine_choice(float sum, float weight, float expert_out) { return fma(weight, expert_out, sum); }
float combine_shared_expert(float sum, float shared_logit, float shared_out) {
  return fma(sigmoid(shared_logit), shared_out, sum);
}
