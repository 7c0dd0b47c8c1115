// Byte-level BPE tokenizer for Qwen-family GGUF files.
#ifndef QWEN_INFERENCE_TOKENIZER_TOKENIZER_H_
#define QWEN_INFERENCE_TOKENIZER_TOKENIZER_H_

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "inference/gguf/gguf_file.h"
#include "inference/tokenizer/pre_tokenizer.h"

namespace qwen::tokenizer {

// Token types as stored in tokenizer.ggml.token_type (llama.cpp's numbering).
enum class TokenType : uint8_t {
  kUndefined = 0,
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,      // <|im_start|>, <|endoftext|>: special, hidden when decoding by default
  kUserDefined = 4,  // <think>, <tool_call>: added tokens that are ordinary text when decoding
  kUnused = 5,
  kByte = 6,
};

// Everything a tokenizer is made of, as read from the GGUF tokenizer.ggml.* keys.
struct Vocabulary {
  std::vector<std::string> tokens;     // pieces in byte-level form ("Ġthe") or literal for added
  std::vector<TokenType> types;        // same length as tokens (missing: all normal)
  std::vector<std::string> merges;     // "left right", by rank
  std::string model = "gpt2";          // tokenizer.ggml.model
  std::string pre;                     // tokenizer.ggml.pre
  int32_t eos_id = -1;
  int32_t bos_id = -1;
  int32_t pad_id = -1;
  bool add_bos = false;
  std::vector<int32_t> extra_eog_ids;  // tokenizer.ggml.eos_token_ids (Ollama's files)
};

struct TokenizerOptions {
  // When non-empty, replaces tokenizer.ggml.pre (e.g. to compare "qwen2" with "qwen35").
  std::string pre_tokenizer_override;
};

// Converts text to token ids and back the way the model's Hugging Face tokenizer does: split out
// added tokens, NFC-normalise each remaining segment (utf8proc), split it with the pre-tokenizer
// regex, then byte-level BPE with merge ranks.
//
// Immutable after construction and thread-safe: Encode/Decode may be called concurrently from
// any number of threads. The only mutable state is an internal cache of encoded words, guarded
// by sharded mutexes; it changes speed, never results.
class Tokenizer {
 public:
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromGguf(const gguf::GgufFile& file,
                                                             const TokenizerOptions& options = {});
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Create(Vocabulary vocab,
                                                           const TokenizerOptions& options = {});
  ~Tokenizer();

  // Token ids for `text`. User-defined added tokens (<think>, <tool_call>, ...) are always
  // recognised, as Hugging Face does for non-special added tokens; control tokens
  // (<|im_start|>, ...) only when `parse_special` is true, and are otherwise tokenized as the
  // plain text they are spelled with. Text that is not valid UTF-8 is first made valid by
  // replacing ill-formed bytes with U+FFFD. Never fails.
  //
  // With `parse_special` false the text is not NFC-normalised: that is what the Hugging Face
  // tokenizer does with special-token splitting turned on (split_special_tokens), as recorded in
  // tests/data/tokenizer/cases.json, and matching it token for token matters more than tidiness.
  std::vector<int32_t> Encode(absl::string_view text, bool parse_special) const;

  // The text Encode() actually tokenizes: `text` made valid UTF-8, with each segment between
  // recognised added tokens in NFC (when `parse_special`). Decode(Encode(t, p), true) == NormalizeForEncoding(t, p).
  std::string NormalizeForEncoding(absl::string_view text, bool parse_special) const;

  // The text of `ids`: the concatenated token bytes, with ill-formed UTF-8 replaced by U+FFFD.
  // Control tokens are left out unless `show_control`. Ids out of range are skipped.
  std::string Decode(absl::Span<const int32_t> ids, bool show_control = false) const;

  // The bytes one token stands for (no UTF-8 repair); empty for an id out of range.
  absl::string_view TokenBytes(int32_t id) const;
  // The piece as spelled in the vocabulary ("Ġthe"); empty for an id out of range.
  absl::string_view TokenPiece(int32_t id) const;
  TokenType Type(int32_t id) const;
  bool IsControl(int32_t id) const { return Type(id) == TokenType::kControl; }
  // The id of a piece spelled exactly as in the vocabulary, or -1.
  int32_t PieceToId(absl::string_view piece) const;

