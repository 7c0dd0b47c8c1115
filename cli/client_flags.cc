#include "cli/client_flags.h"

#include <cctype>
#include <functional>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/string_view.h"

namespace qwen::cli {
namespace {

enum class Kind { kSwitch, kValue };

struct Flag {
  const char* name;
  Kind kind;
  const char* value_name;  // for --help
  const char* help;
  // Stores the value; an error message when it is not valid.
  std::function<absl::Status(ClientOptions&, const std::string&)> set;
};

absl::Status Bad(const char* name, const std::string& value, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("--", name, ": \"", value, "\" is not ", what));
}

template <typename T>
std::function<absl::Status(ClientOptions&, const std::string&)> Str(T ClientOptions::*field) {
  return [field](ClientOptions& o, const std::string& v) {
    o.*field = v;
    return absl::OkStatus();
  };
}

std::function<absl::Status(ClientOptions&, const std::string&)> Switch(bool ClientOptions::*field,
                                                                       const char* name) {
  return [field, name](ClientOptions& o, const std::string& v) {
    if (v.empty() || v == "true" || v == "1") {
      o.*field = true;
    } else if (v == "false" || v == "0") {
      o.*field = false;
    } else {
      return Bad(name, v, "true or false");
    }
    return absl::OkStatus();
  };
}

std::function<absl::Status(ClientOptions&, const std::string&)> Double(
    std::optional<double> ClientOptions::*field, const char* name) {
  return [field, name](ClientOptions& o, const std::string& v) {
    double d;
    if (!absl::SimpleAtod(v, &d)) return Bad(name, v, "a number");
    o.*field = d;
    return absl::OkStatus();
  };
}

std::function<absl::Status(ClientOptions&, const std::string&)> Int(
    std::optional<int64_t> ClientOptions::*field, const char* name) {
  return [field, name](ClientOptions& o, const std::string& v) {
    int64_t n;
    if (!absl::SimpleAtoi(v, &n) || n < 0) return Bad(name, v, "a whole number >= 0");
    o.*field = n;
    return absl::OkStatus();
  };
}

const std::vector<Flag>& Flags() {
  static const std::vector<Flag>* flags = new std::vector<Flag>{
      {"server", Kind::kValue, "HOST:PORT", "The qwen serve to talk to (default localhost:50051).",
       Str(&ClientOptions::server)},
      {"tls", Kind::kSwitch, "", "Use TLS, trusting the system's root certificates.",
       Switch(&ClientOptions::tls, "tls")},
      {"tls_ca", Kind::kValue, "FILE",
       "Use TLS, trusting the CA certificates in this PEM file instead.",
       Str(&ClientOptions::tls_ca)},
      {"tls_cert", Kind::kValue, "FILE",
       "Client certificate (PEM) for servers that require one (mTLS); needs --tls_key.",
       Str(&ClientOptions::tls_cert)},
      {"tls_key", Kind::kValue, "FILE", "Private key (PEM) of --tls_cert.",
       Str(&ClientOptions::tls_key)},
      {"tls_server_name", Kind::kValue, "NAME",
       "Verify the server's certificate for this name instead of the --server host.",
       Str(&ClientOptions::tls_server_name)},
      {"auth_token", Kind::kValue, "TOKEN", "Send `authorization: Bearer TOKEN` with every call.",
       Str(&ClientOptions::auth_token)},
      {"auth_token_file", Kind::kValue, "FILE",
       "Like --auth_token, with the token read from a file.", Str(&ClientOptions::auth_token_file)},
      {"timeout", Kind::kValue, "DURATION",
       "Deadline of each call, e.g. 30s or 5m (default: none).",
       [](ClientOptions& o, const std::string& v) {
         absl::Duration d;
         if (!absl::ParseDuration(v, &d) || d < absl::ZeroDuration()) {
           return Bad("timeout", v, "a duration such as 30s");
         }
         o.timeout = d;
         return absl::OkStatus();
       }},
      {"metadata", Kind::kValue, "KEY=VALUE",
       "Extra gRPC metadata sent with each call (repeatable), e.g. x-request-id=abc.",
       [](ClientOptions& o, const std::string& v) {
         const size_t eq = v.find('=');
         if (eq == std::string::npos || eq == 0) return Bad("metadata", v, "KEY=VALUE");
         std::string key = v.substr(0, eq);
         for (char& c : key) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
         o.metadata.emplace_back(key, v.substr(eq + 1));
         return absl::OkStatus();
       }},
      {"request_id", Kind::kValue, "ID",
       "Request id of Generate (chat turns get ID-1, ID-2, ...); default: the server's.",
       Str(&ClientOptions::request_id)},
      {"prompt", Kind::kValue, "TEXT", "Text to continue; with --chat, the first user message.",
       Str(&ClientOptions::prompt)},
      {"chat", Kind::kSwitch, "",
       "Chat: each line of standard input is a user message and the conversation is kept "
       "across turns. /reset starts over, /tool TEXT answers a tool call, /image FILE and "
       "/video FILE send an image or a video with the next message, /exit (or end of input) "
       "quits.",
       Switch(&ClientOptions::chat, "chat")},
      {"system", Kind::kValue, "TEXT", "With --chat: a system message.",
       Str(&ClientOptions::system)},
      {"tools", Kind::kValue, "FILE",
       "With --chat: JSON file with the tools the model may call: an array of {\"name\", "
       "\"description\", \"parameters\"} (or OpenAI's {\"type\": \"function\", \"function\": "
       "{...}}), or an object with \"tools\".",
       Str(&ClientOptions::tools)},
      {"image", Kind::kValue, "FILE",
       "With --chat: an image (JPEG, PNG, WebP) sent with the first user message (repeatable; "
       "the server needs --mmproj).",
       [](ClientOptions& o, const std::string& v) {
         o.images.push_back(v);
         return absl::OkStatus();
       }},
      {"video", Kind::kValue, "FILE",
       "With --chat: a video (MP4, MOV, WebM, MKV, animated GIF) sent with the first user "
       "message (repeatable; the server needs --mmproj). The server samples its frames; their "
       "encoding progress shows on a terminal.",
       [](ClientOptions& o, const std::string& v) {
         o.videos.push_back(v);
         return absl::OkStatus();
       }},
      {"no_thinking", Kind::kSwitch, "", "With --chat: ask the model not to reason first.",
       Switch(&ClientOptions::no_thinking, "no_thinking")},
      {"reasoning", Kind::kValue, "show|dim|hide",
       "How the model's reasoning is printed (default dim: faint on a terminal, plain "
       "otherwise).",
       [](ClientOptions& o, const std::string& v) {
         if (v == "show") {
           o.reasoning = ReasoningMode::kShow;
         } else if (v == "dim") {
           o.reasoning = ReasoningMode::kDim;
         } else if (v == "hide") {
           o.reasoning = ReasoningMode::kHide;
         } else {
           return Bad("reasoning", v, "show, dim or hide");
         }
         return absl::OkStatus();
       }},
      {"max_tokens", Kind::kValue, "N", "Tokens to generate at most (default: the server's).",
       Int(&ClientOptions::max_tokens, "max_tokens")},
      {"temperature", Kind::kValue, "T", "Sampling temperature; 0 is greedy (default 1).",
       Double(&ClientOptions::temperature, "temperature")},
      {"top_k", Kind::kValue, "K", "Keep the K most likely tokens (default 0: off).",
       Int(&ClientOptions::top_k, "top_k")},
      {"top_p", Kind::kValue, "P", "Nucleus sampling mass in (0, 1] (default 1: off).",
       Double(&ClientOptions::top_p, "top_p")},
      {"min_p", Kind::kValue, "P", "Drop tokens below P x the top probability (default 0).",
       Double(&ClientOptions::min_p, "min_p")},
      {"seed", Kind::kValue, "S", "Seed of the sampler (default: the server picks one).",
       [](ClientOptions& o, const std::string& v) {
         uint64_t n;
         if (!absl::SimpleAtoi(v, &n)) return Bad("seed", v, "a whole number >= 0");
         o.seed = n;
         return absl::OkStatus();
       }},
      {"repetition_penalty", Kind::kValue, "R", "Repetition penalty (default 1: off).",
       Double(&ClientOptions::repetition_penalty, "repetition_penalty")},
      {"presence_penalty", Kind::kValue, "X", "Presence penalty (default 0).",
       Double(&ClientOptions::presence_penalty, "presence_penalty")},
      {"frequency_penalty", Kind::kValue, "X", "Frequency penalty (default 0).",
       Double(&ClientOptions::frequency_penalty, "frequency_penalty")},
      {"stop", Kind::kValue, "TEXT", "A stop string (repeatable).",
       [](ClientOptions& o, const std::string& v) {
         o.stop.push_back(v);
         return absl::OkStatus();
       }},
      {"ignore_eos", Kind::kSwitch, "", "Keep generating after end-of-generation tokens.",
       Switch(&ClientOptions::ignore_eos, "ignore_eos")},
      {"json", Kind::kSwitch, "",
       "Print each response message as one line of protobuf JSON (as grpcurl does) instead "
       "of text.",
       Switch(&ClientOptions::json, "json")},
      {"help", Kind::kSwitch, "", "Print this help.", Switch(&ClientOptions::help, "help")},
  };
  return *flags;
}

}  // namespace

