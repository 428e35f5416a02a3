#include "loader/tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <utf8proc.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <nlohmann/json.hpp>
#include <queue>

#include "loader/json_file.h"
#include "runtime/error.h"

namespace q3n {

using nlohmann::json;

namespace {

std::string utf8_encode(uint32_t cp) {
  std::string s;
  if (cp < 0x80)
    s += static_cast<char>(cp);
  else if (cp < 0x800) {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    s += static_cast<char>(0xE0 | (cp >> 12));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return s;
}

// bytes_to_unicode(): printable bytes stand for themselves, the rest map to 256, 257, ...
struct ByteMap {
  std::array<std::string, 256> to_unicode;
  std::unordered_map<uint32_t, uint8_t> from_codepoint;
  ByteMap() {
    std::array<bool, 256> direct{};
    for (int b = '!'; b <= '~'; ++b) direct[b] = true;
    for (int b = 0xA1; b <= 0xAC; ++b) direct[b] = true;
    for (int b = 0xAE; b <= 0xFF; ++b) direct[b] = true;
    uint32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const uint32_t cp = direct[b] ? b : next++;
      to_unicode[b] = utf8_encode(cp);
      from_codepoint[cp] = static_cast<uint8_t>(b);
    }
  }
};

const ByteMap& byte_map() {
  static const ByteMap map;
  return map;
}

// Byte-level token text (stand-in characters) back to raw bytes.
std::string unicode_to_bytes(const std::string& text, const std::string& where) {
  std::string out;
  const auto& map = byte_map().from_codepoint;
  for (utf8proc_ssize_t i = 0; i < static_cast<utf8proc_ssize_t>(text.size());) {
    utf8proc_int32_t cp;
    const auto n = utf8proc_iterate(reinterpret_cast<const utf8proc_uint8_t*>(text.data()) + i, text.size() - i, &cp);
    if (n <= 0) throw Error(where + ": token \"" + text + "\" is not valid UTF-8");
    auto it = map.find(static_cast<uint32_t>(cp));
    if (it == map.end())
      throw Error(where + ": token \"" + text + "\" has a character outside the byte-level alphabet");
    out += static_cast<char>(it->second);
    i += n;
  }
  return out;
}

uint64_t pair_key(TokenId a, TokenId b) { return (uint64_t(uint32_t(a)) << 32) | uint32_t(b); }

// The Split regex of a Qwen2-style pre-tokenizer: Sequence[Split(Regex, Isolated), ByteLevel(use_regex=false)].
std::string split_pattern(const json& pre, const std::string& where) {
  const std::string kind = pre.value("type", "");
  if (kind == "Sequence" && pre.contains("pretokenizers")) {
    std::string pattern;
    for (const auto& p : pre["pretokenizers"]) {
      const std::string t = p.value("type", "");
      if (t == "Split") {
        if (!p.contains("pattern") || !p["pattern"].contains("Regex") || p.value("behavior", "") != "Isolated" ||
            p.value("invert", false))
          throw Error(where + ": only an isolated, non-inverted regex Split pre-tokenizer is supported");
        pattern = p["pattern"]["Regex"].get<std::string>();
      } else if (t == "ByteLevel") {
        if (p.value("use_regex", true) || p.value("add_prefix_space", false))
          throw Error(where + ": ByteLevel pre-tokenizer with use_regex or add_prefix_space is not supported");
      } else {
        throw Error(where + ": pre-tokenizer \"" + t + "\" is not supported (q3n reads Qwen2-style byte-level BPE)");
      }
    }
    if (!pattern.empty()) return pattern;
  }
  throw Error(where + ": pre_tokenizer is not the Qwen2 kind (Sequence of Split regex + ByteLevel)");
}

}  // namespace

const std::string& byte_to_unicode(uint8_t byte) { return byte_map().to_unicode[byte]; }

struct Tokenizer::Regex {
  pcre2_code* code = nullptr;
  ~Regex() { pcre2_code_free(code); }
};

Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

// A function-try-block: a field of the wrong JSON type anywhere below (found by fuzzing) becomes
// a one-line error naming the file rather than an escaped json::type_error.
Tokenizer::Tokenizer(const std::filesystem::path& path) try : regex_(std::make_unique<Regex>()) {
  const std::string where = path.string();
  const json j = read_json_file(path, "is missing: the model folder needs the tokenizer.json it was released with");
  const json& model = j.at("model");
  if (model.value("type", "") != "BPE") throw Error(where + ": model type must be BPE");
  if (j.contains("normalizer") && !j["normalizer"].is_null() && j["normalizer"].value("type", "") != "NFC")
    throw Error(where + ": normalizer \"" + j["normalizer"].value("type", "") + "\" is not supported (only NFC)");

  // Vocabulary. Ids index tables, so each is checked: not negative, and under a ceiling far
  // above any released vocabulary (Qwen's is 151,936) so a forged id cannot demand gigabytes.
  constexpr TokenId kMaxTokenId = 1 << 24;
  auto checked_id = [&](const json& value, const std::string& what) {
    // Read as a 64-bit integer first: converting a float such as 8.8e52 to int is undefined
    // behaviour inside nlohmann::json (found by fuzzing).
    if (!value.is_number_integer()) throw Error(where + ": " + what + " has an id that is not an integer");
    const int64_t id = value.get<int64_t>();
    if (id < 0 || id >= kMaxTokenId)
      throw Error(where + ": " + what + " has id " + std::to_string(id) + ", outside 0.." +
                  std::to_string(kMaxTokenId - 1));
    return TokenId(id);
  };
  TokenId max_id = -1;
  for (auto it = model.at("vocab").begin(); it != model.at("vocab").end(); ++it) {
    const TokenId id = checked_id(it.value(), "vocabulary entry \"" + it.key() + "\"");
    vocab_[it.key()] = id;
    max_id = std::max(max_id, id);
  }
  for (const auto& a : j.value("added_tokens", json::array()))
    max_id = std::max(max_id, checked_id(a.at("id"), "an added token"));
  token_bytes_.assign(max_id + 1, std::string());
  special_.assign(max_id + 1, false);
  for (const auto& [text, id] : vocab_) token_bytes_[id] = unicode_to_bytes(text, where);
  for (int b = 0; b < 256; ++b) {
    auto it = vocab_.find(byte_map().to_unicode[b]);
    if (it == vocab_.end()) throw Error(where + ": the vocabulary lacks the byte token for byte " + std::to_string(b));
    byte_token_[b] = it->second;
  }

  // Merges: ["a", "b"] pairs (new format) or "a b" strings (old format).
  int32_t rank = 0;
  for (const auto& m : model.at("merges")) {
    std::string left, right;
    if (m.is_array()) {
      left = m.at(0).get<std::string>();
      right = m.at(1).get<std::string>();
    } else {
      const std::string s = m.get<std::string>();
      const auto space = s.find(' ');
      if (space == std::string::npos) throw Error(where + ": malformed merge \"" + s + "\"");
      left = s.substr(0, space);
      right = s.substr(space + 1);
    }
    auto l = vocab_.find(left), r = vocab_.find(right), merged = vocab_.find(left + right);
    if (l == vocab_.end() || r == vocab_.end() || merged == vocab_.end())
      throw Error(where + ": merge \"" + left + " " + right + "\" uses tokens missing from the vocabulary");
    merges_.emplace(pair_key(l->second, r->second), Merge{rank++, merged->second});
  }

  // Added tokens, matched longest-first on the raw text.
  for (const auto& a : j.value("added_tokens", json::array())) {
    AddedToken t{a.at("content").get<std::string>(), checked_id(a.at("id"), "an added token"),
                 a.value("special", false)};
    if (t.content.empty()) continue;
    token_bytes_[t.id] = t.content;
    special_[t.id] = t.special;
    added_.push_back(std::move(t));
  }
  std::sort(added_.begin(), added_.end(),
            [](const auto& a, const auto& b) { return a.content.size() > b.content.size(); });

  const std::string pattern = split_pattern(j.at("pre_tokenizer"), where);
  int error = 0;
  PCRE2_SIZE offset = 0;
  regex_->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), PCRE2_UTF | PCRE2_UCP,
                               &error, &offset, nullptr);
  if (!regex_->code) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error, message, sizeof message);
    throw Error(where + ": the split regex does not compile at offset " + std::to_string(offset) + ": " +
                reinterpret_cast<char*>(message));
  }
  pcre2_jit_compile(regex_->code, PCRE2_JIT_COMPLETE);  // optional speed-up; falls back to the interpreter
} catch (const json::exception& e) {
  throw Error(path.string() + " is not a usable tokenizer.json: " + e.what());
}