  int32_t vocab_size() const { return static_cast<int32_t>(pieces_.size()); }
  int32_t eos_id() const { return eos_id_; }
  int32_t bos_id() const { return bos_id_; }
  int32_t pad_id() const { return pad_id_; }
  bool add_bos() const { return add_bos_; }
  const std::string& pre_tokenizer_name() const { return pre_->name(); }

  // Tokens that end a turn or the text: eos plus <|im_end|> and <|endoftext|> when present.
  bool IsEndOfGeneration(int32_t id) const;
  const std::vector<int32_t>& end_of_generation_ids() const { return eog_ids_; }

 private:
  Tokenizer() = default;
  absl::Status Init(Vocabulary vocab, const TokenizerOptions& options);
  // Calls on_text(segment) for each run of text between recognised added tokens and
  // on_added(id, text) for each added token, in order. `text` must be valid UTF-8.
  template <typename OnText, typename OnAdded>
  void ForEachSegment(absl::string_view text, bool parse_special, OnText on_text,
                      OnAdded on_added) const;
  // Appends the ids of a segment with no added tokens in it.
  void EncodeText(absl::string_view text, bool nfc, std::vector<int32_t>* out) const;
  void EncodeWord(absl::string_view word, std::vector<int32_t>* out) const;
  void Bpe(absl::string_view word, std::vector<int32_t>* out) const;

  std::vector<std::string> pieces_;
  std::vector<std::string> bytes_;  // decoded bytes per token
  std::vector<TokenType> types_;
  absl::flat_hash_map<std::string, int32_t> piece_to_id_;
  // (left id << 32 | right id) -> (rank << 32 | merged id).
  absl::flat_hash_map<uint64_t, uint64_t> merges_;
  std::array<int32_t, 256> byte_token_{};  // id of the single-byte token, or -1

  // Added tokens matched in text, longest first per leading byte.
  struct Added {
    std::string text;
    int32_t id;
    bool control;
  };
  std::array<std::vector<Added>, 256> added_by_first_byte_;
  std::array<bool, 256> added_first_byte_{};

  std::unique_ptr<PreTokenizer> pre_;
  int32_t eos_id_ = -1, bos_id_ = -1, pad_id_ = -1;
  bool add_bos_ = false;
  std::vector<int32_t> eog_ids_;

  // Cache of encoded words. Sharded to keep lock contention low when many threads encode.
  static constexpr int kCacheShards = 16;
  static constexpr size_t kCacheEntriesPerShard = 1 << 14;
  struct CacheShard {
    absl::Mutex mu;
    absl::flat_hash_map<std::string, std::vector<int32_t>> map ABSL_GUARDED_BY(mu);
  };
  mutable std::array<CacheShard, kCacheShards> cache_;
};

// Turns a stream of token ids into text pieces that are always whole UTF-8 characters: bytes of
// a character split across tokens are held back until it is complete. Ill-formed bytes become
// U+FFFD as in Tokenizer::Decode, so the concatenation of everything Add() and Flush() return
// equals Decode() of all the ids.
//
// One per stream; not thread-safe. The tokenizer must outlive it.
class StreamingDecoder {
 public:
  explicit StreamingDecoder(const Tokenizer& tokenizer, bool show_control = false)
      : tokenizer_(tokenizer), show_control_(show_control) {}

  // The text that became complete with this token (often empty or one token's text).
  std::string Add(int32_t id);
  // Whatever is held back, with an unfinished character as U+FFFD; resets the decoder.
  std::string Flush();
  // Bytes held back waiting for the rest of a character.
  size_t pending_bytes() const { return pending_.size(); }

 private:
  const Tokenizer& tokenizer_;
  bool show_control_;
  std::string pending_;
};

// Unicode NFC of well-formed UTF-8 `text` (utf8proc). Text below U+0300 is returned unchanged
// without calling utf8proc.
std::string NormalizeNfc(absl::string_view text);

}  // namespace qwen::tokenizer

#endif  // QWEN_INFERENCE_TOKENIZER_TOKENIZER_H_
