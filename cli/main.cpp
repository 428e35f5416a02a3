// q3n command line: parses arguments and hands each subcommand to its own file (cli/cmd_*.cpp).
#include <CLI/CLI.hpp>

#include <cstdio>
#include <exception>

#include "cli/commands.h"
#include "runtime/error.h"

int main(int argc, char** argv) {
  CLI::App app{"q3n: Qwen3-Next inference on any Vulkan GPU"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "q3n 0.1.0");
  q3n::cli::add_devices_command(app);
  q3n::cli::add_info_command(app);
  q3n::cli::add_tokenize_command(app);
  q3n::cli::add_run_command(app);
  q3n::cli::add_eval_command(app);
  q3n::cli::add_graph_command(app);
  q3n::cli::add_bench_command(app);
  q3n::cli::add_batch_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const q3n::Error& e) {
    std::fprintf(stderr, "q3n: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "q3n: internal error: %s\n", e.what());
    return 2;
  }
  return q3n::cli::exit_status();
}

int& q3n::cli::exit_status() {
  static int status = 0;
  return status;
}
