// `q3n info -m DIR`: the parsed config, layer pattern, parameter count, bytes and memory needed.
#include <cstdio>
#include <memory>
#include <string>

#include "cli/commands.h"
#include "loader/config.h"
#include "loader/model_summary.h"
#include "loader/safetensors.h"
#include "loader/tensor_schema.h"

namespace q3n::cli {

void add_info_command(CLI::App& app) {
  struct Options {
    std::string model;
    int context = 4096;
  };
  auto o = std::make_shared<Options>();
  auto* cmd = app.add_subcommand("info", "Describe a checkpoint: config, layers, parameters, memory");
  cmd->add_option("-m,--model", o->model, "Checkpoint folder (config.json, *.safetensors, tokenizer.json)")->required();
  cmd->add_option("--ctx", o->context, "Context length for the memory estimate")->check(CLI::PositiveNumber);
  cmd->callback([o] {
    const ModelConfig config = load_config(o->model);
    const Checkpoint checkpoint(o->model);
    validate_checkpoint(checkpoint, config);
    std::printf("%s", describe_model(config, summarize(config, checkpoint), o->context).c_str());
  });
}

}  // namespace q3n::cli
