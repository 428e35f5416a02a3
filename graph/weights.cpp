#include "graph/weights.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <thread>
#include <utility>

#include "graph/weight_cache.h"
#include "loader/tensor_schema.h"
#include "runtime/error.h"
#include "runtime/ops/attention.h"
#include "runtime/ops/fill_random.h"
#include "runtime/ops/quantize.h"

namespace q3n::graph {

namespace {

float element(const TensorView& t, size_t i) {
  switch (t.dtype) {
    case DType::F32: {
      float f;
      std::memcpy(&f, t.data + i * 4, 4);
      return f;
    }
    case DType::BF16:
      return ops::decode_weight(ops::WeightType::BF16, t.data, i);
    case DType::F16:
      return ops::decode_weight(ops::WeightType::F16, t.data, i);
  }
  return 0;
}
ops::WeightType weight_type(DType t) { return static_cast<ops::WeightType>(static_cast<uint32_t>(t)); }

struct RowSource {
  const TensorView* tensor;
  int64_t row;
};

// How a matrix may be stored: as on disk, or converted to the requested format.
enum class Use { Keep, Convert, Output };

ops::WeightType target_type(ops::WeightType stored, Use use, WeightFormat format, int64_t cols) {
  if (use == Use::Keep || format == WeightFormat::AsStored) return stored;
  if (format == WeightFormat::BF16) return stored == ops::WeightType::F32 ? ops::WeightType::BF16 : stored;
  if (cols % ops::kQuantBlock) return stored;  // rows that are not whole blocks stay as they are
  if (format == WeightFormat::Q4 && use == Use::Output) return ops::WeightType::Q8;
  return format == WeightFormat::Q8 ? ops::WeightType::Q8 : ops::WeightType::Q4;
}

// Streams rows, converted to `type`, to the device in bounded pieces. Rows already in `type`
// are copied; the others are converted (to f32, then encoded) on all cores at each flush, since
// quantising an 80B checkpoint on one core takes ~10 minutes (~150 M weights/s).
class Assembler {
 public:
  Assembler(Runtime& rt, const BufferRange& dst, ops::WeightType type, WeightCache* cache)
      : rt_(rt), dst_(dst), type_(type), cache_(cache) {}
  void add_row(const TensorView& t, int64_t row, int64_t cols) {
    if (weight_type(t.dtype) == type_) {
      convert_pending();  // keep rows in order
      const size_t bytes = size_t(cols) * dtype_size(t.dtype);
      const std::byte* src = t.data + size_t(row) * bytes;
      buffer_.insert(buffer_.end(), src, src + bytes);
    } else {
      pending_.push_back({&t, row});
      pending_cols_ = cols;
    }
    if (buffer_.size() + pending_.size() * ops::weight_storage_bytes(type_, uint64_t(cols)) >= (64u << 20)) flush();
  }
  void flush() {
    convert_pending();
    if (buffer_.empty()) return;
    rt_.transfer.upload(dst_.sub(written_, buffer_.size()), buffer_.data(), buffer_.size());
    if (cache_) cache_->write(buffer_.data(), buffer_.size());
    written_ += buffer_.size();
    buffer_.clear();
  }

 private:
  void convert_pending() {
    if (pending_.empty()) return;
    const size_t cols = size_t(pending_cols_), row_bytes = ops::weight_storage_bytes(type_, cols);
    const size_t at = buffer_.size();
    buffer_.resize(at + pending_.size() * row_bytes);
    auto work = [&](size_t first, size_t last) {
      std::vector<float> row(cols);
      for (size_t i = first; i < last; ++i) {
        const RowSource& r = pending_[i];
        const size_t base = size_t(r.row) * cols;
        for (size_t c = 0; c < cols; ++c) row[c] = element(*r.tensor, base + c);
        ops::encode_weights(type_, row.data(), cols, buffer_.data() + at + i * row_bytes);
      }
    };
    const size_t threads = std::clamp<size_t>(std::thread::hardware_concurrency(), 1, 64);
    const size_t per = (pending_.size() + threads - 1) / threads;
    std::vector<std::thread> pool;
    for (size_t first = per; first < pending_.size(); first += per)
      pool.emplace_back(work, first, std::min(first + per, pending_.size()));
    work(0, std::min(per, pending_.size()));
    for (std::thread& t : pool) t.join();
    pending_.clear();
  }

