// q3n_ops_bench: GPU time of each hot operator at the Qwen3-Next-80B-A3B shapes (hidden 2048,
// 16/32 DeltaNet heads of 128, 16 q / 2 kv heads of 256, 512 experts of 512, top-10), with
// achieved GB/s and TFLOP/s against the copy bandwidth measured in the same run. GEMM and MoE
// rows run once per kernel family: portable, and "[coopmat]" where the device has matrix units.
// Usage: q3n_ops_bench [--device N|NAME] [--sweep-expert-gemv] [--sweep-chains]   (results in bench/NOTES.md)
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <string>

#include "runtime/error.h"
#include "runtime/ops/attention.h"
#include "runtime/ops/chain_probe.h"
#include "runtime/ops/delta_rule.h"
#include "runtime/ops/linear.h"
#include "runtime/ops/moe.h"
#include "runtime/ops/rms_norm.h"
#include "runtime/ops/sample.h"
#include "runtime/profiler.h"
#include "runtime/runtime.h"

using namespace q3n;

namespace {

struct Bench {
  Runtime& rt;
  std::vector<Allocation> keep;

  BufferRange buffer(uint64_t bytes, uint32_t pattern = 0x3D4C3D4Cu) {  // ~0.05 as f32 and as bf16 pairs
    keep.push_back(rt.allocator.allocate(bytes, MemoryKind::Device, "bench"));
    rt.transfer.fill(keep.back().range(), pattern);
    return keep.back().range();
  }
  BufferRange random(uint64_t floats, float lo, float hi) {
    std::mt19937 gen(7);
    std::uniform_real_distribution<float> d(lo, hi);
    std::vector<float> v(floats);
    for (auto& x : v) x = d(gen);
    keep.push_back(rt.allocator.allocate(floats * 4, MemoryKind::Device, "bench"));
    rt.transfer.upload(keep.back().range(), v.data(), floats * 4);
    return keep.back().range();
  }
  BufferRange words(const std::vector<uint32_t>& w) {
    keep.push_back(rt.allocator.allocate(w.size() * 4, MemoryKind::Device, "bench"));
    rt.transfer.upload(keep.back().range(), w.data(), w.size() * 4);
    return keep.back().range();
  }

  ops::MoeScratch moe_scratch(const ops::MoeShape& s) {
    const auto need = ops::moe_scratch_bytes(s);
    return {.ids = buffer(need.ids),
            .weights = buffer(need.weights),
            .offsets = buffer(need.offsets),
            .sorted = buffer(need.sorted),
            .active = buffer(need.active),
            .h = buffer(need.h),
            .y = buffer(need.y)};
  }

