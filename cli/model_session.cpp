#include "cli/model_session.h"

#include <algorithm>
#include <cstdio>
#include <vector>

#include "loader/tensor_schema.h"
#include "runtime/error.h"

namespace q3n::cli {

void add_model_options(CLI::App& cmd, ModelOptions& o) {
  cmd.add_option("-m,--model", o.model, "Checkpoint folder (config.json, *.safetensors, tokenizer.json)")->required();
  cmd.add_option("--device", o.device, "Device index or name substring (default: Q3N_DEVICE or the best GPU)");
  cmd.add_option("--ctx", o.context, "Context length: KV-cache positions per sequence")->check(CLI::PositiveNumber);
  cmd.add_option("--chunk", o.chunk, "Prompt tokens per prefill step")->check(CLI::PositiveNumber);
  cmd.add_flag("--profile", o.profile, "Print GPU time per operator kind at the end");
}

ModelSession open_model(const ModelOptions& o, uint32_t context, uint32_t slots) {
  ModelSession s;
  s.config = load_config(o.model);
  s.checkpoint = std::make_unique<Checkpoint>(o.model);
  validate_checkpoint(*s.checkpoint, s.config);
  if (s.config.max_position_embeddings > 0 && context > uint32_t(s.config.max_position_embeddings))
    throw Error("--ctx " + std::to_string(context) + " exceeds the model's max_position_embeddings (" +
                std::to_string(s.config.max_position_embeddings) + ")");
  RuntimeOptions ro;
  ro.device = o.device;
  s.runtime = std::make_unique<Runtime>(ro);
  graph::EngineOptions eo;
  eo.context = context;
  eo.slots = slots;
  eo.prefill_chunk = o.chunk;
  eo.profile = o.profile;
  s.engine = std::make_unique<graph::Engine>(*s.runtime, s.config, *s.checkpoint, eo);
  return s;
}

std::string format_profile(const std::map<std::string, double>& seconds) {
  std::vector<std::pair<std::string, double>> rows(seconds.begin(), seconds.end());
  std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
  double total = 0;
  for (const auto& r : rows) total += r.second;
  std::string out = "GPU time by operator:\n";
  char line[160];
  for (const auto& [kind, t] : rows) {
    std::snprintf(line, sizeof line, "  %-14s %10.3f ms  %5.1f%%\n", kind.c_str(), t * 1e3, total > 0 ? 100 * t / total : 0.0);
    out += line;
  }
  std::snprintf(line, sizeof line, "  %-14s %10.3f ms\n", "total", total * 1e3);
  return out + line;
}

}  // namespace q3n::cli
