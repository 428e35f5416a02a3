// What `run`, `eval` and `graph` share: options naming a model and a device, and the loaded
// model (config, checkpoint, runtime, engine) built from them.
#pragma once

#include <CLI/CLI.hpp>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "graph/engine.h"
#include "loader/chat.h"
#include "loader/config.h"
#include "loader/safetensors.h"
#include "runtime/runtime.h"

namespace q3n::cli {

struct ModelOptions {
  std::string model;
  std::string synthetic;  // a config.json: random weights of its shapes instead of a checkpoint
  std::string weights;    // bf16 | q8 | q4; empty = as stored (synthetic: bf16)
  uint32_t seed = 1;      // synthetic weights
  std::string cache;      // folder for converted/quantised weights (graph/weight_cache.h)
  std::string device;
  std::vector<std::string> devices;  // a pipeline split over these (indices or names), in layer order
  std::string split;                 // the split's proportions; empty = by free memory
  bool no_coopmat = false;           // portable kernels even where the device has cooperative matrices
  std::string matrix_activations;    // fp16 | split; empty = the runtime's default
  uint32_t context = 0;              // 0: the command's default
  std::string kv = "f16";            // KV-cache storage: f32 | f16 | bf16 (bench/NOTES.md, session 12)
  uint32_t chunk = 0;                // 0: the device's default (graph::default_prefill_chunk)
  uint32_t decode_rows = graph::EngineOptions{}.decode_rows;  // sequences per decode step at most
  bool batch_invariant = false;  // every decode step on the GEMV kernels (graph::EngineOptions)
  bool profile = false;
  bool mtp = false;  // load the MTP head for speculative decoding (q3n run --mtp)
};
void add_model_options(CLI::App& cmd, ModelOptions& o);

struct ModelSession {
  ModelConfig config;
  std::unique_ptr<Checkpoint> checkpoint;
  std::vector<std::unique_ptr<Runtime>> runtimes;  // one per device, in layer order (--devices)
  std::unique_ptr<graph::Engine> engine;
  Runtime& runtime() const { return *runtimes.front(); }  // the first device
  std::string device_names() const;                       // "NVIDIA H200, NVIDIA H200"
};
// The sequences a session is sized for.
struct SessionShape {
  uint32_t context = 0;  // KV positions per sequence; 0: default_context(), at least min_context
  uint32_t min_context = 0;
  uint32_t slots = 1;      // sequences in flight
  bool fit_slots = false;  // fewer slots (with a notice) where `slots` do not fit in memory
  // Without `context`: cap the context at max_position_embeddings and lower it (with a notice,
  // not below default_context()) until `slots` fit, rather than refuse or run fewer sequences.
  bool fit_context = false;
};
// Loads and validates the checkpoint (or reads the synthetic config), opens the device, checks
// that weights and state fit in its memory, then uploads (or generates) the weights.
ModelSession open_model(const ModelOptions& o, const SessionShape& shape);
inline ModelSession open_model(const ModelOptions& o, uint32_t context, uint32_t slots = 1) {
  return open_model(o, SessionShape{.context = context, .slots = slots});
}
// The least context a command uses when --ctx is not given: 4096 positions, or the model's
// max_position_embeddings if that is smaller. Commands raise it to what their input needs (`run`:
// prompt + tokens; `batch`: its longest request, within memory). Results depend on the context
// (decode attention's key splits), so `run --ctx N` reproduces a batch's request exactly.
uint32_t default_context(const ModelConfig& config);
// Throws an Error when a speculative step of `draft` drafts has more rows than the engine's verify
// step carries (graph::Engine::max_verify_rows: the decode kernels, --decode-rows), naming the
// largest --draft that fits.
void check_draft(const graph::Engine& engine, uint32_t draft);

// --temp, --top-k, --top-p, --min-p (run, batch); those left unset come from the model's
// generation_config.json.
struct SamplingFlags {
  std::optional<float> temperature, top_p, min_p;
  std::optional<uint32_t> top_k;
  ops::SamplingParams over(const GenerationDefaults& defaults) const;  // seed left 0
};
// `temp_default`: what --temp's help gives as its default.
void add_sampling_options(CLI::App& cmd, SamplingFlags& f, const char* temp_default = "generation_config.json");
void check_sampling_flags(const SamplingFlags& f);  // throws Error naming a flag out of range

inline double gib(uint64_t bytes) { return double(bytes) / double(1ull << 30); }

// "GPU time by operator" table of a profile, most expensive first.
std::string format_profile(const std::map<std::string, double>& seconds);

}  // namespace q3n::cli
