// Each subcommand registers itself on the CLI11 app; its callback does the work.
#pragma once

#include <CLI/CLI.hpp>

namespace q3n::cli {

void add_devices_command(CLI::App& app);
void add_info_command(CLI::App& app);
void add_tokenize_command(CLI::App& app);
void add_run_command(CLI::App& app);
void add_eval_command(CLI::App& app);
void add_graph_command(CLI::App& app);
void add_bench_command(CLI::App& app);
void add_batch_command(CLI::App& app);

// What main() returns after a command that ran without an error (0 unless the command sets it).
int& exit_status();

}  // namespace q3n::cli
