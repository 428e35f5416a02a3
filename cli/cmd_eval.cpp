// `q3n eval -m DIR (--text-file F | --token-ids F) [--logits-out F.npy] [--kl-base F.npy]`: runs
// the sequence teacher-forced and prints its perplexity; optionally writes every position's logits
// or compares them with reference logits (quantisation accuracy).
#include <cmath>
#include <cstdio>
#include <memory>

#include "cli/commands.h"
#include "cli/input_files.h"
#include "cli/model_session.h"
#include "cli/stopwatch.h"
#include "graph/logit_metrics.h"
#include "loader/tokenizer.h"
#include "runtime/error.h"

namespace q3n::cli {

void add_eval_command(CLI::App& app) {
  struct Options {
    ModelOptions model;
    std::string text_file, token_ids, logits_out, kl_base;
  };
  auto o = std::make_shared<Options>();
  auto* cmd = app.add_subcommand("eval", "Perplexity of a text, teacher-forced; optionally dump logits");
  add_model_options(*cmd, o->model);
  auto* tf = cmd->add_option("--text-file", o->text_file, "Text to evaluate");
  auto* ti = cmd->add_option("--token-ids", o->token_ids, "Whitespace-separated token ids to evaluate");
  tf->excludes(ti);
  cmd->add_option("--logits-out", o->logits_out, "Write float32 logits [T, vocab] as a NumPy .npy file");
  cmd->add_option("--kl-base", o->kl_base,
                  "Compare with reference logits (.npy [T, vocab], e.g. --logits-out of a bf16 run): "
                  "mean KL divergence and top-1 agreement")
      ->check(CLI::ExistingFile);
  cmd->callback([o] {
    if (o->text_file.empty() && o->token_ids.empty())
      throw Error("nothing to evaluate: give --text-file or --token-ids");
    std::vector<TokenId> ids;
    if (!o->model.synthetic.empty() && o->token_ids.empty())
      throw Error("--synthetic has no tokenizer: give --token-ids F");
    if (!o->token_ids.empty())
      ids = parse_token_ids(read_text_file(o->token_ids));
    else
      ids = Tokenizer(std::filesystem::path(o->model.model) / "tokenizer.json").encode(read_text_file(o->text_file));
    if (ids.empty()) throw Error("the input holds no tokens");
    NpyMatrix base;  // read before the model loads, so a wrong file fails fast
    if (!o->kl_base.empty()) {
      base = read_npy(o->kl_base);
      if (base.rows != ids.size())
        throw Error(o->kl_base + " holds logits of " + std::to_string(base.rows) + " tokens but the input has " +
                    std::to_string(ids.size()) + ": write it with --logits-out on the same input");
    }
    const uint32_t context = o->model.context ? o->model.context : uint32_t(ids.size());
    ModelSession session = open_model(o->model, context);
    const auto start = Clock::now();
    const std::vector<float> logits = session.engine->feed_logits(0, ids, true);
    const double seconds = seconds_since(start);
    const size_t vocab = session.config.vocab_size;

    if (ids.size() > 1) {
      const double nll = graph::mean_next_token_nll(logits, ids, vocab);
      std::printf("perplexity %.6f over %zu predicted tokens (mean NLL %.6f)\n", std::exp(nll), ids.size() - 1, nll);
    } else {
      std::printf("perplexity undefined: one token predicts nothing\n");
    }
    std::fprintf(stderr, "[q3n] %zu tokens in %.3f s (%.1f tok/s)\n", ids.size(), seconds, ids.size() / seconds);
    if (!o->kl_base.empty()) {
      if (base.cols != vocab)
        throw Error(o->kl_base + " has a vocabulary of " + std::to_string(base.cols) + ", this model " +
                    std::to_string(vocab));
      const graph::Divergence d = graph::divergence(base.values, logits, vocab);
      std::printf("KL(base || this): mean %.6g nats, max %.6g over %zu positions; top-1 agreement %.2f%%\n", d.mean_kl,
                  d.max_kl, d.rows, 100.0 * d.top1_agreement);
    }
    if (!o->logits_out.empty()) write_npy(o->logits_out, logits, ids.size(), vocab);
    if (o->model.profile) std::fprintf(stderr, "%s", format_profile(session.engine->take_profile()).c_str());
  });
}

}  // namespace q3n::cli
