#include "graph/model_graph.h"

#include <algorithm>

#include "runtime/error.h"
#include "runtime/ops/attention.h"
#include "runtime/ops/causal_conv1d.h"
#include "runtime/ops/delta_rule.h"
#include "runtime/ops/embedding.h"
#include "runtime/ops/linear.h"
#include "runtime/ops/moe.h"
#include "runtime/ops/rms_norm.h"
#include "runtime/ops/sample.h"
#include "runtime/ops/spec_accept.h"

namespace q3n::graph {

namespace {

// Rows [first, first + count) of a step, as one dispatch of a matrix product, and the most
// tokens for which that dispatch takes the GEMV (record_linear's gemv_max_tokens).
struct RowRange {
  uint32_t first = 0, count = 0;
  uint32_t gemv_max = ops::kGemvMaxTokens;
};

// A segment's rows and the GEMV limit it gets when it runs alone.
struct SegmentRows {
  uint32_t rows = 0, gemv_max = ops::kGemvMaxTokens;
};

// The row ranges a matrix product runs as one dispatch each, given the segments in order. Every
// row must meet the kernel it meets when its segment runs alone: when every segment takes the
// GEMV alone and all rows fit it (up to `most`, where the GEMV gives a row the same arithmetic for
// any row count), the whole step is one dispatch; otherwise each segment is its own dispatch with
// its own limit (a long prompt piece keeps its tiled GEMM, the decode rows keep their kernel).
std::vector<RowRange> dispatch_groups(const std::vector<SegmentRows>& segments, uint32_t most) {
  uint32_t total = 0;
  bool all_gemv = true;
  for (const SegmentRows& s : segments) total += s.rows, all_gemv = all_gemv && s.rows <= s.gemv_max;
  if (segments.size() == 1) return {{0, total, segments[0].gemv_max}};
  if (all_gemv && total <= most) return {{0, total, most}};
  std::vector<RowRange> groups;
  uint32_t first = 0;
  for (const SegmentRows& s : segments) groups.push_back({first, s.rows, s.gemv_max}), first += s.rows;
  return groups;
}

std::string dims(std::initializer_list<uint64_t> d, const char* type = "f32") {
  std::string s = "[";
  for (uint64_t v : d) s += (s.size() > 1 ? ", " : "") + std::to_string(v);
  return s + "] " + type;
}

// Builds one step's graph; small helpers add one node each.
class Builder {
 public:
  Builder(const Device& device, const ModelConfig& c, const DeviceWeights& w, const SequenceState& s,
          const StepShape& shape, const StepIO& io, const StepOptions& options)
      : device_(device),
        c_(c),
        w_(w),
        state_(s),
        shape_(shape),
        io_(io),
        rows_(shape.rows()),
        rope_offset_(options.rope_offset),
        gpu_shapes_(options.gpu_shapes),
        span_(options.layers),
        segments_(step_segments(shape)) {
    if (shape.piece && (shape.tokens != 1 || shape.head != Head::Sample))
      throw Error("internal: a mixed step carries decode rows (one token each) and samples");
    if (shape.verify && (shape.piece || shape.head != Head::Sample || !span_.whole(c)))
      throw Error("internal: a verify step samples every row, on one device, with no prompt piece");
    // Decode rows (one token per sequence, or a verify step's rows, which must compute as decode
    // rows) may leave the GEMV early; prompt pieces keep it up to the GEMV's limit, as `q3n run`
    // gives them.
    for (const StepSegment& seg : segments_) {
      const auto limit = [&](uint32_t decode, uint32_t most) {
        return seg.tokens == 1 || shape.verify ? std::min(decode, most) : most;
      };
      linear_segments_.push_back({seg.rows(), limit(options.decode_gemv_max_tokens, ops::kGemvMaxTokens)});
      expert_segments_.push_back({seg.rows(), limit(options.decode_expert_gemv_max_tokens, ops::kExpertGemvMaxTokens)});
    }
  }

  Graph build() {
    if (shape_.mtp) {
      mtp();
      g_.prune();
      return std::move(g_);
    }
    const uint32_t H = c_.hidden_size;
    seqs_ = g_.bind("sequence table", TensorRole::Input, io_.seqs.range(), dims({shape_.sequences(), 2}, "u32"));
    if (shape_.verify)
      row_seqs_ = g_.bind("verify row table", TensorRole::Input, io_.row_seqs.range(), dims({rows_, 2}, "u32"));
    TensorId h = g_.scratch("hidden", uint64_t(rows_) * H * 4, dims({rows_, H}));
    TensorId pending = kNone;  // the previous MLP's output, added into h by the next norm
    if (span_.embeds())
      embedding(h);
    else
      pending = from_previous_device(h);
    for (int L = int(span_.first); L < int(span_.last_of(c_)); ++L) {
      const std::string name = "layer " + std::to_string(L);
      const LayerWeights& lw = w_.layers[L];
      TensorId x = norm(name + " input_layernorm", h, pending, lw.input_norm, rows_);
      TensorId mixed = lw.type == LayerType::LinearAttention ? delta_net(name, L, x)
                                                             : attention(name, lw.attention, state_.layers()[L], x);
      x = norm(name + " post_attention_layernorm", h, mixed, lw.post_norm, rows_);
      pending = lw.mlp.moe ? moe(name, L, lw.mlp, x) : swiglu_mlp(name + " mlp", x, lw.mlp.gate_up, lw.mlp.down);
    }
    if (!span_.heads(c_)) {
      to_next_device(h, pending);
      g_.prune();
      return std::move(g_);
    }
    head(h, pending);
    g_.prune();
    return std::move(g_);
  }

 private:
  static constexpr TensorId kNone = ~0u;

  void embedding(TensorId h) {
    const uint32_t H = c_.hidden_size;
    const TensorId ids = ids_ = g_.bind("token ids", TensorRole::Input, io_.ids.range(), dims({rows_}, "i32"));
    const TensorId embed = weight("embed_tokens", w_.embed);
    // Node lambdas outlive this builder: they capture values only, never `this`.
    const Matrix table = w_.embed;
    const uint32_t rows = rows_;
    g_.add({"embedding", "embedding", {embed, ids}, {h}, [=](const Bindings& b, PipelineLibrary& p, CommandBuffer& cb) {
              ops::record_embedding(p, cb,
                                    {.table = b[embed],
                                     .ids = b[ids],
                                     .out = b[h],
                                     .type = table.type,
                                     .rows = table.rows,
                                     .dim = H,
                                     .tokens = rows});
            }});
  }

