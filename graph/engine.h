// Runs a model: owns the device weights, the per-sequence state slots and the recorded Programs
// of the step shapes in use, and turns token ids into logits or sampled ids. Prompts are
// processed in pieces that carry conv/recurrent state and the KV cache from one to the next.
//
// Step shapes are bounded so that a long batch job records a fixed set of programs: a prompt
// is cut into full chunks of `prefill_chunk` tokens and a remainder written as a sum of powers
// of two (prompt_pieces), and a decode step carries at most `decode_rows` sequences (more are
// run as several steps), optionally with one prompt piece of another sequence riding along (a
// mixed step, decode_with_piece). All programs share one scratch arena (they never run at
// once); the least recently used are dropped past `max_programs`.
//
// With several devices (a pipeline split, --devices), each holds a span of the layers with their
// weights, state and recorded programs; a step runs on each in turn, the hidden state crossing
// between them through host-visible memory (graph/layer_split.h).
//
// A sampled token's random draw is keyed by the request's seed and the token's absolute position.
// With `batch_invariant`, every sequence's results also depend on its own tokens only, not on
// which other sequences share a step (the kernels reduce each row in the same order for every
// row count up to kMaxDecodeRows); without it, decode steps of many sequences take the matrix
// units (fp16 activations), several times faster at 32-128 sequences.
#pragma once

#include <map>
#include <memory>
#include <span>
#include <vector>

#include "graph/model_graph.h"
#include "graph/program.h"
#include "graph/state.h"
#include "graph/weights.h"
#include "runtime/ops/sample.h"

namespace q3n::graph {

// The prefill chunk a device gets when none is asked for: 2048 tokens on GPUs, where a prefill
// step reads every expert's weights once per row tile whatever its length, so longer steps read
// fewer bytes per token (H200, 80B-A3B q4: pp4096 3791 tok/s in steps of 512, 5440 in steps of
// 2048; bench/NOTES.md session 17), and the longest that devices with bounded loops take.
uint32_t default_prefill_chunk(const Device& device);

struct EngineOptions {
  uint32_t context = 4096;                 // KV-cache positions per sequence
  ops::KvType kv_type = ops::KvType::F32;  // storage of the KV cache (the CLI picks its default)
  uint64_t kv_chunk_bytes = 0;             // caps one allocation of KV rows (0: the device's limit; for tests)
  uint32_t slots = 1;                      // sequences in flight
  // Tokens per prefill step, capped at 512 on devices with bounded loops, else 4096 (0: the
  // device's default_prefill_chunk).
  uint32_t prefill_chunk = 512;
  // Recorded step programs kept at once (least recently used go). Mixed steps multiply the shapes
  // (piece x decode rows): keeping 96, a batch job at --max-batch 64 recorded 887 programs in
  // 660 s, 1.8% of its wall time (bench/NOTES.md).
  uint32_t max_programs = 256;
  // Sequences per decode step at most (1..kMaxDecodeRows); more run as several steps. On the
  // H100 (80B-A3B q4) steps of 32 rows decode 633 tok/s against 456 for 8 rows and 728 for 128
  // (bench/NOTES.md), so a step takes every generating sequence.
  uint32_t decode_rows = 128;  // Engine::kMaxDecodeRows
  // Keep every decode step on the GEMV kernels, so that a sequence's tokens are bitwise the same
  // whatever else shares its steps (what `q3n run` computes for it alone). Off: decode steps of
  // more than ops::kThroughputGemvMaxTokens sequences (ops::kThroughputExpertGemvMaxTokens for the
  // experts) take the matrix units where the device has them (fp16 activations: kjv-demo's logits
  // stay within a mean KL of ~1e-5 of the fp32 path, bench/NOTES.md session 10).
  bool batch_invariant = false;
  bool profile = false;
  // Speculative decoding with the MTP head (mtp_prompt / mtp_step): the weights must hold the
  // head (WeightOptions::mtp); its KV cache is allocated with the state. One device only.
  bool mtp = false;
  // RoPE angles at position + rope_offset (cache rows stay at position). 0 in every command: it
  // lets tests compare with HF's logits at positions near 262,144 (position_ids shifted) without
  // filling that many positions first.
  uint32_t rope_offset = 0;
};

// One device of the engine: its runtime and its share of the weights (loaded with
// WeightOptions::layers = layers).
struct EngineDevice {
  Runtime* runtime = nullptr;
  DeviceWeights weights;
  LayerSpan layers;
};

class Engine {
 public:
  // Rows of one decode step at most: the GEMV kernels serve every count up to this, so a row's
  // arithmetic never depends on how many other sequences share the step.
  static constexpr uint32_t kMaxDecodeRows = 128;

