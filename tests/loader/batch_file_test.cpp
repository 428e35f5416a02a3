// loader/batch_file: request lines in both shapes, field checks, the output file's crash
// recovery, and random bytes (a fuzz-style run: the reader must refuse, never crash or throw).
#include <gtest/gtest.h>

#include <fstream>
#include <random>

#include "loader/batch_file.h"
#include "runtime/error.h"
#include "tests/support/temp_dir.h"

namespace q3n {
namespace {

TEST(BatchFile, PlainLineWithEveryField) {
  const auto l = parse_batch_line(
      R"({"custom_id": "a1", "prompt": "hi", "max_tokens": 7, "temperature": 0.5, "top_p": 0.9, "top_k": 20,)"
      R"( "min_p": 0.05, "seed": 42, "stop": ["\n\n", "END"]})",
      3);
  ASSERT_TRUE(l.request) << l.error;
  const BatchRequest& r = *l.request;
  EXPECT_EQ(r.line, 3u);
  EXPECT_EQ(r.custom_id, "a1");
  EXPECT_EQ(r.prompt, "hi");
  EXPECT_EQ(r.max_tokens, 7u);
  EXPECT_EQ(r.temperature, 0.5f);
  EXPECT_EQ(r.top_p, 0.9f);
  EXPECT_EQ(r.top_k, 20u);
  EXPECT_EQ(r.min_p, 0.05f);
  EXPECT_EQ(r.seed, 42u);
  EXPECT_EQ(r.stop, (std::vector<std::string>{"\n\n", "END"}));
}

TEST(BatchFile, OpenAiLines) {
  const auto chat =
      parse_batch_line(R"({"custom_id": "c", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "m",)"
                       R"( "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],)"
                       R"( "max_completion_tokens": 5, "stop": "x"}})",
                       1);
  ASSERT_TRUE(chat.request) << chat.error;
  ASSERT_TRUE(chat.request->messages);
  EXPECT_EQ(chat.request->messages->size(), 2u);
  EXPECT_EQ(chat.request->max_tokens, 5u);
  EXPECT_EQ(chat.request->stop, std::vector<std::string>{"x"});
  const auto completion =
      parse_batch_line(R"({"custom_id": 17, "url": "/v1/completions", "body": {"prompt": "p"}})", 2);
  ASSERT_TRUE(completion.request) << completion.error;
  EXPECT_EQ(completion.request->custom_id, "17");
  EXPECT_FALSE(
      parse_batch_line(R"({"custom_id": "c", "url": "/v1/chat/completions", "body": {"prompt": "p"}})", 1).request);
  EXPECT_FALSE(
      parse_batch_line(R"({"custom_id": "c", "url": "/v1/completions", "method": "GET", "body": {"prompt": "p"}})", 1)
          .request);
}

TEST(BatchFile, RefusalsNameTheProblem) {
  const std::pair<const char*, const char*> cases[] = {
      {"{", "not valid JSON"},
      {R"({"custom_id": "", "prompt": "x"})", "empty"},
      {R"({"custom_id": "a", "prompt_ids": []})", "non-empty array"},
      {R"({"custom_id": "a", "prompt_ids": [1.5]})", "integer token ids"},
      {R"({"custom_id": "a", "prompt": "x", "max_tokens": 1.5})", "\"max_tokens\" must be an integer"},
      {R"({"custom_id": "a", "prompt": "x", "seed": "s"})", "\"seed\" must be an integer"},
      {R"({"custom_id": "a", "prompt": "x", "temperature": -1})", "\"temperature\" must be in"},
      {R"({"custom_id": "a", "prompt": "x", "stop": [""]})", "\"stop\" string is empty"},
      {R"({"custom_id": "a", "prompt": "x", "stream": true})", "stream"},
      {R"({"custom_id": "a", "prompt": "x", "logprobs": true})", "logprobs"},
      {R"({"custom_id": "a", "messages": [{"role": "user"}]})", "\"role\" and \"content\""},
  };
  for (const auto& [line, message] : cases) {
    const auto l = parse_batch_line(line, 1);
    EXPECT_FALSE(l.request) << line;
    EXPECT_NE(l.error.find(message), std::string::npos) << line << " -> " << l.error;
  }
  // Neutral values of unsupported fields are fine, and unknown fields are ignored.
  EXPECT_TRUE(
      parse_batch_line(R"({"custom_id": "a", "prompt": "x", "n": 1, "stream": false, "user": "u", "extra": [1]})", 1)
          .request);
}

TEST(BatchFile, RandomBytesAreRefusedNotFatal) {
  std::mt19937 rng(7);
  const std::string seeds[] = {
      R"({"custom_id": "a", "prompt": "x", "max_tokens": 3})",
      R"({"custom_id": "c", "url": "/v1/chat/completions", "body": {"messages": [{"role": "user", "content": "hi"}]}})"};
  size_t accepted = 0;
  for (int i = 0; i < 20000; ++i) {
    std::string line;
    if (i % 2) {  // mutations of valid lines
      line = seeds[i % 4 / 2];
      for (int m = 0; m < 1 + int(rng() % 4); ++m) line[rng() % line.size()] = char(rng() % 256);
    } else {  // raw bytes
      line.resize(rng() % 64);
      for (char& c : line) c = char(rng() % 256);
    }
    BatchLine l;
    ASSERT_NO_THROW(l = parse_batch_line(line, 1));
    EXPECT_TRUE(l.request.has_value() != !l.error.empty());
    accepted += l.request.has_value();
  }
  EXPECT_GT(accepted, 0u);  // some mutations stay valid: the check above saw both outcomes
}

class BatchOutputTest : public test::TempDirTest {};

TEST_F(BatchOutputTest, RecoversFinishedIdsAndCutsATornLine) {
  const auto path = dir_ / "out.jsonl";
  {
    BatchOutput out(path);
    out.append(batch_result_record("a", "text", true, 3, 2, nullptr));
    out.append(batch_error_record(std::nullopt, 4, "not valid JSON"));
    out.append(batch_error_record(std::string("b"), 5, "duplicate"));
  }
  const auto whole = std::filesystem::file_size(path);
  { std::ofstream(path, std::ios::app) << R"({"custom_id": "c", "te)"; }
  const BatchProgress p = recover_batch_output(path);
  EXPECT_TRUE(p.dropped_torn_line);
  EXPECT_EQ(std::filesystem::file_size(path), whole);
  EXPECT_EQ(p.records, 3u);
  EXPECT_EQ(p.finished_ids, std::set<std::string>{"a"});
  EXPECT_EQ(p.failed_lines, (std::set<size_t>{4, 5}));
  EXPECT_FALSE(recover_batch_output(path).dropped_torn_line);
  EXPECT_EQ(recover_batch_output(dir_ / "missing.jsonl").records, 0u);
}

TEST_F(BatchOutputTest, CorruptMiddleLineIsAnError) {
  const auto path = dir_ / "out.jsonl";
  std::ofstream(path) << "garbage\n" << batch_result_record("a", "t", false, 1, 1, nullptr) << "\n";
  EXPECT_THROW(recover_batch_output(path), Error);
}

TEST(BatchFile, SeedFromCustomIdIsStableAndSpread) {
  EXPECT_EQ(seed_from_custom_id("a1"), seed_from_custom_id("a1"));
  EXPECT_NE(seed_from_custom_id("a1"), seed_from_custom_id("a2"));
  EXPECT_EQ(seed_from_custom_id(""), 0xcbf29ce484222325ull);  // FNV-1a offset basis
}

}  // namespace
}  // namespace q3n
