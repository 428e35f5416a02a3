// The files of `q3n batch`: one JSON request per input line (a plain shape or an OpenAI batch-file
// line, README "Batch jobs"), and the output file of one JSON result per request, appended as
// requests finish and recovered after a crash (a torn last line is cut off).
#pragma once

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "loader/chat.h"

namespace q3n {

// One request as the input line states it; what it leaves out comes from the command's flags.
struct BatchRequest {
  size_t line = 0;  // 1-based input line
  std::string custom_id;
  // Exactly one prompt form is set.
  std::optional<std::string> prompt;                 // raw text (/v1/completions or the plain shape)
  std::optional<std::vector<ChatMessage>> messages;  // rendered as ChatML
  std::optional<std::vector<int32_t>> prompt_ids;    // token ids as they are
  std::optional<uint32_t> max_tokens, top_k;
  std::optional<float> temperature, top_p, min_p;
  std::optional<uint64_t> seed;
  std::vector<std::string> stop;  // stop strings
};

// A parsed line: the request, or why it is refused (with the custom_id when one was readable,
// so the error record can carry it). Never throws; any bytes are acceptable input.
struct BatchLine {
  std::optional<BatchRequest> request;
  std::optional<std::string> custom_id;
  std::string error;
};
BatchLine parse_batch_line(std::string_view text, size_t line_number);

// True for lines that hold no request (empty or only whitespace); they get no output line.
bool is_blank_line(std::string_view text);

// What an existing output file already holds: the custom_ids that finished (a result) and the
// input lines that ended in an error record.
struct BatchProgress {
  std::set<std::string> finished_ids;
  std::set<size_t> failed_lines;
  size_t records = 0;
  bool dropped_torn_line = false;
  bool done(const BatchRequest& r) const { return finished_ids.count(r.custom_id) || failed_lines.count(r.line); }
  bool done_line(size_t line) const { return failed_lines.count(line) > 0; }
  void add(const BatchProgress& other);
};
// Reads `path` (missing: nothing done). A last line cut short by a crash (no newline, or not
// JSON) is removed from the file; any other malformed line is an error naming it.
BatchProgress recover_batch_output(const std::filesystem::path& path);

// A job split over processes (`mpirun -np N q3n batch`): rank R appends to OUTPUT.rank-R, and
// at the end the parts are merged into OUTPUT (merge_batch_parts).
std::filesystem::path batch_part_path(const std::filesystem::path& output, int rank);
// The part files of `output` that exist now (of any earlier process count), sorted by rank.
std::vector<std::filesystem::path> batch_parts(const std::filesystem::path& output);
// Rewrites `output` (temporary file + rename) as its own records followed by each part's that it
// does not hold yet (one record per custom_id, or per input line for records without one), then
// removes the parts. Returns the records added.
size_t merge_batch_parts(const std::filesystem::path& output, const std::vector<std::filesystem::path>& parts);

// Appends records to the output file, one line each, written whole with one write() and
// fsync'ed at most `sync_seconds` apart and when closed.
class BatchOutput {
 public:
  explicit BatchOutput(const std::filesystem::path& path, double sync_seconds = 2.0);
  ~BatchOutput();
  BatchOutput(const BatchOutput&) = delete;
  BatchOutput& operator=(const BatchOutput&) = delete;
  void append(const std::string& json_line);  // without the newline
  void sync();

 private:
  std::filesystem::path path_;
  int fd_ = -1;
  double sync_seconds_;
  double last_sync_ = 0;
  bool dirty_ = false;
};

// JSON text of the records.
std::string batch_result_record(const std::string& custom_id, const std::string& text, bool stopped,
                                uint32_t prompt_tokens, uint32_t completion_tokens, const std::vector<int32_t>* ids);
std::string batch_error_record(const std::optional<std::string>& custom_id, size_t line, const std::string& message);

// The seed of a request that names none: a hash of its custom_id (FNV-1a, 64 bits).
uint64_t seed_from_custom_id(std::string_view custom_id);

}  // namespace q3n