const std::string& Tokenizer::token_bytes(TokenId id) const {
  if (id < 0 || static_cast<size_t>(id) >= token_bytes_.size())
    throw Error("token id " + std::to_string(id) + " is outside the vocabulary (0.." +
                std::to_string(token_bytes_.size() - 1) + ")");
  return token_bytes_[id];
}

bool Tokenizer::is_special(TokenId id) const {
  return id >= 0 && static_cast<size_t>(id) < special_.size() && special_[id];
}

std::optional<TokenId> Tokenizer::find_token(std::string_view content) const {
  for (const auto& a : added_)
    if (a.content == content) return a.id;
  std::string level;
  for (unsigned char c : content) level += byte_map().to_unicode[c];
  auto it = vocab_.find(level);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

// Merges the bytes of one pre-token by rank, lowest rank (then leftmost) first, as HF does.
void Tokenizer::bpe(std::string_view piece, std::vector<TokenId>& out) const {
  if (auto it = cache_.find(std::string(piece)); it != cache_.end()) {
    out.insert(out.end(), it->second.begin(), it->second.end());
    return;
  }
  struct Symbol {
    TokenId id;
    int prev, next;
    bool alive;
  };
  std::vector<Symbol> sym(piece.size());
  for (size_t i = 0; i < piece.size(); ++i)
    sym[i] = {byte_token_[static_cast<uint8_t>(piece[i])], static_cast<int>(i) - 1,
              i + 1 < piece.size() ? static_cast<int>(i) + 1 : -1, true};
  struct Candidate {
    int32_t rank;
    int pos;
    TokenId merged;
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> queue;
  auto consider = [&](int pos) {
    const int next = sym[pos].next;
    if (next < 0) return;
    auto it = merges_.find(pair_key(sym[pos].id, sym[next].id));
    if (it != merges_.end()) queue.push({it->second.rank, pos, it->second.merged});
  };
  for (size_t i = 0; i + 1 < piece.size(); ++i) consider(static_cast<int>(i));
  while (!queue.empty()) {
    const Candidate c = queue.top();
    queue.pop();
    Symbol& s = sym[c.pos];
    if (!s.alive || s.next < 0) continue;
    auto it = merges_.find(pair_key(s.id, sym[s.next].id));
    if (it == merges_.end() || it->second.merged != c.merged) continue;  // stale entry
    Symbol& right = sym[s.next];
    s.id = c.merged;
    right.alive = false;
    s.next = right.next;
    if (s.next >= 0) sym[s.next].prev = c.pos;
    if (s.prev >= 0) consider(s.prev);
    consider(c.pos);
  }
  std::vector<TokenId> ids;
  for (int i = 0; i >= 0 && i < static_cast<int>(sym.size()); i = sym[i].next) ids.push_back(sym[i].id);
  out.insert(out.end(), ids.begin(), ids.end());
  if (cache_.size() > 200000) cache_.clear();
  cache_.emplace(std::string(piece), std::move(ids));
}

// NFC, then split by the regex ("isolated": matches and the gaps between them are pieces), then BPE.
void Tokenizer::encode_ordinary(std::string_view raw, std::vector<TokenId>& out) const {
  if (raw.empty()) return;
  std::string normalized;
  std::string_view text = raw;
  const bool ascii = std::all_of(raw.begin(), raw.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; });
  if (!ascii) {
    utf8proc_uint8_t* mapped = nullptr;
    const auto n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(raw.data()), raw.size(), &mapped,
                                static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
    if (n < 0) {
      std::free(mapped);
      throw Error(std::string("the text is not valid UTF-8 (") + utf8proc_errmsg(n) + ")");
    }
    normalized.assign(reinterpret_cast<char*>(mapped), n);
    std::free(mapped);
    text = normalized;
  }
  pcre2_match_data* match = pcre2_match_data_create_from_pattern(regex_->code, nullptr);
  std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> guard(match, pcre2_match_data_free);
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t pos = 0;
  while (pos < text.size()) {
    const int rc = pcre2_match(regex_->code, subject, text.size(), pos, PCRE2_NO_UTF_CHECK, match, nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) throw Error("tokenizer: regex match failed with PCRE2 error " + std::to_string(rc));
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(match);
    if (ov[0] > pos) bpe(text.substr(pos, ov[0] - pos), out);  // unmatched gap
    if (ov[1] == ov[0]) {                                      // empty match: step one character to make progress
      size_t step = 1;
      while (ov[0] + step < text.size() && (static_cast<unsigned char>(text[ov[0] + step]) & 0xC0) == 0x80) ++step;
      bpe(text.substr(ov[0], step), out);
      pos = ov[0] + step;
      continue;
    }
    bpe(text.substr(ov[0], ov[1] - ov[0]), out);
    pos = ov[1];
  }
  if (pos < text.size()) bpe(text.substr(pos), out);
}

std::vector<TokenId> Tokenizer::encode(std::string_view text) const {
  std::vector<TokenId> out;
  // Next occurrence of each added token at or after `start`, refreshed only when passed.
  std::vector<size_t> next(added_.size(), 0);
  std::vector<bool> known(added_.size(), false);
  size_t start = 0;
  while (start < text.size()) {
    // Earliest added token; the longest at that position (added_ is sorted longest first).
    size_t best_pos = std::string_view::npos;
    const AddedToken* best = nullptr;
    for (size_t i = 0; i < added_.size(); ++i) {
      if (!known[i] || (next[i] != std::string_view::npos && next[i] < start)) {
        next[i] = text.find(added_[i].content, start);
        known[i] = true;
      }
      if (next[i] != std::string_view::npos && next[i] < best_pos) {
        best_pos = next[i];
        best = &added_[i];
      }
    }
    if (!best) break;
    encode_ordinary(text.substr(start, best_pos - start), out);
    out.push_back(best->id);
    start = best_pos + best->content.size();
  }
  if (start < text.size()) encode_ordinary(text.substr(start), out);
  return out;
}

std::string Tokenizer::decode(const std::vector<TokenId>& ids) const {
  std::string out;
  for (TokenId id : ids) out += token_bytes(id);
  return out;
}

std::string StreamDecoder::push(TokenId id) {
  pending_ += tokenizer_.token_bytes(id);
  // Hold back a trailing incomplete UTF-8 sequence (at most 3 bytes).
  size_t keep = 0;
  for (size_t back = 1; back <= 3 && back <= pending_.size(); ++back) {
    const auto c = static_cast<unsigned char>(pending_[pending_.size() - back]);
    if ((c & 0xC0) == 0x80) continue;  // continuation byte: look further back
    const size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
    if (need > back) keep = back;
    break;
  }
  std::string ready = pending_.substr(0, pending_.size() - keep);
  pending_.erase(0, pending_.size() - keep);
  return ready;
}

std::string StreamDecoder::flush() { return std::exchange(pending_, std::string()); }

}  // namespace q3n
