// graph/layer_split: where a pipeline split cuts the layers, and the --split parser.
#include "graph/layer_split.h"

#include <gtest/gtest.h>

#include "runtime/error.h"

namespace q3n::graph {
namespace {

std::vector<uint32_t> ends(const std::vector<LayerSpan>& spans) {
  std::vector<uint32_t> out;
  uint32_t first = 0;
  for (const LayerSpan& s : spans) {
    EXPECT_EQ(s.first, first) << "spans are contiguous";
    EXPECT_GT(s.end, s.first) << "every device gets a layer";
    out.push_back(s.end);
    first = s.end;
  }
  return out;
}

TEST(LayerSplit, EqualSharesOfEqualLayersHalveTheModel) {
  const SplitCosts costs{std::vector<uint64_t>(48, 100), 0, 0};
  EXPECT_EQ(ends(split_layers(costs, {1, 1})), (std::vector<uint32_t>{24, 48}));
  EXPECT_EQ(ends(split_layers(costs, {1, 1, 1, 1})), (std::vector<uint32_t>{12, 24, 36, 48}));
}

TEST(LayerSplit, SharesAreProportions) {
  const SplitCosts costs{std::vector<uint64_t>(48, 100), 0, 0};
  EXPECT_EQ(ends(split_layers(costs, {3, 1})), (std::vector<uint32_t>{36, 48}));
  EXPECT_EQ(ends(split_layers(costs, {0.25, 0.75})), (std::vector<uint32_t>{12, 48}));
  // Free memory in bytes works as well as small numbers.
  EXPECT_EQ(ends(split_layers(costs, {80e9, 80e9})), (std::vector<uint32_t>{24, 48}));
}

TEST(LayerSplit, EmbeddingsAndHeadCountOnTheirDevices) {
  // 10 layers of 10 bytes, embeddings 40 bytes on the first device: 140 in all, 70 each, so the
  // first device takes 3 layers (40 + 30) and the second 7.
  EXPECT_EQ(ends(split_layers({std::vector<uint64_t>(10, 10), 40, 0}, {1, 1})), (std::vector<uint32_t>{3, 10}));
  // The head (40 bytes) on the last device moves the cut the other way.
  EXPECT_EQ(ends(split_layers({std::vector<uint64_t>(10, 10), 0, 40}, {1, 1})), (std::vector<uint32_t>{7, 10}));
}

TEST(LayerSplit, UnequalLayersCutWhereTheBytesBalance) {
  // Attention layers (every 4th) hold a large KV cache.
  std::vector<uint64_t> layers(8, 10);
  layers[3] = layers[7] = 100;
  // 260 bytes: the first device's 130 is reached at 4 layers (130).
  EXPECT_EQ(ends(split_layers({layers, 0, 0}, {1, 1})), (std::vector<uint32_t>{4, 8}));
}

TEST(LayerSplit, EveryDeviceGetsALayerWhateverItsShare) {
  const SplitCosts costs{std::vector<uint64_t>(4, 100), 0, 0};
  EXPECT_EQ(ends(split_layers(costs, {1000, 1, 1})), (std::vector<uint32_t>{2, 3, 4}));
  EXPECT_EQ(ends(split_layers(costs, {1, 1, 1000})), (std::vector<uint32_t>{1, 2, 4}));
  EXPECT_EQ(ends(split_layers(costs, {1, 1, 1, 1})), (std::vector<uint32_t>{1, 2, 3, 4}));
  EXPECT_THROW(split_layers(costs, {1, 1, 1, 1, 1}), Error);  // more devices than layers
  EXPECT_THROW(split_layers(costs, {1, 0}), Error);
  EXPECT_THROW(split_layers(costs, {}), Error);
}

TEST(LayerSplit, ParsesProportions) {
  EXPECT_EQ(parse_split("3,1", 2), (std::vector<double>{3, 1}));
  EXPECT_EQ(parse_split("0.5,0.25,0.25", 3), (std::vector<double>{0.5, 0.25, 0.25}));
  for (const char* bad : {"", "3,", ",1", "a,1", "1,-1", "0,1", "1,inf", "1,nan", "1;1"})
    EXPECT_THROW(parse_split(bad, 2), Error) << bad;
  EXPECT_THROW(parse_split("1,1,1", 2), Error);  // one per device
}

TEST(LayerSplit, DescribesSpans) {
  ModelConfig c;
  c.num_hidden_layers = 48;
  EXPECT_EQ((LayerSpan{0, 24}).describe(c), "layers 0-23");
  EXPECT_EQ((LayerSpan{47, 48}).describe(c), "layer 47");
  EXPECT_EQ(LayerSpan{}.describe(c), "layers 0-47");
  EXPECT_TRUE((LayerSpan{24, 48}).heads(c));
  EXPECT_FALSE((LayerSpan{24, 48}).embeds());
  EXPECT_TRUE(LayerSpan{}.whole(c));
}

}  // namespace
}  // namespace q3n::graph
