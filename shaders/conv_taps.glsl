// The causal conv's sum for one channel and token (spec §3.3), in one fixed order with explicit
// fused multiply-adds, so causal_conv1d.comp and the GEMV that applies the conv as it writes its
// output (linear_gemv.comp, CONV_KERNEL) compute the same bits: a decode row's conv does not depend
// on which of them ran (speculative verification and mixed steps take the conv's own kernel).
//   silu( w[history] * x + sum_{j < history} w[j] * window[j] ),  window = the previous inputs, oldest first
const uint CONV_MAX_KERNEL = 8;  // ops::kMaxConvKernel
float conv_taps(const float w[CONV_MAX_KERNEL], const float window[CONV_MAX_KERNEL], float x, uint history) {
  float acc = w[history] * x;  // the last tap multiplies the current token
  for (uint j = 0; j < history; ++j) acc = fma(w[j], window[j], acc);
  return silu(acc);
}