  // The MTP head over the step's rows (spec §4.2): row t takes the model's final-normed hidden
  // state at position p + t (host-written) and the id of the token after it, and drafts the token
  // after that (greedy, through the model's lm_head); its attention layer has its own KV cache.
  // The head's own output hm goes back too: it is the next draft step's hidden state (§4.3).
  void mtp() {
    const uint32_t H = c_.hidden_size;
    if (!w_.mtp) throw Error("internal: an MTP step without the MTP weights");
    const MtpWeights& m = *w_.mtp;
    seqs_ = g_.bind("sequence table", TensorRole::Input, io_.seqs.range(), dims({shape_.sequences(), 2}, "u32"));
    const TensorId e = g_.scratch("MTP embedding", uint64_t(rows_) * H * 4, dims({rows_, H}));
    embedding(e);
    const TensorId hidden = g_.bind("hidden state (the model's, final-normed)", TensorRole::Input,
                                    io_.hidden_in.range().sub(0, uint64_t(rows_) * H * 4), dims({rows_, H}));
    const TensorId a = norm("mtp.pre_fc_norm_embedding", e, kNone, m.norm_embedding, rows_);
    const TensorId b = norm("mtp.pre_fc_norm_hidden", hidden, kNone, m.norm_hidden, rows_);
    // fc's input is [embedding half | hidden half] per row (spec §4.2: the order matters).
    const TensorId both = g_.scratch("MTP fc input", uint64_t(rows_) * 2 * H * 4, dims({rows_, 2 * H}));
    const uint32_t rows = rows_;
    g_.add({"MTP concat", "copy", {a, b}, {both}, [=](const Bindings& bd, PipelineLibrary&, CommandBuffer& cb) {
              cb.copy_rows(bd[a], bd[both], rows, uint64_t(H) * 4, uint64_t(H) * 4, uint64_t(2 * H) * 4);
              cb.copy_rows(bd[b], bd[both].sub(uint64_t(H) * 4, bd[both].size - uint64_t(H) * 4), rows, uint64_t(H) * 4,
                           uint64_t(H) * 4, uint64_t(2 * H) * 4);
            }});
    const TensorId h = linear("mtp.fc", both, m.fc);
    const std::string name = "mtp.layers.0";
    TensorId x = norm(name + " input_layernorm", h, kNone, m.layer.input_norm, rows_);
    const TensorId mixed = attention(name, m.layer.attention, state_.mtp_layer(), x);
    x = norm(name + " post_attention_layernorm", h, mixed, m.layer.post_norm, rows_);
    const TensorId pending = m.layer.mlp.moe ? moe(name, c_.num_hidden_layers, m.layer.mlp, x)
                                             : swiglu_mlp(name + " mlp", x, m.layer.mlp.gate_up, m.layer.mlp.down);
    const TensorId hm = norm("mtp.norm", h, pending, m.final_norm, rows_);
    const TensorId out =
        g_.bind("MTP hidden state (host)", TensorRole::Output, io_.final_hidden.range(), dims({rows_, H}));
    const uint64_t bytes = uint64_t(rows_) * H * 4;
    g_.add({"MTP hidden to host", "copy", {hm}, {out}, [=](const Bindings& bd, PipelineLibrary&, CommandBuffer& cb) {
              cb.copy(bd[hm], bd[out], bytes);
            }});
    sample_rows(hm, 0);
  }

  // A pipeline split: the previous device's hidden state into h, its pending MLP output (returned).
  TensorId from_previous_device(TensorId h) {
    const uint64_t bytes = uint64_t(rows_) * c_.hidden_size * 4;
    const std::string shape = dims({rows_, uint64_t(c_.hidden_size)});
    const TensorId in = g_.bind("hidden state (from the previous device)", TensorRole::Input, io_.hidden_in.range(),
                                dims({2, rows_, uint64_t(c_.hidden_size)}));
    const TensorId pending = g_.scratch("pending MLP output", bytes, shape);
    g_.add({"hidden state in", "copy", {in}, {h, pending}, [=](const Bindings& b, PipelineLibrary&, CommandBuffer& cb) {
              cb.copy(b[in].sub(0, bytes), b[h], bytes);
              cb.copy(b[in].sub(bytes, bytes), b[pending], bytes);
            }});
    return pending;
  }

  // A pipeline split: h and the pending MLP output to host-visible memory for the next device,
  // whose first norm adds them as this device's next layer would have.
  void to_next_device(TensorId h, TensorId pending) {
    const uint64_t bytes = uint64_t(rows_) * c_.hidden_size * 4;
    const TensorId out = g_.bind("hidden state (to the next device)", TensorRole::Output, io_.hidden_out.range(),
                                 dims({2, rows_, uint64_t(c_.hidden_size)}));
    g_.add(
        {"hidden state out", "copy", {h, pending}, {out}, [=](const Bindings& b, PipelineLibrary&, CommandBuffer& cb) {
           cb.copy(b[h], b[out].sub(0, bytes), bytes);
           cb.copy(b[pending], b[out].sub(bytes, bytes), bytes);
         }});
  }

  // The sequence-table entries of one segment.
  static BufferRange seq_rows(const BufferRange& seqs, const StepSegment& seg) {
    return seqs.sub(uint64_t(seg.first_seq) * 8, uint64_t(seg.batch) * 8);
  }

  TensorId weight(const std::string& name, const Matrix& m) {
    return g_.bind(name, TensorRole::Weight, m.range, dims({m.rows, m.cols}, ops::weight_type_name(m.type)));
  }
  TensorId vector(const std::string& name, const BufferRange& r, uint64_t n) {
    return g_.bind(name, TensorRole::Weight, r, dims({n}));
  }

  // x = RMSNorm_zc(h (+= add)); `rows` rows of h starting at `first_row`.
  TensorId norm(const std::string& name, TensorId h, TensorId add, const BufferRange& weight, uint32_t rows,
                uint32_t first_row = 0, bool zero_centred = true) {
    const uint32_t H = c_.hidden_size;
    const TensorId w = vector(name + ".weight", weight, H);
    const TensorId out = g_.scratch(name + " out", uint64_t(rows) * H * 4, dims({rows, H}));
    std::vector<TensorId> reads = {h, w}, writes = {out};
    if (add != kNone) reads.push_back(add), writes.push_back(h);
    const float eps = float(c_.rms_norm_eps);
    g_.add({name, "norm", reads, writes, [=](const Bindings& b, PipelineLibrary& p, CommandBuffer& cb) {
              const uint64_t offset = uint64_t(first_row) * H * 4, bytes = uint64_t(rows) * H * 4;
              const BufferRange hr = b[h].sub(offset, bytes);
              if (add == kNone)
                ops::record_rms_norm(p, cb,
                                     {.x = hr,
                                      .weight = b[w],
                                      .out = b[out],
                                      .rows = rows,
                                      .n = H,
                                      .eps = eps,
                                      .zero_centred = zero_centred});
              else
                ops::record_rms_norm(p, cb,
                                     {.x = b[add].sub(offset, bytes),
                                      .weight = b[w],
                                      .out = b[out],
                                      .residual = hr,
                                      .rows = rows,
                                      .n = H,
                                      .eps = eps,
                                      .zero_centred = zero_centred});
            }});
    return out;
  }

  // y = x W^T over every row of the step.
  // K-split scratch of a product's groups (ops::linear_split_bytes): a region for each group that
  // may take the matrix units at a decode size, since the groups run without barriers between them.
  struct SplitScratch {
    TensorId tensor = kNone;
    std::vector<uint64_t> at, bytes;  // per group
    BufferRange range(const Bindings& b, size_t group) const {
      return bytes[group] ? b[tensor].sub(at[group], bytes[group]) : BufferRange{};
    }
  };
  SplitScratch split_scratch(const std::string& name, const std::vector<RowRange>& groups, uint32_t n, uint32_t k) {
    SplitScratch s;
    uint64_t total = 0;
    for (const RowRange& g : groups) {
      s.at.push_back(total);
      s.bytes.push_back(g.count > g.gemv_max ? ops::linear_split_bytes(g.count, n, k) : 0);
      total += s.bytes.back();
    }
    if (total) s.tensor = g_.scratch(name + " K-split parts", total, dims({uint32_t(total / 4)}));
    return s;
  }

