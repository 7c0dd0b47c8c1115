// The real `qwen serve` as a subprocess, and a gRPC client for it, for the e2e tests.
#ifndef QWEN_TESTS_SERVICE_SERVER_PROCESS_H_
#define QWEN_TESTS_SERVICE_SERVER_PROCESS_H_

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "qwen/v1/qwen.grpc.pb.h"
#include "tests/common/test_util.h"

namespace qwen::testing {

namespace v1 = ::qwen::v1;
using HealthStatus = ::grpc::health::v1::HealthCheckResponse::ServingStatus;

// Starts `qwen serve` on 127.0.0.1 and a free port (--port 0; the port is read from its log),
// with its output in a log file, and stops it (SIGTERM, then SIGKILL) when destroyed. The
// server asks for SIGKILL if the test process dies, and its workers die with it, so a crashed
// test leaves no processes behind.
//
// Not thread-safe (a test drives it from one thread); the stubs it hands out are.
class ServerProcess {
 public:
  struct Options {
    std::string model = "models/tiny-qwen35-f32.gguf";
    int workers = 2;
    int slots = 4;
    int queue_size = 64;
    int ctx_size = 2048;
    bool forced_output = true;
    int metrics_port = 0;            // 0: no metrics endpoint (tests run servers side by side)
    std::vector<std::string> extra;  // more flags
    // Run as `wrapper... qwen serve ...` (e.g. setpriv to drop privileges).
    std::vector<std::string> wrapper;
    // An absolute model path instead of `model` under tests/data.
    std::string model_path;
    // How the test's own channel connects (TLS servers), and the bearer token its health and
    // GetModelInfo calls send (servers with --auth_tokens_file).
    std::shared_ptr<grpc::ChannelCredentials> credentials;
    std::string auth_token;
  };

  // Nullptr (and a message in *error) when the server did not become SERVING in time.
  static std::unique_ptr<ServerProcess> Start(const Options& o, std::string* error,
                                              absl::Duration timeout = absl::Seconds(120)) {
    std::unique_ptr<ServerProcess> s(new ServerProcess());
    char path[] = "/tmp/qwen-serve-test-XXXXXX.log";
    const int fd = mkstemps(path, 4);
    if (fd < 0) {
      *error = "mkstemps failed";
      return nullptr;
    }
    s->log_path_ = path;
    std::vector<std::string> args = o.wrapper;
    std::vector<std::string> serve = {
        BinPath("qwen"),
        "serve",
        absl::StrCat("--model=", o.model_path.empty() ? DataPath(o.model) : o.model_path),
        "--host=127.0.0.1",
        "--port=0",
        absl::StrCat("--workers=", o.workers),
        absl::StrCat("--slots=", o.slots),
        absl::StrCat("--queue_size=", o.queue_size),
        absl::StrCat("--ctx_size=", o.ctx_size),
        "--threads=1",
        "--grace_period=20s",
        absl::StrCat("--metrics_port=", o.metrics_port),
    };
    args.insert(args.end(), serve.begin(), serve.end());
    if (o.forced_output) args.push_back("--testing_allow_forced_output");
    for (const std::string& e : o.extra) args.push_back(e);
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    const pid_t parent = getpid();
    const pid_t pid = fork();
    if (pid == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != parent) _exit(1);
      setpgid(0, 0);  // its own group, as a shell job: tests can signal the group like Ctrl-C
      dup2(fd, STDOUT_FILENO);
      dup2(fd, STDERR_FILENO);
      close(fd);
      execv(argv[0], argv.data());
      _exit(127);
    }
    close(fd);
    s->pid_ = pid;
    const absl::Time deadline = absl::Now() + timeout;
    while (s->port_ == 0 && absl::Now() < deadline) {
      const std::string log = s->Log();
      const size_t at = log.find("listening on 127.0.0.1:");
      if (at != std::string::npos) {
        const size_t start = at + std::string("listening on 127.0.0.1:").size();
        const size_t end = log.find(' ', start);
        int port = 0;
        if (absl::SimpleAtoi(log.substr(start, end - start), &port)) s->port_ = port;
      }
      if (s->port_ == 0) {
        if (waitpid(pid, nullptr, WNOHANG) == pid) {
          s->pid_ = 0;
          *error = absl::StrCat("qwen serve exited during start-up:\n", s->Log());
          return nullptr;
        }
        absl::SleepFor(absl::Milliseconds(20));
      }
    }
    if (s->port_ == 0) {
      *error = absl::StrCat("qwen serve did not report its port:\n", s->Log());
      return nullptr;
    }
    // The HTTP API, when on (--http_port), says its port before the gRPC port's line.
    for (const char* prefix : {"HTTP API on http://127.0.0.1:", "HTTP API on https://127.0.0.1:"}) {
      const std::string log = s->Log();
      const size_t at = log.find(prefix);
      if (at == std::string::npos) continue;
      const size_t start = at + std::string(prefix).size();
      const size_t end = log.find(' ', start);
      int port = 0;
      if (absl::SimpleAtoi(log.substr(start, end - start), &port)) s->http_port_ = port;
    }
    s->auth_token_ = o.auth_token;
    s->channel_ = grpc::CreateChannel(
        s->address(), o.credentials ? o.credentials : grpc::InsecureChannelCredentials());
    if (!s->WaitHealth(grpc::health::v1::HealthCheckResponse::SERVING, deadline - absl::Now())) {
      *error = absl::StrCat("qwen serve did not become SERVING:\n", s->Log());
      return nullptr;
    }
    // SERVING needs one worker; the tests want the whole pool.
    if (!s->WaitLiveWorkers(o.workers, deadline - absl::Now())) {
      *error = absl::StrCat("not all workers came up:\n", s->Log());
      return nullptr;
    }
    return s;
  }

