// Safetensors reading: valid single and sharded checkpoints, and fuzz-style corruptions that must
// each give a clear error (never a crash or a silent wrong tensor).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <limits>
#include <random>

#include "loader/config.h"
#include "loader/safetensors.h"
#include "loader/tensor_schema.h"
#include "runtime/error.h"
#include "tests/support/safetensors_writer.h"
#include "tests/support/temp_dir.h"

namespace q3n {
namespace {

using test::RawTensor;
namespace fs = std::filesystem;

class SafetensorsTest : public test::TempDirTest {
 protected:
  std::string error_of(const fs::path& file) {
    try {
      MappedFile f(file);
      parse_safetensors(f);
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  }
  std::vector<RawTensor> two_tensors() {
    RawTensor bf{"b", "BF16", {3, 2}, std::vector<uint8_t>(12, 0x3f)};
    return {test::f32_tensor("a", {2, 3}, 1.5f), bf};
  }
};

TEST_F(SafetensorsTest, ReadsValidFile) {
  test::write_safetensors(dir_ / "model.safetensors", two_tensors());
  Checkpoint ck(dir_);
  const TensorView& a = ck.tensor("a");
  EXPECT_EQ(a.dtype, DType::F32);
  EXPECT_EQ(a.shape, (std::vector<int64_t>{2, 3}));
  float v;
  std::memcpy(&v, a.data + 4, 4);
  EXPECT_EQ(v, 1.5f);
  EXPECT_EQ(ck.tensor("b").dtype, DType::BF16);
  EXPECT_EQ(ck.total_bytes(), 24u + 12u);
  EXPECT_THROW(ck.tensor("c"), Error);
}

TEST_F(SafetensorsTest, TruncatedFilesAreRejected) {
  test::write_safetensors(dir_ / "full.safetensors", two_tensors());
  const auto size = fs::file_size(dir_ / "full.safetensors");
  for (uintmax_t cut : {uintmax_t(0), uintmax_t(5), uintmax_t(20), size - 1}) {
    fs::copy_file(dir_ / "full.safetensors", dir_ / "cut.safetensors", fs::copy_options::overwrite_existing);
    fs::resize_file(dir_ / "cut.safetensors", cut);
    const std::string msg = error_of(dir_ / "cut.safetensors");
    EXPECT_NE(msg.find("truncated"), std::string::npos) << "cut at " << cut << ": " << msg;
  }
}

TEST_F(SafetensorsTest, CorruptHeadersAreRejected) {
  const auto tensors = two_tensors();
  struct Case {
    std::string header, expect;
  };
  const std::vector<Case> cases = {
      {"not json", "not valid UTF-8 JSON"},
      {"[1, 2]", "not a JSON object"},
      {std::string("{\"a\xff\": 1}"), "not valid UTF-8 JSON"},
      {R"({"a": {"dtype": "F32", "shape": [2, 3]}})", "lacks"},
      {R"({"a": {"dtype": "I8", "shape": [24], "data_offsets": [0, 24]}})", "dtype I8"},
      {R"({"a": {"dtype": "F32", "shape": [2, -3], "data_offsets": [0, 24]}})", "bad dimension"},
      {R"({"a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 9999]}})", "outside"},
      {R"({"a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [24, 0]}})", "outside"},
      {R"({"a": {"dtype": "F32", "shape": [2, 4], "data_offsets": [0, 24]}})", "needs 32 bytes"},
      {R"({"a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
           "b": {"dtype": "BF16", "shape": [3, 2], "data_offsets": [12, 24]}})",
       "overlap"},
      {R"({"a": {"dtype": "F32", "shape": [4611686018427387904, 4611686018427387904], "data_offsets": [0, 24]}})",
       "impossibly large"},
  };
  for (const auto& c : cases) {
    test::write_safetensors_raw(dir_ / "bad.safetensors", c.header, tensors);
    const std::string msg = error_of(dir_ / "bad.safetensors");
    EXPECT_NE(msg.find(c.expect), std::string::npos) << "header " << c.header << " gave: " << msg;
  }
}

TEST_F(SafetensorsTest, OversizedHeaderLengthIsRejected) {
  std::ofstream out(dir_ / "huge.safetensors", std::ios::binary);
  const uint64_t n = 1ull << 40;
  out.write(reinterpret_cast<const char*>(&n), 8);
  out << "{}";
  out.close();
  EXPECT_NE(error_of(dir_ / "huge.safetensors").find("over 100 MB"), std::string::npos);
}

// Random byte flips in the header never crash: each gives an error or a consistent file.
TEST_F(SafetensorsTest, RandomHeaderCorruptionNeverCrashes) {
  const auto tensors = two_tensors();
  const std::string header = test::safetensors_header(tensors);
  std::mt19937 rng(7);
  for (int trial = 0; trial < 300; ++trial) {
    std::string h = header;
    for (int k = 0; k < 3; ++k) h[rng() % h.size()] = static_cast<char>(rng() % 256);
    test::write_safetensors_raw(dir_ / "fuzz.safetensors", h, tensors);
    try {
      MappedFile f(dir_ / "fuzz.safetensors");
      for (const auto& t : parse_safetensors(f)) {  // accepted: must lie inside the file
        ASSERT_GE(t.data, f.data());
        ASSERT_LE(t.data + t.bytes, f.data() + f.size());
      }
    } catch (const Error&) {
    }
  }
}

