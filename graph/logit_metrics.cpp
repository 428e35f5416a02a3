#include "graph/logit_metrics.h"

#include <algorithm>
#include <cmath>

#include "runtime/error.h"

namespace q3n::graph {
namespace {

// log(sum(exp(row))) with the maximum taken out first.
double log_sum_exp(const float* row, size_t n) {
  double m = row[0];
  for (size_t i = 1; i < n; ++i) m = std::max(m, double(row[i]));
  double sum = 0;
  for (size_t i = 0; i < n; ++i) sum += std::exp(double(row[i]) - m);
  return m + std::log(sum);
}

}  // namespace

double mean_next_token_nll(const std::vector<float>& logits, const std::vector<int32_t>& ids, size_t vocab) {
  if (ids.size() < 2) throw Error("perplexity needs at least two tokens: one token predicts nothing");
  if (logits.size() < ids.size() * vocab) throw Error("mean_next_token_nll: fewer logits rows than tokens");
  double nll = 0;
  for (size_t t = 0; t + 1 < ids.size(); ++t) {
    const float* row = &logits[t * vocab];
    nll += log_sum_exp(row, vocab) - row[ids[t + 1]];
  }
  return nll / double(ids.size() - 1);
}

Divergence divergence(const std::vector<float>& base, const std::vector<float>& test, size_t vocab) {
  if (base.size() != test.size() || vocab == 0 || base.size() % vocab)
    throw Error("divergence: the two logit arrays differ in shape (" + std::to_string(base.size()) + " vs " +
                std::to_string(test.size()) + " values, vocabulary " + std::to_string(vocab) + ")");
  Divergence d;
  d.rows = base.size() / vocab;
  size_t agree = 0;
  for (size_t r = 0; r < d.rows; ++r) {
    const float* p = &base[r * vocab];
    const float* q = &test[r * vocab];
    const double lse_p = log_sum_exp(p, vocab), lse_q = log_sum_exp(q, vocab);
    double kl = 0;
    for (size_t i = 0; i < vocab; ++i) {
      const double log_p = p[i] - lse_p, log_q = q[i] - lse_q;
      kl += std::exp(log_p) * (log_p - log_q);
    }
    kl = std::max(kl, 0.0);  // rounding can leave -1e-17 for identical rows
    d.mean_kl += kl;
    d.max_kl = std::max(d.max_kl, kl);
    agree += std::max_element(p, p + vocab) - p == std::max_element(q, q + vocab) - q;
  }
  d.mean_kl /= double(d.rows);
  d.top1_agreement = double(agree) / double(d.rows);
  return d;
}

}  // namespace q3n::graph