  // Seconds per repetition, from timestamps around `reps` recorded repetitions.
  double time(const std::function<void(CommandBuffer&)>& record, int reps = 20) {
    Profiler profiler(rt.device, 1);
    if (!profiler.available()) throw Error("this device has no timestamps on its compute queue");
    CommandBuffer cb = rt.pool.allocate();
    cb.begin();
    profiler.begin(cb);
    record(cb);  // warm-up
    cb.barrier();
    profiler.mark(cb, "op");
    for (int i = 0; i < reps; ++i) {
      record(cb);
      cb.barrier();
    }
    profiler.finish(cb);
    cb.end();
    rt.queue.submit_and_wait(cb);
    return profiler.read().at("op").milliseconds * 1e-3 / reps;
  }
};

void report(const char* name, double seconds, double bytes, double flops, double ceiling) {
  const double gbs = bytes / seconds / 1e9;
  std::printf("%-44s %9.1f us %8.0f GB/s (%4.0f%% of copy) %7.2f TFLOP/s\n", name, seconds * 1e6, gbs,
              100 * gbs / ceiling, flops / seconds / 1e12);
}

// Every expert GEMV shape of a grid, per product and step size (q4, the 80B's MoE): routing and
// grouping recorded once, then each product's dispatch timed alone. Prints one line per shape.
// The timed dispatches read their experts from memory as a decode step does, not from the L2
// cache (a step's ten experts, 12 MB of gate/up, would stay in the H200's 50 MB L2 if every
// repetition read the same ones): repetition i reads the weights at a base shifted by
// (i mod kColdShifts) * kColdShiftExperts experts, in tensors large enough for every shift.
constexpr uint32_t kColdShifts = 12, kColdShiftExperts = 40;
void sweep_expert_gemv(Bench& b, Runtime& rt, double ceiling) {
  const uint32_t H = 2048, I = 512;
  const ops::WeightType type = ops::WeightType::Q4;
  rt.pipelines.set_coopmat(false);
  for (uint32_t tokens : {1u, 8u, 32u, 64u, 128u}) {
    const ops::MoeShape s{.tokens = tokens, .hidden = H, .experts = 512, .top_k = 10, .expert_dim = I};
    const BufferRange x = b.random(uint64_t(tokens) * H, -1, 1), logits = b.random(uint64_t(tokens) * 512, -4, 4);
    const uint64_t gu_bytes = ops::weight_storage_bytes(type, 512ull * 2 * I * H),
                   dn_bytes = ops::weight_storage_bytes(type, 512ull * H * I);
    const uint64_t shift_experts = uint64_t(kColdShifts - 1) * kColdShiftExperts;
    const BufferRange gu = b.buffer(gu_bytes + shift_experts * gu_bytes / 512),
                      dn = b.buffer(dn_bytes + shift_experts * dn_bytes / 512),
                      out = b.buffer(uint64_t(tokens) * H * 4);
    const ops::MoeScratch scratch = b.moe_scratch(s);
    const ops::MoeArgs args{
        .x = x, .logits = logits, .logit_stride = 512, .gate_up = gu, .down = dn, .type = type, .out = out, .shape = s};
    b.time([&](CommandBuffer& cb) { ops::record_moe(rt.pipelines, cb, args, scratch); }, 1);  // routing in scratch
    const double experts_touched = 512.0 * (1.0 - std::pow(1.0 - 10.0 / 512, tokens));
    const double moe_bytes = experts_touched * double(gu_bytes + dn_bytes) / 512;
    for (const bool matrix_units : {false, true}) {  // the whole routed MoE as the model runs it
      if (matrix_units && (tokens == 1 || !rt.device.coopmat())) continue;
      rt.pipelines.set_coopmat(matrix_units);
      ops::MoeArgs whole = args;
      whole.gemv_max_tokens = matrix_units ? 0u : ops::kExpertGemvMaxTokens;
      const double t = b.time([&](CommandBuffer& cb) { ops::record_moe(rt.pipelines, cb, whole, scratch); });
      const std::string label = "moe routed q4 t" + std::to_string(tokens) + (matrix_units ? " coopmat" : " gemv");
      report(label.c_str(), t, moe_bytes, 2.0 * tokens * 10 * 3 * I * H, ceiling);
    }
    rt.pipelines.set_coopmat(false);
    b.time([&](CommandBuffer& cb) { ops::record_moe(rt.pipelines, cb, args, scratch); }, 1);
    for (const bool gate_up : {true, false}) {
      const double bytes = experts_touched * double(gate_up ? gu_bytes : dn_bytes) / 512;
      const ops::ExpertGemvShape chosen = ops::expert_gemv_shape(gate_up, gate_up ? H : I, tokens);
      std::vector<ops::ExpertGemvShape> shapes;
      for (uint32_t threads : {64u, 128u, 256u})
        for (uint32_t lanes : {4u, 8u, 16u, 32u, 64u})
          for (uint32_t rows : {1u, 2u, 4u, 8u})
            for (uint32_t chunk : {1u, 2u, 4u}) {
              if (lanes > threads || (gate_up && lanes < 16) || (tokens == 1 && chunk > 1)) continue;
              if (uint64_t(gate_up ? 2 : 1) * rows * chunk * threads * 4 > rt.device.info().max_shared_memory) continue;
              if (threads / lanes * rows > 256) continue;
              shapes.push_back({threads, lanes, rows, chunk});
            }
      uint32_t repetition = 0;
      auto record = [&](const ops::ExpertGemvShape& shape) {
        return [&, shape](CommandBuffer& cb) {
          ops::MoeArgs cold = args;
          const uint64_t shift = uint64_t(repetition++ % kColdShifts) * kColdShiftExperts;
          cold.gate_up = gu.sub(shift * gu_bytes / 512, gu_bytes);
          cold.down = dn.sub(shift * dn_bytes / 512, dn_bytes);
          ops::record_expert_gemv(rt.pipelines, cb, cold, scratch, gate_up, shape);
        };
      };
      // Compile every pipeline first, so that the timed runs follow each other with the GPU busy
      // (an idle GPU between short timings drops its clocks).
      for (const auto& shape : shapes) b.time(record(shape), 1);
      for (const auto& shape : shapes) {
        const double t = b.time(record(shape), tokens >= 32 ? 20 : 100);
        char label[128];
        std::snprintf(label, sizeof label, "sweep %s t%u th%u la%u ro%u ch%u%s", gate_up ? "gate_up" : "down", tokens,
                      shape.threads, shape.lanes, shape.rows, shape.chunk,
                      shape.threads == chosen.threads && shape.lanes == chosen.lanes && shape.rows == chosen.rows &&
                              shape.chunk == chosen.chunk
                          ? " *"
                          : "");
        report(label, t, bytes, 2.0 * tokens * 10 * (gate_up ? 2 : 1) * I * H, ceiling);
      }
    }
    b.keep.clear();
  }
  rt.pipelines.set_coopmat(rt.device.coopmat());
}

// What a dependency between two small steps costs: chains of kChainPhases phases of
// chain_probe.comp, each reading the vector the one before wrote, as one-phase dispatches joined
// by a pipeline barrier, by counter polls without a barrier, or not at all (the dispatches
// alone), and as one persistent dispatch with a grid-wide counter wait between phases. Prints
// microseconds per phase for several grid sizes (1 workgroup up to a few waves of a large GPU).
constexpr uint32_t kChainPhases = 200;
void sweep_chains(Bench& b, Runtime& rt) {
  const uint32_t input_floats = 2048;
  b.keep.clear();
  const BufferRange input = b.random(input_floats, -1, 1), status = b.buffer(4, 0);
  for (const uint32_t workgroups : {1u, 16u, 132u, 264u, 528u, 2048u})
    for (const ops::ChainWait wait :
         {ops::ChainWait::Barrier, ops::ChainWait::Counter, ops::ChainWait::Persistent, ops::ChainWait::None}) {
      const BufferRange vectors = b.buffer(uint64_t(kChainPhases) * workgroups * ops::kChainProbeWorkgroup * 4),
                        counters = b.buffer(kChainPhases * 4, 0);
      uint32_t epoch = 0;
      const double t = b.time(
          [&](CommandBuffer& cb) {
            ops::record_chain_probe(rt.pipelines, cb,
                                    {.input = input,
                                     .vectors = vectors,
                                     .counters = counters,
                                     .status = status,
                                     .input_floats = input_floats,
                                     .phases = kChainPhases,
                                     .workgroups = workgroups,
                                     .epoch = ++epoch,
                                     .wait = wait,
                                     // A fair wait is a few microseconds; a persistent grid
                                     // larger than the device gives up within ~0.1 s.
                                     .spin_limit = 1u << 17});
          },
          10);
      const char* how = wait == ops::ChainWait::Barrier      ? "barrier"
                        : wait == ops::ChainWait::Counter    ? "counter"
                        : wait == ops::ChainWait::Persistent ? "persistent"
                                                             : "none";
      uint32_t gave_up = 0;
      rt.transfer.download(status, &gave_up, 4);
      std::printf("chain of %u phases, %4u workgroups, %-10s %7.2f us per phase%s\n", kChainPhases, workgroups, how,
                  t / kChainPhases * 1e6, gave_up ? "  (a poll gave up: not valid)" : "");
      if (gave_up) {
        const uint32_t zero = 0;
        rt.transfer.upload(status, &zero, 4);
      }
      b.keep.resize(2);  // input and status stay
    }
}

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  RuntimeOptions options;
  bool sweep = false;   // --sweep-expert-gemv: the expert GEMV shape grid instead of the operator rows
  bool chains = false;  // --sweep-chains: what a dependency between two dispatches costs
  std::string only;  // --only SECTION: one section of the operator rows (linear, norm, delta, attention, moe, sample)
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--device" && i + 1 < argc)
      options.device = argv[++i];
    else if (arg == "--sweep-expert-gemv")
      sweep = true;
    else if (arg == "--sweep-chains")
      chains = true;
    else if (arg == "--only" && i + 1 < argc)
      only = argv[++i];
    else {
      std::fprintf(stderr,
                   "usage: q3n_ops_bench [--device N|NAME] [--sweep-expert-gemv] [--sweep-chains] [--only "
                   "linear|norm|delta|attention|moe|sample]\n");
      return 2;
    }
  }
  options.instance.validation = false;
  Runtime rt(options);
  Bench b{rt, {}};
  std::printf("device: %s\n", rt.device.info().name.c_str());

  // Copy ceiling: 1 GiB buffer to buffer (read + write).
  const uint64_t copy_bytes = 1ull << 30;
  const BufferRange src = b.buffer(copy_bytes), dst = b.buffer(copy_bytes);
  b.time([&](CommandBuffer& cb) { cb.copy(src, dst, copy_bytes); }, 50);  // wakes the GPU's clocks
  const double copy_s = b.time([&](CommandBuffer& cb) { cb.copy(src, dst, copy_bytes); }, 5);
  const double ceiling = 2.0 * copy_bytes / copy_s / 1e9;
  std::printf("%-44s %9.1f us %8.0f GB/s (read + write)\n", "copy 1 GiB", copy_s * 1e6, ceiling);

  if (sweep) {
    sweep_expert_gemv(b, rt, ceiling);
    return 0;
  }
  if (chains) {
    sweep_chains(b, rt);
    return 0;
  }

  const uint32_t H = 2048, V = 151936;
  const auto want = [&](const char* section) { return only.empty() || only == section; };
  using ops::WeightType;
  // Kernel families to compare: the portable one, and the cooperative-matrix one where it runs,
  // with activations rounded to fp16 and split into two halves.
  struct Family {
    bool coopmat;
    MatrixActivations activations;
    std::string name;
    bool k_split = false;  // the dense products' K split at decode sizes, as the model runs them
  };
  std::vector<Family> families = {{false, MatrixActivations::Split, ""}};
  if (rt.device.coopmat()) {
    families.push_back({true, MatrixActivations::Fp16, " [coopmat fp16]"});
    families.push_back({true, MatrixActivations::Fp16, " [coopmat fp16, K split]", true});
    families.push_back({true, MatrixActivations::Split, " [coopmat split]"});
  }
  auto use = [&](const Family& f) {
    rt.pipelines.set_coopmat(f.coopmat);
    rt.pipelines.set_matrix_activations(f.activations);
  };

  if (want("linear"))
    for (const auto& [name, tokens, n, k] : std::vector<std::tuple<const char*, uint32_t, uint32_t, uint32_t>>{
             {"lm_head 1 x 2048 -> 151936", 1, V, H},
             {"in_proj_qkvz 1 x 2048 -> 12288", 1, 12288, H},
             {"in_proj_qkvz 8 x 2048 -> 12288", 8, 12288, H},
             {"in_proj_qkvz 16 x 2048 -> 12288", 16, 12288, H},
             {"in_proj_qkvz 32 x 2048 -> 12288", 32, 12288, H},
             {"in_proj_qkvz 64 x 2048 -> 12288", 64, 12288, H},
             {"in_proj_qkvz 128 x 2048 -> 12288", 128, 12288, H},
             {"out_proj 16 x 4096 -> 2048", 16, H, 4096},
             {"out_proj 32 x 4096 -> 2048", 32, H, 4096},
             {"router 32 x 2048 -> 512", 32, 512, H},
             {"out_proj 128 x 4096 -> 2048", 128, H, 4096},
             {"lm_head 32 x 2048 -> 151936", 32, V, H},
             {"lm_head 128 x 2048 -> 151936", 128, V, H},
             {"in_proj_qkvz 256 x 2048 -> 12288", 256, 12288, H},
             {"in_proj_qkvz 512 x 2048 -> 12288", 512, 12288, H},
             {"lm_head 512 x 2048 -> 151936", 512, V, H}})
      for (WeightType type : {WeightType::BF16, WeightType::Q4})
        for (const Family& family : families) {
          if (tokens == 1 && family.coopmat) continue;  // a single token takes no matrix units
          const uint64_t split_bytes = family.k_split ? ops::linear_split_bytes(tokens, n, k) : 0;
          if (family.k_split && !split_bytes) continue;  // the same kernel as without
          use(family);
          const uint64_t weight_bytes = ops::weight_storage_bytes(type, uint64_t(n) * k);
          const BufferRange x = b.random(uint64_t(tokens) * k, -1, 1), w = b.buffer(weight_bytes),
                            y = b.buffer(uint64_t(tokens) * n * 4),
                            parts = split_bytes ? b.buffer(split_bytes) : BufferRange{};
          const double s = b.time([&](CommandBuffer& cb) {
            ops::record_linear(rt.pipelines, cb,
                               {.x = x,
                                .weight = w,
                                .y = y,
                                .type = type,
                                .tokens = tokens,
                                .k = k,
                                .n = n,
                                .gemv_max_tokens = family.coopmat ? 0u : ops::kGemvMaxTokens,
                                .k_split = parts});
          });
          const std::string label = std::string("linear ") + ops::weight_type_name(type) + " " + name + family.name;
          report(label.c_str(), s, double(weight_bytes) + double(tokens) * (k + n) * 4, 2.0 * tokens * n * k, ceiling);
          b.keep.clear();
        }
  rt.pipelines.set_coopmat(rt.device.coopmat());

  const BufferRange normw = b.random(H, -0.1f, 0.1f);
  if (want("norm"))
    for (uint32_t rows : {1u, 512u}) {
      const BufferRange x = b.random(uint64_t(rows) * H, -1, 1), out = b.buffer(uint64_t(rows) * H * 4);
      const double s = b.time([&](CommandBuffer& cb) {
        ops::record_rms_norm(rt.pipelines, cb, {.x = x, .weight = normw, .out = out, .rows = rows, .n = H});
      });
      report(("rms_norm " + std::to_string(rows) + " x 2048").c_str(), s, 8.0 * rows * H, 0, ceiling);
    }

  // Gated DeltaNet core: state [32, 128, 128] f32.
  if (want("delta"))
    for (uint32_t tokens : {1u, 512u, 4096u}) {
      const ops::DeltaShape shape{
          .batch = 1, .tokens = tokens, .key_heads = 16, .value_heads = 32, .dk = 128, .dv = 128};
      const BufferRange qkv = b.random(shape.rows() * shape.qkv_width(), -0.1f, 0.1f);
      const BufferRange gates = b.random(shape.rows() * 64, -0.5f, -0.01f),
                        state = b.random(32ull * 128 * 128, -0.1f, 0.1f);
      const BufferRange seqs = b.words({0, 0}), out = b.buffer(shape.rows() * 32 * 128 * 4);
      const auto f = ops::delta_chunk_scratch_floats(shape);
      const ops::DeltaChunkScratch scratch{.gamma = b.buffer(f.gamma * 4),
                                           .w = b.buffer(f.w * 4),
                                           .kc = b.buffer(f.kc * 4),
                                           .u = b.buffer(f.u * 4),
                                           .snapshots = b.buffer(f.snapshots * 4)};
      const ops::DeltaRuleArgs args{
          .qkv = qkv, .gates = gates, .state = state, .seqs = seqs, .out = out, .shape = shape};
      const double state_bytes = 2.0 * 32 * 128 * 128 * 4;
      if (tokens == 1) {
        const double s = b.time([&](CommandBuffer& cb) { ops::record_delta_rule_recurrent(rt.pipelines, cb, args); });
        report("delta rule recurrent, 1 token", s, state_bytes, 4.0 * 32 * 128 * 128 * 2, ceiling);
      } else {
        const double s =
            b.time([&](CommandBuffer& cb) { ops::record_delta_rule_chunked(rt.pipelines, cb, args, scratch); });
        // Chunked FLOPs per head and chunk: KK^T, QK^T (2 C^2 dk), T (C^3/3), W/Kc (C^2 (dk+dv)),
        // U and S updates (4 C dk dv), inter-chunk output (2 C dk dv), intra output (C^2 dv).
        const double C = 64, d = 128, chunks = tokens / 64.0;
        const double flops =
            32 * chunks * (2 * (2 * C * C * d) + C * C * C / 3 + 2 * C * C * 2 * d + 6 * 2 * C * d * d + 2 * C * C * d);
        report(("delta rule chunked, " + std::to_string(tokens) + " tokens").c_str(), s, state_bytes, flops, ceiling);
      }
    }

  // Gated attention: 16 q / 2 kv heads of 256, f32 and f16 KV cache; one sequence. Splits 0: what
  // attention_splits picks; the others compare split counts for decode at the longest context.
  struct AttentionRow {
    uint32_t tokens, past, splits;
  };
  const std::vector<AttentionRow> attention_rows = {
      {1, 4096, 0},     {1, 32768, 0},    {1, 100000, 0},    {1, 262143, 0}, {1, 262143, 64},
      {1, 262143, 128}, {1, 262143, 512}, {1, 262143, 1024}, {512, 0, 0},    {512, 65536, 0}};
  if (want("attention"))
    for (const ops::KvType kv_type : {ops::KvType::F32, ops::KvType::F16})
      for (const auto& [tokens, past, splits] : attention_rows) {
        ops::AttentionShape s{.batch = 1,
                              .tokens = tokens,
                              .heads = 16,
                              .kv_heads = 2,
                              .head_dim = 256,
                              .rot_dim = 64,
                              .capacity = past + tokens,
                              .splits = 1,
                              .kv_type = kv_type};
        s.splits = splits ? splits : ops::attention_splits(rt.device, tokens, s.capacity);
        const BufferRange qkv = b.random(s.rows() * s.qkv_width(), -1, 1), qn = b.random(256, -0.1f, 0.1f),
                          kn = b.random(256, -0.1f, 0.1f);
        const auto freq = ops::rope_inv_freq(1e7, 64);
        std::vector<uint32_t> freq_words(freq.size());
        std::memcpy(freq_words.data(), freq.data(), freq.size() * 4);
        const BufferRange fr = b.words(freq_words), seqs = b.words({0, past});
        const uint64_t kv = s.kv_slot_bytes();
        const uint32_t fill = kv_type == ops::KvType::F32 ? 0x3C000000u : 0x21002100u;  // 2^-7 either way
        const BufferRange ck = b.buffer(kv, fill), cv = b.buffer(kv, fill);
        const BufferRange table = b.words(
            {uint32_t(ck.address), uint32_t(ck.address >> 32), uint32_t(cv.address), uint32_t(cv.address >> 32)});
        const BufferRange q = b.buffer(s.rows() * 16 * 256 * 4), out = b.buffer(s.rows() * 16 * 256 * 4);
        const uint64_t parts = uint64_t(s.splits) * tokens * 16;
        const BufferRange po = b.buffer(std::max<uint64_t>(parts * 256 * 4, 4)),
                          pml = b.buffer(std::max<uint64_t>(parts * 8, 4));
        const double t = b.time([&](CommandBuffer& cb) {
          ops::record_attention(rt.pipelines, cb,
                                {.qkv = qkv,
                                 .q_norm = qn,
                                 .k_norm = kn,
                                 .inv_freq = fr,
                                 .seqs = seqs,
                                 .kv_slots = table,
                                 .q = q,
                                 .part_o = po,
                                 .part_ml = pml,
                                 .out = out,
                                 .shape = s});
        });
        const double keys = double(tokens) * past + double(tokens) * (tokens + 1) / 2;
        char name[96];
        std::snprintf(name, sizeof name, "attention %u token(s), %s cache %u (%u splits)", tokens,
                      ops::kv_type_name(kv_type), past + tokens, s.splits);
        report(name, t, 2.0 * kv, 4.0 * 16 * 256 * keys, ceiling);
      }

  // MoE: 512 experts of 512, top-10 (the routed part; shared expert = linears).
  if (want("moe"))
    for (uint32_t tokens : {1u, 8u, 32u, 128u, 512u})
      for (WeightType type : {WeightType::BF16, WeightType::Q4})
        for (const Family& family : families) {
          if ((tokens == 1 && family.coopmat) || family.k_split) continue;  // K split: dense products only
          use(family);
          const ops::MoeShape s{
              .tokens = tokens, .hidden = H, .experts = 512, .top_k = 10, .expert_dim = 512, .normalise = true};
          const BufferRange x = b.random(uint64_t(tokens) * H, -1, 1), logits = b.random(uint64_t(tokens) * 513, -4, 4);
          const uint64_t gu_bytes = ops::weight_storage_bytes(type, 512ull * 1024 * H),
                         dn_bytes = ops::weight_storage_bytes(type, 512ull * H * 512);
          const BufferRange gu = b.buffer(gu_bytes), dn = b.buffer(dn_bytes);
          const ops::MoeScratch scratch = b.moe_scratch(s);
          const BufferRange out = b.buffer(uint64_t(tokens) * H * 4), shared = b.random(uint64_t(tokens) * H, -1, 1);
          const double t = b.time([&](CommandBuffer& cb) {
            ops::record_moe(rt.pipelines, cb,
                            {.x = x,
                             .logits = logits,
                             .logit_stride = 513,
                             .gate_up = gu,
                             .down = dn,
                             .type = type,
                             .shared_out = shared,
                             .shared_logit_column = 512,
                             .out = out,
                             .shape = s,
                             .gemv_max_tokens = family.coopmat ? 0u : ops::kExpertGemvMaxTokens},
                            scratch);
          });
          const double experts_touched =
              512.0 * (1.0 - std::pow(1.0 - 10.0 / 512, tokens));  // expected distinct experts
          const std::string label = "moe routed " + std::string(ops::weight_type_name(type)) + ", " +
                                    std::to_string(tokens) + " token(s)" + family.name;
          report(label.c_str(), t, experts_touched * double(gu_bytes + dn_bytes) / 512, 2.0 * tokens * 10 * 3 * 512 * H,
                 ceiling);
          b.keep.clear();
        }
  rt.pipelines.set_coopmat(rt.device.coopmat());

  if (want("sample"))
    for (uint32_t top_k : {1u, 40u}) {
      const BufferRange logits = b.random(V, -10, 10), ids = b.buffer(4);
      const auto rec = ops::sampling_record({1.0f, top_k, 0.9f, 0.05f, 1}, 0);
      const BufferRange params = b.words(rec);
      const double t = b.time([&](CommandBuffer& cb) {
        ops::record_sample(rt.pipelines, cb, {.logits = logits, .params = params, .ids = ids, .batch = 1, .vocab = V});
      });
      report(top_k == 1 ? "sample argmax, vocab 151936" : "sample top-k 40 / top-p 0.9 / min-p 0.05", t, 4.0 * V, 0,
             ceiling);
    }
  return 0;
}