  ~ServerProcess() {
    if (pid_ > 0) Stop(absl::Seconds(30));
    if (std::getenv("QWEN_KEEP_SERVER_LOGS") == nullptr) unlink(log_path_.c_str());
  }

  // SIGTERM, then waits up to `timeout` (SIGKILL after it). Returns the wait status.
  int Stop(absl::Duration timeout) { return SignalAndWait(SIGTERM, timeout); }

  int SignalAndWait(int sig, absl::Duration timeout) {
    if (pid_ <= 0) return -1;
    kill(pid_, sig);
    const absl::Time deadline = absl::Now() + timeout;
    int status = 0;
    while (true) {
      const pid_t r = waitpid(pid_, &status, WNOHANG);
      if (r == pid_) break;
      if (absl::Now() > deadline) {
        kill(pid_, SIGKILL);
        waitpid(pid_, &status, 0);
        status = -2;
        break;
      }
      absl::SleepFor(absl::Milliseconds(20));
    }
    pid_ = 0;
    return status;
  }

  pid_t pid() const { return pid_; }
  int port() const { return port_; }
  std::string address() const { return absl::StrCat("127.0.0.1:", port_); }
  // The HTTP API's port (0: not serving HTTP) and base URL.
  int http_port() const { return http_port_; }
  std::string http_url() const { return absl::StrCat("http://127.0.0.1:", http_port_); }
  std::string Log() const { return ReadFile(log_path_); }
  const std::string& log_path() const { return log_path_; }

  std::unique_ptr<v1::Qwen::Stub> Stub() const { return v1::Qwen::NewStub(channel_); }
  std::shared_ptr<grpc::Channel> channel() const { return channel_; }

  HealthStatus Health(const std::string& service = "") const {
    auto stub = grpc::health::v1::Health::NewStub(channel_);
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    AddToken(&ctx);
    grpc::health::v1::HealthCheckRequest req;
    req.set_service(service);
    grpc::health::v1::HealthCheckResponse resp;
    if (!stub->Check(&ctx, req, &resp).ok()) return grpc::health::v1::HealthCheckResponse::UNKNOWN;
    return resp.status();
  }

  bool WaitHealth(HealthStatus want, absl::Duration timeout) const {
    const absl::Time deadline = absl::Now() + timeout;
    while (absl::Now() < deadline) {
      if (Health() == want) return true;
      absl::SleepFor(absl::Milliseconds(20));
    }
    return false;
  }

  bool WaitLiveWorkers(int n, absl::Duration timeout) const {
    const absl::Time deadline = absl::Now() + timeout;
    while (absl::Now() < deadline) {
      if (static_cast<int>(Info().serving().live_workers()) == n) return true;
      absl::SleepFor(absl::Milliseconds(20));
    }
    return false;
  }

  v1::GetModelInfoResponse Info() const {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    AddToken(&ctx);
    v1::GetModelInfoResponse info;
    Stub()->GetModelInfo(&ctx, v1::GetModelInfoRequest(), &info);
    return info;
  }

 private:
  ServerProcess() = default;
  void AddToken(grpc::ClientContext* ctx) const {
    if (!auth_token_.empty()) ctx->AddMetadata("authorization", "Bearer " + auth_token_);
  }
  std::string auth_token_;
  pid_t pid_ = 0;
  int port_ = 0;
  int http_port_ = 0;
  std::string log_path_;
  std::shared_ptr<grpc::Channel> channel_;
};

