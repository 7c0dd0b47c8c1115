// `qwen client`: a command-line client of `qwen serve` for people.
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "cli/client_flags.h"
#include "cli/client_render.h"
#include "cli/commands.h"
#include "google/protobuf/util/json_util.h"
#include "grpcpp/grpcpp.h"
#include "nlohmann/json.hpp"
#include "qwen/v1/qwen.grpc.pb.h"

namespace qwen::cli {
namespace {

absl::StatusOr<std::string> ReadWholeFile(const std::string& flag, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("--", flag, ": cannot read ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The channel the flags describe: plaintext, or TLS with the system's roots or --tls_ca, a
// client certificate for mTLS, and a name override.
absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(const ClientOptions& o) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  const bool tls = o.tls || !o.tls_ca.empty() || !o.tls_cert.empty() || !o.tls_key.empty() ||
                   !o.tls_server_name.empty();
  if (!tls) {
    return grpc::CreateCustomChannel(o.server, grpc::InsecureChannelCredentials(), args);
  }
  if (o.tls_cert.empty() != o.tls_key.empty()) {
    return absl::InvalidArgumentError("--tls_cert and --tls_key go together");
  }
  grpc::SslCredentialsOptions ssl;
  if (!o.tls_ca.empty()) {
    absl::StatusOr<std::string> ca = ReadWholeFile("tls_ca", o.tls_ca);
    if (!ca.ok()) return ca.status();
    ssl.pem_root_certs = *ca;
  }
  if (!o.tls_cert.empty()) {
    absl::StatusOr<std::string> cert = ReadWholeFile("tls_cert", o.tls_cert);
    if (!cert.ok()) return cert.status();
    absl::StatusOr<std::string> key = ReadWholeFile("tls_key", o.tls_key);
    if (!key.ok()) return key.status();
    ssl.pem_cert_chain = *cert;
    ssl.pem_private_key = *key;
  }
  if (!o.tls_server_name.empty()) args.SetSslTargetNameOverride(o.tls_server_name);
  return grpc::CreateCustomChannel(o.server, grpc::SslCredentials(ssl), args);
}

// The tools file: an array of tools, or an object holding one under "tools". A tool is
// {"name", "description", "parameters"} or OpenAI's {"type": "function", "function": {...}}.
absl::StatusOr<std::vector<v1::Tool>> LoadTools(const std::string& path) {
  absl::StatusOr<std::string> text = ReadWholeFile("tools", path);
  if (!text.ok()) return text.status();
  nlohmann::ordered_json j = nlohmann::ordered_json::parse(*text, nullptr, false);
  if (j.is_discarded()) return absl::InvalidArgumentError("--tools: not valid JSON");
  if (j.is_object() && j.contains("tools")) j = j["tools"];
  if (!j.is_array()) {
    return absl::InvalidArgumentError("--tools: expected an array of tools or {\"tools\": [...]}");
  }
  std::vector<v1::Tool> tools;
  for (nlohmann::ordered_json t : j) {
    if (t.is_object() && t.contains("function") && t["function"].is_object()) t = t["function"];
    if (!t.is_object() || !t.contains("name") || !t["name"].is_string()) {
      return absl::InvalidArgumentError("--tools: every tool needs a \"name\"");
    }
    v1::Tool& tool = tools.emplace_back();
    tool.set_name(t["name"].get<std::string>());
    if (t.contains("description") && t["description"].is_string()) {
      tool.set_description(t["description"].get<std::string>());
    }
    if (t.contains("parameters")) tool.set_parameters_json(t["parameters"].dump());
  }
  return tools;
}

class Client {
 public:
  Client(const ClientOptions& o, std::shared_ptr<grpc::Channel> channel, std::string token)
      : o_(o), stub_(v1::Qwen::NewStub(channel)), token_(std::move(token)) {
    color_ = isatty(STDOUT_FILENO) == 1;
  }

  // Runs one Generate call and prints it. OK, or the call's error (already printed).
  absl::Status Run(v1::GenerateRequest req, StreamPrinter* printer) {
    ApplySampling(&req);
    grpc::ClientContext ctx;
    if (o_.timeout > absl::ZeroDuration()) {
      ctx.set_deadline(absl::ToChronoTime(absl::Now() + o_.timeout));
    }
    if (!token_.empty()) ctx.AddMetadata("authorization", absl::StrCat("Bearer ", token_));
    for (const auto& [key, value] : o_.metadata) ctx.AddMetadata(key, value);
    std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>> reader = stub_->Generate(&ctx, req);
    v1::GenerateResponse m;
    bool progress_shown = false;
    while (reader->Read(&m)) {
      if (!o_.json && m.has_progress() && isatty(STDERR_FILENO) == 1) {
        // Encoding a long video takes a while before the first token: say how far it is.
        std::fprintf(stderr, "\r(encoding video frames: %u of %u)", m.progress().frames_encoded(),
                     m.progress().frames_total());
        progress_shown = true;
      } else if (progress_shown && !m.has_progress()) {
        std::fputs("\r\x1b[K", stderr);
        progress_shown = false;
      }
      if (o_.json) {
        std::string line;
        google::protobuf::util::JsonPrintOptions jo;
        (void)google::protobuf::util::MessageToJsonString(m, &line, jo);
        std::fwrite(line.data(), 1, line.size(), stdout);
        std::fputc('\n', stdout);
        std::fflush(stdout);
      }
      printer->Add(m);
    }
    if (progress_shown) std::fputs("\r\x1b[K", stderr);
    const grpc::Status st = reader->Finish();
    printer->Finish();
    std::fflush(stdout);
    if (!st.ok()) {
      std::fprintf(stderr, "qwen client: %s: %s\n", StatusName(st.error_code()),
                   st.error_message().c_str());
      return absl::UnknownError(st.error_message());
    }
    if (!o_.json && printer->has_completion()) {
      std::fprintf(stderr, "%s%s%s\n", color_ ? "\x1b[2m" : "",
                   FormatCompletion(printer->completion()).c_str(), color_ ? "\x1b[0m" : "");
    }
    return absl::OkStatus();
  }

  StreamPrinter NewPrinter() {
    if (o_.json) return StreamPrinter([](absl::string_view) {}, o_.reasoning, false);
    return StreamPrinter(
        [](absl::string_view s) {
          std::fwrite(s.data(), 1, s.size(), stdout);
          std::fflush(stdout);
        },
        o_.reasoning, color_);
  }

  int RunPrompt() {
    v1::GenerateRequest req;
    req.set_prompt(o_.prompt);
    req.set_request_id(o_.request_id);
    StreamPrinter printer = NewPrinter();
    return Run(std::move(req), &printer).ok() ? 0 : 1;
  }

  int RunChat(std::vector<v1::Tool> tools) {
    std::vector<v1::ChatMessage> history;
    auto reset = [&] {
      history.clear();
      if (!o_.system.empty()) {
        v1::ChatMessage& s = history.emplace_back();
        s.set_role("system");
        s.set_content(o_.system);
      }
    };
    reset();
    const bool interactive = isatty(STDIN_FILENO) == 1;
    int turn = 0;
    bool failed = false;
    std::string first = o_.prompt;
    // Images and videos for the next user message (--image, --video, then /image FILE and
    // /video FILE).
    std::vector<v1::ContentPart> pending;
    auto attach = [&](const std::string& path, bool video) {
      std::ifstream in(path, std::ios::binary);
      if (!in) {
        std::fprintf(stderr, "qwen client: cannot read %s %s\n", video ? "video" : "image",
                     path.c_str());
        return false;
      }
      std::stringstream ss;
      ss << in.rdbuf();
      v1::ContentPart& part = pending.emplace_back();
      if (video) {
        part.mutable_video()->set_data(ss.str());
      } else {
        part.mutable_image()->set_data(ss.str());
      }
      return true;
    };
    for (const std::string& path : o_.images) {
      if (!attach(path, false)) return 1;
    }
    for (const std::string& path : o_.videos) {
      if (!attach(path, true)) return 1;
    }
    while (true) {
      std::string line;
      if (!first.empty()) {
        line = std::move(first);
        first.clear();
      } else {
        if (interactive) {
          std::fputs(color_ ? "\x1b[1m> \x1b[0m" : "> ", stdout);
          std::fflush(stdout);
        }
        if (!std::getline(std::cin, line)) break;
      }
      const std::string trimmed(absl::StripAsciiWhitespace(line));
      if (trimmed.empty()) continue;
      if (trimmed == "/exit" || trimmed == "/quit") break;
      if (trimmed == "/reset") {
        reset();
        std::fprintf(stderr, "(conversation reset)\n");
        continue;
      }
      if (absl::StartsWith(trimmed, "/image ") || absl::StartsWith(trimmed, "/video ")) {
        const bool video = absl::StartsWith(trimmed, "/video ");
        if (attach(std::string(absl::StripAsciiWhitespace(trimmed.substr(7))), video)) {
          std::fprintf(stderr, "(%s attached to the next message)\n", video ? "video" : "image");
        } else {
          failed = true;
        }
        continue;
      }
      v1::ChatMessage msg;
      if (absl::StartsWith(trimmed, "/tool ")) {
        msg.set_role("tool");
        msg.set_content(std::string(absl::StripAsciiWhitespace(trimmed.substr(6))));
      } else {
        msg.set_role("user");
        if (pending.empty()) {
          msg.set_content(line);
        } else {
          for (v1::ContentPart& part : pending) *msg.add_parts() = std::move(part);
          msg.add_parts()->set_text(line);
          pending.clear();
        }
      }
      history.push_back(msg);
      v1::GenerateRequest req;
      ++turn;
      if (!o_.request_id.empty()) req.set_request_id(absl::StrCat(o_.request_id, "-", turn));
      v1::Chat* chat = req.mutable_chat();
      for (const v1::ChatMessage& h : history) *chat->add_messages() = h;
      for (const v1::Tool& t : tools) *chat->add_tools() = t;
      if (o_.no_thinking) chat->set_enable_thinking(false);
      StreamPrinter printer = NewPrinter();
      if (!Run(std::move(req), &printer).ok()) {
        history.pop_back();  // the turn did not happen
        failed = true;
        continue;
      }
      v1::ChatMessage& answer = history.emplace_back();
      answer.set_role("assistant");
      answer.set_content(printer.text());
      answer.set_reasoning_content(printer.reasoning());
      for (const v1::ToolCall& c : printer.tool_calls()) {
        v1::ToolCall* h = answer.add_tool_calls();
        h->set_id(c.id());
        h->set_name(c.name());
        h->set_arguments(c.arguments());
      }
    }
    return failed ? 1 : 0;
  }

 private:
  static const char* StatusName(grpc::StatusCode code) {
    static constexpr const char* kNames[] = {"OK",
                                             "CANCELLED",
                                             "UNKNOWN",
                                             "INVALID_ARGUMENT",
                                             "DEADLINE_EXCEEDED",
                                             "NOT_FOUND",
                                             "ALREADY_EXISTS",
                                             "PERMISSION_DENIED",
                                             "RESOURCE_EXHAUSTED",
                                             "FAILED_PRECONDITION",
                                             "ABORTED",
                                             "OUT_OF_RANGE",
                                             "UNIMPLEMENTED",
                                             "INTERNAL",
                                             "UNAVAILABLE",
                                             "DATA_LOSS",
                                             "UNAUTHENTICATED"};
    const int c = static_cast<int>(code);
    return c >= 0 && c <= 16 ? kNames[c] : "UNKNOWN";
  }

  void ApplySampling(v1::GenerateRequest* req) const {
    v1::SamplingParams* s = req->mutable_sampling();
    if (o_.temperature) s->set_temperature(static_cast<float>(*o_.temperature));
    if (o_.top_k) s->set_top_k(static_cast<int32_t>(*o_.top_k));
    if (o_.top_p) s->set_top_p(static_cast<float>(*o_.top_p));
    if (o_.min_p) s->set_min_p(static_cast<float>(*o_.min_p));
    if (o_.seed) s->set_seed(*o_.seed);
    if (o_.repetition_penalty)
      s->set_repetition_penalty(static_cast<float>(*o_.repetition_penalty));
    if (o_.presence_penalty) s->set_presence_penalty(static_cast<float>(*o_.presence_penalty));
    if (o_.frequency_penalty) s->set_frequency_penalty(static_cast<float>(*o_.frequency_penalty));
    v1::StoppingCriteria* st = req->mutable_stopping();
    if (o_.max_tokens) st->set_max_tokens(static_cast<uint32_t>(*o_.max_tokens));
    for (const std::string& stop : o_.stop) st->add_stop(stop);
    if (o_.ignore_eos) st->set_ignore_eos(true);
  }

  const ClientOptions& o_;
  std::unique_ptr<v1::Qwen::Stub> stub_;
  const std::string token_;
  bool color_ = false;
};

}  // namespace

int RunClient(int argc, char** argv) {
  absl::StatusOr<ClientOptions> parsed = ParseClientFlags(argc, argv);
  if (!parsed.ok()) {
    std::fprintf(stderr, "qwen client: %s\n(qwen client --help lists the flags)\n",
                 std::string(parsed.status().message()).c_str());
    return 2;
  }
  const ClientOptions& o = *parsed;
  if (o.help) {
    std::fputs(ClientUsage().c_str(), stdout);
    return 0;
  }
  if (!o.chat && o.prompt.empty()) {
    std::fprintf(stderr, "qwen client: give --prompt TEXT or --chat (see --help)\n");
    return 2;
  }
  if (!o.chat && (!o.system.empty() || !o.tools.empty() || o.no_thinking || !o.images.empty() ||
                  !o.videos.empty())) {
    std::fprintf(stderr,
                 "qwen client: --system, --tools, --no_thinking, --video and --image need "
                 "--chat\n");
    return 2;
  }
  if (!o.auth_token.empty() && !o.auth_token_file.empty()) {
    std::fprintf(stderr, "qwen client: give --auth_token or --auth_token_file, not both\n");
    return 2;
  }
  std::string token = o.auth_token;
  if (!o.auth_token_file.empty()) {
    absl::StatusOr<std::string> t = ReadWholeFile("auth_token_file", o.auth_token_file);
    if (!t.ok()) {
      std::fprintf(stderr, "qwen client: %s\n", std::string(t.status().message()).c_str());
      return 2;
    }
    token = std::string(absl::StripAsciiWhitespace(*t));
  }
  std::vector<v1::Tool> tools;
  if (!o.tools.empty()) {
    absl::StatusOr<std::vector<v1::Tool>> t = LoadTools(o.tools);
    if (!t.ok()) {
      std::fprintf(stderr, "qwen client: %s\n", std::string(t.status().message()).c_str());
      return 2;
    }
    tools = std::move(*t);
  }
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = MakeChannel(o);
  if (!channel.ok()) {
    std::fprintf(stderr, "qwen client: %s\n", std::string(channel.status().message()).c_str());
    return 2;
  }
  Client client(o, *channel, token);
  return o.chat ? client.RunChat(std::move(tools)) : client.RunPrompt();
}

}  // namespace qwen::cli
