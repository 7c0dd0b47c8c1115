// Reading the model's output: separating reasoning from the answer, and tool calls from text.
#ifndef QWEN_INFERENCE_CHAT_OUTPUT_PARSER_H_
#define QWEN_INFERENCE_CHAT_OUTPUT_PARSER_H_

#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace qwen::chat {

// One <tool_call> block of the Qwen3.5 format:
//   <tool_call>\n<function=NAME>\n<parameter=KEY>\nVALUE\n</parameter>\n...</function>\n</tool_call>
struct ToolCall {
  std::string name;
  nlohmann::ordered_json arguments = nlohmann::ordered_json::object();
  // False when the block could not be read as a call of a known function (unclosed block or
  // parameter, no <function=...>, a function not among the tools, a value that is not valid JSON
  // for an object/array parameter). `arguments` then holds what could be read.
  bool valid = true;
  std::string error;
  std::string raw;  // the block as generated, tags included

  // {"name", "arguments"} plus "valid": false, "error" and "raw" for an invalid call.
  nlohmann::ordered_json ToJson() const;
};

// What one chunk of generated text added.
struct ParserDelta {
  std::string reasoning;
  std::string content;
  std::vector<ToolCall> tool_calls;  // calls completed by this chunk

  bool empty() const { return reasoning.empty() && content.empty() && tool_calls.empty(); }
};

struct ParsedOutput {
  std::string reasoning;
  std::string content;
  std::vector<ToolCall> tool_calls;

  // {"reasoning": ..., "content": ..., "tool_calls": [...]}
  nlohmann::ordered_json ToJson() const;
};

struct OutputParserOptions {
  // The prompt already opened <think> (Qwen3.5 with thinking on: see PromptOpensReasoning), so
  // output starts as reasoning until </think>. When false, a <think> block at the very start of
  // the output is still recognised.
  bool reasoning_open = true;
  // The request's tools ([{"type": "function", "function": {"name", "parameters"}}], or the
  // inner function objects). When given, calls to other functions are invalid and parameter
  // values are typed by each parameter's JSON-schema "type". When empty, any function name is
  // accepted and values are parsed as JSON when valid, else kept as strings.
  nlohmann::ordered_json tools = nlohmann::ordered_json::array();
};

// A streaming parser over generated text. Feed it text as it is decoded (whole UTF-8
// characters, e.g. from tokenizer::StreamingDecoder); each Add() returns only what is certain:
// a tag is never split across deltas (text that could start "</think>" or "<tool_call>" is held
// back until it resolves), and the reasoning and content deltas concatenate to exactly the
// final reasoning and content. Any chunking of the same text gives the same result.
//
// Whitespace the Qwen3.5 template itself puts around tags is not part of either channel:
// newlines just after <think>, just before </think>, just after </think>, before <tool_call>
// and between tool calls are dropped.
//
// Malformed output never fails: it ends up as content or reasoning text, or as a ToolCall with
// valid == false and its raw text.
//
// One parser per generated stream; not thread-safe.
class OutputParser {
 public:
  explicit OutputParser(const OutputParserOptions& options = OutputParserOptions());

  ParserDelta Add(absl::string_view text);
  // Flushes what was held back; an unfinished <tool_call> becomes an invalid call. Further
  // Add() calls after Finish() are treated as a new continuation of the same output.
  ParserDelta Finish();

  // Everything parsed so far.
  const ParsedOutput& result() const { return result_; }

  // The whole output at once.
  static ParsedOutput Parse(absl::string_view text,
                            const OutputParserOptions& options = OutputParserOptions());

 private:
  enum class State { kReasoning, kContent, kToolCall };
  struct ParamSchema {
    std::vector<std::string> types;  // JSON-schema types; empty when unknown
  };
  struct FunctionSchema {
    absl::flat_hash_map<std::string, ParamSchema> params;
  };

  void Process(bool final, ParserDelta* delta);
  ToolCall ParseToolCall(std::string raw) const;
  nlohmann::ordered_json TypedValue(const FunctionSchema* fn, const std::string& key,
                                    const std::string& text, std::string* error) const;
  void EmitReasoning(absl::string_view text, ParserDelta* delta);
  void EmitContent(absl::string_view text, ParserDelta* delta);

  State state_;
  bool content_started_ = false;  // leading newlines of a content run are dropped
  bool reasoning_seen_ = false;
  bool reasoning_started_ = false;  // leading newlines of reasoning are dropped too
  bool tools_given_ = false;
  std::string buffer_;  // received but not yet emitted
  absl::flat_hash_map<std::string, FunctionSchema> functions_;
  ParsedOutput result_;
};

}  // namespace qwen::chat

#endif  // QWEN_INFERENCE_CHAT_OUTPUT_PARSER_H_
