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
  // The call was started in a ToolCallDelta (the model named a function it may call), so a
  // client may already have shown or begun it: it stays a call even if it ends invalid.
  bool streamed = false;
  // `arguments` as compact JSON text. For a streamed call, exactly the concatenation of its
  // deltas' fragments: equal to the compact text of `arguments` when the call is valid, and cut
  // short (no closing brace, so no JSON parser takes it for a whole call) when the model did not
  // finish it: cut off by the end of the output, or a problem in a parameter, after which
  // nothing more of the call is streamed.
  std::string arguments_text;

  // {"name", "arguments"} plus "valid": false, "error" and "raw" for an invalid call.
  nlohmann::ordered_json ToJson() const;
};

// A piece of a tool call while the model writes it (vLLM's Qwen3-Coder parser streams at the
// same points). A call starts, with its name and an empty fragment, as soon as
// <function=NAME> is read, when NAME may be called (one of the tools, or any name when no
// tools are given): an unknown function is never started and ends as an invalid call. Then one
// fragment per parameter as its </parameter> closes, `{"key":value` for the first and
// `,"key":value` for the others, and `}` (`{}` without parameters) when </function> closes.
// A key given twice keeps its first value: the later one is left out of the arguments and not
// streamed, since the first may already be in a client's hands.
struct ToolCallDelta {
  int index = 0;          // the call's block among the output's <tool_call> blocks, from 0
  std::string name;       // on the call's first delta only
  std::string arguments;  // the fragment ("" on the first delta)
};

// What one chunk of generated text added.
struct ParserDelta {
  std::string reasoning;
  std::string content;
  // Pieces of calls in progress; a call's deltas come before (or with) the call itself.
  std::vector<ToolCallDelta> tool_call_deltas;
  std::vector<ToolCall> tool_calls;  // calls completed by this chunk

  bool empty() const {
    return reasoning.empty() && content.empty() && tool_call_deltas.empty() && tool_calls.empty();
  }
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
  // Stop reading once this many streamed calls are complete (0: no limit): everything after
  // that call's </tool_call> is ignored and done() turns true, so that the caller ends
  // generation (OpenAI's parallel_tool_calls false is 1).
  int max_tool_calls = 0;
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
// Tool calls stream as ToolCallDeltas while they are written, and come whole in `tool_calls`
// when their block closes; a streamed call's fragments concatenate to its arguments_text, also
// under any chunking.
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
  // options.max_tool_calls calls are complete: nothing more is read.
  bool done() const { return done_; }

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

  // The <tool_call> block being read, from its opening tag at the start of buffer_.
  struct OpenCall {
    enum class Stage { kHeader, kParams, kEnd, kBroken };
    Stage stage = Stage::kHeader;
    size_t pos = 0;  // bytes of the block read so far, whole elements only
    const FunctionSchema* fn = nullptr;
    ToolCall call;
  };

  void Process(bool final, ParserDelta* delta);
  // Reads the whole elements of `block` (the open call's text, without </tool_call>) past
  // open_.pos, streaming what they add. `complete`: no more text comes for this block, so an
  // unfinished element is a problem of the call rather than something to wait for.
  void ScanCall(absl::string_view block, bool complete, ParserDelta* delta);
  // Appends a fragment of the open call's arguments to its text and to `delta`.
  void StreamArguments(std::string fragment, ParserDelta* delta);
  // The open call is over (its block closed, or the output ended): records it.
  void FinishCall(std::string raw, ParserDelta* delta);
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
  OpenCall open_;       // in State::kToolCall
  int max_tool_calls_ = 0;
  int streamed_calls_ = 0;  // complete
  bool done_ = false;
  absl::flat_hash_map<std::string, FunctionSchema> functions_;
  ParsedOutput result_;
};

}  // namespace qwen::chat

#endif  // QWEN_INFERENCE_CHAT_OUTPUT_PARSER_H_
