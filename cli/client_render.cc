#include "cli/client_render.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "nlohmann/json.hpp"
#include "service/api_names.h"

namespace qwen::cli {
namespace {

constexpr char kDim[] = "\x1b[2m";
constexpr char kBold[] = "\x1b[1m";
constexpr char kReset[] = "\x1b[0m";

std::string Millis(double ms) {
  if (ms >= 1000) return absl::StrFormat("%.2f s", ms / 1000);
  return absl::StrFormat("%.0f ms", ms);
}

}  // namespace

StreamPrinter::StreamPrinter(std::function<void(absl::string_view)> write, ReasoningMode mode,
                             bool color)
    : write_(std::move(write)), mode_(mode), color_(color) {}

void StreamPrinter::Write(absl::string_view s) {
  if (s.empty()) return;
  write_(s);
  wrote_anything_ = true;
  at_line_start_ = s.back() == '\n';
}

void StreamPrinter::Enter(Section s) {
  if (section_ == s) return;
  if (dim_on_) {
    Write(kReset);
    dim_on_ = false;
  }
  if (section_ == Section::kReasoning && s == Section::kAnswer && wrote_anything_) {
    Write(at_line_start_ ? "\n" : "\n\n");
  }
  section_ = s;
}

void StreamPrinter::Add(const v1::GenerateResponse& m) {
  if (!m.reasoning().empty()) {
    reasoning_ += m.reasoning();
    if (mode_ != ReasoningMode::kHide) {
      Enter(Section::kReasoning);
      if (color_ && mode_ == ReasoningMode::kDim && !dim_on_) {
        Write(kDim);
        dim_on_ = true;
      }
      Write(m.reasoning());
    }
  }
  if (!m.text().empty()) {
    text_ += m.text();
    Enter(Section::kAnswer);
    Write(m.text());
  }
  for (const v1::ToolCall& call : m.tool_calls()) {
    tool_calls_.push_back(call);
    Enter(Section::kAnswer);
    if (!at_line_start_) Write("\n");
    Write(FormatToolCall(call, color_));
  }
  if (m.has_completion()) {
    has_completion_ = true;
    completion_ = m.completion();
  }
}

void StreamPrinter::Finish() {
  if (dim_on_) {
    Write(kReset);
    dim_on_ = false;
  }
  if (wrote_anything_ && !at_line_start_) Write("\n");
}

std::string FormatToolCall(const v1::ToolCall& call, bool color) {
  const std::string name = color ? absl::StrCat(kBold, call.name(), kReset) : call.name();
  std::string out;
  if (!call.error().empty()) {
    absl::StrAppend(&out, "[invalid tool call] ", name, ": ", call.error(), "\n");
    for (absl::string_view line : absl::StrSplit(call.raw(), '\n')) {
      absl::StrAppend(&out, "    ", line, "\n");
    }
    return out;
  }
  absl::StrAppend(&out, "[tool call] ", name);
  if (!call.id().empty()) absl::StrAppend(&out, " (", call.id(), ")");
  out += "\n";
  std::string args = call.arguments();
  const nlohmann::ordered_json parsed = nlohmann::ordered_json::parse(args, nullptr, false);
  if (!parsed.is_discarded()) {
    args = parsed.dump(2, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
  }
  for (absl::string_view line : absl::StrSplit(args, '\n')) {
    absl::StrAppend(&out, "    ", line, "\n");
  }
  return out;
}

std::string FormatCompletion(const v1::Completion& c) {
  std::string finish = service::FinishReasonName(c.finish_reason());
  if (c.finish_reason() == v1::FINISH_REASON_STOP_SEQUENCE) {
    absl::StrAppend(&finish, " ", nlohmann::json(c.stop_sequence()).dump());
  }
  const v1::Usage& u = c.usage();
  const v1::Timings& t = c.timings();
  std::string out = absl::StrCat("finish: ", finish, " | tokens: ", u.prompt_tokens(), " prompt (",
                                 u.cached_tokens(), " cached) + ", u.generated_tokens(),
                                 " generated | queue ", Millis(t.queue_wait_ms()));
  if (u.generated_tokens() > 0) {
    absl::StrAppend(&out, ", first token ", Millis(t.time_to_first_token_ms()));
  }
  if (t.tokens_per_second() > 0) {
    absl::StrAppend(&out, absl::StrFormat(", %.1f tokens/s", t.tokens_per_second()));
  }
  absl::StrAppend(&out, ", total ", Millis(t.total_ms()), " | seed ", c.seed());
  return out;
}

}  // namespace qwen::cli
