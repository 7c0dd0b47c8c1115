// End to end: `qwen client` against the real `qwen serve` (its output checked), and its TLS,
// mTLS and token options against a small in-test server configured for each.
#include <algorithm>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/json_util.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/security/server_credentials.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/service/ops_test_util.h"
#include "tests/service/server_process.h"

namespace qwen::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

ProcessResult Client(std::vector<std::string> args, const std::string& input = "") {
  args.insert(args.begin(), {BinPath("qwen"), "client"});
  return RunProcess(args, input);
}

// The prompt token counts of the closing lines ("... | tokens: N prompt ...") in order.
std::vector<int> PromptTokens(const std::string& err) {
  std::vector<int> out;
  for (absl::string_view line : absl::StrSplit(err, '\n')) {
    const size_t at = line.find("tokens: ");
    if (!absl::StartsWith(line, "finish: ") || at == absl::string_view::npos) continue;
    int n = 0;
    const absl::string_view rest = line.substr(at + 8);
    if (absl::SimpleAtoi(rest.substr(0, rest.find(' ')), &n)) out.push_back(n);
  }
  return out;
}

class ClientE2eTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ServerProcess::Options o;
    o.workers = 1;
    std::string error;
    server_ = ServerProcess::Start(o, &error).release();
    ASSERT_NE(server_, nullptr) << error;
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  static std::string Server() { return absl::StrCat("--server=", server_->address()); }
  static ServerProcess* server_;
};

ServerProcess* ClientE2eTest::server_ = nullptr;

TEST_F(ClientE2eTest, PromptStreamsTheSameTextAsTheApi) {
  v1::GenerateRequest req;
  req.set_prompt("The capital of France is");
  req.mutable_sampling()->set_temperature(0);
  req.mutable_stopping()->set_max_tokens(8);
  req.mutable_stopping()->set_ignore_eos(true);
  auto stub = server_->Stub();
  const GenerateResult direct = Generate(stub.get(), req);
  ASSERT_TRUE(direct.status.ok()) << direct.status.error_message();

  const ProcessResult r = Client({Server(), "--prompt", "The capital of France is", "--temperature",
                                  "0", "--max-tokens", "8", "--ignore-eos"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const bool newline = !direct.text.empty() && direct.text.back() != '\n';
  EXPECT_EQ(r.out, direct.text + (newline ? "\n" : ""));
  EXPECT_THAT(r.err, HasSubstr("finish: length | tokens: "));
  EXPECT_THAT(r.err, HasSubstr(" + 8 generated | queue "));
  EXPECT_THAT(r.err, Not(HasSubstr("\x1b[")));  // not a terminal: no colours
}

TEST_F(ClientE2eTest, ChatShowsReasoningAndAnswer) {
  const std::string forced = "The user greets me.\n</think>\n\nHello there!<|im_end|>";
  const std::vector<std::string> base = {
      Server(),
      "--chat",
      "--prompt",
      "Hi!",
      "--max_tokens",
      "64",
      absl::StrCat("--metadata=x-qwen-testing-forced-output-bin=", forced)};
  std::vector<std::string> show = base;
  show.push_back("--reasoning=show");
  ProcessResult r = Client(show);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "The user greets me.\n\nHello there!\n");
  EXPECT_THAT(r.err, HasSubstr("finish: eos"));

  std::vector<std::string> hide = base;
  hide.push_back("--reasoning=hide");
  r = Client(hide);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "Hello there!\n");

  r = Client(base);  // dim, but standard output is not a terminal: plain
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "The user greets me.\n\nHello there!\n");
}