  TensorId linear(const std::string& name, TensorId x, const Matrix& m) {
    return linear(name, x, m, rows_, dispatch_groups(linear_segments_, ops::kGemvMaxTokens));
  }
  TensorId linear(const std::string& name, TensorId x, const Matrix& m, uint32_t rows, std::vector<RowRange> groups) {
    const TensorId w = weight(name + ".weight", m);
    const TensorId y = g_.scratch(name + " out", uint64_t(rows) * m.rows * 4, dims({rows, m.rows}));
    const SplitScratch split = split_scratch(name, groups, m.rows, m.cols);
    std::vector<TensorId> inputs = {x, w}, outputs = {y};
    if (split.tensor != kNone) outputs.push_back(split.tensor);
    g_.add({name, "linear", inputs, outputs, [=](const Bindings& b, PipelineLibrary& p, CommandBuffer& cb) {
              // The groups write disjoint rows: no barrier between them.
              for (size_t i = 0; i < groups.size(); ++i) {
                const RowRange& g = groups[i];
                ops::record_linear(p, cb,
                                   {.x = b[x].sub(uint64_t(g.first) * m.cols * 4, uint64_t(g.count) * m.cols * 4),
                                    .weight = b[w],
                                    .y = b[y].sub(uint64_t(g.first) * m.rows * 4, uint64_t(g.count) * m.rows * 4),
                                    .type = m.type,
                                    .tokens = g.count,
                                    .k = m.cols,
                                    .n = m.rows,
                                    .gemv_max_tokens = g.gemv_max,
                                    .k_split = split.range(b, i)});
              }
            }});
    return y;
  }

  // Products of one input (`suffixes` name each after `name`), recorded as linear() records each,
  // in one node. Where every group takes the CPU shapes' row-wise kernel and the products can
  // share a dispatch (ops::products_share_dispatch), they take one dispatch instead: a CPU
  // driver charges ~40 µs per dispatch, and the outputs are the same bits.
  // With `conv`, the first product's GEMV applies the DeltaNet conv as it writes (its output is
  // conv->out; ops::LinearArgs::conv), where conv_fits_gemv().
  struct ConvInProduct {
    TensorId out, weight, state, seqs;
    ops::WeightType type;
    uint32_t kernel;
    uint32_t tokens_per_sequence = 1;
    TensorId pre_conv = kNone;  // tokens_per_sequence > 1: the product itself (the verify commit's)
  };
  std::vector<TensorId> linears(const std::string& name, const std::vector<std::string>& suffixes, TensorId x,
                                const std::vector<const Matrix*>& matrices,
                                const std::optional<ConvInProduct>& conv = std::nullopt) {
    const std::vector<RowRange> groups = dispatch_groups(linear_segments_, ops::kGemvMaxTokens);
    std::vector<TensorId> inputs = {x}, outputs, ws, ys;
    std::vector<SplitScratch> splits;
    std::string label = name + " " + suffixes[0];
    if (conv) {
      inputs.insert(inputs.end(), {conv->weight, conv->state, conv->seqs});
      outputs.push_back(conv->state);
      if (conv->pre_conv != kNone) outputs.push_back(conv->pre_conv);
    }
    for (size_t i = 0; i < matrices.size(); ++i) {
      const Matrix& m = *matrices[i];
      const std::string product = name + " " + suffixes[i];
      ws.push_back(weight(product + ".weight", m));
      ys.push_back(i == 0 && conv ? conv->out
                                  : g_.scratch(product + " out", uint64_t(rows_) * m.rows * 4, dims({rows_, m.rows})));
      splits.push_back(split_scratch(product, groups, m.rows, m.cols));
      inputs.push_back(ws.back());
      outputs.push_back(ys.back());
      if (splits.back().tensor != kNone) outputs.push_back(splits.back().tensor);
      if (i) label += ", " + suffixes[i];
    }
    std::vector<Matrix> ms;
    for (const Matrix* m : matrices) ms.push_back(*m);
    const uint32_t rows = rows_;
    g_.add({label, "linear", inputs, outputs, [=](const Bindings& b, PipelineLibrary& p, CommandBuffer& cb) {
              std::vector<ops::LinearOutput> shared;
              bool same_k = true, rowwise = true;  // no group takes the matrix units
              for (size_t i = 0; i < ms.size(); ++i) {
                shared.push_back({b[ws[i]], ms[i].type, b[ys[i]], ms[i].rows});
                same_k = same_k && ms[i].cols == ms[0].cols;
              }
              for (const RowRange& g : groups) rowwise = rowwise && (!p.coopmat() || g.count <= g.gemv_max);
              if (same_k && rowwise && ops::products_share_dispatch(p, b[x], ms[0].cols, shared)) {
                ops::record_linears_sharing_input(p, cb, b[x], rows, ms[0].cols, shared);
                return;
              }
              for (size_t i = 0; i < ms.size(); ++i)  // independent products: no barrier between them
                for (size_t j = 0; j < groups.size(); ++j) {
                  const RowRange& g = groups[j];
                  const Matrix& m = ms[i];
                  ops::LinearArgs a{.x = b[x].sub(uint64_t(g.first) * m.cols * 4, uint64_t(g.count) * m.cols * 4),
                                    .weight = b[ws[i]],
                                    .y = b[ys[i]].sub(uint64_t(g.first) * m.rows * 4, uint64_t(g.count) * m.rows * 4),
                                    .type = m.type,
                                    .tokens = g.count,
                                    .k = m.cols,
                                    .n = m.rows,
                                    .gemv_max_tokens = g.gemv_max,
                                    .k_split = splits[i].range(b, j)};
                  if (i == 0 && conv) {  // row r is token r % T of sequence r / T (conv_fits_gemv)
                    const uint32_t per = conv->tokens_per_sequence;
                    a.conv = ops::LinearArgs::ConvOutput{
                        .weight = b[conv->weight],
                        .type = conv->type,
                        .state = b[conv->state],
                        .seqs = b[conv->seqs].sub(uint64_t(g.first / per) * 8, uint64_t(g.count / per) * 8),
                        .kernel = conv->kernel,
                        .tokens_per_sequence = per};
                    if (conv->pre_conv != kNone)
                      a.conv->pre_conv =
                          b[conv->pre_conv].sub(uint64_t(g.first) * m.rows * 4, uint64_t(g.count) * m.rows * 4);
                  }
                  ops::record_linear(p, cb, a);
                }
            }});
    return ys;
  }

  // Whether in_proj_qkv's GEMV applies the DeltaNet conv (ops::LinearArgs::conv): decode steps of
  // one token per sequence and verify steps (whose conv state waits for its commit), not mixed
  // steps; all rows in one GEMV group, on the GPU shapes.
  bool conv_fits_gemv() const {
    if (!gpu_shapes_) return false;
    for (const StepSegment& seg : segments_)
      if (seg.tokens != 1 && !shape_.verify) return false;
    const std::vector<RowRange> groups = dispatch_groups(linear_segments_, ops::kGemvMaxTokens);
    return groups.size() == 1 && groups[0].count <= std::min(groups[0].gemv_max, ops::kGemvMaxTokens);
  }

