// Speculative decoding's per-request modes: their names and limits (no engine needed).
#ifndef QWEN_INFERENCE_ENGINE_SPECULATIVE_MODE_H_
#define QWEN_INFERENCE_ENGINE_SPECULATIVE_MODE_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace qwen::engine {

// Where a request's speculative drafts come from (docs/speculative.md). Whatever the mode, the
// output is the one plain decoding gives: drafts are verified by the model, and only the tokens
// it would have produced itself are kept.
enum class SpeculativeMode {
  kAuto,   // prompt lookup when the context repeats itself, else the MTP head when the file has one
  kOff,    // plain decoding
  kMtp,    // the model's MTP head only (INVALID_ARGUMENT when the file has none)
  kNgram,  // prompt lookup only (drafts from the prompt and the output so far)
};

// The one parser of the mode names "auto", "off", "mtp", "ngram" (as the API and
// `qwen generate --speculative` take them). INVALID_ARGUMENT naming `field` otherwise.
// Header-only, so that request validation (service/request.cc) needs no engine.
inline absl::StatusOr<SpeculativeMode> ParseSpeculativeMode(
    absl::string_view name, absl::string_view field = "speculative") {
  if (name == "auto" || name.empty()) return SpeculativeMode::kAuto;
  if (name == "off") return SpeculativeMode::kOff;
  if (name == "mtp") return SpeculativeMode::kMtp;
  if (name == "ngram") return SpeculativeMode::kNgram;
  return absl::InvalidArgumentError(
      absl::StrCat(field, ": must be \"auto\", \"off\", \"mtp\" or \"ngram\", not \"", name, "\""));
}

inline absl::string_view SpeculativeModeName(SpeculativeMode mode) {
  switch (mode) {
    case SpeculativeMode::kAuto:
      return "auto";
    case SpeculativeMode::kOff:
      return "off";
    case SpeculativeMode::kMtp:
      return "mtp";
    case SpeculativeMode::kNgram:
      return "ngram";
  }
  return "auto";
}

// The longest draft a request may ask for.
inline constexpr int kMaxDraftTokens = 8;

// The MTP head's default draft vocabulary (EngineOptions::mtp_draft_vocab): the 32,768 most
// frequent ids (an eighth of Qwen3.5's 248,320) and the special tokens.
inline constexpr int64_t kDefaultMtpDraftVocab = 32768;

}  // namespace qwen::engine

#endif  // QWEN_INFERENCE_ENGINE_SPECULATIVE_MODE_H_