TEST_F(SafetensorsTest, ShardedCheckpointFollowsIndex) {
  test::write_safetensors(dir_ / "model-00001-of-00002.safetensors", {test::f32_tensor("a", {4})});
  test::write_safetensors(dir_ / "model-00002-of-00002.safetensors", {test::f32_tensor("b", {2})});
  nlohmann::json index = {
      {"metadata", {{"total_size", 24}}},
      {"weight_map", {{"a", "model-00001-of-00002.safetensors"}, {"b", "model-00002-of-00002.safetensors"}}}};
  std::ofstream(dir_ / "model.safetensors.index.json") << index.dump();
  Checkpoint ck(dir_);
  EXPECT_EQ(ck.tensors().size(), 2u);

  index["weight_map"]["c"] = "model-00003-of-00002.safetensors";
  std::ofstream(dir_ / "model.safetensors.index.json") << index.dump();
  try {
    Checkpoint bad(dir_);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("is missing"), std::string::npos) << e.what();
  }
  index["weight_map"].erase("c");
  index["weight_map"]["a"] = "model-00002-of-00002.safetensors";
  std::ofstream(dir_ / "model.safetensors.index.json") << index.dump();
  EXPECT_THROW(Checkpoint{dir_}, Error);
}

TEST_F(SafetensorsTest, ScanCountsNonFiniteValues) {
  auto tensors = two_tensors();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::memcpy(tensors[0].bytes.data() + 8, &nan, 4);
  tensors[1].bytes[5] = 0x7f;  // bf16 element 2: 0x7f80 = +Inf
  tensors[1].bytes[4] = 0x80;
  test::write_safetensors(dir_ / "model.safetensors", tensors);
  const TensorScan scan = scan_tensors(Checkpoint(dir_));
  EXPECT_EQ(scan.tensors, 2u);
  EXPECT_EQ(scan.values, 12u);
  EXPECT_EQ(scan.non_finite, 2u);
  EXPECT_EQ(scan.first_non_finite, "a");
}

TEST_F(SafetensorsTest, EmptyFolderIsAClearError) {
  try {
    Checkpoint ck(dir_);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no *.safetensors"), std::string::npos) << e.what();
  }
}

// A checkpoint written from the schema validates; removing, reshaping or adding tensors is listed.
TEST_F(SafetensorsTest, SchemaListsMissingWrongAndUnexpectedTensors) {
  nlohmann::json cfg = nlohmann::json::parse(R"({
    "model_type": "qwen3_next", "vocab_size": 32, "hidden_size": 16, "intermediate_size": 24,
    "num_hidden_layers": 4, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 8,
    "linear_conv_kernel_dim": 4, "linear_key_head_dim": 4, "linear_value_head_dim": 6,
    "linear_num_key_heads": 1, "linear_num_value_heads": 2, "num_experts": 3, "num_experts_per_tok": 2,
    "moe_intermediate_size": 8, "shared_expert_intermediate_size": 12, "partial_rotary_factor": 0.5,
    "mlp_only_layers": [2]})");
  const ModelConfig config = parse_config(cfg, "test");
  std::vector<RawTensor> tensors;
  for (const auto& e : expected_tensors(config, false)) tensors.push_back(test::f32_tensor(e.name, e.shape));
  test::write_safetensors(dir_ / "model.safetensors", tensors);
  validate_checkpoint(Checkpoint(dir_), config);  // complete: no throw

  auto broken = tensors;
  broken.erase(broken.begin() + 5);
  broken[7].shape = {1, 2, 3};
  broken[7].bytes.resize(24);
  broken.push_back(test::f32_tensor("model.layers.9.extra", {2}));
  test::write_safetensors(dir_ / "model.safetensors", broken);
  try {
    validate_checkpoint(Checkpoint(dir_), config);
    FAIL();
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("missing tensors: " + tensors[5].name), std::string::npos) << msg;
    EXPECT_NE(msg.find("wrong shapes: " + broken[7].name), std::string::npos) << msg;
    EXPECT_NE(msg.find("unexpected tensors: model.layers.9.extra"), std::string::npos) << msg;
  }

  // A config naming far more experts than the checkpoint holds is refused from the counts alone
  // (the "describes at least" message), before 60,000 experts x 4 layers are listed.
  cfg["num_experts"] = 60000;
  try {
    validate_checkpoint(Checkpoint(dir_), parse_config(cfg, "test"));
    FAIL();
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("describes at least"), std::string::npos) << msg;
    EXPECT_NE(msg.find("num_experts 60000"), std::string::npos) << msg;
  }
}

}  // namespace
}  // namespace q3n
