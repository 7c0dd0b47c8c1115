// How `qwen client` shows a Generate stream on a terminal.
#ifndef QWEN_CLI_CLIENT_RENDER_H_
#define QWEN_CLI_CLIENT_RENDER_H_

#include <functional>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "cli/client_flags.h"
#include "qwen/v1/qwen.pb.h"

namespace qwen::cli {

// Prints one stream's messages as they arrive: reasoning (faint when `color`, or as is, or not
// at all), then the answer text, with a blank line between the two; each tool call as a
// header line and its arguments as indented JSON. Also gathers the whole answer, for the
// chat history.
//
// One per stream; not thread-safe.
class StreamPrinter {
 public:
  StreamPrinter(std::function<void(absl::string_view)> write, ReasoningMode mode, bool color);

  void Add(const v1::GenerateResponse& m);
  // Ends the output with a newline (and resets the colour) if it needs one.
  void Finish();

  const std::string& text() const { return text_; }
  const std::string& reasoning() const { return reasoning_; }
  const std::vector<v1::ToolCall>& tool_calls() const { return tool_calls_; }
  bool has_completion() const { return has_completion_; }
  const v1::Completion& completion() const { return completion_; }

 private:
  enum class Section { kNone, kReasoning, kAnswer };
  void Enter(Section s);
  void Write(absl::string_view s);

  const std::function<void(absl::string_view)> write_;
  const ReasoningMode mode_;
  const bool color_;
  Section section_ = Section::kNone;
  bool dim_on_ = false;
  bool at_line_start_ = true;
  bool wrote_anything_ = false;
  std::string text_;
  std::string reasoning_;
  std::vector<v1::ToolCall> tool_calls_;
  bool has_completion_ = false;
  v1::Completion completion_;
};

// "get_weather" and its arguments as indented JSON (or the error and raw text of an invalid
// call), ending with a newline.
std::string FormatToolCall(const v1::ToolCall& call, bool color);

// The closing line: "finish: eos | tokens: 12 prompt (0 cached) + 30 generated | queue 3 ms,
// first token 120 ms, 25.1 tokens/s, total 1.32 s".
std::string FormatCompletion(const v1::Completion& c);

}  // namespace qwen::cli

#endif  // QWEN_CLI_CLIENT_RENDER_H_