  Runtime& rt_;
  BufferRange dst_;
  ops::WeightType type_;
  WeightCache* cache_;
  std::vector<RowSource> pending_;  // rows waiting for conversion, all `pending_cols_` wide
  int64_t pending_cols_ = 0;
  std::vector<std::byte> buffer_;
  uint64_t written_ = 0;
};

// The value range of a synthetic f32 vector, by what it is (spec §9's randomisation).
std::pair<float, float> synthetic_range(const std::string& name) {
  if (name.ends_with("A_log")) return {0.0f, 2.77f};  // log(U(1, 16))
  if (name.ends_with("dt_bias")) return {-0.5f, 0.5f};
  if (name.ends_with("linear_attn.norm.weight")) return {0.9f, 1.1f};  // plain (not zero-centred)
  return {-0.1f, 0.1f};                                                // zero-centred norms: 1 + w
}

// Puts each tensor on the device: from the checkpoint, as synthetic random values, or (runtime
// null) only counting the bytes it would take.
class Uploader {
 public:
  Uploader(Runtime* rt, const std::map<std::string, TensorView>& tensors, bool synthetic, uint32_t seed,
           const WeightOptions& options, WeightCache* cache, std::vector<Allocation>& storage, uint64_t& bytes)
      : rt_(rt),
        tensors_(tensors),
        synthetic_(synthetic),
        seed_(seed),
        options_(options),
        cache_(cache),
        storage_(storage),
        bytes_(bytes) {
    if (rt_ && synthetic_) {
      fills_ = std::make_unique<CommandBuffer>(rt_->pool.allocate());
      fills_->begin();
    }
  }
  // Synthetic fills are recorded into one command buffer, submitted here.
  void finish() {
    if (!fills_) return;
    fills_->barrier();
    fills_->end();
    rt_->queue.submit_and_wait(*fills_);
    fills_.reset();
  }

  // While skipping (tensors outside a pipeline split's span), matrices and vectors get their
  // shapes but no memory; synthetic seeds still advance, so every device draws the unsplit values.
  void set_skipping(bool skipping) { skipping_ = skipping && rt_; }

  const TensorView& tensor(const std::string& name) const {
    auto it = tensors_.find(name);
    if (it == tensors_.end()) throw Error("the checkpoint has no tensor " + name);
    return it->second;
  }
  bool has(const std::string& name) const { return tensors_.count(name) != 0; }

  // Rows gathered from several 2-D tensors of equal width into one matrix.
  Matrix matrix(const std::string& what, const std::vector<RowSource>& rows, Use use = Use::Convert) {
    if (rows.empty()) throw Error("internal: empty matrix " + what);
    const int64_t cols = rows[0].tensor->shape.back();
    DType stored = rows[0].tensor->dtype;
    for (const RowSource& r : rows) {
      if (r.tensor->shape.back() != cols) throw Error("tensor " + r.tensor->name + " has the wrong width for " + what);
      if (r.tensor->dtype != stored) stored = DType::F32;
    }
    const ops::WeightType type = target_type(weight_type(stored), use, options_.format, cols);
    const uint64_t elements = uint64_t(rows.size()) * cols;
    const Matrix shape{{}, type, static_cast<uint32_t>(rows.size()), static_cast<uint32_t>(cols)};
    if (!rt_) {  // planning
      bytes_ += ops::weight_storage_bytes(type, elements);
      return shape;
    }
    if (skipping_) {
      if (!synthetic_) {
        report_skipped(rows);
        return shape;
      }
      ++seed_;
      if (options_.progress) options_.progress(ops::weight_storage_bytes(type, elements));
      return shape;
    }
    Matrix m = shape;
    const uint64_t stored_bytes = ops::weight_storage_bytes(type, elements);
    m.range = allocate(stored_bytes, what);
    if (synthetic_) {
      const float a = std::sqrt(3.0f / float(cols));  // unit variance in, unit variance out
      ops::record_fill_random(rt_->pipelines, *fills_,
                              {.dst = m.range, .type = type, .elements = elements, .seed = seed_++, .lo = -a, .hi = a});
      if (options_.progress) options_.progress(m.range.size);
      return m;
    }
    const bool cached = cache_ && cache_->reading();
    // The allocation may be rounded up past the matrix; the cache holds the matrix's bytes only.
    if (cached) upload_from_cache(m.range.sub(0, stored_bytes));
    Assembler out(*rt_, m.range, type, cache_);
    const TensorView* last = nullptr;
    for (const RowSource& r : rows) {
      if (!cached) out.add_row(*r.tensor, r.row, cols);
      if (r.tensor != last && options_.progress) options_.progress(r.tensor->bytes);
      last = r.tensor;
    }
    out.flush();
    return m;
  }
  Matrix matrix(const std::string& name, Use use = Use::Convert) {
    return matrix(name, all_rows({&tensor(name)}), use);
  }

