// `q3n batch -m DIR --input IN.jsonl --output OUT.jsonl [...]`: offline batch inference with
// continuous batching (cli/batch_job.h). Flags give every request's defaults; a request's own
// fields override them.
#include "cli/batch_job.h"
#include "cli/commands.h"
#include "runtime/error.h"

namespace q3n::cli {

void add_batch_command(CLI::App& app) {
  struct Options {
    ModelOptions model;
    BatchJobOptions job;
  };
  auto o = std::make_shared<Options>();
  auto* cmd = app.add_subcommand("batch", "Run a JSONL file of requests with continuous batching (resumable)");
  add_model_options(*cmd, o->model);
  BatchJobOptions& j = o->job;
  cmd->add_option("--input", j.input, "Requests, one JSON object per line (README: Batch jobs)")->required();
  cmd->add_option("--output", j.output,
                  "Results, one JSON object per request; appended to, and a rerun skips what it holds")
      ->required();
  cmd->add_option("--max-batch", j.max_batch, "Sequences in flight at once (lowered to what fits in memory)")
      ->check(CLI::Range(1u, 4096u));
  cmd->add_option("-n,--tokens", j.max_tokens, "Default max_tokens of a request")->check(CLI::NonNegativeNumber);
  cmd->add_option("--prefill-budget", j.prefill_budget, "Prompt tokens per scheduler iteration (default: --chunk)");
  add_sampling_options(*cmd, j.sampling);  // each request's defaults
  cmd->add_option("--seed", j.seed, "Default seed (default: derived from each request's custom_id)");
  cmd->add_flag("--chat", j.chat, "Wrap plain \"prompt\" strings in the model's chat template");
  cmd->add_option("--system", j.system, "System message (with --chat)");
  cmd->add_flag("--ids", j.ids, "Add the generated token ids to each result (\"token_ids\")");
  auto* mtp =
      cmd->add_flag("--mtp", o->model.mtp,
                    "Speculative decoding with the checkpoint's MTP head (same results, fewer steps of the model)");
  cmd->add_option("--draft", j.draft, "Draft tokens per step with --mtp")->check(CLI::Range(1, 7))->needs(mtp);
  cmd->callback([o] {
    const BatchJobOptions& j = o->job;
    if (!j.system.empty() && !j.chat) throw Error("--system needs --chat");
    check_sampling_flags(j.sampling);
    exit_status() = run_batch_job(o->model, j);
  });
}

}  // namespace q3n::cli
