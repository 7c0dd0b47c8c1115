#include "inference/tokenizer/tokenizer.h"

#include <utf8proc.h>

#include <algorithm>
#include <cstdlib>
#include <functional>
#include <utility>

#include "absl/hash/hash.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "inference/common/status_macros.h"
#include "inference/tokenizer/utf8.h"

namespace qwen::tokenizer {
namespace {

// "[PAD<digits>]", the converters' name for the tokens that pad the vocabulary.
bool IsPaddingPiece(absl::string_view piece) {
  if (!absl::ConsumePrefix(&piece, "[PAD") || !absl::ConsumeSuffix(&piece, "]")) return false;
  return !piece.empty() &&
         std::all_of(piece.begin(), piece.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// GPT-2's byte-level alphabet: printable bytes stand for themselves, the rest are shifted to
// U+0100.. so that every byte has a visible, non-space code point.
struct ByteLevelAlphabet {
  std::array<char32_t, 256> byte_to_cp{};
  absl::flat_hash_map<char32_t, uint8_t> cp_to_byte;

  ByteLevelAlphabet() {
    auto printable = [](int b) {
      return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    };
    int shifted = 0;
    for (int b = 0; b < 256; ++b) {
      byte_to_cp[b] =
          printable(b) ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + shifted++);
      cp_to_byte[byte_to_cp[b]] = static_cast<uint8_t>(b);
    }
  }
};

const ByteLevelAlphabet& Alphabet() {
  static const ByteLevelAlphabet* alphabet = new ByteLevelAlphabet();
  return *alphabet;
}

// A byte-level piece ("Ġthe") back to the bytes it stands for (" the"). Code points outside the
// alphabet (not produced by byte-level vocabularies) are kept as their UTF-8.
std::string PieceToBytes(absl::string_view piece) {
  const ByteLevelAlphabet& alphabet = Alphabet();
  std::string out;
  out.reserve(piece.size());
  size_t pos = 0;
  while (pos < piece.size()) {
    const size_t start = pos;
    if (Utf8SequenceLength(piece.substr(pos)) <= 0) {
      out.push_back(piece[pos++]);
      continue;
    }
    const char32_t cp = DecodeUtf8(piece, &pos);
    auto it = alphabet.cp_to_byte.find(cp);
    if (it != alphabet.cp_to_byte.end()) {
      out.push_back(static_cast<char>(it->second));
    } else {
      out.append(piece.data() + start, pos - start);
    }
  }
  return out;
}

bool NeedsNfc(absl::string_view text) {
  // Code points below U+0300 are NFC-stable and never compose with what precedes them; their
  // UTF-8 lead bytes are all below 0xCC and continuation bytes are 0x80..0xBF.
  for (char c : text) {
    if (static_cast<uint8_t>(c) >= 0xCC) return true;
  }
  return false;
}

}  // namespace

namespace {

std::string NfcWithUtf8proc(absl::string_view text) {
  utf8proc_uint8_t* dst = nullptr;
  const utf8proc_ssize_t n =
      utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(text.data()),
                   static_cast<utf8proc_ssize_t>(text.size()), &dst,
                   static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
  if (n < 0) {
    // Only ill-formed input fails, and callers pass well-formed text; keep it unchanged.
    std::free(dst);
    return std::string(text);
  }
  std::string out(reinterpret_cast<const char*>(dst), static_cast<size_t>(n));
  std::free(dst);
  return out;
}

// Start of the UTF-8 character that ends just before `pos`.
size_t PreviousCharStart(absl::string_view s, size_t pos) {
  if (pos == 0) return 0;
  size_t k = pos - 1;
  while (k > 0 && (static_cast<uint8_t>(s[k]) & 0xC0) == 0x80) --k;
  return k;
}

}  // namespace

std::string NormalizeNfc(absl::string_view text) {
  if (!NeedsNfc(text)) return std::string(text);
  // Only runs of code points >= U+0300 can change under NFC, together with the one character
  // before a run (a base that a following mark may compose with): characters below U+0300 have
  // combining class 0 and are never the second half of a canonical composition, so they split
  // the text into parts that normalise independently. Handing utf8proc just those regions
  // keeps mostly-ASCII text (prose, code) off its slower path.
  std::string out;
  out.reserve(text.size());
  size_t pos = 0;  // everything before pos has been written
  size_t i = 0;
  const size_t n = text.size();
  while (i < n) {
    if (static_cast<uint8_t>(text[i]) < 0xCC) {
      ++i;
      continue;
    }
    // A run of high characters starts at i; the region also takes the character before it.
    const size_t region_start = std::max(pos, PreviousCharStart(text, i));
    size_t j = i;
    while (j < n) {
      const auto b = static_cast<uint8_t>(text[j]);
      if (b < 0x80) break;               // ASCII: below U+0300
      if (b < 0xCC && b >= 0xC0) break;  // 2-byte lead below U+0300
      ++j;                               // high lead or continuation byte
    }
    out.append(text.data() + pos, region_start - pos);
    out += NfcWithUtf8proc(text.substr(region_start, j - region_start));
    pos = j;
    i = j;
  }
  out.append(text.data() + pos, n - pos);
  return out;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromGguf(const gguf::GgufFile& file,
                                                               const TokenizerOptions& options) {
  Vocabulary vocab;
  ASSIGN_OR_RETURN(absl::string_view model, file.GetString("tokenizer.ggml.model"));
  vocab.model = std::string(model);
  if (file.Has("tokenizer.ggml.pre")) {
    ASSIGN_OR_RETURN(absl::string_view pre, file.GetString("tokenizer.ggml.pre"));
    vocab.pre = std::string(pre);
  }
  ASSIGN_OR_RETURN(std::vector<absl::string_view> tokens,
                   file.GetStringArray("tokenizer.ggml.tokens"));
  vocab.tokens.reserve(tokens.size());
  for (absl::string_view t : tokens) vocab.tokens.emplace_back(t);
  if (file.Has("tokenizer.ggml.token_type")) {
    ASSIGN_OR_RETURN(std::vector<int64_t> types, file.GetIntArray("tokenizer.ggml.token_type"));
    vocab.types.reserve(types.size());
    for (int64_t t : types) {
      vocab.types.push_back(t >= 0 && t <= 6 ? static_cast<TokenType>(t) : TokenType::kUndefined);
    }
  }
  if (file.Has("tokenizer.ggml.merges")) {
    ASSIGN_OR_RETURN(std::vector<absl::string_view> merges,
                     file.GetStringArray("tokenizer.ggml.merges"));
    vocab.merges.reserve(merges.size());
    for (absl::string_view m : merges) vocab.merges.emplace_back(m);
  }
  constexpr uint32_t kNone = 0xFFFFFFFFu;
  ASSIGN_OR_RETURN(uint32_t eos, file.GetU32Or("tokenizer.ggml.eos_token_id", kNone));
  ASSIGN_OR_RETURN(uint32_t bos, file.GetU32Or("tokenizer.ggml.bos_token_id", kNone));
  ASSIGN_OR_RETURN(uint32_t pad, file.GetU32Or("tokenizer.ggml.padding_token_id", kNone));
  ASSIGN_OR_RETURN(vocab.add_bos, file.GetBoolOr("tokenizer.ggml.add_bos_token", false));
  vocab.eos_id = eos == kNone ? -1 : static_cast<int32_t>(eos);
  vocab.bos_id = bos == kNone ? -1 : static_cast<int32_t>(bos);
  vocab.pad_id = pad == kNone ? -1 : static_cast<int32_t>(pad);
  if (file.Has("tokenizer.ggml.eos_token_ids")) {
    ASSIGN_OR_RETURN(std::vector<int64_t> more, file.GetIntArray("tokenizer.ggml.eos_token_ids"));
    for (int64_t id : more) vocab.extra_eog_ids.push_back(static_cast<int32_t>(id));
  }
  return Create(std::move(vocab), options);
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Create(Vocabulary vocab,
                                                             const TokenizerOptions& options) {
  std::unique_ptr<Tokenizer> t(new Tokenizer());
  RETURN_IF_ERROR(t->Init(std::move(vocab), options));
  return t;
}

Tokenizer::~Tokenizer() = default;

absl::Status Tokenizer::Init(Vocabulary vocab, const TokenizerOptions& options) {
  if (vocab.model != "gpt2") {
    return absl::InvalidArgumentError(absl::StrCat("unsupported tokenizer model \"", vocab.model,
                                                   "\" (tokenizer.ggml.model); only gpt2 "
                                                   "(byte-level BPE) is implemented"));
  }
  if (vocab.tokens.empty()) return absl::InvalidArgumentError("tokenizer has no tokens");
  if (vocab.tokens.size() > 0x7FFFFFFF) return absl::InvalidArgumentError("too many tokens");
  const size_t n = vocab.tokens.size();
  if (!vocab.types.empty() && vocab.types.size() != n) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tokenizer.ggml.token_type has ", vocab.types.size(), " entries for ", n, " tokens"));
  }
  const std::string pre_name =
      options.pre_tokenizer_override.empty() ? vocab.pre : options.pre_tokenizer_override;
  if (pre_name.empty()) {
    return absl::InvalidArgumentError(
        "tokenizer.ggml.pre is missing; the pre-tokenizer cannot be guessed");
  }
  ASSIGN_OR_RETURN(pre_, PreTokenizer::Create(pre_name));

  auto check_id = [n](int32_t id, const char* what) -> absl::Status {
    if (id < -1 || id >= static_cast<int64_t>(n)) {
      return absl::InvalidArgumentError(absl::StrCat(what, " ", id, " is outside the vocabulary"));
    }
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(check_id(vocab.eos_id, "eos token id"));
  RETURN_IF_ERROR(check_id(vocab.bos_id, "bos token id"));
  RETURN_IF_ERROR(check_id(vocab.pad_id, "padding token id"));
  eos_id_ = vocab.eos_id;
  bos_id_ = vocab.bos_id;
  pad_id_ = vocab.pad_id;
  add_bos_ = vocab.add_bos;

  types_ =
      vocab.types.empty() ? std::vector<TokenType>(n, TokenType::kNormal) : std::move(vocab.types);
  pieces_ = std::move(vocab.tokens);
  for (size_t id = 0; id < n; ++id) {
    // Ollama's converter pads the vocabulary with [PAD<k>] tokens typed user-defined, where
    // llama.cpp's types them unused. The model's own tokenizer has no such tokens, so text
    // that spells one must stay text.
    if (types_[id] == TokenType::kUserDefined && IsPaddingPiece(pieces_[id])) {
      types_[id] = TokenType::kUnused;
    }
  }
  bytes_.resize(n);
  piece_to_id_.reserve(n);
  for (size_t id = 0; id < n; ++id) {
    const TokenType type = types_[id];
    const bool literal = type == TokenType::kControl || type == TokenType::kUserDefined;
    bytes_[id] = literal ? pieces_[id] : PieceToBytes(pieces_[id]);
    piece_to_id_.emplace(pieces_[id], static_cast<int32_t>(id));  // first one wins
    if (literal && !pieces_[id].empty()) {
      const auto first = static_cast<uint8_t>(pieces_[id][0]);
      added_by_first_byte_[first].push_back(
          {pieces_[id], static_cast<int32_t>(id), type == TokenType::kControl});
      added_first_byte_[first] = true;
    }
  }
  for (auto& list : added_by_first_byte_) {
    // Longest first, so that the first match at a position is the longest (Hugging Face matches
    // added tokens leftmost-longest).
    std::stable_sort(list.begin(), list.end(),
                     [](const Added& a, const Added& b) { return a.text.size() > b.text.size(); });
  }

  const ByteLevelAlphabet& alphabet = Alphabet();
  for (int b = 0; b < 256; ++b) {
    std::string piece;
    AppendUtf8(alphabet.byte_to_cp[b], &piece);
    auto it = piece_to_id_.find(piece);
    byte_token_[b] = it == piece_to_id_.end() ? -1 : it->second;
  }

  merges_.reserve(vocab.merges.size());
  for (size_t rank = 0; rank < vocab.merges.size(); ++rank) {
    const std::string& merge = vocab.merges[rank];
    const size_t space = merge.find(' ', 1);
    if (space == std::string::npos) continue;
    auto left = piece_to_id_.find(absl::string_view(merge).substr(0, space));
    auto right = piece_to_id_.find(absl::string_view(merge).substr(space + 1));
    if (left == piece_to_id_.end() || right == piece_to_id_.end()) continue;
    auto merged = piece_to_id_.find(left->first + right->first);
    if (merged == piece_to_id_.end()) continue;
    const uint64_t key =
        (static_cast<uint64_t>(left->second) << 32) | static_cast<uint32_t>(right->second);
    merges_.emplace(key, (static_cast<uint64_t>(rank) << 32) |
                             static_cast<uint32_t>(merged->second));  // lowest rank wins
  }

  if (eos_id_ >= 0) eog_ids_.push_back(eos_id_);
  // Ollama's files list the generation config's end tokens in tokenizer.ggml.eos_token_ids.
  for (int32_t id : vocab.extra_eog_ids) {
    if (id >= 0 && id < vocab_size() &&
        std::find(eog_ids_.begin(), eog_ids_.end(), id) == eog_ids_.end()) {
      eog_ids_.push_back(id);
    }
  }
  for (const char* name : {"<|im_end|>", "<|endoftext|>"}) {
    auto it = piece_to_id_.find(name);
    if (it != piece_to_id_.end() && types_[it->second] == TokenType::kControl &&
        std::find(eog_ids_.begin(), eog_ids_.end(), it->second) == eog_ids_.end()) {
      eog_ids_.push_back(it->second);
    }
  }
  return absl::OkStatus();
}

TokenType Tokenizer::Type(int32_t id) const {
  if (id < 0 || id >= vocab_size()) return TokenType::kUndefined;
  return types_[id];
}

absl::string_view Tokenizer::TokenBytes(int32_t id) const {
  if (id < 0 || id >= vocab_size()) return {};
  return bytes_[id];
}

absl::string_view Tokenizer::TokenPiece(int32_t id) const {
  if (id < 0 || id >= vocab_size()) return {};
  return pieces_[id];
}

int32_t Tokenizer::PieceToId(absl::string_view piece) const {
  auto it = piece_to_id_.find(piece);
  return it == piece_to_id_.end() ? -1 : it->second;
}

bool Tokenizer::IsEndOfGeneration(int32_t id) const {
  return std::find(eog_ids_.begin(), eog_ids_.end(), id) != eog_ids_.end();
}

template <typename OnText, typename OnAdded>
void Tokenizer::ForEachSegment(absl::string_view text, bool parse_special, OnText on_text,
                               OnAdded on_added) const {
  size_t segment = 0;
  size_t i = 0;
  const size_t n = text.size();
  while (i < n) {
    const auto c = static_cast<uint8_t>(text[i]);
    if (!added_first_byte_[c]) {
      ++i;
      continue;
    }
    const Added* hit = nullptr;
    for (const Added& a : added_by_first_byte_[c]) {
      if (a.control && !parse_special) continue;
      if (text.compare(i, a.text.size(), a.text) == 0) {
        hit = &a;
        break;
      }
    }
    if (hit == nullptr) {
      ++i;
      continue;
    }
    if (i > segment) on_text(text.substr(segment, i - segment));
    on_added(hit->id, absl::string_view(hit->text));
    i += hit->text.size();
    segment = i;
  }
  if (n > segment) on_text(text.substr(segment));
}

std::vector<int32_t> Tokenizer::Encode(absl::string_view text, bool parse_special) const {
  std::string repaired;
  if (!IsValidUtf8(text)) {
    repaired = ToValidUtf8(text);
    text = repaired;
  }
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 4);
  ForEachSegment(
      text, parse_special,
      [&](absl::string_view segment) { EncodeText(segment, parse_special, &out); },
      [&](int32_t id, absl::string_view) { out.push_back(id); });
  return out;
}

std::string Tokenizer::NormalizeForEncoding(absl::string_view text, bool parse_special) const {
  const std::string valid = ToValidUtf8(text);
  std::string out;
  ForEachSegment(
      valid, parse_special,
      [&](absl::string_view segment) {
        if (parse_special) {
          out += NormalizeNfc(segment);
        } else {
          out.append(segment.data(), segment.size());
        }
      },
      [&](int32_t, absl::string_view added) { out.append(added.data(), added.size()); });
  return out;
}

void Tokenizer::EncodeText(absl::string_view text, bool nfc, std::vector<int32_t>* out) const {
  if (text.empty()) return;
  std::string normalized;
  if (nfc && NeedsNfc(text)) {
    normalized = NormalizeNfc(text);
    text = normalized;
  }
  pre_->Split(text, [this, out](absl::string_view word) { EncodeWord(word, out); });
}

void Tokenizer::EncodeWord(absl::string_view word, std::vector<int32_t>* out) const {
  if (word.size() == 1) {
    const int32_t id = byte_token_[static_cast<uint8_t>(word[0])];
    if (id >= 0) out->push_back(id);
    return;
  }
  CacheShard& shard = cache_[absl::HashOf(word) % kCacheShards];
  {
    absl::MutexLock lock(&shard.mu);
    auto it = shard.map.find(word);
    if (it != shard.map.end()) {
      out->insert(out->end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const size_t start = out->size();
  Bpe(word, out);
  std::vector<int32_t> ids(out->begin() + start, out->end());
  absl::MutexLock lock(&shard.mu);
  if (shard.map.size() >= kCacheEntriesPerShard) shard.map.clear();
  shard.map.emplace(std::string(word), std::move(ids));
}

void Tokenizer::Bpe(absl::string_view word, std::vector<int32_t>* out) const {
  // Symbols form a doubly linked list over the word's bytes; candidate merges sit in a min-heap
  // ordered by (rank, position), which is the order Hugging Face applies them in. Entries made
  // stale by an earlier merge are recognised on pop and skipped.
  struct Symbol {
    int32_t id;
    int32_t prev;
    int32_t next;
  };
  struct Candidate {
    uint32_t rank;
    int32_t pos;
    int32_t left_id;
    int32_t right_id;
    int32_t merged_id;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  thread_local std::vector<Symbol> symbols;
  thread_local std::vector<Candidate> heap;
  symbols.clear();
  for (size_t k = 0; k < word.size(); ++k) {
    const int32_t id = byte_token_[static_cast<uint8_t>(word[k])];
    symbols.push_back(
        {id, static_cast<int32_t>(k) - 1, k + 1 < word.size() ? static_cast<int32_t>(k + 1) : -1});
  }
  heap.clear();
  const std::greater<Candidate> later;
  auto consider = [&](int32_t pos) {
    if (pos < 0) return;
    const int32_t next = symbols[pos].next;
    if (next < 0) return;
    const int32_t l = symbols[pos].id, r = symbols[next].id;
    if (l < 0 || r < 0) return;
    auto it = merges_.find((static_cast<uint64_t>(l) << 32) | static_cast<uint32_t>(r));
    if (it == merges_.end()) return;
    heap.push_back({static_cast<uint32_t>(it->second >> 32), pos, l, r,
                    static_cast<int32_t>(it->second & 0xFFFFFFFFu)});
    std::push_heap(heap.begin(), heap.end(), later);
  };
  for (int32_t pos = 0; pos < static_cast<int32_t>(symbols.size()); ++pos) consider(pos);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), later);
    const Candidate c = heap.back();
    heap.pop_back();
    Symbol& left = symbols[c.pos];
    if (left.id != c.left_id || left.next < 0 || symbols[left.next].id != c.right_id) continue;
    const int32_t right_pos = left.next;
    left.id = c.merged_id;
    left.next = symbols[right_pos].next;
    if (left.next >= 0) symbols[left.next].prev = c.pos;
    symbols[right_pos].id = -2;  // dead
    consider(left.prev);
    consider(c.pos);
  }
  for (int32_t pos = 0; pos >= 0 && pos < static_cast<int32_t>(symbols.size());
       pos = symbols[pos].next) {
    // A byte with no token of its own (not the case for byte-level vocabularies) is dropped, as
    // Hugging Face does without an unknown token.
    if (symbols[pos].id >= 0) out->push_back(symbols[pos].id);
  }
}

std::string Tokenizer::Decode(absl::Span<const int32_t> ids, bool show_control) const {
  std::string bytes;
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab_size()) continue;
    if (types_[id] == TokenType::kControl && !show_control) continue;
    bytes += bytes_[id];
  }
  if (IsValidUtf8(bytes)) return bytes;
  return ToValidUtf8(bytes);
}

std::string StreamingDecoder::Add(int32_t id) {
  if (id < 0 || id >= tokenizer_.vocab_size()) return {};
  if (tokenizer_.IsControl(id) && !show_control_) return {};
  const absl::string_view bytes = tokenizer_.TokenBytes(id);
  pending_.append(bytes.data(), bytes.size());
  std::string out;
  const size_t used = AppendUtf8Lossy(pending_, /*final=*/false, &out);
  pending_.erase(0, used);
  return out;
}

std::string StreamingDecoder::Flush() {
  std::string out;
  AppendUtf8Lossy(pending_, /*final=*/true, &out);
  pending_.clear();
  return out;
}

}  // namespace qwen::tokenizer
