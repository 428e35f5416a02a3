// `q3n graph -m DIR [--phase prefill|decode] [--tokens T] [--batch B] [--dot]`: the compiled
// graph of one step shape: nodes and tensors, the memory plan, the barrier count; or DOT.
#include <cstdio>
#include <memory>

#include "cli/commands.h"
#include "cli/model_session.h"
#include "runtime/error.h"

namespace q3n::cli {

void add_graph_command(CLI::App& app) {
  struct Options {
    ModelOptions model;
    std::string phase = "decode";
    uint32_t tokens = 0, batch = 1;
    bool dot = false;
  };
  auto o = std::make_shared<Options>();
  auto* cmd = app.add_subcommand("graph", "Print the dataflow graph of a prefill chunk or a decode step");
  add_model_options(*cmd, o->model);
  cmd->add_option("--phase", o->phase, "prefill or decode")->check(CLI::IsMember({"prefill", "decode"}));
  cmd->add_option("--tokens", o->tokens, "Prefill chunk length (default: --chunk)");
  cmd->add_option("--batch", o->batch, "Sequences per decode step")->check(CLI::PositiveNumber);
  cmd->add_flag("--dot", o->dot, "Print Graphviz DOT instead");
  cmd->callback([o] {
    const bool prefill = o->phase == "prefill";
    const uint32_t batch = prefill ? 1 : o->batch;
    ModelSession session = open_model(o->model, o->model.context, batch);
    graph::Engine& engine = *session.engine;
    const uint32_t tokens = prefill ? (o->tokens ? o->tokens : engine.prefill_chunk()) : 1;
    // A pipeline split (--devices) has one program per device.
    for (size_t d = 0; d < engine.device_count(); ++d) {
      graph::Program& program =
          engine.program({batch, tokens, prefill ? graph::Head::LastLogits : graph::Head::Sample}, d);
      if (engine.device_count() > 1 && !o->dot)
        std::printf("device %zu (%s): %s\n", d, engine.runtime(d).device.info().name.c_str(),
                    engine.layers(d).describe(engine.config()).c_str());
      std::printf("%s", o->dot ? graph::to_dot(program.graph()).c_str() : graph::describe(program).c_str());
    }
    if (!o->dot)
      std::printf("state: %s for %u sequence(s) of %u positions\n", format_bytes(engine.state_bytes()).c_str(),
                  engine.state().slots(), engine.state().capacity());
  });
}

}  // namespace q3n::cli