  Engine(Runtime& runtime, const ModelConfig& config, const Checkpoint& checkpoint, const EngineOptions& options);
  // With weights already on the device (converted, quantised or synthetic).
  Engine(Runtime& runtime, const ModelConfig& config, DeviceWeights weights, const EngineOptions& options);
  // A pipeline split: the devices' spans in order, covering every layer.
  Engine(std::vector<EngineDevice> devices, const ModelConfig& config, const EngineOptions& options);

  // Starts a new sequence in `slot` (position 0, zeroed state).
  void reset(uint32_t slot);
  uint32_t position(uint32_t slot) const { return positions_.at(slot); }
  uint32_t context() const { return options_.context; }
  uint32_t slots() const { return options_.slots; }
  uint32_t prefill_chunk() const { return options_.prefill_chunk; }  // after the device's default and cap

  // How a prompt of `tokens` tokens is cut into steps: full chunks, then the remainder as
  // decreasing powers of two (so at most log2(chunk) + 1 distinct prefill shapes exist).
  std::vector<uint32_t> prompt_pieces(size_t tokens) const;

  // Feeds tokens to one sequence. Returns the logits of every token ([n, vocab], AllLogits) or
  // of the last one ([vocab], otherwise).
  std::vector<float> feed_logits(uint32_t slot, std::span<const int32_t> ids, bool all_logits);
  // Feeds tokens to one sequence and samples the token that follows the last one.
  int32_t feed_and_sample(uint32_t slot, std::span<const int32_t> ids, const ops::SamplingParams& params);
  // Feeds one piece of a prompt (a length prompt_pieces() yields). With `params`, samples the
  // token after it and returns it; without, returns -1 and only advances the state.
  int32_t feed_piece(uint32_t slot, std::span<const int32_t> ids, const ops::SamplingParams* params);
  // One token for each of several sequences (decode); returns each one's sampled next token.
  // `params` holds one entry per sequence, or one for all.
  std::vector<int32_t> decode(std::span<const uint32_t> slots, std::span<const int32_t> ids,
                              std::span<const ops::SamplingParams> params);
  std::vector<int32_t> decode(std::span<const uint32_t> slots, std::span<const int32_t> ids,
                              const ops::SamplingParams& params) {
    return decode(slots, ids, std::span(&params, 1));
  }
  // A mixed step: decode() for `slots` plus one piece of another sequence's prompt (a length
  // prompt_pieces() yields) in the same submission. Every row gets exactly the arithmetic of
  // decode() and feed_piece() run apart (graph/model_graph.cpp, dispatch_groups), so results do
  // not depend on the mixing. `piece_token` receives the piece's sample (-1 without params).
  struct PromptPiece {
    uint32_t slot = 0;
    std::span<const int32_t> ids;
    const ops::SamplingParams* params = nullptr;  // sample the token after the piece (its last piece)
  };
  std::vector<int32_t> decode_with_piece(std::span<const uint32_t> slots, std::span<const int32_t> ids,
                                         std::span<const ops::SamplingParams> params, const PromptPiece& piece,
                                         int32_t& piece_token);

