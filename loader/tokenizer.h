// Byte-level BPE tokenizer of the Qwen2 kind, read from tokenizer.json (spec §7):
// added tokens matched first on the raw text, NFC on the rest, the pre-tokenizer's split regex
// (PCRE2 with Unicode properties), the GPT-2 byte-to-unicode map, then merges by rank.
// Reproduces HF `tokenizers` on the Qwen3 vocabulary (tests/loader/tokenizer_test.cpp).
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace q3n {

using TokenId = int32_t;

class Tokenizer {
 public:
  explicit Tokenizer(const std::filesystem::path& tokenizer_json);
  ~Tokenizer();
  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // Text must be UTF-8. No BOS/EOS is added (Qwen adds none).
  std::vector<TokenId> encode(std::string_view text) const;
  // Concatenated bytes of the tokens; may end inside a UTF-8 sequence (see StreamDecoder).
  std::string decode(const std::vector<TokenId>& ids) const;
  const std::string& token_bytes(TokenId id) const;                   // throws for an id outside the vocabulary
  std::optional<TokenId> find_token(std::string_view content) const;  // exact token (special or not)
  size_t size() const { return token_bytes_.size(); }                 // highest id + 1
  bool is_special(TokenId id) const;

 private:
  struct Merge {
    int32_t rank;
    TokenId merged;
  };
  struct AddedToken {
    std::string content;
    TokenId id;
    bool special;
  };
  void bpe(std::string_view piece, std::vector<TokenId>& out) const;
  void encode_ordinary(std::string_view text, std::vector<TokenId>& out) const;

  struct Regex;
  std::unique_ptr<Regex> regex_;
  std::unordered_map<std::string, TokenId> vocab_;  // byte-level token text -> id
  std::unordered_map<uint64_t, Merge> merges_;      // (left << 32 | right) -> merge
  std::vector<std::string> token_bytes_;            // id -> raw bytes
  std::vector<AddedToken> added_;                   // longest first
  std::vector<bool> special_;
  TokenId byte_token_[256];                                              // id of each single byte
  mutable std::unordered_map<std::string, std::vector<TokenId>> cache_;  // piece -> ids (not thread-safe)
};

// Turns a stream of token ids into text without ever splitting a UTF-8 character: bytes of an
// incomplete character are held until the next token completes them.
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tokenizer) : tokenizer_(tokenizer) {}
  std::string push(TokenId id);  // the complete characters now available
  std::string flush();           // whatever is left (an incomplete tail, as raw bytes)

 private:
  const Tokenizer& tokenizer_;
  std::string pending_;
};

// The GPT-2 bytes_to_unicode table: byte -> UTF-8 of its stand-in character.
const std::string& byte_to_unicode(uint8_t byte);

}  // namespace q3n
