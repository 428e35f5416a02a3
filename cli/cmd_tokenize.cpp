// `q3n tokenize -m DIR (--text T | --file F) [--decode]`: ids separated by spaces, or back to text.
#include <cstdio>
#include <fstream>
#include <iterator>
#include <memory>
#include <sstream>
#include <string>

#include "cli/commands.h"
#include "cli/input_files.h"
#include "loader/tokenizer.h"
#include "runtime/error.h"

namespace q3n::cli {

void add_tokenize_command(CLI::App& app) {
  struct Options {
    std::string model, text, file;
    bool decode = false;
  };
  auto o = std::make_shared<Options>();
  auto* cmd = app.add_subcommand("tokenize", "Encode text to token ids, or decode ids to text");
  cmd->add_option("-m,--model", o->model, "Checkpoint folder holding tokenizer.json")->required();
  auto* text = cmd->add_option("--text", o->text, "Text (or, with --decode, ids)");
  auto* file = cmd->add_option("--file", o->file, "File with the text (or ids)");
  text->excludes(file);
  cmd->add_flag("--decode", o->decode, "Turn ids back into text");
  cmd->callback([o, text, file] {
    if (!*text && !*file) throw Error("tokenize needs --text or --file");
    const std::string input = *file ? read_text_file(o->file) : o->text;
    const Tokenizer tokenizer(std::filesystem::path(o->model) / "tokenizer.json");
    if (o->decode) {
      const std::string out = tokenizer.decode(parse_token_ids(input));
      std::fwrite(out.data(), 1, out.size(), stdout);
      std::printf("\n");
      return;
    }
    const auto ids = tokenizer.encode(input);
    for (size_t i = 0; i < ids.size(); ++i) std::printf(i ? " %d" : "%d", ids[i]);
    std::printf("\n");
  });
}

}  // namespace q3n::cli
