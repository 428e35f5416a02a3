// `q3n info -m DIR`: the parsed config, layer pattern, parameter count, bytes and memory needed.
#include <cstdio>
#include <memory>
#include <string>

#include "cli/commands.h"
#include "cli/model_session.h"
#include "cli/model_summary.h"
#include "cli/progress.h"
#include "graph/state.h"
#include "loader/config.h"
#include "loader/safetensors.h"
#include "loader/tensor_schema.h"
#include "runtime/error.h"
#include "runtime/memory.h"

namespace q3n::cli {

void add_info_command(CLI::App& app) {
  struct Options {
    std::string model;
    int context = 4096;
    std::string kv = ModelOptions{}.kv;
    bool verify = false;
  };
  auto o = std::make_shared<Options>();
  auto* cmd = app.add_subcommand("info", "Describe a checkpoint: config, layers, parameters, memory");
  cmd->add_option("-m,--model", o->model, "Checkpoint folder (config.json, *.safetensors, tokenizer.json)")->required();
  cmd->add_option("--ctx", o->context, "Context length for the memory estimate")->check(CLI::PositiveNumber);
  cmd->add_option("--kv", o->kv, "KV-cache storage for the memory estimate: f32, f16 or bf16 (run's default: f16)")
      ->check(CLI::IsMember({"f32", "f16", "bf16"}));
  cmd->add_flag("--verify", o->verify, "Also read every tensor and count NaN/Inf values");
  cmd->callback([o] {
    const ModelConfig config = load_config(o->model);
    const Checkpoint checkpoint(o->model);
    validate_checkpoint(checkpoint, config);
    const ModelSummary summary = summarize(config, checkpoint);
    std::printf("%s", describe_model(config, summary).c_str());
    // State sizes from the graph that allocates them (one sequence; capacity 0 = no KV cache).
    const uint32_t context = static_cast<uint32_t>(o->context);
    const ops::KvType kv_type = ops::parse_kv_type(o->kv);
    const uint64_t recurrent = graph::SequenceState::planned_bytes(config, 1, 0, kv_type);
    const uint64_t kv = graph::SequenceState::planned_bytes(config, 1, context, kv_type) - recurrent;
    std::printf("KV cache (%s): %s per token (%d attention layers)\n", ops::kv_type_name(kv_type),
                format_bytes(graph::SequenceState::kv_bytes_per_token(config, kv_type)).c_str(),
                config.count_layers(LayerType::FullAttention));
    std::printf(
        "memory to run one sequence of %u tokens: weights %s + recurrent state %s + KV cache %s = %s (plus "
        "activations)\n",
        context, format_bytes(summary.weight_bytes).c_str(), format_bytes(recurrent).c_str(), format_bytes(kv).c_str(),
        format_bytes(summary.weight_bytes + recurrent + kv).c_str());
    if (config.max_position_embeddings > 0 && uint32_t(config.max_position_embeddings) != context) {
      const uint32_t full = uint32_t(config.max_position_embeddings);
      const uint64_t full_kv = graph::SequenceState::planned_bytes(config, 1, full, kv_type) - recurrent;
      std::printf("at the model's full context (%u tokens): KV cache %s, %s in all\n", full,
                  format_bytes(full_kv).c_str(), format_bytes(summary.weight_bytes + recurrent + full_kv).c_str());
    }
    if (o->verify) {
      ProgressBar bar("verifying", checkpoint.total_bytes());
      const TensorScan scan = scan_tensors(checkpoint, [&bar](uint64_t bytes) { bar.advance(bytes); });
      std::printf("verified %llu tensors, %llu values: %llu NaN/Inf%s%s\n", (unsigned long long)scan.tensors,
                  (unsigned long long)scan.values, (unsigned long long)scan.non_finite,
                  scan.first_non_finite.empty() ? "" : ", first in ", scan.first_non_finite.c_str());
      if (scan.non_finite)
        throw Error("the checkpoint holds non-finite weights (first in " + scan.first_non_finite + ")");
    }
  });
}

}  // namespace q3n::cli