// A whole Generate stream as the client saw it.
struct GenerateResult {
  grpc::Status status;
  std::vector<v1::GenerateResponse> messages;
  std::string text;
  std::string reasoning;
  std::vector<v1::ToolCall> tool_calls;
  std::vector<int32_t> token_ids;
  std::vector<v1::TokenLogprob> logprobs;
  bool has_completion = false;
  v1::Completion completion;
};

inline void Accumulate(const v1::GenerateResponse& m, GenerateResult* r) {
  r->messages.push_back(m);
  r->text += m.text();
  r->reasoning += m.reasoning();
  for (const auto& c : m.tool_calls()) r->tool_calls.push_back(c);
  for (int32_t id : m.token_ids()) r->token_ids.push_back(id);
  for (const auto& l : m.logprobs()) r->logprobs.push_back(l);
  if (m.has_completion()) {
    r->has_completion = true;
    r->completion = m.completion();
  }
}

// Runs a Generate call to the end. `forced_output` goes in the testing metadata when not empty.
inline GenerateResult Generate(v1::Qwen::Stub* stub, const v1::GenerateRequest& req,
                               absl::Duration deadline = absl::Seconds(180),
                               const std::string& forced_output = "") {
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + deadline));
  if (!forced_output.empty()) ctx.AddMetadata("x-qwen-testing-forced-output-bin", forced_output);
  GenerateResult r;
  auto reader = stub->Generate(&ctx, req);
  v1::GenerateResponse m;
  while (reader->Read(&m)) Accumulate(m, &r);
  r.status = reader->Finish();
  return r;
}

// A stream read on its own thread, which the test can watch and cancel.
class BackgroundStream {
 public:
  BackgroundStream(v1::Qwen::Stub* stub, const v1::GenerateRequest& req,
                   absl::Duration deadline = absl::Seconds(300)) {
    ctx_.set_deadline(absl::ToChronoTime(absl::Now() + deadline));
    thread_ = std::thread([this, stub, req] {
      auto reader = stub->Generate(&ctx_, req);
      v1::GenerateResponse m;
      while (reader->Read(&m)) {
        absl::MutexLock lock(&mu_);
        Accumulate(m, &result_);
        if (first_message_ == absl::InfinitePast()) first_message_ = absl::Now();
      }
      grpc::Status st = reader->Finish();
      absl::MutexLock lock(&mu_);
      result_.status = st;
      ended_ = absl::Now();
      done_ = true;
    });
  }
  ~BackgroundStream() {
    Cancel();
    thread_.join();
  }
  void Cancel() { ctx_.TryCancel(); }

  // Waits for the first message (true) or the end of the stream (false).
  bool WaitFirstMessage(absl::Duration timeout = absl::Seconds(120)) {
    absl::MutexLock lock(&mu_);
    auto cond = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return done_ || !result_.messages.empty();
    };
    mu_.AwaitWithTimeout(absl::Condition(&cond), timeout);
    return !result_.messages.empty();
  }
  bool WaitDone(absl::Duration timeout = absl::Seconds(120)) {
    absl::MutexLock lock(&mu_);
    auto cond = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return done_; };
    return mu_.AwaitWithTimeout(absl::Condition(&cond), timeout);
  }
  bool done() {
    absl::MutexLock lock(&mu_);
    return done_;
  }
  int tokens() {
    absl::MutexLock lock(&mu_);
    return static_cast<int>(result_.token_ids.size());
  }
  GenerateResult result() {
    absl::MutexLock lock(&mu_);
    return result_;
  }
  absl::Time ended() {
    absl::MutexLock lock(&mu_);
    return ended_;
  }

 private:
  grpc::ClientContext ctx_;
  absl::Mutex mu_;
  GenerateResult result_ ABSL_GUARDED_BY(mu_);
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time first_message_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  absl::Time ended_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

// The worker socket directory a server's log names ("... sockets in DIR)"), or "".
inline std::string SocketDir(const std::string& log) {
  const std::string key = "sockets in ";
  const size_t at = log.find(key);
  if (at == std::string::npos) return "";
  const size_t end = log.find(')', at);
  return log.substr(at + key.size(), end - at - key.size());
}

// Output of a command (no shell metacharacters in our arguments), or "" when it failed.
inline std::string RunCommand(const std::string& command, int* exit_code = nullptr) {
  FILE* p = popen(command.c_str(), "r");
  if (p == nullptr) return "";
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  const int status = pclose(p);
  if (exit_code != nullptr) *exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return out;
}

}  // namespace qwen::testing

#endif  // QWEN_TESTS_SERVICE_SERVER_PROCESS_H_