TEST_F(ClientE2eTest, ChatPrettyPrintsToolCalls) {
  char path[] = "/tmp/qwen-client-tools-XXXXXX.json";
  const int fd = mkstemps(path, 5);
  ASSERT_GE(fd, 0);
  const std::string tools = R"([{"type": "function", "function": {"name": "get_weather",
      "description": "Current weather of a city.",
      "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                     "days": {"type": "integer"}}, "required": ["city"]}}}])";
  ASSERT_EQ(write(fd, tools.data(), tools.size()), static_cast<ssize_t>(tools.size()));
  close(fd);
  const std::string forced =
      "I should look it up.\n</think>\n\n<tool_call>\n<function=get_weather>\n"
      "<parameter=city>\nParis\n</parameter>\n<parameter=days>\n3\n</parameter>\n"
      "</function>\n</tool_call><|im_end|>";
  const ProcessResult r = Client(
      {Server(), "--chat", "--prompt", "Weather in Paris?", "--tools", path, "--reasoning=hide",
       "--max_tokens=128", absl::StrCat("--metadata=x-qwen-testing-forced-output-bin=", forced)});
  unlink(path);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("[tool call] get_weather (call_"));
  EXPECT_THAT(r.out, HasSubstr("    {\n      \"city\": \"Paris\",\n      \"days\": 3\n    }\n"));
  EXPECT_THAT(r.out, Not(HasSubstr("look it up")));
  EXPECT_THAT(r.err, HasSubstr("finish: tool_calls"));
}