absl::StatusOr<ClientOptions> ParseClientFlags(int argc, char** argv) {
  ClientOptions o;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "-h") {
      o.help = true;
      continue;
    }
    if (arg.size() < 3 || arg[0] != '-' || arg[1] != '-') {
      return absl::InvalidArgumentError(
          absl::StrCat("unexpected argument \"", arg, "\" (the prompt goes in --prompt)"));
    }
    const size_t eq = arg.find('=');
    std::string name = arg.substr(2, eq == std::string::npos ? std::string::npos : eq - 2);
    absl::StrReplaceAll({{"-", "_"}}, &name);
    const Flag* flag = nullptr;
    for (const Flag& f : Flags()) {
      if (name == f.name) flag = &f;
    }
    if (flag == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name));
    }
    std::string value;
    if (eq != std::string::npos) {
      value = arg.substr(eq + 1);
    } else if (flag->kind == Kind::kValue) {
      if (i + 1 >= argc) {
        return absl::InvalidArgumentError(absl::StrCat("--", name, " needs a value"));
      }
      value = argv[++i];
    }
    if (absl::Status st = flag->set(o, value); !st.ok()) return st;
  }
  return o;
}

std::string ClientUsage() {
  std::string out =
      "usage: qwen client [--server HOST:PORT] (--prompt TEXT | --chat) [flags]\n\n"
      "Streams a generation or a chat from a qwen serve to the terminal: the answer as it\n"
      "arrives, the reasoning dimmed (or shown, or hidden), tool calls pretty-printed, and the\n"
      "finish reason with usage and timings on standard error at the end.\n\n"
      "flags (hyphens or underscores, --name=value or --name value):\n";
  for (const Flag& f : Flags()) {
    std::string head = absl::StrCat("  --", f.name);
    if (f.kind == Kind::kValue) absl::StrAppend(&head, " ", f.value_name);
    absl::StrAppend(&out, head, "\n      ", f.help, "\n");
  }
  return out;
}

}  // namespace qwen::cli