  // A tensor as f32, whatever its stored dtype (norms, A_log, dt_bias).
  BufferRange vector_f32(const std::string& name) {
    const TensorView& t = tensor(name);
    const uint64_t bytes = uint64_t(t.elements()) * 4;
    if (!rt_) {  // planning
      bytes_ += bytes;
      return {};
    }
    if (skipping_) {
      if (synthetic_) ++seed_;
      if (options_.progress) options_.progress(synthetic_ ? bytes : t.bytes);
      return {};
    }
    BufferRange range = allocate(bytes, name);
    if (synthetic_) {
      const auto [lo, hi] = synthetic_range(name);
      ops::record_fill_random(rt_->pipelines, *fills_,
                              {.dst = range,
                               .type = ops::WeightType::F32,
                               .elements = uint64_t(t.elements()),
                               .seed = seed_++,
                               .lo = lo,
                               .hi = hi});
      return range;
    }
    std::vector<float> values(t.elements());
    if (cache_ && cache_->reading()) {
      cache_->read(values.data(), bytes);
    } else {
      for (size_t i = 0; i < values.size(); ++i) values[i] = element(t, i);
      if (cache_) cache_->write(values.data(), bytes);
    }
    rt_->transfer.upload(range, values.data(), values.size() * 4);
    if (options_.progress) options_.progress(t.bytes);
    return range;
  }

  static std::vector<RowSource> all_rows(const std::vector<const TensorView*>& tensors) {
    std::vector<RowSource> rows;
    for (const TensorView* t : tensors)
      for (int64_t r = 0; r < t->shape[0]; ++r) rows.push_back({t, r});
    return rows;
  }