TEST_F(ClientE2eTest, JsonPrintsTheRawResponses) {
  const ProcessResult r = Client({Server(), "--prompt", "Hello", "--max_tokens", "5",
                                  "--ignore_eos", "--json", "--request_id", "cli-json-1"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::vector<v1::GenerateResponse> messages;
  for (absl::string_view line : absl::StrSplit(r.out, '\n', absl::SkipEmpty())) {
    v1::GenerateResponse m;
    ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(std::string(line), &m).ok()) << line;
    EXPECT_EQ(m.request_id(), "cli-json-1");
    messages.push_back(m);
  }
  ASSERT_FALSE(messages.empty());
  ASSERT_TRUE(messages.back().has_completion());
  EXPECT_EQ(messages.back().completion().usage().generated_tokens(), 5u);
  EXPECT_EQ(r.err, "");
}

TEST_F(ClientE2eTest, InteractiveChatKeepsTheConversationUntilReset) {
  const ProcessResult r = Client({Server(), "--chat", "--no-thinking", "--temperature=0",
                                  "--max-tokens=3", "--reasoning=hide"},
                                 "Hello\nHello\n/reset\nHello\n/exit\nnever sent\n");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::vector<int> prompts = PromptTokens(r.err);
  ASSERT_EQ(prompts.size(), 3u) << r.err;
  EXPECT_GT(prompts[1], prompts[0]);  // the first exchange is part of the second prompt
  EXPECT_EQ(prompts[2], prompts[0]);  // after /reset, a fresh conversation
  EXPECT_THAT(r.err, HasSubstr("(conversation reset)"));
}

TEST_F(ClientE2eTest, ErrorsGoToStandardErrorWithTheStatus) {
  ProcessResult r = Client({Server(), "--prompt", "x", "--top_p", "2"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("INVALID_ARGUMENT: sampling.top_p"));
  r = Client({Server()});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("--prompt TEXT or --chat"));
}

// The README's `build/bin/qwen client` commands (in ```sh blocks, with backslash continuations
// and double-quoted words) run against the test server, with tools.json written for them.
TEST_F(ClientE2eTest, ReadmeCommandsWork) {
  const std::string readme = ReadUserDocs();
  ASSERT_FALSE(readme.empty());
  std::vector<std::vector<std::string>> commands;
  bool in_sh = false;
  std::string pending;
  for (absl::string_view line : absl::StrSplit(readme, '\n')) {
    if (absl::StartsWith(line, "```")) {
      in_sh = !in_sh && absl::StartsWith(line, "```sh");
      continue;
    }
    if (!in_sh) continue;
    absl::StrAppend(&pending, line);
    if (!pending.empty() && pending.back() == '\\') {
      pending.pop_back();
      continue;
    }
    if (absl::StartsWith(pending, "build/bin/qwen client ")) {
      std::vector<std::string> words;
      std::string word;
      bool have = false;
      for (size_t i = 0; i < pending.size(); ++i) {
        const char c = pending[i];
        if (c == '"') {
          const size_t close = pending.find('"', i + 1);
          word += pending.substr(i + 1, close - i - 1);
          have = true;
          i = close;
        } else if (c == ' ') {
          if (have) words.push_back(word);
          word.clear();
          have = false;
        } else if (c == '#' && !have) {
          break;
        } else {
          word += c;
          have = true;
        }
      }
      if (have) words.push_back(word);
      commands.push_back(words);
    }
    pending.clear();
  }
  ASSERT_GE(commands.size(), 3u);  // the README's and docs/cli.md's

  char tools[] = "/tmp/qwen-readme-tools-XXXXXX.json";
  const int fd = mkstemps(tools, 5);
  ASSERT_GE(fd, 0);
  const std::string json = R"([{"name": "get_weather", "description": "Current weather of a city.",
      "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                     "required": ["city"]}}])";
  ASSERT_EQ(write(fd, json.data(), json.size()), static_cast<ssize_t>(json.size()));
  close(fd);
  for (std::vector<std::string> words : commands) {
    ASSERT_EQ(words[1], "client");
    words[0] = BinPath("qwen");
    for (std::string& w : words) {
      if (w == "localhost:50051") w = server_->address();
      if (w == "tools.json") w = tools;
    }
    const ProcessResult r = RunProcess(words);
    EXPECT_EQ(r.exit_code, 0) << absl::StrJoin(words, " ") << "\n" << r.err;
    if (std::find(words.begin(), words.end(), "--json") == words.end()) {
      EXPECT_THAT(r.err, HasSubstr("finish: ")) << absl::StrJoin(words, " ");
    }
  }
  unlink(tools);
}

// ---------------------------------------------------------------------------------------------
// TLS, mTLS and tokens against an in-test server.

// Answers Generate with a reasoning message and a text that tells what it saw: the prompt, the
// authorization metadata and the client certificate's common name. With a token set, calls
// without `authorization: Bearer <token>` fail UNAUTHENTICATED (as the real server's token
// interceptor does).
class EchoQwen final : public v1::Qwen::Service {
 public:
  explicit EchoQwen(std::string token) : token_(std::move(token)) {}

  grpc::Status Generate(grpc::ServerContext* ctx, const v1::GenerateRequest* req,
                        grpc::ServerWriter<v1::GenerateResponse>* writer) override {
    std::string auth;
    auto it = ctx->client_metadata().find("authorization");
    if (it != ctx->client_metadata().end()) auth.assign(it->second.data(), it->second.size());
    if (!token_.empty() && auth != absl::StrCat("Bearer ", token_)) {
      return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "missing or wrong bearer token");
    }
    std::string cn;
    for (const auto& v : ctx->auth_context()->FindPropertyValues("x509_common_name")) {
      cn.assign(v.data(), v.size());
    }
    v1::GenerateResponse m;
    m.set_reasoning("checking");
    writer->Write(m);
    m.Clear();
    m.set_text(absl::StrCat("prompt=", req->prompt(), " auth=", auth, " cn=", cn));
    m.mutable_completion()->set_finish_reason(v1::FINISH_REASON_EOS);
    m.mutable_completion()->mutable_usage()->set_prompt_tokens(1);
    writer->Write(m);
    return grpc::Status::OK;
  }

 private:
  const std::string token_;
};

