// `q3n batch`: reads requests from a JSONL file, runs them through the continuous-batching
// scheduler (graph/batch_scheduler.h) and appends one result or error record per request to the
// output file (loader/batch_file.h). A rerun of the same command skips what the output holds.
#pragma once

#include <optional>
#include <string>

#include "cli/model_session.h"

namespace q3n::cli {

struct BatchJobOptions {
  std::string input, output;
  uint32_t max_batch = 32;       // sequences in flight
  uint32_t max_tokens = 128;     // default per request
  uint32_t prefill_budget = 0;   // prompt tokens per iteration; 0: --chunk
  SamplingFlags sampling;        // defaults of every request
  std::optional<uint64_t> seed;  // default seed; otherwise each request's comes from its custom_id
  bool chat = false;             // wrap plain "prompt" strings in the chat template
  std::string system;            // system message for --chat
  bool ids = false;              // add "token_ids" to each result
  uint32_t draft = 1;            // drafts per speculative step (with ModelOptions::mtp)
  double sync_seconds = 2.0;     // fsync the output at least this often
};

// Exit status: 0 when every request of the input has a result, 3 when some ended in an error
// record, 130 when interrupted (the output stays valid; rerun to finish).
int run_batch_job(const ModelOptions& model, const BatchJobOptions& options);

}  // namespace q3n::cli