  // Speculative decoding's verify step (StepShape::verify). Each sequence's `tokens` ids are its
  // last sampled token, not yet fed, then tokens - 1 draft tokens. Returns, per sequence, the
  // drafts accepted and the token after them (1 .. tokens ids): the ids plain decode() steps
  // would emit at these positions, bit for bit, greedy or sampled (each row computes and draws
  // as a decode step at its position). The state and position advance over the accepted rows only.
  std::vector<std::vector<int32_t>> verify(std::span<const uint32_t> slots, std::span<const int32_t> ids,
                                           uint32_t tokens, std::span<const ops::SamplingParams> params);
  // Rows a verify step may carry: those whose matrix products keep the decode kernels.
  uint32_t max_verify_rows() const;

  // MTP speculative decoding of one sequence (EngineOptions::mtp). `emitted` are the tokens
  // plain decoding would emit (the first one not yet fed), `drafts` the head's guesses at the
  // tokens after them, for the next mtp_step.
  struct Speculation {
    std::vector<int32_t> emitted, drafts;
  };
  // Feeds a prompt (the MTP head runs over it too, filling its KV cache), samples the token after
  // it and drafts `drafts` tokens beyond.
  Speculation mtp_prompt(uint32_t slot, std::span<const int32_t> prompt, const ops::SamplingParams& params,
                         uint32_t drafts);
  // Verifies [last, drafts] in one step (1 .. drafts + 1 tokens emitted) and drafts as many again.
  // Needs position + drafts + 1 <= context.
  Speculation mtp_step(uint32_t slot, int32_t last, std::span<const int32_t> drafts, const ops::SamplingParams& params);
  // mtp_step for several sequences with the same number of drafts (q3n batch): verify steps of
  // at most max_verify_rows() rows, each followed by one head step over the same sequences' rows
  // and the further drafts (one head step per draft). The emitted tokens are mtp_step's (plain
  // decoding's); the drafts may differ from its in rounding only.
  std::vector<Speculation> mtp_steps(std::span<const uint32_t> slots, std::span<const int32_t> lasts,
                                     std::span<const std::vector<int32_t>> drafts,
                                     std::span<const ops::SamplingParams> params);
  // Whether a sequence has room for a speculative step of `drafts` drafts: its verified rows
  // and the head's draft positions (else plain steps finish it), after `ahead` more tokens are fed
  // (a prompt not fed yet).
  bool mtp_room(uint32_t slot, uint32_t drafts, uint64_t ahead = 0) const {
    return positions_.at(slot) + ahead + 2ull * (drafts + 1) <= options_.context;
  }

  // How the engine's step graphs compute (kernel choices from batch_invariant; rope_offset).
  StepOptions step_options() const;

  // Throws an Error naming the first id outside the vocabulary.
  void check_ids(std::span<const int32_t> ids) const;

  const ModelConfig& config() const { return config_; }
  size_t device_count() const { return stages_.size(); }
  Runtime& runtime(size_t device = 0) const { return stages_.at(device)->runtime; }
  LayerSpan layers(size_t device = 0) const { return stages_.at(device)->layers; }
  const DeviceWeights& weights(size_t device = 0) const { return stages_.at(device)->weights; }
  const SequenceState& state(size_t device = 0) const { return stages_.at(device)->state; }
  uint64_t weight_bytes() const;  // all devices
  uint64_t state_bytes() const;
  // One device's program of a shape; every device's are built and recorded on first use.
  Program& program(const StepShape& shape, size_t device = 0);
  size_t program_count() const { return steps_.size(); }  // shapes recorded
  // Programs built and recorded so far (a shape evicted and used again counts twice).
  uint64_t programs_recorded() const { return programs_recorded_; }
  double record_seconds() const { return record_seconds_; }  // host time spent building and recording them
  uint64_t arena_bytes() const;                              // all devices
  // GPU seconds per operator kind, summed over steps since the last call (profile only).
  std::map<std::string, double> take_profile();