  TensorId delta_net(const std::string& name, int L, TensorId x) {
    const DeltaNetWeights& w = w_.layers[L].delta;
    const LayerState& st = state_.layers()[L];
    // The whole step as one shape for the row-wise kernels; each segment's own for the rest.
    const ops::DeltaShape s{.batch = 1,
                            .tokens = rows_,
                            .key_heads = uint32_t(c_.linear_num_key_heads),
                            .value_heads = uint32_t(c_.linear_num_value_heads),
                            .dk = uint32_t(c_.linear_key_head_dim),
                            .dv = uint32_t(c_.linear_value_head_dim)};
    std::vector<ops::DeltaShape> seg_shapes;
    for (const StepSegment& seg : segments_) {
      seg_shapes.push_back(s);
      seg_shapes.back().batch = seg.batch;
      seg_shapes.back().tokens = seg.tokens;
    }
    const std::vector<StepSegment> segments = segments_;
    const uint32_t conv_dim = s.qkv_width(), kernel = c_.linear_conv_kernel_dim, value_dim = s.value_heads * s.dv;
    // A verify step leaves the state to its commit (verify_commit).
    const ops::StateUpdate update = shape_.verify ? ops::StateUpdate::Keep : ops::StateUpdate::Write;
    const TensorId conv_w = g_.bind(name + " conv1d.weight", TensorRole::Weight, w.conv,
                                    dims({conv_dim, kernel}, ops::weight_type_name(w.conv_type)));
    const TensorId conv_state =
        g_.bind(name + " conv state", TensorRole::State, st.conv, dims({state_.slots(), kernel - 1, conv_dim}));
    const TensorId qkv = g_.scratch(name + " conv out", uint64_t(rows_) * conv_dim * 4, dims({rows_, conv_dim}));
    const TensorId seqs = seqs_;
    const std::vector<std::string> products = {"in_proj_qkv", "in_proj_z", "in_proj_ba"};
    const std::vector<const Matrix*> matrices = {&w.qkv, &w.z, &w.ba};
    const bool conv_in_gemv = conv_fits_gemv();  // in_proj_qkv's GEMV writes the conv's output
    // A verify step's commit reads the product itself: the GEMV writes it too.
    const TensorId pre_conv =
        conv_in_gemv && shape_.verify
            ? g_.scratch(name + " in_proj_qkv out", uint64_t(rows_) * conv_dim * 4, dims({rows_, conv_dim}))
            : kNone;
    const std::vector<TensorId> projected =
        conv_in_gemv ? linears(name, products, x, matrices,
                               ConvInProduct{qkv, conv_w, conv_state, seqs, w.conv_type, kernel,
                                             shape_.verify ? segments_[0].tokens : 1u, pre_conv})
                     : linears(name, products, x, matrices);
    const TensorId mixed = conv_in_gemv ? pre_conv : projected[0], z = projected[1], ba = projected[2];
    if (!conv_in_gemv)
      g_.add({name + " conv1d",
              "conv",
              {mixed, conv_w, conv_state, seqs},
              {qkv, conv_state},
              [=](const Bindings& b, PipelineLibrary& p, CommandBuffer& cb) {
                // Segments touch different rows and different sequences' state: no barrier between.
                for (const StepSegment& seg : segments) {
                  const uint64_t at = uint64_t(seg.first_row) * conv_dim * 4,
                                 bytes = uint64_t(seg.rows()) * conv_dim * 4;
                  ops::record_causal_conv1d(p, cb,
                                            {.x = b[mixed].sub(at, bytes),
                                             .weight = b[conv_w],
                                             .state = b[conv_state],
                                             .seqs = seq_rows(b[seqs], seg),
                                             .y = b[qkv].sub(at, bytes),
                                             .type = w.conv_type,
                                             .batch = seg.batch,
                                             .tokens = seg.tokens,
                                             .channels = conv_dim,
                                             .kernel = kernel,
                                             .update = update});
                }
              }});

    const TensorId a_log = vector(name + " A_log", w.a_log, s.value_heads),
                   dt = vector(name + " dt_bias", w.dt_bias, s.value_heads);
    const bool verify = shape_.verify;
    // Pieces of one token per sequence, and verification, take the recurrent form with raw
    // inputs: the rule normalises q, k and computes the gates itself (DeltaRuleArgs::raw_inputs),
    // so a decode step has no prepare dispatch. Longer pieces are prepared first, in their own
    // rows only, so a decode row's arithmetic is the same in a mixed step as in a decode step.
    // (The CPU shapes' longer pieces take the recurrent form too, but prepared: that is the
    // pipelines' choice at record time, and alone or mixed such a piece is prepared alike.)
    std::vector<bool> raw_piece;
    for (const ops::DeltaShape& seg : seg_shapes) raw_piece.push_back(verify || seg.tokens == 1);
    const uint64_t gate_width = 2 * s.value_heads;
    TensorId gates = kNone;
    if (std::find(raw_piece.begin(), raw_piece.end(), false) != raw_piece.end()) {
      gates = g_.scratch(name + " gates", uint64_t(rows_) * gate_width * 4, dims({rows_, 2 * s.value_heads}));
      g_.add({name + " delta prepare",
              "delta_prepare",
              {qkv, ba, a_log, dt},
              {qkv, gates},
              [=](const Bindings& b, PipelineLibrary& p, CommandBuffer& cb) {
                for (size_t i = 0; i < segments.size(); ++i) {
                  if (raw_piece[i]) continue;
                  const StepSegment& seg = segments[i];
                  const uint64_t rows = seg_shapes[i].rows();
                  ops::record_delta_prepare(
                      p, cb,
                      {.qkv = b[qkv].sub(uint64_t(seg.first_row) * conv_dim * 4, rows * conv_dim * 4),
                       .ba = b[ba].sub(seg.first_row * gate_width * 4, rows * gate_width * 4),
                       .a_log = b[a_log],
                       .dt_bias = b[dt],
                       .gates = b[gates].sub(seg.first_row * gate_width * 4, rows * gate_width * 4),
                       .shape = seg_shapes[i]});
                }
              }});
    }

    const TensorId recurrent = g_.bind(name + " recurrent state", TensorRole::State, st.recurrent,
                                       dims({state_.slots(), s.value_heads, s.dk, s.dv}));
    // Raw pieces (decode, verification) take the gated norm inside the rule where the device holds
    // a value head per workgroup: one dispatch and barrier fewer per DeltaNet layer. Longer pieces
    // keep the norm node (below), over their own rows only.
    const bool heads_fit = ops::delta_rule_norms_heads(device_.info(), s.dv);
    std::vector<bool> norm_in_rule;
    for (size_t i = 0; i < seg_shapes.size(); ++i) norm_in_rule.push_back(raw_piece[i] && heads_fit);
    const bool any_norm_in_rule = std::find(norm_in_rule.begin(), norm_in_rule.end(), true) != norm_in_rule.end();
    const bool all_norm_in_rule = std::find(norm_in_rule.begin(), norm_in_rule.end(), false) == norm_in_rule.end();
    const TensorId norm_w = vector(name + " linear_attn.norm.weight", w.norm, s.dv);
    const TensorId normed =
        g_.scratch(name + " gated norm out", uint64_t(rows_) * value_dim * 4, dims({rows_, value_dim}));
    const float eps = float(c_.rms_norm_eps);
    const TensorId core =
        all_norm_in_rule ? kNone
                         : g_.scratch(name + " delta out", uint64_t(rows_) * value_dim * 4, dims({rows_, value_dim}));
    // One token per sequence takes the recurrent form, longer pieces the chunked one (except with
    // the CPU shapes: ops::delta_rule_takes_recurrent); each piece gets its own slice of the
    // chunk intermediates.
    ops::DeltaChunkScratchFloats f{};
    std::vector<ops::DeltaChunkScratchFloats> offsets;
    for (const ops::DeltaShape& seg : seg_shapes) {
      offsets.push_back(f);
      if (seg.tokens == 1 || verify) continue;
      const ops::DeltaChunkScratchFloats n = ops::delta_chunk_scratch_floats(seg);
      f = {f.gamma + n.gamma, f.w + n.w, f.kc + n.kc, f.u + n.u, f.snapshots + n.snapshots};
    }
    std::vector<TensorId> writes = {recurrent};
    if (core != kNone) writes.push_back(core);
    if (any_norm_in_rule) writes.push_back(normed);
    TensorId gamma = kNone, wt = kNone, kc = kNone, u = kNone, snaps = kNone;
    if (f.gamma) {
      gamma = g_.scratch(name + " chunk gamma", f.gamma * 4, dims({f.gamma}));
      wt = g_.scratch(name + " chunk W", f.w * 4, dims({f.w}));
      kc = g_.scratch(name + " chunk Kc", f.kc * 4, dims({f.kc}));
      u = g_.scratch(name + " chunk U", f.u * 4, dims({f.u}));
      snaps = g_.scratch(name + " chunk states", f.snapshots * 4, dims({f.snapshots}));
      writes.insert(writes.end(), {gamma, wt, kc, u, snaps});
    }
    const bool any_recurrent =
        std::any_of(seg_shapes.begin(), seg_shapes.end(), [](const auto& g) { return g.tokens == 1; });
    const char* form = !f.gamma        ? " delta rule (recurrent)"
                       : any_recurrent ? " delta rule (mixed)"
                                       : " delta rule (chunked)";
    std::vector<TensorId> rule_reads = {qkv, ba, a_log, dt, recurrent, seqs};
    if (gates != kNone) rule_reads.push_back(gates);
    if (any_norm_in_rule) rule_reads.insert(rule_reads.end(), {z, norm_w});
    g_.add(
        {name + form, "delta_rule", rule_reads, writes, [=](const Bindings& b, PipelineLibrary& p, CommandBuffer& cb) {
           for (size_t i = 0; i < segments.size(); ++i) {
             const StepSegment& seg = segments[i];
             const ops::DeltaShape& sh = seg_shapes[i];
             const uint64_t gate_at = seg.first_row * gate_width * 4, gate_bytes = sh.rows() * gate_width * 4;
             const uint64_t out_at = uint64_t(seg.first_row) * value_dim * 4, out_bytes = sh.rows() * value_dim * 4;
             ops::DeltaRuleArgs args{
                 .qkv = b[qkv].sub(uint64_t(seg.first_row) * conv_dim * 4, sh.rows() * conv_dim * 4),
                 .state = b[recurrent],
                 .seqs = seq_rows(b[seqs], seg),
                 .out = b[norm_in_rule[i] ? normed : core].sub(out_at, out_bytes),
                 .shape = sh,
                 .update = update};
             if (norm_in_rule[i])
               args.gated_norm =
                   ops::DeltaRuleArgs::GatedNorm{.gate = b[z].sub(out_at, out_bytes), .weight = b[norm_w], .eps = eps};
             if (raw_piece[i]) {  // in_proj_ba's rows are b | a per row, as gates' g | beta
               args.raw_inputs = true;
               args.ba = b[ba].sub(gate_at, gate_bytes);
               args.a_log = b[a_log];
               args.dt_bias = b[dt];
             } else {
               args.gates = b[gates].sub(gate_at, gate_bytes);
             }
             if (verify || ops::delta_rule_takes_recurrent(p, sh)) {
               ops::record_delta_rule_recurrent(p, cb, args);
               continue;
             }
             const ops::DeltaChunkScratchFloats o = offsets[i], n = ops::delta_chunk_scratch_floats(sh);
             ops::record_delta_rule_chunked(p, cb, args,
                                            {.gamma = b[gamma].sub(o.gamma * 4, n.gamma * 4),
                                             .w = b[wt].sub(o.w * 4, n.w * 4),
                                             .kc = b[kc].sub(o.kc * 4, n.kc * 4),
                                             .u = b[u].sub(o.u * 4, n.u * 4),
                                             .snapshots = b[snaps].sub(o.snapshots * 4, n.snapshots * 4)});
           }
         }});
    if (verify)
      commits_.push_back({mixed, conv_state, qkv, ba, a_log, dt, recurrent, w.conv_type, seg_shapes[0], kernel});
    if (!all_norm_in_rule) {
      // The rows the rule did not normalise, in runs of adjacent segments (one dispatch each).
      std::vector<std::pair<uint32_t, uint32_t>> runs;  // first row, rows
      for (size_t i = 0; i < segments.size(); ++i) {
        if (norm_in_rule[i]) continue;
        const uint32_t first = segments[i].first_row, rows = segments[i].rows();
        if (!runs.empty() && runs.back().first + runs.back().second == first)
          runs.back().second += rows;
        else
          runs.push_back({first, rows});
      }
      g_.add({name + " gated norm",
              "norm",
              {core, norm_w, z},
              {normed},
              [=](const Bindings& b, PipelineLibrary& p, CommandBuffer& cb) {
                for (const auto& [first, rows] : runs) {
                  const uint64_t at = uint64_t(first) * value_dim * 4, bytes = uint64_t(rows) * value_dim * 4;
                  ops::record_rms_norm(p, cb,
                                       {.x = b[core].sub(at, bytes),
                                        .weight = b[norm_w],
                                        .out = b[normed].sub(at, bytes),
                                        .rows = rows * s.value_heads,
                                        .n = s.dv,
                                        .eps = eps,
                                        .zero_centred = false,
                                        .gate = b[z].sub(at, bytes)});
                }
              }});
    }
    return linear(name + " out_proj", normed, w.out);
  }

