#include "graph/weights.h"

#include <cstring>

#include "runtime/error.h"
#include "runtime/ops/attention.h"

namespace q3n::graph {

namespace {

float bf16_to_f32(uint16_t h) {
  const uint32_t bits = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
float f16_to_f32(uint16_t h) {
  const uint32_t sign = uint32_t(h >> 15) << 31, exp = (h >> 10) & 0x1F, mant = h & 0x3FF;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: renormalise
      int e = -1;
      uint32_t m = mant;
      do { ++e; m <<= 1; } while ((m & 0x400) == 0);
      bits = sign | uint32_t(127 - 15 - e) << 23 | (m & 0x3FF) << 13;
    }
  } else if (exp == 31) {
    bits = sign | 0x7F800000u | mant << 13;
  } else {
    bits = sign | (exp + 127 - 15) << 23 | mant << 13;
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
float element(const TensorView& t, size_t i) {
  switch (t.dtype) {
    case DType::F32: { float f; std::memcpy(&f, t.data + i * 4, 4); return f; }
    case DType::BF16: { uint16_t h; std::memcpy(&h, t.data + i * 2, 2); return bf16_to_f32(h); }
    case DType::F16: { uint16_t h; std::memcpy(&h, t.data + i * 2, 2); return f16_to_f32(h); }
  }
  return 0;
}
ops::WeightType weight_type(DType t) { return static_cast<ops::WeightType>(static_cast<uint32_t>(t)); }

struct RowSource {
  const TensorView* tensor;
  int64_t row;
};

// Streams converted rows to the device in bounded pieces.
class Assembler {
 public:
  Assembler(Runtime& rt, const BufferRange& dst, DType type) : rt_(rt), dst_(dst), type_(type) {}
  void add_row(const TensorView& t, int64_t row, int64_t cols) {
    const size_t first = size_t(row) * cols;
    if (t.dtype == type_) {
      const size_t bytes = size_t(cols) * dtype_size(type_);
      const std::byte* src = t.data + first * dtype_size(type_);
      buffer_.insert(buffer_.end(), src, src + bytes);
    } else {  // mixed parts: widen to f32 (the only target used for mixtures)
      for (int64_t c = 0; c < cols; ++c) {
        const float f = element(t, first + c);
        const auto* p = reinterpret_cast<const std::byte*>(&f);
        buffer_.insert(buffer_.end(), p, p + 4);
      }
    }
    if (buffer_.size() >= (64u << 20)) flush();
  }
  void flush() {
    if (buffer_.empty()) return;
    rt_.transfer.upload(dst_.sub(written_, buffer_.size()), buffer_.data(), buffer_.size());
    written_ += buffer_.size();
    buffer_.clear();
  }

 private:
  Runtime& rt_;
  BufferRange dst_;
  DType type_;
  std::vector<std::byte> buffer_;
  uint64_t written_ = 0;
};

class Uploader {
 public:
  Uploader(Runtime& rt, const Checkpoint& ck, ProgressBar* progress, std::vector<Allocation>& storage, uint64_t& bytes)
      : rt_(rt), ck_(ck), progress_(progress), storage_(storage), bytes_(bytes) {}

  const TensorView& tensor(const std::string& name) const { return ck_.tensor(name); }
  bool has(const std::string& name) const { return ck_.find(name) != nullptr; }

  // Rows gathered from several 2-D tensors of equal width into one matrix.
  Matrix matrix(const std::string& what, const std::vector<RowSource>& rows) {
    if (rows.empty()) throw Error("internal: empty matrix " + what);
    const int64_t cols = rows[0].tensor->shape.back();
    DType type = rows[0].tensor->dtype;
    for (const RowSource& r : rows) {
      if (r.tensor->shape.back() != cols) throw Error("tensor " + r.tensor->name + " has the wrong width for " + what);
      if (r.tensor->dtype != type) type = DType::F32;
    }
    const uint64_t size = uint64_t(rows.size()) * cols * dtype_size(type);
    BufferRange range = allocate(size, what);
    Assembler out(rt_, range, type);
    const TensorView* last = nullptr;
    for (const RowSource& r : rows) {
      out.add_row(*r.tensor, r.row, cols);
      if (r.tensor != last && progress_) progress_->advance(r.tensor->bytes);
      last = r.tensor;
    }
    out.flush();
    return {range, weight_type(type), static_cast<uint32_t>(rows.size()), static_cast<uint32_t>(cols)};
  }
  Matrix matrix(const std::string& name) { return matrix(name, all_rows({&tensor(name)})); }

  // A tensor as f32, whatever its stored dtype (norms, A_log, dt_bias).
  BufferRange vector_f32(const std::string& name) {
    const TensorView& t = tensor(name);
    std::vector<float> values(t.elements());
    for (size_t i = 0; i < values.size(); ++i) values[i] = element(t, i);
    BufferRange range = allocate(values.size() * 4, name);
    rt_.transfer.upload(range, values.data(), values.size() * 4);
    if (progress_) progress_->advance(t.bytes);
    return range;
  }

  static std::vector<RowSource> all_rows(const std::vector<const TensorView*>& tensors) {
    std::vector<RowSource> rows;
    for (const TensorView* t : tensors)
      for (int64_t r = 0; r < t->shape[0]; ++r) rows.push_back({t, r});
    return rows;
  }

 private:
  BufferRange allocate(uint64_t bytes, const std::string& what) {
    storage_.push_back(rt_.allocator.allocate(bytes, MemoryKind::Device, what));
    bytes_ += bytes;
    return storage_.back().range();
  }
  Runtime& rt_;
  const Checkpoint& ck_;
  ProgressBar* progress_;
  std::vector<Allocation>& storage_;
  uint64_t& bytes_;
};

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
  w.ba = up.matrix(p + "in_proj_ba.weight [b; a]", ba_rows);
  w.out = up.matrix(p + "out_proj.weight");
  const Matrix conv = up.matrix(p + "conv1d.weight", Uploader::all_rows({&up.tensor(p + "conv1d.weight")}));
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

MlpWeights load_mlp(Uploader& up, const ModelConfig& c, int layer, const std::string& p) {
  MlpWeights w;
  w.moe = c.is_moe_layer(layer);
  if (!w.moe) {
    w.gate_up = up.matrix(p + "{gate,up}_proj.weight",
                          Uploader::all_rows({&up.tensor(p + "gate_proj.weight"), &up.tensor(p + "up_proj.weight")}));
    w.down = up.matrix(p + "down_proj.weight");
    return w;
  }
  w.has_shared = up.has(p + "shared_expert.gate_proj.weight");
  std::vector<const TensorView*> router = {&up.tensor(p + "gate.weight")};
  if (w.has_shared) router.push_back(&up.tensor(p + "shared_expert_gate.weight"));
  w.router = up.matrix(p + "gate.weight + shared_expert_gate.weight", Uploader::all_rows(router));
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

DeviceWeights::DeviceWeights(Runtime& runtime, const ModelConfig& c, const Checkpoint& ck, ProgressBar* progress) {
  Uploader up(runtime, ck, progress, storage_, bytes_);
  embed = up.matrix("model.embed_tokens.weight");
  final_norm = up.vector_f32("model.norm.weight");
  lm_head = (c.tie_word_embeddings || !up.has("lm_head.weight")) ? embed : up.matrix("lm_head.weight");
  for (int L = 0; L < c.num_hidden_layers; ++L) {
    const std::string p = "model.layers." + std::to_string(L) + ".";
    LayerWeights layer;
    layer.type = c.layer_types[L];
    layer.input_norm = up.vector_f32(p + "input_layernorm.weight");
    layer.post_norm = up.vector_f32(p + "post_attention_layernorm.weight");
    if (layer.type == LayerType::LinearAttention)
      layer.delta = load_delta(up, c, p + "linear_attn.");
    else
      layer.attention = load_attention(up, p + "self_attn.");
    layer.mlp = load_mlp(up, c, L, p + "mlp.");
    layers.push_back(std::move(layer));
  }
  std::vector<float> freq = ops::rope_inv_freq(c.rope_theta, c.rotary_dim());
  if (freq.empty()) freq.push_back(0.0f);
  storage_.push_back(runtime.allocator.allocate(freq.size() * 4, MemoryKind::Device, "RoPE inverse frequencies"));
  rope_inv_freq = storage_.back().range();
  runtime.transfer.upload(rope_inv_freq, freq.data(), freq.size() * 4);
}

}  // namespace q3n::graph
