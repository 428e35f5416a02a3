#include "tests/support/hf_fixture.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <functional>

#include "runtime/error.h"

namespace q3n::test {
namespace {

std::vector<float> read_floats(const std::filesystem::path& path, size_t count) {
  std::vector<float> v(count);
  std::ifstream raw(path, std::ios::binary);
  raw.read(reinterpret_cast<char*>(v.data()), std::streamsize(count * 4));
  if (!raw) throw Error("missing or truncated " + path.string() + " (tools/make_fixtures.py writes it)");
  return v;
}

}  // namespace

std::vector<int32_t> HfFixture::all_ids() const {
  std::vector<int32_t> ids = prompt;
  ids.insert(ids.end(), greedy.begin(), greedy.end());
  return ids;
}

std::vector<float> HfFixture::offset_logits(uint32_t offset) const {
  return read_floats(dir / ("offset_logits_" + std::to_string(offset) + ".f32"), size_t(offset_tokens) * vocab);
}

std::vector<float> HfFixture::stored_rows(const std::vector<float>& all) const {
  if (all.size() != tokens * vocab) throw Error("internal: logits of every position expected");
  std::vector<float> out;
  out.reserve(rows.size() * vocab);
  for (size_t r : rows) out.insert(out.end(), all.begin() + r * vocab, all.begin() + (r + 1) * vocab);
  return out;
}

HfFixture load_hf_fixture(const std::string& name) {
  HfFixture f;
  f.dir = std::filesystem::path(Q3N_SOURCE_DIR) / "tests/data/fixtures" / name;
  std::ifstream in(f.dir / "reference.json");
  if (!in) throw Error("missing fixture " + f.dir.string() + " (tools/make_fixtures.py writes it)");
  const auto j = nlohmann::json::parse(in);
  f.prompt = j.at("prompt_ids").get<std::vector<int32_t>>();
  f.greedy = j.at("greedy_ids").get<std::vector<int32_t>>();
  f.margins = j.at("greedy_margins").get<std::vector<double>>();
  f.tokens = j.at("logits_shape")[0];
  f.vocab = j.at("logits_shape")[1];
  if (j.contains("logits_rows")) {
    f.rows = j.at("logits_rows").get<std::vector<size_t>>();
  } else {
    f.rows.resize(f.tokens);
    for (size_t r = 0; r < f.tokens; ++r) f.rows[r] = r;
  }
  f.logits = read_floats(f.dir / "logits.f32", f.rows.size() * f.vocab);
  if (j.contains("rope_offsets")) {
    f.rope_offsets = j.at("rope_offsets").get<std::vector<uint32_t>>();
    f.offset_tokens = j.at("offset_tokens");
  }
  return f;
}

double relative_rms(const std::vector<float>& got, const std::vector<float>& want) {
  if (got.size() != want.size()) throw Error("internal: relative_rms of different sizes");
  double num = 0, den = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    num += (double(got[i]) - want[i]) * (double(got[i]) - want[i]);
    den += double(want[i]) * want[i];
  }
  return std::sqrt(num / den);
}

size_t argmax(const float* row, size_t n) { return std::max_element(row, row + n) - row; }

std::vector<std::string> argmax_mismatches(const std::vector<float>& got, const std::vector<float>& want, size_t vocab,
                                           double margin, size_t& clear) {
  std::vector<std::string> out;
  clear = 0;
  for (size_t r = 0; r * vocab < want.size(); ++r) {
    const float* w = &want[r * vocab];
    std::vector<float> sorted(w, w + vocab);
    std::partial_sort(sorted.begin(), sorted.begin() + 2, sorted.end(), std::greater<>());
    if (sorted[0] - sorted[1] <= margin) continue;
    ++clear;
    if (argmax(&got[r * vocab], vocab) != argmax(w, vocab)) out.push_back("row " + std::to_string(r));
  }
  return out;
}

}  // namespace q3n::test