  TensorId attention(const std::string& name, const AttentionWeights& w, const LayerState& st, TensorId x) {
    ops::AttentionShape s;
    s.heads = c_.num_attention_heads;
    s.kv_heads = c_.num_key_value_heads;
    s.head_dim = c_.head_dim;
    s.rot_dim = c_.rotary_dim();
    s.capacity = state_.capacity();
    s.kv_type = state_.kv_type();
    s.eps = float(c_.rms_norm_eps);
    s.rope_offset = rope_offset_;
    // Each segment is its own attention call, with its own slice of the split partials.
    std::vector<ops::AttentionShape> seg_shapes;
    std::vector<uint64_t> part_offsets;
    uint64_t parts = 0;
    // A verify step's rows are each their own entry of the row table at its own position: the
    // arithmetic of a decode row (the K/V of every row is appended before any row attends).
    const std::vector<StepSegment> segments = shape_.verify ? std::vector<StepSegment>{{0, 0, rows_, 1}} : segments_;
    for (const StepSegment& seg : segments) {
      ops::AttentionShape g = s;
      g.batch = seg.batch;
      g.tokens = seg.tokens;
      g.splits = ops::attention_splits(device_, seg.tokens, state_.capacity());
      seg_shapes.push_back(g);
      part_offsets.push_back(parts);
      if (g.splits > 1) parts += uint64_t(g.batch) * g.splits * g.tokens * g.heads;
    }
    const TensorId qkv = linear(name + " {q,k,v}_proj", x, w.qkv);
    const TensorId qn = vector(name + " q_norm", w.q_norm, s.head_dim),
                   kn = vector(name + " k_norm", w.k_norm, s.head_dim);
    const TensorId freq = rope_frequencies();
    // The KV cache is reached through the layer's slot table (slots may lie in several
    // allocations); the table stands for the cache in the graph's dependencies.
    const TensorId kv = g_.bind(name + " KV cache (slot table)", TensorRole::State, st.kv_slots,
                                dims({state_.slots(), 2, s.kv_heads, s.capacity, s.head_dim}));
    const uint32_t qdim = s.heads * s.head_dim, qkv_width = w.qkv.rows;
    const TensorId q = g_.scratch(name + " q", uint64_t(rows_) * qdim * 4, dims({rows_, s.heads, s.head_dim}));
    const TensorId po =
        g_.scratch(name + " split partials", parts ? parts * s.head_dim * 4 : 4, dims({parts, s.head_dim}));
    const TensorId pml = g_.scratch(name + " split stats", parts ? parts * 8 : 4, dims({parts, 2}));
    const TensorId out = g_.scratch(name + " attention out", uint64_t(rows_) * qdim * 4, dims({rows_, qdim}));
    const TensorId seqs = shape_.verify ? row_seqs_ : seqs_;
    // fp32 checkpoints keep fp32 arithmetic, as their projections do (record_linear).
    const bool matrix_units = w.qkv.type != ops::WeightType::F32;
    const LayerState cache = st;  // the rows behind the table, for the CPU shapes' texel reads
    g_.add({name + " attention",
            "attention",
            {qkv, qn, kn, freq, seqs, kv},
            {kv, q, po, pml, out},
            [=](const Bindings& b, PipelineLibrary& p, CommandBuffer& cb) {
              for (size_t i = 0; i < segments.size(); ++i) {
                const StepSegment& seg = segments[i];
                const ops::AttentionShape& sh = seg_shapes[i];
                const uint64_t rows = seg.rows(), first = seg.first_row,
                               n = uint64_t(sh.batch) * sh.splits * sh.tokens * sh.heads;
                const bool split = sh.splits > 1;
                ops::record_attention(
                    p, cb,
                    {.qkv = b[qkv].sub(first * qkv_width * 4, rows * qkv_width * 4),
                     .q_norm = b[qn],
                     .k_norm = b[kn],
                     .inv_freq = b[freq],
                     .seqs = seq_rows(b[seqs], seg),
                     .kv_slots = b[kv],
                     .q = b[q].sub(first * qdim * 4, rows * qdim * 4),
                     .part_o = split ? b[po].sub(part_offsets[i] * s.head_dim * 4, n * s.head_dim * 4) : b[po],
                     .part_ml = split ? b[pml].sub(part_offsets[i] * 8, n * 8) : b[pml],
                     .out = b[out].sub(first * qdim * 4, rows * qdim * 4),
                     .shape = sh,
                     .matrix_units = matrix_units,
                     .k_rows = cache.kv_k_rows,
                     .v_rows = cache.kv_v_rows,
                     .kv_slot_stride = cache.kv_slot_stride});
              }
            }});
    return linear(name + " o_proj", out, w.out);
  }

