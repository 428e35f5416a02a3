// The shipped demo model (assets/models/kjv-demo, trained by tools/train_demo.py) against the
// numbers transformers computed when it was exported: the held-out text tokenizes to the same ids,
// and q3n's perplexity on it agrees with transformers' fp32 perplexity to 1e-3 relative.
#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>

#include "graph/engine.h"
#include "graph/logit_metrics.h"
#include "loader/tensor_schema.h"
#include "loader/tokenizer.h"
#include "runtime/error.h"
#include "tests/support/gpu_test.h"

namespace q3n::test {
namespace {

const std::filesystem::path kDemo = std::filesystem::path(Q3N_SOURCE_DIR) / "assets/models/kjv-demo";

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("missing " + path.string());
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

using DemoModelTest = GpuTest;

TEST_F(DemoModelTest, HeldOutPerplexityMatchesTransformers) {
  const auto reference = nlohmann::json::parse(read_file(kDemo / "heldout.json"));
  const auto hf_ids = reference.at("token_ids").get<std::vector<int32_t>>();
  const double hf_perplexity = reference.at("perplexity");

  const auto ids = Tokenizer(kDemo / "tokenizer.json").encode(read_file(kDemo / "heldout.txt"));
  ASSERT_EQ(ids, hf_ids) << "q3n's tokenizer disagrees with HF tokenizers on heldout.txt";

  const ModelConfig config = load_config(kDemo);
  const Checkpoint checkpoint(kDemo);
  ASSERT_TRUE(has_mtp_tensors(checkpoint));
  EXPECT_NO_THROW(validate_checkpoint(checkpoint, config));  // mtp.* names and shapes (spec §2.7)

  graph::EngineOptions options;
  options.context = uint32_t(ids.size());
  graph::Engine engine(rt(), config, checkpoint, options);
  const auto logits = engine.feed_logits(0, ids, true);
  const double perplexity = std::exp(graph::mean_next_token_nll(logits, ids, config.vocab_size));
  // Both sides run fp32 from the same BF16 weights; only summation order differs (~1e-7 seen).
  EXPECT_NEAR(perplexity / hf_perplexity, 1.0, 1e-3) << "q3n " << perplexity << ", transformers " << hf_perplexity;
}

}  // namespace
}  // namespace q3n::test