 private:
  // Progress for rows not put on this device: their tensors' bytes, as if loaded.
  void report_skipped(const std::vector<RowSource>& rows) {
    if (!options_.progress) return;
    const TensorView* last = nullptr;
    for (const RowSource& r : rows) {
      if (r.tensor != last) options_.progress(r.tensor->bytes);
      last = r.tensor;
    }
  }
  void upload_from_cache(const BufferRange& range) {
    std::vector<std::byte> chunk;
    for (uint64_t done = 0; done < range.size;) {
      const uint64_t n = std::min<uint64_t>(range.size - done, 64u << 20);
      chunk.resize(n);
      cache_->read(chunk.data(), n);
      rt_->transfer.upload(range.sub(done, n), chunk.data(), n);
      done += n;
    }
  }
  BufferRange allocate(uint64_t bytes, const std::string& what) {
    storage_.push_back(rt_->allocator.allocate(bytes, MemoryKind::Device, what));
    bytes_ += bytes;
    return storage_.back().range();
  }
  Runtime* rt_;
  const std::map<std::string, TensorView>& tensors_;
  bool synthetic_;
  uint32_t seed_;
  const WeightOptions& options_;
  WeightCache* cache_;
  std::vector<Allocation>& storage_;
  uint64_t& bytes_;
  std::unique_ptr<CommandBuffer> fills_;
  bool skipping_ = false;
};

// The tensors a checkpoint of this config holds (spec §2), as BF16 views without data.
std::map<std::string, TensorView> synthetic_tensors(const ModelConfig& c, bool mtp) {
  std::map<std::string, TensorView> out;
  for (const ExpectedTensor& e : expected_tensors(c, mtp)) {
    TensorView t;
    t.name = e.name;
    t.dtype = DType::BF16;
    t.shape = e.shape;
    t.bytes = size_t(t.elements()) * 2;
    t.file = "(synthetic)";
    out.emplace(e.name, std::move(t));
  }
  return out;
}

DeltaNetWeights load_delta(Uploader& up, const ModelConfig& c, const std::string& p) {
  const int hk = c.linear_num_key_heads, hv = c.linear_num_value_heads, dk = c.linear_key_head_dim,
            dv = c.linear_value_head_dim, r = hv / hk;
  const TensorView& qkvz = up.tensor(p + "in_proj_qkvz.weight");
  const TensorView& ba = up.tensor(p + "in_proj_ba.weight");
  const int group = 2 * dk + 2 * r * dv;  // rows per key head in in_proj_qkvz (spec §2.6)
  std::vector<RowSource> qkv_rows, z_rows, ba_rows;
  for (int g = 0; g < hk; ++g)
    for (int d = 0; d < dk; ++d) qkv_rows.push_back({&qkvz, int64_t(g) * group + d});
  for (int g = 0; g < hk; ++g)
    for (int d = 0; d < dk; ++d) qkv_rows.push_back({&qkvz, int64_t(g) * group + dk + d});
  for (int j = 0; j < hv; ++j)  // value head j = r g + i
    for (int d = 0; d < dv; ++d) qkv_rows.push_back({&qkvz, int64_t(j / r) * group + 2 * dk + (j % r) * dv + d});
  for (int j = 0; j < hv; ++j)
    for (int d = 0; d < dv; ++d) z_rows.push_back({&qkvz, int64_t(j / r) * group + 2 * dk + r * dv + (j % r) * dv + d});
  for (int j = 0; j < hv; ++j) ba_rows.push_back({&ba, int64_t(j / r) * 2 * r + j % r});
  for (int j = 0; j < hv; ++j) ba_rows.push_back({&ba, int64_t(j / r) * 2 * r + r + j % r});

  DeltaNetWeights w;
  w.qkv = up.matrix(p + "in_proj_qkvz.weight [q; k; v]", qkv_rows);
  w.z = up.matrix(p + "in_proj_qkvz.weight [z]", z_rows);
  w.ba = up.matrix(p + "in_proj_ba.weight [b; a]", ba_rows, Use::Keep);
  w.out = up.matrix(p + "out_proj.weight");
  const Matrix conv = up.matrix(p + "conv1d.weight", Uploader::all_rows({&up.tensor(p + "conv1d.weight")}), Use::Keep);
  w.conv = conv.range;
  w.conv_type = conv.type;
  w.a_log = up.vector_f32(p + "A_log");
  w.dt_bias = up.vector_f32(p + "dt_bias");
  w.norm = up.vector_f32(p + "norm.weight");
  return w;
}

AttentionWeights load_attention(Uploader& up, const std::string& p) {
  AttentionWeights w;
  w.qkv = up.matrix(p + "{q,k,v}_proj.weight",
                    Uploader::all_rows({&up.tensor(p + "q_proj.weight"), &up.tensor(p + "k_proj.weight"),
                                        &up.tensor(p + "v_proj.weight")}));
  w.out = up.matrix(p + "o_proj.weight");
  w.q_norm = up.vector_f32(p + "q_norm.weight");
  w.k_norm = up.vector_f32(p + "k_norm.weight");
  return w;
}

MlpWeights load_mlp(Uploader& up, const ModelConfig& c, bool moe, const std::string& p) {
  MlpWeights w;
  w.moe = moe;
  if (!w.moe) {
    w.gate_up = up.matrix(p + "{gate,up}_proj.weight",
                          Uploader::all_rows({&up.tensor(p + "gate_proj.weight"), &up.tensor(p + "up_proj.weight")}));
    w.down = up.matrix(p + "down_proj.weight");
    return w;
  }
  w.has_shared = up.has(p + "shared_expert.gate_proj.weight");
  std::vector<const TensorView*> router = {&up.tensor(p + "gate.weight")};
  if (w.has_shared) router.push_back(&up.tensor(p + "shared_expert_gate.weight"));
  w.router = up.matrix(p + "gate.weight + shared_expert_gate.weight", Uploader::all_rows(router), Use::Keep);
  std::vector<const TensorView*> gate_up, down;
  for (int e = 0; e < c.num_experts; ++e) {
    const std::string ep = p + "experts." + std::to_string(e) + ".";
    gate_up.push_back(&up.tensor(ep + "gate_proj.weight"));
    gate_up.push_back(&up.tensor(ep + "up_proj.weight"));
    down.push_back(&up.tensor(ep + "down_proj.weight"));
  }
  const Matrix packed_gate_up = up.matrix(p + "experts.*.{gate,up}_proj.weight", Uploader::all_rows(gate_up));
  const Matrix packed_down = up.matrix(p + "experts.*.down_proj.weight", Uploader::all_rows(down));
  if (packed_gate_up.type != packed_down.type)
    throw Error("the experts of " + p + " mix dtypes between gate/up and down projections; q3n needs one dtype");
  w.experts_gate_up = packed_gate_up.range;
  w.experts_down = packed_down.range;
  w.experts_type = packed_gate_up.type;
  if (w.has_shared) {
    w.shared_gate_up = up.matrix(p + "shared_expert.{gate,up}_proj.weight",
                                 Uploader::all_rows({&up.tensor(p + "shared_expert.gate_proj.weight"),
                                                     &up.tensor(p + "shared_expert.up_proj.weight")}));
    w.shared_down = up.matrix(p + "shared_expert.down_proj.weight");
  }
  return w;
}

}  // namespace

WeightFormat parse_weight_format(const std::string& name) {
  if (name == "bf16") return WeightFormat::BF16;
  if (name == "q8") return WeightFormat::Q8;
  if (name == "q4") return WeightFormat::Q4;
  if (name == "stored" || name.empty()) return WeightFormat::AsStored;
  throw Error("unknown weight format '" + name + "': use bf16, q8 or q4 (or stored)");
}

const char* weight_format_name(WeightFormat f) {
  switch (f) {
    case WeightFormat::AsStored:
      return "as stored";
    case WeightFormat::BF16:
      return "bf16";
    case WeightFormat::Q8:
      return "q8";
    case WeightFormat::Q4:
      return "q4";
  }
  return "?";
}

DeviceWeights::DeviceWeights(Runtime& runtime, const ModelConfig& c, const Checkpoint& ck, const WeightOptions& o)
    : DeviceWeights(&runtime, c, &ck, 0, o) {}

DeviceWeights::DeviceWeights(Runtime& runtime, const ModelConfig& c, uint32_t seed, const WeightOptions& o)
    : DeviceWeights(&runtime, c, nullptr, seed, o) {}

uint64_t DeviceWeights::planned_bytes(const ModelConfig& c, const Checkpoint* ck, WeightFormat format, bool mtp) {
  WeightOptions o;
  o.format = format;
  o.mtp = mtp;
  return DeviceWeights(nullptr, c, ck, 0, o).bytes();
}

WeightParts DeviceWeights::planned_parts(const ModelConfig& c, const Checkpoint* ck, WeightFormat format, bool mtp) {
  WeightOptions o;
  o.format = format;
  o.mtp = mtp;
  return DeviceWeights(nullptr, c, ck, 0, o).parts_;
}

uint64_t WeightParts::total() const {
  uint64_t sum = embed + head + rope + mtp;
  for (uint64_t b : layers) sum += b;
  return sum;
}

uint64_t WeightParts::on_device(const ModelConfig& c, const LayerSpan& span) const {
  uint64_t sum = rope;
  // A tied lm_head is the embedding table: the last device holds it too.
  if (span.embeds() || (span.heads(c) && tied)) sum += embed;
  if (span.heads(c)) sum += head + mtp;
  for (uint32_t L = span.first; L < span.last_of(c); ++L) sum += layers.at(L);
  return sum;
}

DeviceWeights::DeviceWeights(Runtime* runtime, const ModelConfig& c, const Checkpoint* ck, uint32_t seed,
                             const WeightOptions& options) {
  const std::map<std::string, TensorView> synthetic =
      ck ? std::map<std::string, TensorView>{} : synthetic_tensors(c, options.mtp);
  std::unique_ptr<WeightCache> cache;
  if (runtime && ck && !options.cache_dir.empty()) {
    const uint64_t rope_bytes = std::max(1, c.rotary_dim() / 2) * 4ull;  // computed, not cached
    // A split device caches its own span's tensors, under a name of its own.
    std::string what = weight_format_name(options.format);
    if (options.mtp) what += " with the MTP head";
    if (!options.layers.whole(c))
      what += " " + options.layers.describe(c) + " of " + std::to_string(c.num_hidden_layers);
    const WeightParts parts = planned_parts(c, ck, options.format, options.mtp);
    cache =
        std::make_unique<WeightCache>(options.cache_dir, *ck, what, parts.on_device(c, options.layers) - rope_bytes);
    cache_note_ = std::string(cache->reading() ? "weights read from cache " : "weights cache written to ") +
                  cache->path().string();
    if (!cache->rebuilt_because().empty()) cache_note_ = cache->rebuilt_because() + "; " + cache_note_;
  }
  Uploader up(runtime, ck ? ck->tensors() : synthetic, ck == nullptr, seed, options, cache.get(), storage_, bytes_);
  const LayerSpan& span = options.layers;
  const bool tied = c.tie_word_embeddings || !up.has("lm_head.weight");
  parts_.tied = tied;
  // Bytes counted since `mark` (planning: each part's size).
  uint64_t mark = bytes_;
  const auto part = [&] { return std::exchange(mark, bytes_); };
  up.set_skipping(!span.embeds() && !(tied && span.heads(c)));
  embed = up.matrix("model.embed_tokens.weight", Use::Keep);
  parts_.embed = bytes_ - part();
  up.set_skipping(!span.heads(c));
  final_norm = up.vector_f32("model.norm.weight");
  lm_head = tied ? embed : up.matrix("lm_head.weight", Use::Output);
  parts_.head = bytes_ - part();
  for (int L = 0; L < c.num_hidden_layers; ++L) {
    up.set_skipping(!span.contains(c, L));
    const std::string p = "model.layers." + std::to_string(L) + ".";
    LayerWeights layer;
    layer.type = c.layer_types[L];
    layer.input_norm = up.vector_f32(p + "input_layernorm.weight");
    layer.post_norm = up.vector_f32(p + "post_attention_layernorm.weight");
    if (layer.type == LayerType::LinearAttention)
      layer.delta = load_delta(up, c, p + "linear_attn.");
    else
      layer.attention = load_attention(up, p + "self_attn.");
    layer.mlp = load_mlp(up, c, c.is_moe_layer(L), p + "mlp.");
    layers.push_back(std::move(layer));
    parts_.layers.push_back(bytes_ - part());
  }
  if (options.mtp) {
    // The MTP head (spec §2.7, §4) runs after the model's head: on the last device.
    if (!up.has("mtp.fc.weight"))
      throw Error("the checkpoint has no MTP head (mtp.* tensors), so --mtp cannot run; drop --mtp");
    up.set_skipping(!span.heads(c));
    MtpWeights m;
    m.fc = up.matrix("mtp.fc.weight");
    m.norm_embedding = up.vector_f32("mtp.pre_fc_norm_embedding.weight");
    m.norm_hidden = up.vector_f32("mtp.pre_fc_norm_hidden.weight");
    m.final_norm = up.vector_f32("mtp.norm.weight");
    const std::string p = "mtp.layers.0.";
    m.layer.type = LayerType::FullAttention;
    m.layer.input_norm = up.vector_f32(p + "input_layernorm.weight");
    m.layer.post_norm = up.vector_f32(p + "post_attention_layernorm.weight");
    m.layer.attention = load_attention(up, p + "self_attn.");
    m.layer.mlp = load_mlp(up, c, c.num_experts > 0, p + "mlp.");
    mtp = std::move(m);
    parts_.mtp = bytes_ - part();
  }
  std::vector<float> freq = ops::rope_inv_freq(c.rope_theta, c.rotary_dim());
  if (freq.empty()) freq.push_back(0.0f);
  bytes_ += freq.size() * 4;
  parts_.rope = freq.size() * 4;
  if (!runtime) return;
  up.finish();
  if (cache) cache->commit();
  storage_.push_back(runtime->allocator.allocate(freq.size() * 4, MemoryKind::Device, "RoPE inverse frequencies"));
  rope_inv_freq = storage_.back().range();
  runtime->transfer.upload(rope_inv_freq, freq.data(), freq.size() * 4);
}

}  // namespace q3n::graph
