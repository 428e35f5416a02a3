// `q3n info -m DIR`: the parsed config, layer pattern, parameter count, bytes and memory needed.
#include <cstdio>
#include <memory>
#include <string>

#include "cli/commands.h"
#include "loader/config.h"
#include "loader/model_summary.h"
#include "loader/safetensors.h"
#include "loader/tensor_schema.h"
#include "runtime/error.h"

namespace q3n::cli {

void add_info_command(CLI::App& app) {
  struct Options {
    std::string model;
    int context = 4096;
    bool verify = false;
  };
  auto o = std::make_shared<Options>();
  auto* cmd = app.add_subcommand("info", "Describe a checkpoint: config, layers, parameters, memory");
  cmd->add_option("-m,--model", o->model, "Checkpoint folder (config.json, *.safetensors, tokenizer.json)")->required();
  cmd->add_option("--ctx", o->context, "Context length for the memory estimate")->check(CLI::PositiveNumber);
  cmd->add_flag("--verify", o->verify, "Also read every tensor and count NaN/Inf values");
  cmd->callback([o] {
    const ModelConfig config = load_config(o->model);
    const Checkpoint checkpoint(o->model);
    validate_checkpoint(checkpoint, config);
    std::printf("%s", describe_model(config, summarize(config, checkpoint), o->context).c_str());
    if (o->verify) {
      const TensorScan scan = scan_tensors(checkpoint);
      std::printf("verified %llu tensors, %llu values: %llu NaN/Inf%s%s\n", (unsigned long long)scan.tensors,
                  (unsigned long long)scan.values, (unsigned long long)scan.non_finite,
                  scan.first_non_finite.empty() ? "" : ", first in ", scan.first_non_finite.c_str());
      if (scan.non_finite) throw Error("the checkpoint holds non-finite weights (first in " + scan.first_non_finite + ")");
    }
  });
}

}  // namespace q3n::cli
