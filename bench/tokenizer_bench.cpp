// Tokenizer encode throughput (MB/s) on the real Qwen3 vocabulary, with a mixed multilingual
// text built from the exactness corpus repeated to ~4 MB (a realistic mix of scripts, code and
// whitespace), and on plain English prose. Run: build/bench/q3n_tokenizer_bench
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "loader/tokenizer.h"

namespace {

const std::filesystem::path kSource = Q3N_SOURCE_DIR;

const q3n::Tokenizer* tokenizer() {
  static const q3n::Tokenizer* tok = [] {
    const char* env = std::getenv("Q3N_QWEN3_TOKENIZER");
    const std::filesystem::path path = env ? env : kSource / ".cache/qwen3/tokenizer.json";
    return std::filesystem::exists(path) ? new q3n::Tokenizer(path) : nullptr;
  }();
  return tok;
}

std::string mixed_text(size_t bytes) {
  std::ifstream in(kSource / "tests/data/tokenizer_cases.json");
  const auto cases = nlohmann::json::parse(in)["cases"];
  std::string unit;
  for (const auto& c : cases) unit += c["text"].get<std::string>() + "\n";
  std::string text;
  while (text.size() < bytes) text += unit;
  return text;
}

std::string english_text(size_t bytes) {
  const std::string unit =
      "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of "
      "foolishness, it was the epoch of belief, it was the epoch of incredulity, it was the season of Light, "
      "it was the season of Darkness, it was the spring of hope, it was the winter of despair. ";
  std::string text;
  for (int i = 0; text.size() < bytes; ++i) text += unit + std::to_string(i) + "\n";
  return text;
}

// The tokenizer's piece cache stays warm across iterations, as it does over a long document.
void encode(benchmark::State& state, const std::string& text) {
  if (!tokenizer()) {
    state.SkipWithError("Qwen3 tokenizer.json not found: run scripts/fetch_tokenizer.sh");
    return;
  }
  size_t tokens = 0;
  for (auto _ : state) {
    const auto ids = tokenizer()->encode(text);
    tokens = ids.size();
    benchmark::DoNotOptimize(ids.data());
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(text.size()));
  state.counters["tokens"] = double(tokens);
  state.counters["bytes_per_token"] = double(text.size()) / double(tokens);
}

void BM_EncodeMixed4MB(benchmark::State& state) {
  static const std::string text = mixed_text(4 << 20);
  encode(state, text);
}
void BM_EncodeEnglish4MB(benchmark::State& state) {
  static const std::string text = english_text(4 << 20);
  encode(state, text);
}

BENCHMARK(BM_EncodeMixed4MB)->Unit(benchmark::kMillisecond)->MinTime(2.0);
BENCHMARK(BM_EncodeEnglish4MB)->Unit(benchmark::kMillisecond)->MinTime(2.0);

void BM_LoadTokenizer(benchmark::State& state) {
  const std::filesystem::path path = kSource / ".cache/qwen3/tokenizer.json";
  if (!std::filesystem::exists(path)) {
    state.SkipWithError("Qwen3 tokenizer.json not found");
    return;
  }
  for (auto _ : state) {
    q3n::Tokenizer t(path);
    benchmark::DoNotOptimize(t.size());
  }
}
BENCHMARK(BM_LoadTokenizer)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
