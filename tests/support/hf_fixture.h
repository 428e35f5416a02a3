// The HF transformers reference fixtures under tests/data/fixtures (tools/make_fixtures.py):
// a random-weight checkpoint with HF's fp32 logits and greedy ids, read for the model tests.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace q3n::test {

struct HfFixture {
  std::filesystem::path dir;
  std::vector<int32_t> prompt, greedy;
  std::vector<double> margins;   // HF's top-2 logit margin at each greedy step
  size_t tokens = 0, vocab = 0;  // teacher-forced rows: prompt + greedy
  // Teacher-forced logits [rows.size(), vocab] at the positions in `rows` (every position unless
  // the fixture stores a subset: long prompts).
  std::vector<size_t> rows;
  std::vector<float> logits;
  // RoPE far from 0: HF's logits of the prompt's first `offset_tokens` tokens at positions
  // offset .. offset + offset_tokens - 1, for each offset (offset_logits()).
  std::vector<uint32_t> rope_offsets;
  uint32_t offset_tokens = 0;

  std::vector<int32_t> all_ids() const;
  std::vector<float> offset_logits(uint32_t offset) const;  // [offset_tokens, vocab]
  // Keeps the stored rows of logits over every position [tokens, vocab].
  std::vector<float> stored_rows(const std::vector<float>& all) const;
};

// Throws an Error naming the file when a fixture is missing or truncated.
HfFixture load_hf_fixture(const std::string& name);

// sqrt(sum (got - want)^2 / sum want^2).
double relative_rms(const std::vector<float>& got, const std::vector<float>& want);

size_t argmax(const float* row, size_t n);

// Rows of `want` [rows, vocab] whose top-2 margin exceeds `margin` and whose argmax `got`
// disagrees with, as "row r" strings; `clear` counts the rows with such a margin.
std::vector<std::string> argmax_mismatches(const std::vector<float>& got, const std::vector<float>& want, size_t vocab,
                                           double margin, size_t& clear);

}  // namespace q3n::test
