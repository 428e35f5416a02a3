// The causal conv's sum for one channel and token (spec §3.3), in one fixed order with explicit
// fused multiply-adds, so causal_conv1d.comp and the GEMV that applies the conv as it writes its
// output (linear_gemv.comp, CONV_KERNEL) compute the same bits: a decode row's conv does not depend
// on which of them ran (speculative verification and mixed steps take the conv's own kernel).
//   silu( last * x + sum_{j < history} taps[j] * window[j] ),  window = the previous inputs, oldest first
// Every loop over the taps is unrolled to CONV_MAX_KERNEL with constant indices, so the arrays stay
// in registers (indexed by a loop bound read from memory, they went to local memory: prefill's
// conv took 5x longer on the H200).
#extension GL_EXT_control_flow_attributes : require

const uint CONV_MAX_KERNEL = 8;  // ops::kMaxConvKernel
const uint CONV_MAX_HISTORY = CONV_MAX_KERNEL - 1;
float conv_taps(const float taps[CONV_MAX_HISTORY], float last, const float window[CONV_MAX_HISTORY], float x,
                uint history) {
  float acc = last * x;  // the last tap multiplies the current token
  [[unroll]] for (uint j = 0; j < CONV_MAX_HISTORY; ++j)
    if (j < history) acc = fma(taps[j], window[j], acc);
  return silu(acc);
}

// window moved on by one token: x becomes its newest entry (history > 0).
void conv_shift(inout float window[CONV_MAX_HISTORY], float x, uint history) {
  [[unroll]] for (uint j = 0; j + 1 < CONV_MAX_HISTORY; ++j)
    if (j + 1 < history) window[j] = window[j + 1];
  [[unroll]] for (uint j = 0; j < CONV_MAX_HISTORY; ++j)
    if (j + 1 == history) window[j] = x;
}
