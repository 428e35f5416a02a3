#include "cli/model_session.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <vector>

#include "cli/memory_fit.h"
#include "cli/progress.h"
#include "graph/support_check.h"
#include "loader/tensor_schema.h"
#include "runtime/error.h"

namespace q3n::cli {

void add_model_options(CLI::App& cmd, ModelOptions& o) {
  auto* model = cmd.add_option("-m,--model", o.model, "Checkpoint folder (config.json, *.safetensors, tokenizer.json)");
  auto* synthetic = cmd.add_option("--synthetic", o.synthetic,
                                   "config.json of a model to run with deterministic random weights generated "
                                   "on the GPU (no checkpoint; benchmarks)")
                        ->check(CLI::ExistingFile);
  model->excludes(synthetic);
  cmd.add_option("--weights", o.weights, "Weight format on the device: bf16, q8 or q4 (default: as stored)")
      ->check(CLI::IsMember({"bf16", "q8", "q4", "stored"}));
  cmd.add_option("--cache", o.cache,
                 "Folder to keep the converted/quantised weights in, so the next start with the same "
                 "checkpoint and --weights reads them instead of converting again");
  auto* device =
      cmd.add_option("--device", o.device, "Device index or name substring (default: Q3N_DEVICE or the best GPU)");
  auto* devices = cmd.add_option("--devices", o.devices,
                                 "Split the layers over these devices, in order (indices or names, e.g. 0,1; the same "
                                 "device may be named twice): the first embeds, the last holds lm_head")
                      ->delimiter(',')
                      ->excludes(device);
  cmd.add_option("--split", o.split,
                 "With --devices: each device's share of the layers, e.g. 3,1 (default: in proportion to free memory)")
      ->needs(devices);
  cmd.add_flag("--no-coopmat", o.no_coopmat,
               "Use the portable fp32 kernels even where the device has cooperative matrices (fp16 matrix "
               "units; inputs of magnitude over 65504 need this)");
  cmd.add_option("--matrix-activations", o.matrix_activations,
                 "How the matrix products take activations on the matrix units: fp16 (rounded, as other engines "
                 "do) or split (two fp16 halves, ~21 bits, twice the matrix work); prefill attention on the "
                 "matrix units always takes fp16")
      ->check(CLI::IsMember({"fp16", "split"}));
  cmd.add_option("--ctx", o.context, "Context length: KV-cache positions per sequence")->check(CLI::PositiveNumber);
  cmd.add_option(
         "--kv", o.kv,
         "KV-cache storage: f16 (default; half the memory of f32, kjv-demo's logits within a mean KL of 2e-8 of "
         "f32), bf16 (KL 3e-5), or f32")
      ->check(CLI::IsMember({"f32", "f16", "bf16"}));
  cmd.add_option("--chunk", o.chunk, "Prompt tokens per prefill step (default: 2048 on GPUs, 512 on CPU devices)")
      ->check(CLI::PositiveNumber);
  cmd.add_option("--decode-rows", o.decode_rows,
                 "Sequences per decode step at most; more are decoded in several steps (1-128; with "
                 "--batch-invariant any value gives the same tokens, only the speed differs)")
      ->check(CLI::Range(1u, graph::Engine::kMaxDecodeRows));
  cmd.add_flag("--batch-invariant", o.batch_invariant,
               "Keep every decode step on the vector kernels, so that a sequence's tokens are bitwise what "
               "`q3n run` computes for it alone whatever else shares its steps (slower at 32-128 sequences: "
               "without it, steps of more than 16 sequences take the matrix units)");
  cmd.add_flag("--profile", o.profile, "Print GPU time per operator kind at the end");
}

void add_sampling_options(CLI::App& cmd, SamplingFlags& f, const char* temp_default) {
  cmd.add_option("--temp", f.temperature, std::string("Temperature; 0 = greedy (default: ") + temp_default + ")");
  cmd.add_option("--top-k", f.top_k, "Keep the k most likely tokens; 0 = off");
  cmd.add_option("--top-p", f.top_p, "Keep the smallest set with this much probability; 1 = off");
  cmd.add_option("--min-p", f.min_p, "Keep tokens at least this fraction of the most likely; 0 = off");
}

void check_sampling_flags(const SamplingFlags& f) {
  if (f.temperature && *f.temperature < 0) throw Error("--temp must be >= 0");
  if (f.top_p && (*f.top_p <= 0 || *f.top_p > 1)) throw Error("--top-p must be in (0, 1]");
  if (f.min_p && (*f.min_p < 0 || *f.min_p >= 1)) throw Error("--min-p must be in [0, 1)");
}

ops::SamplingParams SamplingFlags::over(const GenerationDefaults& defaults) const {
  ops::SamplingParams p;
  p.temperature = temperature.value_or(float(defaults.temperature));
  p.top_k = top_k.value_or(uint32_t(defaults.top_k));
  p.top_p = top_p.value_or(float(defaults.top_p));
  p.min_p = min_p.value_or(float(defaults.min_p));
  return p;
}

void check_draft(const graph::Engine& engine, uint32_t draft) {
  const uint32_t rows = engine.max_verify_rows();
  if (draft + 1 <= rows) return;
  throw Error("--draft " + std::to_string(draft) + " needs verify steps of " + std::to_string(draft + 1) +
              " rows, more than this device's decode kernels and --decode-rows allow (" + std::to_string(rows) +
              "); use --draft " + std::to_string(std::max(rows, 2u) - 1) + " or less" +
              (rows < 2 ? " and a larger --decode-rows" : ""));
}

uint32_t default_context(const ModelConfig& config) {
  const uint32_t most = config.max_position_embeddings > 0 ? uint32_t(config.max_position_embeddings) : 4096u;
  return std::min(4096u, most);
}

ModelSession open_model(const ModelOptions& o, const SessionShape& shape) {
  ModelSession s;
  uint32_t slots = shape.slots;
  const bool synthetic = !o.synthetic.empty();
  if (!synthetic && o.model.empty())
    throw Error("no model: give -m DIR (a checkpoint folder) or --synthetic CONFIG.json");
  if (synthetic && !o.cache.empty())
    throw Error("--cache keeps converted checkpoint weights; a --synthetic model has none to keep");
  graph::WeightFormat format = graph::parse_weight_format(o.weights);
  if (synthetic) {
    s.config = load_config_file(o.synthetic);
    graph::check_supported(s.config, o.synthetic);
    if (format == graph::WeightFormat::AsStored) format = graph::WeightFormat::BF16;
  } else {
    s.config = load_config(o.model);
    graph::check_supported(s.config, (std::filesystem::path(o.model) / "config.json").string());
    s.checkpoint = std::make_unique<Checkpoint>(o.model);
    validate_checkpoint(*s.checkpoint, s.config);
    if (o.mtp && !has_mtp_tensors(*s.checkpoint))
      throw Error("--mtp: the checkpoint in " + o.model + " has no MTP head (no mtp.* tensors); run without --mtp");
  }
  uint32_t context = shape.context ? shape.context : std::max(default_context(s.config), shape.min_context);
  const bool fit_context = shape.fit_context && !shape.context;
  if (fit_context && s.config.max_position_embeddings > 0)
    context = std::min(context, uint32_t(s.config.max_position_embeddings));
  if (s.config.max_position_embeddings > 0 && context > uint32_t(s.config.max_position_embeddings))
    throw Error((shape.context ? "--ctx " : "the needed context of ") + std::to_string(context) +
                " exceeds the model's max_position_embeddings (" + std::to_string(s.config.max_position_embeddings) +
                ")");
  const std::vector<std::string> names = o.devices.empty() ? std::vector<std::string>{o.device} : o.devices;
  for (const std::string& name : names) {
    RuntimeOptions ro;
    ro.device = name;
    ro.coopmat = !o.no_coopmat;
    if (!o.matrix_activations.empty()) ro.matrix_activations = parse_matrix_activations(o.matrix_activations);
    s.runtimes.push_back(std::make_unique<Runtime>(ro));
  }
  const ops::KvType kv = ops::parse_kv_type(o.kv);
  const MemoryFit fit(
      s.runtimes, s.config, graph::DeviceWeights::planned_parts(s.config, s.checkpoint.get(), format, o.mtp), format,
      kv, o.split.empty() ? std::vector<double>{} : graph::parse_split(o.split, names.size()), o.mtp, o.chunk);
  if (fit_context) context = fit.context_that_fits(context, default_context(s.config), slots);
  fit.check(context, slots, shape.fit_slots);
  const std::vector<graph::LayerSpan> spans = fit.spans(slots, context);
  std::vector<graph::EngineDevice> devices;
  for (size_t d = 0; d < spans.size(); ++d) {
    Runtime& rt = *s.runtimes[d];
    if (spans.size() > 1)
      std::fprintf(stderr, "[q3n] %s on device %u, %s (%.2f GiB of %.2f GiB free)\n",
                   spans[d].describe(s.config).c_str(), rt.device.info().index, rt.device.info().name.c_str(),
                   gib(fit.device_bytes(d, spans[d], slots, context)), gib(fit.free_bytes(d)));
    graph::WeightOptions wo;
    wo.format = format;
    wo.cache_dir = o.cache;
    wo.layers = spans[d];
    wo.mtp = o.mtp;
    const uint64_t load_bytes =
        synthetic ? graph::DeviceWeights::planned_bytes(s.config, nullptr, format, o.mtp) : s.checkpoint->total_bytes();
    auto weights = [&] {
      std::string what = synthetic ? "generating weights" : "loading weights";
      if (spans.size() > 1) what += " (device " + std::to_string(d) + ")";
      ProgressBar progress(what, load_bytes);
      wo.progress = [&progress](uint64_t bytes) { progress.advance(bytes); };
      return synthetic ? graph::DeviceWeights(rt, s.config, o.seed, wo)
                       : graph::DeviceWeights(rt, s.config, *s.checkpoint, wo);
    }();
    if (!weights.cache_note().empty()) std::fprintf(stderr, "[q3n] %s\n", weights.cache_note().c_str());
    devices.push_back({&rt, std::move(weights), spans[d]});
  }
  graph::EngineOptions eo;
  eo.context = context;
  eo.kv_type = kv;
  eo.slots = slots;
  eo.prefill_chunk = o.chunk;  // 0: each device's default
  eo.decode_rows = o.decode_rows;
  eo.batch_invariant = o.batch_invariant;
  eo.profile = o.profile;
  eo.mtp = o.mtp;
  s.engine = std::make_unique<graph::Engine>(std::move(devices), s.config, eo);
  return s;
}

std::string ModelSession::device_names() const {
  std::string names;
  for (const auto& rt : runtimes) names += (names.empty() ? "" : ", ") + rt->device.info().name;
  return names;
}

std::string format_profile(const std::map<std::string, double>& seconds) {
  std::vector<std::pair<std::string, double>> rows(seconds.begin(), seconds.end());
  std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
  double total = 0;
  for (const auto& r : rows) total += r.second;
  std::string out = "GPU time by operator:\n";
  char line[160];
  for (const auto& [kind, t] : rows) {
    std::snprintf(line, sizeof line, "  %-14s %10.3f ms  %5.1f%%\n", kind.c_str(), t * 1e3,
                  total > 0 ? 100 * t / total : 0.0);
    out += line;
  }
  std::snprintf(line, sizeof line, "  %-14s %10.3f ms\n", "total", total * 1e3);
  return out + line;
}

}  // namespace q3n::cli