  TensorId rope_frequencies() {
    if (freq_ == kNone)
      freq_ = g_.bind("RoPE inverse frequencies", TensorRole::Weight, w_.rope_inv_freq,
                      dims({uint64_t(c_.rotary_dim() / 2)}));
    return freq_;
  }

  TensorId moe(const std::string& name, int L, const MlpWeights& w, TensorId x) {
    const uint32_t H = c_.hidden_size, E = c_.num_experts;
    // The router and the shared expert's gate/up read the same input: one node (linears()).
    TensorId logits = kNone, shared_gu = kNone, shared_out = kNone;
    if (w.has_shared) {
      const std::vector<TensorId> projected =
          linears(name, {"router", "shared_expert.gate_up"}, x, {&w.router, &w.shared_gate_up});
      logits = projected[0];
      shared_gu = projected[1];
    } else {
      logits = linear(name + " router", x, w.router);
    }
    const std::vector<RowRange> groups = dispatch_groups(expert_segments_, ops::kExpertGemvMaxTokens);
    // Where the shared expert's down product is one GEMV and the MoE one group, the MoE node
    // records it beside the routing (MoeArgs::shared_down): one barrier fewer per layer.
    // Otherwise it is a node of its own before the MoE node.
    const std::vector<RowRange> linear_groups = dispatch_groups(linear_segments_, ops::kGemvMaxTokens);
    const bool shared_beside_routing = w.has_shared && groups.size() == 1 && linear_groups.size() == 1 &&
                                       linear_groups[0].count <= linear_groups[0].gemv_max;
    std::optional<SwigluDown> shared;
    if (shared_beside_routing) {
      shared = swiglu_down_tensors(name + " shared_expert", shared_gu, w.shared_gate_up, w.shared_down);
      shared_out = shared->y;
    } else if (w.has_shared) {
      shared_out = swiglu_down(name + " shared_expert", shared_gu, w.shared_gate_up, w.shared_down);
    }
    const ops::MoeShape s{.tokens = rows_,
                          .hidden = H,
                          .experts = E,
                          .top_k = uint32_t(c_.num_experts_per_tok),
                          .expert_dim = uint32_t(c_.moe_intermediate_size),
                          .normalise = c_.norm_topk_prob};
    const ops::MoeScratchBytes need = ops::moe_scratch_bytes(s);
    const TensorId gu = g_.bind(name + " experts.gate_up", TensorRole::Weight, w.experts_gate_up,
                                dims({E, 2 * s.expert_dim, H}, ops::weight_type_name(w.experts_type)));
    const TensorId dn = g_.bind(name + " experts.down", TensorRole::Weight, w.experts_down,
                                dims({E, H, s.expert_dim}, ops::weight_type_name(w.experts_type)));
    const TensorId ids = g_.scratch(name + " expert ids", need.ids, dims({rows_, s.top_k}, "u32"));
    const TensorId wts = g_.scratch(name + " expert weights", need.weights, dims({rows_, s.top_k}));
    const TensorId offs = g_.scratch(name + " expert offsets", need.offsets, dims({E + 1}, "u32"));
    const TensorId sorted = g_.scratch(name + " assignments by expert", need.sorted, dims({rows_ * s.top_k}, "u32"));
    const TensorId live = g_.scratch(name + " active experts", need.active, dims({E + 1}, "u32"));
    const TensorId hbuf = g_.scratch(name + " expert act", need.h, dims({rows_ * s.top_k, s.expert_dim}));
    const TensorId ybuf = g_.scratch(name + " expert out", need.y, dims({rows_ * s.top_k, H}));
    const TensorId out = g_.scratch(name + " moe out", uint64_t(rows_) * H * 4, dims({rows_, H}));
    const TensorId status = g_.bind(name + " routing status", TensorRole::Status,
                                    io_.status.range().sub(uint64_t(L) * 4, 4), dims({1}, "u32"));
    std::vector<TensorId> reads = {x, logits, gu, dn};
    std::vector<TensorId> writes = {ids, wts, offs, sorted, live, hbuf, ybuf, out, status};
    if (shared) {
      reads.insert(reads.end(), {shared->gu, shared->w});
      writes.insert(writes.end(), {shared->y, shared->act});
    } else if (shared_out != kNone) {
      reads.push_back(shared_out);
    }
    const uint32_t stride = w.router.rows;
    const ops::WeightType type = w.experts_type;
    const RowRange step_rows = linear_groups[0];  // the whole step where `shared` is set
    g_.add({name + " moe", "moe", reads, writes, [=](const Bindings& b, PipelineLibrary& p, CommandBuffer& cb) {
              for (size_t i = 0; i < groups.size(); ++i) {
                if (i) cb.barrier();  // the groups share the scratch
                const RowRange g = groups[i];
                const uint64_t at = uint64_t(g.first) * H * 4, bytes = uint64_t(g.count) * H * 4;
                ops::MoeShape gs = s;
                gs.tokens = g.count;
                std::optional<ops::LinearArgs> shared_down;
                if (shared) shared_down = shared->args(b, step_rows);  // one group: the whole step
                ops::record_moe(
                    p, cb,
                    {.x = b[x].sub(at, bytes),
                     .logits = b[logits].sub(uint64_t(g.first) * stride * 4, uint64_t(g.count) * stride * 4),
                     .logit_stride = stride,
                     .gate_up = b[gu],
                     .down = b[dn],
                     .type = type,
                     .shared_out = shared_out != kNone ? b[shared_out].sub(at, bytes) : BufferRange{},
                     .shared_logit_column = E,
                     .out = b[out].sub(at, bytes),
                     .shape = gs,
                     .status = b[status],
                     .gemv_max_tokens = g.gemv_max,
                     .shared_down = shared_down},
                    {.ids = b[ids],
                     .weights = b[wts],
                     .offsets = b[offs],
                     .sorted = b[sorted],
                     .active = b[live],
                     .h = b[hbuf],
                     .y = b[ybuf]});
              }
            }});
    return out;
  }

