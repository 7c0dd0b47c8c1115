#include "service/openai_request.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <regex>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "inference/common/status_macros.h"
#include "nlohmann/json.hpp"
#include "service/field_checks.h"
#include "service/json_fields.h"

namespace qwen::service {
namespace {

using Json = nlohmann::json;

// The URL of an "image_url" or "video_url" part (`key`): {"url": ...} or the URL itself.
// "data:..." or an http(s) URL; the server refuses the latter itself (it never fetches).
absl::StatusOr<std::string> PartUrl(const Json& part, const std::string& param,
                                    const std::string& key) {
  auto it = part.find(key);
  const std::string path = absl::StrCat(param, ".", key);
  if (it == part.end() || it->is_null()) return FieldError(path, "is required");
  std::string url;
  if (it->is_string()) {
    url = it->get<std::string>();
  } else if (it->is_object()) {
    bool present = false;
    RETURN_IF_ERROR(GetString(*it, "url", path + ".url", &url, &present));
    if (!present) return FieldError(path + ".url", "is required");
  } else {
    return WrongType(path, "an object", *it);
  }
  return url;
}

absl::Status ParseContent(const Json& m, const std::string& param, v1::ChatMessage* out) {
  auto it = m.find("content");
  if (it == m.end() || it->is_null()) return absl::OkStatus();
  if (it->is_string()) {
    out->set_content(it->get<std::string>());
    return absl::OkStatus();
  }
  if (!it->is_array()) return WrongType(param, "a string or an array of content parts", *it);
  for (size_t p = 0; p < it->size(); ++p) {
    const Json& part = (*it)[p];
    const std::string ppath = absl::StrCat(param, "[", p, "]");
    if (!part.is_object()) return WrongType(ppath, "an object", part);
    std::string type;
    RETURN_IF_ERROR(GetString(part, "type", ppath + ".type", &type));
    if (type == "text") {
      std::string text;
      bool present = false;
      RETURN_IF_ERROR(GetString(part, "text", ppath + ".text", &text, &present));
      if (!present) return FieldError(ppath + ".text", "is required");
      out->add_parts()->set_text(std::move(text));
    } else if (type == "image_url") {
      ASSIGN_OR_RETURN(std::string url, PartUrl(part, ppath, "image_url"));
      out->add_parts()->mutable_image()->set_url(std::move(url));
    } else if (type == "video_url") {
      // vLLM's part: a whole video file, as a data: URL (the server samples its frames).
      ASSIGN_OR_RETURN(std::string url, PartUrl(part, ppath, "video_url"));
      out->add_parts()->mutable_video()->set_url(std::move(url));
    } else if (type.empty()) {
      return FieldError(ppath + ".type", "is required (text, image_url or video_url)");
    } else {
      return FieldError(ppath + ".type", absl::StrCat("\"", type,
                                                      "\" is not supported (text, image_url or "
                                                      "video_url)"));
    }
  }
  return absl::OkStatus();
}

absl::Status ParseToolCalls(const Json& m, const std::string& param, v1::ChatMessage* out) {
  auto it = m.find("tool_calls");
  if (it == m.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_array()) return WrongType(param, "an array", *it);
  for (size_t c = 0; c < it->size(); ++c) {
    const Json& call = (*it)[c];
    const std::string cpath = absl::StrCat(param, "[", c, "]");
    if (!call.is_object()) return WrongType(cpath, "an object", call);
    v1::ToolCall* tc = out->add_tool_calls();
    std::string id, type;
    RETURN_IF_ERROR(GetString(call, "id", cpath + ".id", &id));
    RETURN_IF_ERROR(GetString(call, "type", cpath + ".type", &type));
    if (!type.empty() && type != "function") {
      return FieldError(cpath + ".type", absl::StrCat("\"", type, "\" is not \"function\""));
    }
    tc->set_id(std::move(id));
    auto fn = call.find("function");
    if (fn == call.end() || !fn->is_object()) {
      return FieldError(cpath + ".function", "is required (an object with name and arguments)");
    }
    std::string name;
    RETURN_IF_ERROR(GetString(*fn, "name", cpath + ".function.name", &name));
    tc->set_name(std::move(name));
    auto args = fn->find("arguments");
    if (args != fn->end() && !args->is_null()) {
      // OpenAI sends a JSON text; some clients send the object itself.
      if (args->is_string()) {
        tc->set_arguments(args->get<std::string>());
      } else if (args->is_object()) {
        tc->set_arguments(args->dump());
      } else {
        return WrongType(cpath + ".function.arguments", "a string", *args);
      }
    }
  }
  return absl::OkStatus();
}

absl::Status ParseMessages(const Json& body, v1::Chat* chat) {
  auto it = body.find("messages");
  if (it == body.end() || it->is_null()) return FieldError("messages", "is required");
  if (!it->is_array()) return WrongType("messages", "an array", *it);
  for (size_t i = 0; i < it->size(); ++i) {
    const Json& m = (*it)[i];
    const std::string path = absl::StrCat("messages[", i, "]");
    if (!m.is_object()) return WrongType(path, "an object", m);
    v1::ChatMessage* out = chat->add_messages();
    std::string role;
    bool has_role = false;
    RETURN_IF_ERROR(GetString(m, "role", path + ".role", &role, &has_role));
    if (!has_role) return FieldError(path + ".role", "is required");
    // OpenAI's newer name of the system role.
    if (role == "developer") role = "system";
    out->set_role(role);
    RETURN_IF_ERROR(ParseContent(m, path + ".content", out));
    std::string s;
    RETURN_IF_ERROR(GetString(m, "name", path + ".name", &s));
    out->set_name(s);
    s.clear();
    RETURN_IF_ERROR(GetString(m, "tool_call_id", path + ".tool_call_id", &s));
    out->set_tool_call_id(s);
    s.clear();
    RETURN_IF_ERROR(GetString(m, "reasoning_content", path + ".reasoning_content", &s));
    out->set_reasoning_content(s);
    RETURN_IF_ERROR(ParseToolCalls(m, path + ".tool_calls", out));
  }
  return absl::OkStatus();
}

absl::Status ParseTools(const Json& body, v1::Chat* chat) {
  auto it = body.find("tools");
  if (it == body.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_array()) return WrongType("tools", "an array", *it);
  for (size_t t = 0; t < it->size(); ++t) {
    const Json& tool = (*it)[t];
    const std::string path = absl::StrCat("tools[", t, "]");
    if (!tool.is_object()) return WrongType(path, "an object", tool);
    std::string type;
    RETURN_IF_ERROR(GetString(tool, "type", path + ".type", &type));
    if (type != "function") {
      return FieldError(path + ".type", type.empty()
                                            ? "is required (\"function\")"
                                            : absl::StrCat("\"", type, "\" is not \"function\""));
    }
    auto fn = tool.find("function");
    if (fn == tool.end() || fn->is_null()) return FieldError(path + ".function", "is required");
    if (!fn->is_object()) return WrongType(path + ".function", "an object", *fn);
    v1::Tool* out = chat->add_tools();
    std::string s;
    RETURN_IF_ERROR(GetString(*fn, "name", path + ".function.name", &s));
    out->set_name(s);
    s.clear();
    RETURN_IF_ERROR(GetString(*fn, "description", path + ".function.description", &s));
    out->set_description(s);
    auto params = fn->find("parameters");
    if (params != fn->end() && !params->is_null()) {
      if (!params->is_object())
        return WrongType(path + ".function.parameters", "an object", *params);
      out->set_parameters_json(params->dump());
    }
    std::optional<bool> strict;
    RETURN_IF_ERROR(GetBool(*fn, "strict", path + ".function.strict", &strict));
  }
  return absl::OkStatus();
}

// tool_choice: "auto" (default), "none" (the tools are not offered), "required" (at least one
// call, through the tool-call grammar) or {"type": "function", "function": {"name": N}} (a call
// of N: only N is offered, and a call is required).
absl::Status ApplyToolChoice(const Json& body, v1::GenerateRequest* r) {
  auto it = body.find("tool_choice");
  if (it == body.end() || it->is_null()) return absl::OkStatus();
  v1::Chat* chat = r->mutable_chat();
  std::string choice;
  std::string named;
  if (it->is_string()) {
    choice = it->get<std::string>();
    if (choice != "auto" && choice != "none" && choice != "required") {
      return FieldError("tool_choice",
                        absl::StrCat("\"", choice, "\" is not one of auto, none, required"));
    }
  } else if (it->is_object()) {
    std::string type;
    RETURN_IF_ERROR(GetString(*it, "type", "tool_choice.type", &type));
    if (type != "function") return FieldError("tool_choice.type", "must be \"function\"");
    auto fn = it->find("function");
    if (fn == it->end() || !fn->is_object()) {
      return FieldError("tool_choice.function", "is required (an object with a name)");
    }
    RETURN_IF_ERROR(GetString(*fn, "name", "tool_choice.function.name", &named));
    if (named.empty()) return FieldError("tool_choice.function.name", "is required");
    choice = "required";
  } else {
    return WrongType("tool_choice", "a string or an object", *it);
  }
  if (choice == "auto") return absl::OkStatus();
  if (chat->tools().empty()) {
    return FieldError("tool_choice", "needs tools");
  }
  if (choice == "none") {
    chat->clear_tools();
    return absl::OkStatus();
  }
  if (!named.empty()) {
    int found = -1;
    for (int t = 0; t < chat->tools_size(); ++t) {
      if (chat->tools(t).name() == named) found = t;
    }
    if (found < 0) {
      return FieldError("tool_choice.function.name",
                        absl::StrCat("\"", named, "\" is not one of the tools"));
    }
    v1::Tool keep = chat->tools(found);
    chat->clear_tools();
    *chat->add_tools() = std::move(keep);
  }
  if (r->has_response_format()) {
    return FieldError("tool_choice",
                      "a required tool call cannot be combined with response_format");
  }
  r->mutable_response_format()->mutable_tool_calls()->set_required(true);
  return absl::OkStatus();
}

absl::Status ApplyResponseFormat(const Json& body, v1::GenerateRequest* r) {
  auto it = body.find("response_format");
  if (it == body.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_object()) return WrongType("response_format", "an object", *it);
  std::string type;
  RETURN_IF_ERROR(GetString(*it, "type", "response_format.type", &type));
  if (type == "text") return absl::OkStatus();
  if (type == "json_object") {
    r->mutable_response_format()->set_json_schema(R"({"type":"object"})");
    return absl::OkStatus();
  }
  if (type == "json_schema") {
    auto js = it->find("json_schema");
    if (js == it->end() || js->is_null()) {
      return FieldError("response_format.json_schema", "is required");
    }
    if (!js->is_object()) return WrongType("response_format.json_schema", "an object", *js);
    std::string name;
    RETURN_IF_ERROR(GetString(*js, "name", "response_format.json_schema.name", &name));
    std::optional<bool> strict;
    RETURN_IF_ERROR(GetBool(*js, "strict", "response_format.json_schema.strict", &strict));
    auto schema = js->find("schema");
    if (schema == js->end() || schema->is_null()) {
      // OpenAI's default: any JSON object.
      r->mutable_response_format()->set_json_schema(R"({"type":"object"})");
      return absl::OkStatus();
    }
    if (!schema->is_object() && !schema->is_boolean()) {
      return WrongType("response_format.json_schema.schema", "an object", *schema);
    }
    r->mutable_response_format()->set_json_schema(schema->dump());
    return absl::OkStatus();
  }
  return FieldError(
      "response_format.type",
      type.empty() ? "is required (text, json_object or json_schema)"
                   : absl::StrCat("\"", type, "\" is not one of text, json_object, json_schema"));
}

absl::Status ApplySampling(const Json& body, v1::GenerateRequest* r) {
  v1::SamplingParams* s = r->mutable_sampling();
  std::optional<double> d;
  RETURN_IF_ERROR(GetNumber(body, "temperature", "temperature", &d));
  if (d) {
    if (*d < 0 || *d > 2) return FieldError("temperature", "must be in [0, 2]");
    s->set_temperature(static_cast<float>(*d));
  }
  d.reset();
  RETURN_IF_ERROR(GetNumber(body, "top_p", "top_p", &d));
  if (d) s->set_top_p(static_cast<float>(*d));
  d.reset();
  RETURN_IF_ERROR(GetNumber(body, "min_p", "min_p", &d));
  if (d) s->set_min_p(static_cast<float>(*d));
  d.reset();
  RETURN_IF_ERROR(GetNumber(body, "repetition_penalty", "repetition_penalty", &d));
  if (d) s->set_repetition_penalty(static_cast<float>(*d));
  d.reset();
  RETURN_IF_ERROR(GetNumber(body, "presence_penalty", "presence_penalty", &d));
  if (d) {
    if (*d < -2 || *d > 2) return FieldError("presence_penalty", "must be in [-2, 2]");
    s->set_presence_penalty(static_cast<float>(*d));
  }
  d.reset();
  RETURN_IF_ERROR(GetNumber(body, "frequency_penalty", "frequency_penalty", &d));
  if (d) {
    if (*d < -2 || *d > 2) return FieldError("frequency_penalty", "must be in [-2, 2]");
    s->set_frequency_penalty(static_cast<float>(*d));
  }
  std::optional<int64_t> i;
  RETURN_IF_ERROR(GetInteger(body, "top_k", "top_k", &i));
  if (i) {
    // llama-server and vLLM take -1 for "off" too.
    if (*i < -1 || *i > std::numeric_limits<int32_t>::max()) {
      return FieldError("top_k", "must be >= 0 (0 or -1 turn it off)");
    }
    s->set_top_k(static_cast<int32_t>(std::max<int64_t>(*i, 0)));
  }
  i.reset();
  RETURN_IF_ERROR(GetInteger(body, "seed", "seed", &i));
  if (i) {
    // -1: a random seed (llama-server's convention).
    if (*i < -1) return FieldError("seed", "must be >= 0 (or -1 for a random seed)");
    if (*i >= 0) s->set_seed(static_cast<uint64_t>(*i));
  }
  auto lb = body.find("logit_bias");
  if (lb != body.end() && !lb->is_null()) {
    if (!lb->is_object()) return WrongType("logit_bias", "an object", *lb);
    for (auto b = lb->begin(); b != lb->end(); ++b) {
      int32_t token = 0;
      if (!absl::SimpleAtoi(b.key(), &token)) {
        return FieldError("logit_bias", absl::StrCat("key \"", b.key(), "\" is not a token id"));
      }
      if (!b.value().is_number()) {
        return FieldError(absl::StrCat("logit_bias.", b.key()),
                          absl::StrCat("must be a number, not ", b.value().type_name()));
      }
      (*s->mutable_logit_bias())[token] = b.value().get<float>();
    }
  }
  return absl::OkStatus();
}

absl::Status ApplyStopping(const Json& body, v1::GenerateRequest* r) {
  v1::StoppingCriteria* st = r->mutable_stopping();
  std::optional<int64_t> max_tokens, max_completion_tokens;
  RETURN_IF_ERROR(GetInteger(body, "max_tokens", "max_tokens", &max_tokens));
  RETURN_IF_ERROR(
      GetInteger(body, "max_completion_tokens", "max_completion_tokens", &max_completion_tokens));
  const char* param = max_completion_tokens ? "max_completion_tokens" : "max_tokens";
  const std::optional<int64_t> m = max_completion_tokens ? max_completion_tokens : max_tokens;
  if (m) {
    if (*m < 1) return FieldError(param, "must be at least 1");
    if (*m > std::numeric_limits<int32_t>::max()) return FieldError(param, "is too large");
    st->set_max_tokens(static_cast<uint32_t>(*m));
  }
  auto stop = body.find("stop");
  if (stop != body.end() && !stop->is_null()) {
    if (stop->is_string()) {
      st->add_stop(stop->get<std::string>());
    } else if (stop->is_array()) {
      for (size_t k = 0; k < stop->size(); ++k) {
        if (!(*stop)[k].is_string()) {
          return WrongType(absl::StrCat("stop[", k, "]"), "a string", (*stop)[k]);
        }
        st->add_stop((*stop)[k].get<std::string>());
      }
    } else {
      return WrongType("stop", "a string or an array of strings", *stop);
    }
  }
  // The reasoning budget: max_reasoning_tokens, else reasoning_effort's budget.
  std::optional<int64_t> budget;
  RETURN_IF_ERROR(GetInteger(body, "max_reasoning_tokens", "max_reasoning_tokens", &budget));
  if (budget) {
    if (*budget < 0 || *budget > std::numeric_limits<int32_t>::max()) {
      return FieldError("max_reasoning_tokens", "must be >= 0 (0: no thinking)");
    }
  } else {
    std::string effort;
    RETURN_IF_ERROR(GetString(body, "reasoning_effort", "reasoning_effort", &effort));
    if (!effort.empty()) {
      const int64_t b = ReasoningEffortBudget(effort);
      if (b < 0) {
        return FieldError(
            "reasoning_effort",
            absl::StrCat("\"", effort, "\" is not one of none, minimal, low, medium, high"));
      }
      budget = b;
    }
  }
  if (budget) st->set_max_reasoning_tokens(static_cast<uint32_t>(*budget));
  auto ids = body.find("stop_token_ids");
  if (ids != body.end() && !ids->is_null()) {
    if (!ids->is_array()) return WrongType("stop_token_ids", "an array", *ids);
    for (size_t k = 0; k < ids->size(); ++k) {
      const Json& id = (*ids)[k];
      if (!id.is_number_integer() || id.get<int64_t>() < std::numeric_limits<int32_t>::min() ||
          id.get<int64_t>() > std::numeric_limits<int32_t>::max()) {
        return WrongType(absl::StrCat("stop_token_ids[", k, "]"), "an integer", id);
      }
      st->add_stop_token_ids(id.get<int32_t>());
    }
  }
  std::optional<bool> ignore_eos;
  RETURN_IF_ERROR(GetBool(body, "ignore_eos", "ignore_eos", &ignore_eos));
  if (ignore_eos) st->set_ignore_eos(*ignore_eos);
  return absl::OkStatus();
}

absl::Status RefuseUnsupported(const Json& body) {
  // Fields whose meaning this server cannot honour: refused rather than silently ignored.
  for (const char* key :
       {"audio", "prediction", "web_search_options", "functions", "function_call"}) {
    auto it = body.find(key);
    if (it != body.end() && !it->is_null()) {
      return FieldError(key, "is not supported by this server");
    }
  }
  auto mod = body.find("modalities");
  if (mod != body.end() && !mod->is_null()) {
    if (!mod->is_array()) return WrongType("modalities", "an array", *mod);
    for (const Json& m : *mod) {
      if (!m.is_string() || m.get<std::string>() != "text") {
        return FieldError("modalities", "only \"text\" output is supported");
      }
    }
  }
  return absl::OkStatus();
}

// stream, stream_options, n: shared by chat and text completions.
absl::Status ParseStreamAndN(const Json& j, bool* stream, bool* include_usage, int* n) {
  std::optional<bool> b;
  RETURN_IF_ERROR(GetBool(j, "stream", "stream", &b));
  *stream = b.value_or(false);
  auto so = j.find("stream_options");
  if (so != j.end() && !so->is_null()) {
    if (!so->is_object()) return WrongType("stream_options", "an object", *so);
    if (!*stream) return FieldError("stream_options", "is only allowed when stream is true");
    b.reset();
    RETURN_IF_ERROR(GetBool(*so, "include_usage", "stream_options.include_usage", &b));
    *include_usage = b.value_or(false);
  }
  std::optional<int64_t> count;
  RETURN_IF_ERROR(GetInteger(j, "n", "n", &count));
  if (count) {
    if (*count < 1 || *count > kMaxChoices) {
      return FieldError("n", absl::StrCat("must be in [1, ", kMaxChoices, "]"));
    }
    *n = static_cast<int>(*count);
  }
  std::string user;
  return GetString(j, "user", "user", &user);
}

}  // namespace

int64_t ReasoningEffortBudget(absl::string_view effort) {
  if (effort == "none" || effort == "minimal") return 0;
  if (effort == "low") return kReasoningBudgetLow;
  if (effort == "medium") return kReasoningBudgetMedium;
  if (effort == "high") return kReasoningBudgetHigh;
  return -1;
}

absl::StatusOr<OpenAIChatRequest> ParseChatCompletionRequest(absl::string_view body) {
  ASSIGN_OR_RETURN(Json j, ParseJsonBody(body));
  OpenAIChatRequest out;
  RETURN_IF_ERROR(RefuseUnsupported(j));
  RETURN_IF_ERROR(GetString(j, "model", "model", &out.model));
  RETURN_IF_ERROR(ParseStreamAndN(j, &out.stream, &out.include_usage, &out.n));
  std::optional<bool> b;

  v1::GenerateRequest& r = out.request;
  v1::Chat* chat = r.mutable_chat();
  RETURN_IF_ERROR(ParseMessages(j, chat));
  RETURN_IF_ERROR(ParseTools(j, chat));
  b.reset();
  RETURN_IF_ERROR(GetBool(j, "parallel_tool_calls", "parallel_tool_calls", &b));
  out.parallel_tool_calls = b.value_or(true);
  // At most one call: generation ends once it is complete, rather than drop the later ones
  // after the model spent its time on them.
  if (!out.parallel_tool_calls) r.mutable_stopping()->set_max_tool_calls(1);
  auto kw = j.find("chat_template_kwargs");
  if (kw != j.end() && !kw->is_null()) {
    if (!kw->is_object()) return WrongType("chat_template_kwargs", "an object", *kw);
    for (auto k = kw->begin(); k != kw->end(); ++k) {
      if (k.key() != "enable_thinking") {
        return FieldError(absl::StrCat("chat_template_kwargs.", k.key()),
                          "is not supported (only enable_thinking)");
      }
    }
    b.reset();
    RETURN_IF_ERROR(GetBool(*kw, "enable_thinking", "chat_template_kwargs.enable_thinking", &b));
    if (b) chat->set_enable_thinking(*b);
  }
  RETURN_IF_ERROR(ApplyResponseFormat(j, &r));
  RETURN_IF_ERROR(ApplyToolChoice(j, &r));
  RETURN_IF_ERROR(ApplySampling(j, &r));
  RETURN_IF_ERROR(ApplyStopping(j, &r));

  b.reset();
  RETURN_IF_ERROR(GetBool(j, "logprobs", "logprobs", &b));
  out.logprobs = b.value_or(false);
  std::optional<int64_t> top;
  RETURN_IF_ERROR(GetInteger(j, "top_logprobs", "top_logprobs", &top));
  if (top) {
    if (*top < 0 || *top > 20) return FieldError("top_logprobs", "must be in [0, 20]");
    if (*top > 0 && !out.logprobs) return FieldError("top_logprobs", "needs logprobs: true");
    r.mutable_output()->set_top_logprobs(static_cast<uint32_t>(*top));
  }
  r.mutable_output()->set_logprobs(out.logprobs);
  return out;
}

std::vector<v1::GenerateRequest> ExpandChoices(const v1::GenerateRequest& base, int n) {
  std::vector<v1::GenerateRequest> out(static_cast<size_t>(n), base);
  if (base.sampling().has_seed()) {
    for (int k = 0; k < n; ++k) {
      out[k].mutable_sampling()->set_seed(base.sampling().seed() + static_cast<uint64_t>(k));
    }
  }
  return out;
}

absl::StatusOr<OpenAICompletionRequest> ParseCompletionRequest(absl::string_view body) {
  ASSIGN_OR_RETURN(Json j, ParseJsonBody(body));
  OpenAICompletionRequest out;
  for (const char* key : {"suffix", "functions"}) {
    auto it = j.find(key);
    if (it != j.end() && !it->is_null()) {
      return FieldError(key, "is not supported by this server");
    }
  }
  RETURN_IF_ERROR(GetString(j, "model", "model", &out.model));
  RETURN_IF_ERROR(ParseStreamAndN(j, &out.stream, &out.include_usage, &out.n));
  std::optional<int64_t> best_of;
  RETURN_IF_ERROR(GetInteger(j, "best_of", "best_of", &best_of));
  if (best_of && *best_of != out.n) {
    return FieldError("best_of", "is not supported (only best_of = n)");
  }
  // The prompts.
  std::vector<v1::GenerateRequest> prompts;
  auto p = j.find("prompt");
  if (p == j.end() || p->is_null()) return FieldError("prompt", "is required");
  auto ids_of = [](const Json& a, const std::string& param,
                   v1::GenerateRequest* r) -> absl::Status {
    for (size_t k = 0; k < a.size(); ++k) {
      if (!a[k].is_number_integer() || a[k].get<int64_t>() < 0 ||
          a[k].get<int64_t>() > std::numeric_limits<int32_t>::max()) {
        return FieldError(absl::StrCat(param, "[", k, "]"), "must be a token id");
      }
      r->mutable_prompt_token_ids()->add_ids(a[k].get<int32_t>());
    }
    if (a.empty()) return FieldError(param, "is empty");
    return absl::OkStatus();
  };
  if (p->is_string()) {
    prompts.emplace_back().set_prompt(p->get<std::string>());
  } else if (p->is_array()) {
    if (p->empty()) return FieldError("prompt", "is empty");
    if ((*p)[0].is_number()) {
      RETURN_IF_ERROR(ids_of(*p, "prompt", &prompts.emplace_back()));
    } else {
      for (size_t k = 0; k < p->size(); ++k) {
        const Json& e = (*p)[k];
        const std::string param = absl::StrCat("prompt[", k, "]");
        if (e.is_string()) {
          prompts.emplace_back().set_prompt(e.get<std::string>());
        } else if (e.is_array()) {
          RETURN_IF_ERROR(ids_of(e, param, &prompts.emplace_back()));
        } else {
          return WrongType(param, "a string or an array of token ids", e);
        }
      }
    }
  } else {
    return WrongType("prompt", "a string, an array of strings or of token ids", *p);
  }
  if (static_cast<int64_t>(prompts.size()) * out.n > kMaxChoices) {
    return FieldError("prompt", absl::StrCat(prompts.size(), " prompts x n = ", out.n,
                                             " choices; at most ", kMaxChoices));
  }
  out.prompts = static_cast<int>(prompts.size());
  v1::GenerateRequest base;
  RETURN_IF_ERROR(ApplySampling(j, &base));
  RETURN_IF_ERROR(ApplyStopping(j, &base));
  std::optional<int64_t> logprobs;
  RETURN_IF_ERROR(GetInteger(j, "logprobs", "logprobs", &logprobs));
  if (logprobs) {
    if (*logprobs < 0 || *logprobs > 20) return FieldError("logprobs", "must be in [0, 20]");
    out.logprobs = static_cast<int>(*logprobs);
    base.mutable_output()->set_logprobs(true);
    base.mutable_output()->set_top_logprobs(static_cast<uint32_t>(*logprobs));
  }
  std::optional<bool> echo;
  RETURN_IF_ERROR(GetBool(j, "echo", "echo", &echo));
  out.echo = echo.value_or(false);
  if (out.echo && out.logprobs >= 0) {
    return FieldError("echo",
                      "cannot be combined with logprobs (the prompt's log-probabilities "
                      "are not computed)");
  }
  for (v1::GenerateRequest& prompt : prompts) {
    v1::GenerateRequest r = base;
    if (prompt.has_prompt_token_ids()) {
      *r.mutable_prompt_token_ids() = std::move(*prompt.mutable_prompt_token_ids());
    } else {
      r.set_prompt(std::move(*prompt.mutable_prompt()));
    }
    for (v1::GenerateRequest& c : ExpandChoices(r, out.n)) out.requests.push_back(std::move(c));
  }
  return out;
}

OpenAIParamError OpenAIParamOf(absl::string_view message) {
  OpenAIParamError out;
  out.message = std::string(message);
  const size_t colon = message.find(": ");
  if (colon == absl::string_view::npos) return out;
  std::string path(message.substr(0, colon));
  if (path.empty() || path.find(' ') != std::string::npos) return out;
  const std::string rest(message.substr(colon));

  struct Rule {
    std::regex pattern;
    const char* replacement;
  };
  // Applied in order, each to the result of the previous one.
  static const std::vector<Rule>* rules = new std::vector<Rule>{
      {std::regex(R"(^chat\.messages)"), "messages"},
      {std::regex(R"(^chat\.tools)"), "tools"},
      {std::regex(R"(^chat$)"), "messages"},
      {std::regex(R"(\.parts\[(\d+)\]\.image)"), ".content[$1].image_url"},
      {std::regex(R"(\.parts\[(\d+)\]\.video)"), ".content[$1].video_url"},
      {std::regex(R"(\.parts\[)"), ".content["},
      {std::regex(R"(^(messages\[\d+\]\.tool_calls\[\d+\])\.(name|arguments))"), "$1.function.$2"},
      {std::regex(R"(^(tools\[\d+\])\.parameters_json)"), "$1.function.parameters"},
      {std::regex(R"(^(tools\[\d+\])\.(name|description|parameters))"), "$1.function.$2"},
      {std::regex(R"(^sampling\.)"), ""},
      {std::regex(R"(^stopping\.)"), ""},
      {std::regex(R"(^output\.)"), ""},
      {std::regex(R"(^response_format\.json_schema$)"), "response_format.json_schema.schema"},
      {std::regex(R"(^response_format\.tool_calls$)"), "tool_choice"},
      {std::regex(R"(^prompt_token_ids\.ids)"), "prompt"},
  };
  for (const Rule& r : *rules) path = std::regex_replace(path, r.pattern, r.replacement);
  out.param = path;
  out.message = path + rest;
  return out;
}

}  // namespace qwen::service
