// Quality measures over the logits an Engine returns: teacher-forced negative log-likelihood
// (perplexity) and the divergence of one model's distributions from another's (quantisation
// accuracy). Everything is accumulated in double.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace q3n::graph {

// Mean over t of -log softmax(logits[t])[ids[t+1]]; logits is [ids.size(), vocab].
// Throws if fewer than two tokens are given.
double mean_next_token_nll(const std::vector<float>& logits, const std::vector<int32_t>& ids, size_t vocab);

struct Divergence {
  double mean_kl = 0;  // mean over rows of KL(base || test), in nats
  double max_kl = 0;
  double top1_agreement = 0;  // fraction of rows whose argmax agrees
  size_t rows = 0;
};
// Compares `test` with `base`, both [rows, vocab].
Divergence divergence(const std::vector<float>& base, const std::vector<float>& test, size_t vocab);

}  // namespace q3n::graph