  // down(silu(gate(x)) * up(x)) with gate|up one matrix: the dense MLP and the shared expert.
  // The down projection reads gate|up and applies SwiGLU as it goes where it runs as a GEMV (decode
  // steps); elsewhere record_linear writes the activations to `act` first (LinearArgs::swiglu_input).
  TensorId swiglu_mlp(const std::string& name, TensorId x, const Matrix& gate_up, const Matrix& down) {
    return swiglu_down(name, linear(name + ".gate_up", x, gate_up), gate_up, down);
  }
  // The down projection of a SwiGLU MLP whose gate/up projection `gu` computed.
  TensorId swiglu_down(const std::string& name, TensorId gu, const Matrix& gate_up, const Matrix& down) {
    const SwigluDown d = swiglu_down_tensors(name, gu, gate_up, down);
    const std::vector<RowRange> groups = dispatch_groups(linear_segments_, ops::kGemvMaxTokens);
    const SplitScratch split = split_scratch(name + ".down", groups, d.n, d.k);
    std::vector<TensorId> outputs = {d.y, d.act};
    if (split.tensor != kNone) outputs.push_back(split.tensor);
    g_.add({name + ".down (SwiGLU input)",
            "linear",
            {gu, d.w},
            outputs,
            [=](const Bindings& b, PipelineLibrary& p, CommandBuffer& cb) {
              for (size_t i = 0; i < groups.size(); ++i)  // disjoint rows: no barrier between them
                ops::record_linear(p, cb, d.args(b, groups[i], split.range(b, i)));
            }});
    return d.y;
  }
  // The tensors of a SwiGLU down product (its gate|up input `gu`, the weight, the activations it
  // writes beside its output) and record_linear's arguments for some of its rows.
  struct SwigluDown {
    TensorId gu, w, act, y;
    uint32_t k, n;  // the intermediate size, the output features
    ops::WeightType type;
    ops::LinearArgs args(const Bindings& b, const RowRange& g, const BufferRange& k_split = {}) const {
      return {.x = b[gu].sub(uint64_t(g.first) * 2 * k * 4, uint64_t(g.count) * 2 * k * 4),
              .weight = b[w],
              .y = b[y].sub(uint64_t(g.first) * n * 4, uint64_t(g.count) * n * 4),
              .type = type,
              .tokens = g.count,
              .k = k,
              .n = n,
              .gemv_max_tokens = g.gemv_max,
              .swiglu_input = true,
              .act = b[act].sub(uint64_t(g.first) * k * 4, uint64_t(g.count) * k * 4),
              .k_split = k_split};
    }
  };
  SwigluDown swiglu_down_tensors(const std::string& name, TensorId gu, const Matrix& gate_up, const Matrix& down) {
    const uint32_t I = gate_up.rows / 2;
    return {.gu = gu,
            .w = weight(name + ".down.weight", down),
            .act = g_.scratch(name + " act", uint64_t(rows_) * I * 4, dims({rows_, I})),
            .y = g_.scratch(name + ".down out", uint64_t(rows_) * down.rows * 4, dims({rows_, down.rows})),
            .k = I,
            .n = down.rows,
            .type = down.type};
  }

  void head(TensorId h, TensorId pending) {
    if (shape_.head == Head::None && !shape_.hidden) return;
    const uint32_t H = c_.hidden_size;
    const bool all = shape_.head == Head::AllLogits || shape_.verify;
    if (!all && shape_.batch > 1 && shape_.tokens > 1)
      throw Error("internal: last-token heads need one sequence or one token per sequence");
    const uint32_t rows = shape_.logit_rows();
    // A mixed step samples the piece's last row and every decode row: rows [piece - 1, end).
    const uint32_t first_row = shape_.piece ? shape_.piece - 1 : all || shape_.tokens == 1 ? 0 : shape_.tokens - 1;
    if (!shape_.hidden) {
      sample_rows(norm("final norm", h, pending, w_.final_norm, rows, first_row), 0);
      return;
    }
    // The MTP head reads every row's final-normed state: normalise them all, send them to the host.
    const TensorId hn = norm("final norm", h, pending, w_.final_norm, rows_);
    const TensorId out =
        g_.bind("final hidden state (host)", TensorRole::Output, io_.final_hidden.range(), dims({rows_, H}));
    const uint64_t bytes = uint64_t(rows_) * H * 4;
    g_.add({"final hidden to host", "copy", {hn}, {out}, [=](const Bindings& b, PipelineLibrary&, CommandBuffer& cb) {
              cb.copy(b[hn], b[out], bytes);
            }});
    if (shape_.head != Head::None) sample_rows(hn, first_row);
  }