 private:
  // One device's layers, weights, state and the scratch arena its programs share.
  struct Stage {
    Runtime& runtime;
    LayerSpan layers;
    DeviceWeights weights;
    SequenceState state;
    Allocation arena;
  };
  // A shape's host buffers and program on one device.
  struct StagePart {
    StepIO io;
    std::unique_ptr<Program> program;
  };
  struct Step {
    std::vector<StagePart> parts;  // one per device, in pipeline order
    uint64_t last_used = 0;
  };
  Step& step(const StepShape& shape);  // built and recorded on first use
  // The last device's buffers of a shape: logits and sampled ids.
  const StepIO& head_io(const StepShape& shape) const { return steps_.at(shape).parts.back().io; }
  // Sequence b of a step feeds this many tokens: a mixed step's piece leads the table.
  static uint32_t tokens_of(const StepShape& shape, uint32_t b) {
    return shape.piece && b == 0 ? shape.piece : shape.tokens;
  }
  // One step on every device in turn; positions advance.
  void run_step(const StepShape& shape, std::span<const uint32_t> slots, std::span<const int32_t> ids,
                std::span<const ops::SamplingParams> params);
  // Writes one device's host buffers of a step whose program exists (the hidden state from the
  // previous device's buffers of the same shape).
  void prepare(const StepShape& shape, size_t device, std::span<const uint32_t> slots, std::span<const int32_t> ids,
               std::span<const ops::SamplingParams> params);
  void check_status(const StepShape& shape, size_t device) const;  // throws naming a layer whose router saw NaN
  void evict_least_recent();
  // Adds a program's GPU time to evicted_profile_ before the program is dropped.
  void keep_profile(Program& program);
  void check_room(uint32_t slot, size_t tokens) const;
  void check_decode(std::span<const uint32_t> slots, std::span<const int32_t> ids,
                    std::span<const ops::SamplingParams> params, const PromptPiece* piece) const;
  // One step of a group of sequences (a decode step of at most decode_rows, or a mixed step).
  struct GroupStep {
    StepShape shape;
    std::span<const uint32_t> slots;
    std::span<const int32_t> ids;
    std::span<const ops::SamplingParams> params;
    std::vector<int32_t> sampled = {};  // one per sequence, after run_groups
  };
  // Groups of at most decode_rows decode rows, appended to `groups`.
  void add_decode_groups(std::span<const uint32_t> slots, std::span<const int32_t> ids,
                         std::span<const ops::SamplingParams> params, std::vector<GroupStep>& groups) const;
  // Runs the groups' steps (distinct slots): one after another on one device; on a pipeline
  // split, different groups on different devices at once.
  void run_groups(std::vector<GroupStep>& groups);
  void check_sampled(std::span<const int32_t> ids) const;
  // Verify with the hidden rows kept when the MTP head will read them.
  std::vector<std::vector<int32_t>> run_verify(std::span<const uint32_t> slots, std::span<const int32_t> ids,
                                               uint32_t tokens, std::span<const ops::SamplingParams> params,
                                               bool hidden);
  // The MTP head over rows at positions position .. (model hidden rows and next ids in): the
  // greedy draft of each row, and `hm` the head's output state of the last row.
  std::vector<int32_t> run_mtp(uint32_t slot, uint32_t position, std::span<const int32_t> next_ids, const float* hidden,
                               std::vector<float>& hm) {
    return run_mtp(std::span(&slot, 1), std::span(&position, 1), next_ids, hidden, hm);
  }
  // The same for several sequences, `next_ids.size() / slots.size()` rows each: every row's
  // draft, and in `hm` each sequence's output state at row state_rows[b] of its rows (empty: the
  // last row).
  std::vector<int32_t> run_mtp(std::span<const uint32_t> slots, std::span<const uint32_t> positions,
                               std::span<const int32_t> next_ids, const float* hidden, std::vector<float>& hm,
                               std::span<const uint32_t> state_rows = {});
  // Drafts after the first: the head on its own output state, one position at a time.
  void draft_more(uint32_t slot, uint32_t position, uint32_t drafts, std::vector<float>& hm, std::vector<int32_t>& out);

  ModelConfig config_;
  EngineOptions options_;
  std::vector<std::unique_ptr<Stage>> stages_;
  std::vector<uint32_t> positions_;
  std::map<StepShape, Step> steps_;
  uint64_t use_clock_ = 0;
  uint64_t programs_recorded_ = 0;
  double record_seconds_ = 0;
  std::map<std::string, double> evicted_profile_;
};

}  // namespace q3n::graph