class ClientTlsTest : public ::testing::Test {
 protected:
  // Starts the echo server: TLS (requiring a client certificate when `mtls`) or plaintext.
  void StartServer(bool tls, bool mtls, const std::string& token = "") {
    service_ = std::make_unique<EchoQwen>(token);
    grpc::ServerBuilder b;
    std::shared_ptr<grpc::ServerCredentials> creds = grpc::InsecureServerCredentials();
    if (tls) {
      grpc::SslServerCredentialsOptions o(
          mtls ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
               : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
      o.pem_root_certs = ReadFile(DataPath("tls/ca.pem"));
      o.pem_key_cert_pairs.push_back(
          {ReadFile(DataPath("tls/server.key")), ReadFile(DataPath("tls/server.pem"))});
      creds = grpc::SslServerCredentials(o);
    }
    b.AddListeningPort("127.0.0.1:0", creds, &port_);
    b.RegisterService(service_.get());
    server_ = b.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_GT(port_, 0);
  }
  void TearDown() override {
    if (server_ != nullptr) server_->Shutdown(absl::ToChronoTime(absl::Now() + absl::Seconds(1)));
  }
  std::vector<std::string> Args(std::vector<std::string> more) const {
    std::vector<std::string> a = {absl::StrCat("--server=127.0.0.1:", port_), "--prompt=hi",
                                  "--reasoning=show", "--timeout=20s"};
    a.insert(a.end(), more.begin(), more.end());
    return a;
  }

  std::unique_ptr<EchoQwen> service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

TEST_F(ClientTlsTest, TlsWithAGivenCa) {
  StartServer(/*tls=*/true, /*mtls=*/false);
  ProcessResult r = Client(Args({"--tls_ca", DataPath("tls/ca.pem")}));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "checking\n\nprompt=hi auth= cn=\n");
  EXPECT_THAT(r.err, HasSubstr("finish: eos"));
  // The certificate is for qwen-test-server (and localhost, 127.0.0.1), not for other names.
  r = Client(Args({"--tls_ca", DataPath("tls/ca.pem"), "--tls_server_name=qwen-test-server"}));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  r = Client(Args({"--tls_ca", DataPath("tls/ca.pem"), "--tls_server_name=other.example"}));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("UNAVAILABLE"));
  // Plaintext to a TLS server fails.
  r = Client(Args({}));
  EXPECT_EQ(r.exit_code, 1);
}

TEST_F(ClientTlsTest, TlsWithTheDefaultRoots) {
  StartServer(/*tls=*/true, /*mtls=*/false);
  // gRPC's default roots come from this variable when it is set: point it at the test CA, so
  // --tls alone is checked against the roots it would use on a real system.
  setenv("GRPC_DEFAULT_SSL_ROOTS_FILE_PATH", DataPath("tls/ca.pem").c_str(), 1);
  ProcessResult r = Client(Args({"--tls"}));
  unsetenv("GRPC_DEFAULT_SSL_ROOTS_FILE_PATH");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("prompt=hi"));
}

TEST_F(ClientTlsTest, MutualTlsNeedsTheClientCertificate) {
  StartServer(/*tls=*/true, /*mtls=*/true);
  ProcessResult r = Client(Args({"--tls_ca", DataPath("tls/ca.pem")}));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("UNAVAILABLE"));
  r = Client(Args({"--tls_ca", DataPath("tls/ca.pem"), "--tls_cert", DataPath("tls/client.pem"),
                   "--tls_key", DataPath("tls/client.key")}));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("cn=qwen-test-client"));
  r = Client(Args({"--tls_ca", DataPath("tls/ca.pem"), "--tls_cert", DataPath("tls/client.pem")}));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("--tls_cert and --tls_key go together"));
}

TEST_F(ClientTlsTest, BearerTokenFromFlagOrFile) {
  StartServer(/*tls=*/true, /*mtls=*/false, "s3cret");
  ProcessResult r = Client(Args({"--tls_ca", DataPath("tls/ca.pem")}));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("UNAUTHENTICATED: missing or wrong bearer token"));
  r = Client(Args({"--tls_ca", DataPath("tls/ca.pem"), "--auth_token", "s3cret"}));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("auth=Bearer s3cret"));

  char path[] = "/tmp/qwen-client-token-XXXXXX";
  const int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(write(fd, "s3cret\n", 7), 7);
  close(fd);
  r = Client(Args({"--tls_ca", DataPath("tls/ca.pem"), "--auth-token-file", path}));
  unlink(path);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("auth=Bearer s3cret cn="));
}

TEST_F(ClientTlsTest, TokenOverPlaintextToo) {
  StartServer(/*tls=*/false, /*mtls=*/false, "tok");
  const ProcessResult r = Client(Args({"--auth_token=tok"}));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("auth=Bearer tok"));
}

}  // namespace
}  // namespace qwen::testing