  // lm_head over the head's rows of hn (from row `first` of hn), then sampling or the logits to
  // the host.
  void sample_rows(TensorId hn, uint32_t first) {
    const uint32_t V = c_.vocab_size, H = c_.hidden_size;
    const uint32_t rows = shape_.mtp ? rows_ : shape_.logit_rows();
    const Matrix m = w_.lm_head;
    // The head's rows: the piece's last row and the decode rows, or the step's rows.
    const std::vector<SegmentRows> head_rows =
        shape_.piece ? std::vector<SegmentRows>{{1, linear_segments_[0].gemv_max}, linear_segments_[1]}
                     : std::vector<SegmentRows>{{rows, linear_segments_[0].gemv_max}};
    const std::vector<RowRange> groups = dispatch_groups(head_rows, ops::kGemvMaxTokens);
    const TensorId lm = weight("lm_head", m);
    const TensorId logits = g_.scratch("logits", uint64_t(rows) * V * 4, dims({rows, V}));
    g_.add({"lm_head", "lm_head", {hn, lm}, {logits}, [=](const Bindings& b, PipelineLibrary& p, CommandBuffer& cb) {
              for (const RowRange& g : groups)
                ops::record_linear(p, cb,
                                   {.x = b[hn].sub(uint64_t(first + g.first) * H * 4, uint64_t(g.count) * H * 4),
                                    .weight = b[lm],
                                    .y = b[logits].sub(uint64_t(g.first) * V * 4, uint64_t(g.count) * V * 4),
                                    .type = m.type,
                                    .tokens = g.count,
                                    .k = H,
                                    .n = V,
                                    .gemv_max_tokens = g.gemv_max});
            }});
    if (shape_.head == Head::Sample) {
      const TensorId params =
          g_.bind("sampling parameters", TensorRole::Input, io_.sampling.range(), dims({rows, 8}, "u32"));
      const TensorId ids = g_.bind("sampled ids", TensorRole::Output, io_.sampled.range(), dims({rows}, "u32"));
      g_.add(
          {"sample", "sample", {logits, params}, {ids}, [=](const Bindings& b, PipelineLibrary& p, CommandBuffer& cb) {
             ops::record_sample(p, cb,
                                {.logits = b[logits], .params = b[params], .ids = b[ids], .batch = rows, .vocab = V});
           }});
      if (shape_.verify) verify_commit(ids);
    } else {
      const TensorId host = g_.bind("logits (host)", TensorRole::Output, io_.logits.range(), dims({rows, V}));
      const uint64_t bytes = uint64_t(rows) * V * 4;
      g_.add({"logits to host", "copy", {logits}, {host}, [=](const Bindings& b, PipelineLibrary&, CommandBuffer& cb) {
                cb.copy(b[logits], b[host], bytes);
              }});
    }
  }

  // A verify step's DeltaNet layer: what its commit reads again.
  struct DeltaCommit {
    TensorId mixed, conv_state, qkv, ba, a_log, dt_bias, recurrent;  // raw q, k: no prepare
    ops::WeightType conv_type;                                       // the pipeline's; a commit reads no conv weight
    ops::DeltaShape shape;
    uint32_t kernel;
  };

  // After a verify step's sampling: the accepted count of each sequence, then every DeltaNet
  // layer's conv and recurrent state after the accepted rows, from the rows the step kept.
  void verify_commit(TensorId sampled) {
    const uint32_t B = shape_.batch, T = shape_.tokens;
    const TensorId ids = ids_;
    const TensorId count = g_.bind("accepted counts", TensorRole::Output, io_.accepted.range(), dims({B}, "u32"));
    g_.add({"accept drafts",
            "spec_accept",
            {ids, sampled},
            {count},
            [=](const Bindings& b, PipelineLibrary& p, CommandBuffer& cb) {
              ops::record_spec_accept(
                  p, cb, {.ids = b[ids], .sampled = b[sampled], .count = b[count], .batch = B, .tokens = T});
            }});
    if (commits_.empty()) return;
    // Every DeltaNet layer's conv commit in one dispatch, then every delta-rule commit in another
    // (the layers share their shapes; they read the tables' addresses).
    const DeltaCommit first = commits_.front();
    for (const DeltaCommit& d : commits_)
      if (d.shape.qkv_width() != first.shape.qkv_width() || d.shape.dk != first.shape.dk ||
          d.shape.dv != first.shape.dv || d.kernel != first.kernel)
        throw Error("internal: a verify step's DeltaNet layers differ in shape");
    const uint64_t layers = commits_.size();
    if (!io_.commit_table || io_.commit_table.size() < layers * kCommitTableBytesPerLayer)
      throw Error("internal: the verify step's commit address table is missing or too small");
    const ops::AddressTable conv_table{io_.commit_table.range().sub(0, layers * kConvCommitTableBytesPerLayer),
                                       io_.commit_table.mapped()};
    const ops::AddressTable delta_table{
        io_.commit_table.range().sub(layers * kConvCommitTableBytesPerLayer, layers * kDeltaCommitTableBytesPerLayer),
        static_cast<char*>(io_.commit_table.mapped()) + layers * kConvCommitTableBytesPerLayer};
    const std::vector<DeltaCommit> commits = commits_;
    const TensorId seqs = seqs_;
    std::vector<TensorId> conv_reads{seqs, count}, conv_writes, delta_reads{seqs, count}, delta_writes;
    for (const DeltaCommit& d : commits) {
      conv_reads.insert(conv_reads.end(), {d.mixed, d.conv_state});
      conv_writes.push_back(d.conv_state);
      delta_reads.insert(delta_reads.end(), {d.qkv, d.ba, d.a_log, d.dt_bias, d.recurrent});
      delta_writes.push_back(d.recurrent);
    }
    g_.add({"conv state commits", "conv", conv_reads, conv_writes,
            [=](const Bindings& b, PipelineLibrary& p, CommandBuffer& cb) {
              std::vector<ops::ConvCommitLayer> tensors;
              for (const DeltaCommit& d : commits) tensors.push_back({b[d.mixed], b[d.conv_state]});
              ops::record_causal_conv1d_commits(p, cb,
                                                {.seqs = b[seqs],
                                                 .type = first.conv_type,
                                                 .batch = B,
                                                 .tokens = T,
                                                 .channels = first.shape.qkv_width(),
                                                 .kernel = first.kernel,
                                                 .update = ops::StateUpdate::Commit,
                                                 .accepted = b[count]},
                                                tensors, conv_table);
            }});
    g_.add({"delta state commits", "delta_rule", delta_reads, delta_writes,
            [=](const Bindings& b, PipelineLibrary& p, CommandBuffer& cb) {
              std::vector<ops::DeltaCommitLayer> tensors;
              for (const DeltaCommit& d : commits)
                tensors.push_back({b[d.qkv], b[d.recurrent], b[d.ba], b[d.a_log], b[d.dt_bias]});
              ops::record_delta_rule_commits(p, cb,
                                             {.seqs = b[seqs],
                                              .shape = first.shape,
                                              .update = ops::StateUpdate::Commit,
                                              .accepted = b[count],
                                              .raw_inputs = true},
                                             tensors, delta_table);
            }});
  }

  const Device& device_;
  const ModelConfig& c_;
  const DeviceWeights& w_;
  const SequenceState& state_;
  const StepShape shape_;
  const StepIO& io_;
  const uint32_t rows_;
  const uint32_t rope_offset_;
  const bool gpu_shapes_;
  const LayerSpan span_;
  const std::vector<StepSegment> segments_;
  std::vector<SegmentRows> linear_segments_, expert_segments_;
  Graph g_;
  TensorId seqs_ = kNone, row_seqs_ = kNone, ids_ = kNone, freq_ = kNone;
  std::vector<DeltaCommit> commits_;
};

}  // namespace

std::vector<StepSegment> step_segments(const StepShape& shape) {
  if (!shape.piece) return {{0, 0, shape.batch, shape.tokens}};
  return {{0, 0, 1, shape.piece}, {shape.piece, 1, shape.batch, shape.tokens}};
}

Graph build_step_graph(const Device& device, const ModelConfig& config, const DeviceWeights& weights,
                       const SequenceState& state, const StepShape& shape, const StepIO& io,
                       const StepOptions& options) {
  return Builder(device, config, weights, state, shape, io, options).build();
}

}  // namespace q3n::graph
