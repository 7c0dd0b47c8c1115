// End to end, security: TLS and mutual TLS on the public port, bearer tokens checked by the
// server interceptor (probes open or not), connections limited in concurrent streams, the
// workers' private socket directory, and the server run as an unprivileged user.
//
// Certificates are made at test time with the openssl command into a temporary directory (no
// key is ever committed); the test, not the server, runs it.
#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <thread>

#include "gmock/gmock.h"
#include "grpc/reflection/v1alpha/reflection.grpc.pb.h"
#include "gtest/gtest.h"
#include "tests/service/server_process.h"

namespace qwen::testing {
namespace {

using ::testing::HasSubstr;
using Serving = ::grpc::health::v1::HealthCheckResponse;

// A CA, a server certificate for localhost / 127.0.0.1 and a client certificate signed by it,
// and a second ("rogue") CA with a client certificate of its own.
class Pki {
 public:
  Pki() {
    char dir[] = "/tmp/qwen-pki-XXXXXX";
    dir_ = mkdtemp(dir);
    const std::string d = dir_;
    const std::string key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    std::string script = absl::StrCat(
        "set -e; cd ", d, "; ", "openssl req -x509 ", key,
        " -keyout ca.key -out ca.pem -days 2 -subj /CN=qwen-test-ca; ", "openssl req -x509 ", key,
        " -keyout rogue-ca.key -out rogue-ca.pem -days 2 ", "-subj /CN=qwen-rogue-ca; ",
        "printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' > server.ext; ", "openssl req ", key,
        " -keyout server.key -out server.csr -subj /CN=localhost; ",
        "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial ",
        "-out server.pem -days 2 -extfile server.ext; ", "openssl req ", key,
        " -keyout client.key -out client.csr -subj /CN=qwen-client; ",
        "openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial ",
        "-out client.pem -days 2; ", "openssl req ", key,
        " -keyout rogue.key -out rogue.csr -subj /CN=qwen-rogue; ",
        "openssl x509 -req -in rogue.csr -CA rogue-ca.pem -CAkey rogue-ca.key -CAcreateserial ",
        "-out rogue.pem -days 2; chmod 600 *.key");
    int code = -1;
    log_ = RunCommand(absl::StrCat("sh -c \"", script, "\" 2>&1"), &code);
    ok_ = code == 0;
  }
  ~Pki() { RunCommand(absl::StrCat("rm -rf ", dir_), nullptr); }
  bool ok() const { return ok_; }
  const std::string& log() const { return log_; }
  std::string Path(const std::string& name) const { return absl::StrCat(dir_, "/", name); }
  std::string Read(const std::string& name) const { return ReadFile(Path(name)); }

  std::shared_ptr<grpc::ChannelCredentials> Client(const std::string& ca,
                                                   const std::string& cert = "") const {
    grpc::SslCredentialsOptions o;
    o.pem_root_certs = Read(ca);
    if (!cert.empty()) {
      o.pem_cert_chain = Read(cert + ".pem");
      o.pem_private_key = Read(cert + ".key");
    }
    return grpc::SslCredentials(o);
  }

 private:
  std::string dir_;
  bool ok_ = false;
  std::string log_;
};

v1::GenerateRequest Short() {
  v1::GenerateRequest req;
  req.set_prompt("Hello");
  req.mutable_stopping()->set_max_tokens(3);
  req.mutable_stopping()->set_ignore_eos(true);
  return req;
}

// A call that needs a working connection: OK, or the status that refused it.
grpc::Status Info(const std::shared_ptr<grpc::Channel>& channel, const std::string& token = "") {
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  if (!token.empty()) ctx.AddMetadata("authorization", token);
  v1::GetModelInfoResponse info;
  return v1::Qwen::NewStub(channel)->GetModelInfo(&ctx, v1::GetModelInfoRequest(), &info);
}

TEST(SecurityE2eTest, TlsServesOnlyTlsClientsThatTrustItsCa) {
  Pki pki;
  ASSERT_TRUE(pki.ok()) << pki.log();
  ServerProcess::Options o;
  o.extra = {"--tls_cert=" + pki.Path("server.pem"), "--tls_key=" + pki.Path("server.key")};
  o.credentials = pki.Client("ca.pem");
  std::string error;
  auto server = ServerProcess::Start(o, &error);
  ASSERT_NE(server, nullptr) << error;
  EXPECT_THAT(server->Log(), HasSubstr("with TLS"));

  GenerateResult r = Generate(server->Stub().get(), Short());
  EXPECT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_TRUE(r.has_completion);

  auto plaintext = grpc::CreateChannel(server->address(), grpc::InsecureChannelCredentials());
  EXPECT_EQ(Info(plaintext).error_code(), grpc::StatusCode::UNAVAILABLE);
  auto wrong_ca = grpc::CreateChannel(server->address(), pki.Client("rogue-ca.pem"));
  EXPECT_EQ(Info(wrong_ca).error_code(), grpc::StatusCode::UNAVAILABLE);
}

TEST(SecurityE2eTest, MutualTlsNeedsAClientCertificateSignedByTheClientCa) {
  Pki pki;
  ASSERT_TRUE(pki.ok()) << pki.log();
  ServerProcess::Options o;
  o.extra = {"--tls_cert=" + pki.Path("server.pem"), "--tls_key=" + pki.Path("server.key"),
             "--tls_client_ca=" + pki.Path("ca.pem")};
  o.credentials = pki.Client("ca.pem", "client");
  std::string error;
  auto server = ServerProcess::Start(o, &error);
  ASSERT_NE(server, nullptr) << error;
  EXPECT_THAT(server->Log(), HasSubstr("with mTLS"));

  GenerateResult r = Generate(server->Stub().get(), Short());
  EXPECT_TRUE(r.status.ok()) << r.status.error_message();

  auto no_cert = grpc::CreateChannel(server->address(), pki.Client("ca.pem"));
  EXPECT_EQ(Info(no_cert).error_code(), grpc::StatusCode::UNAVAILABLE);
  auto rogue = grpc::CreateChannel(server->address(), pki.Client("ca.pem", "rogue"));
  EXPECT_EQ(Info(rogue).error_code(), grpc::StatusCode::UNAVAILABLE);
  // The server still serves good clients after refusing the others.
  EXPECT_TRUE(Info(server->channel()).ok());
}

std::string TokenFile(const std::vector<std::string>& lines) {
  char path[] = "/tmp/qwen-tokens-XXXXXX";
  const int fd = mkstemp(path);
  const std::string content = absl::StrJoin(lines, "\n") + "\n";
  EXPECT_EQ(write(fd, content.data(), content.size()), static_cast<ssize_t>(content.size()));
  close(fd);
  return path;
}

// Lists the services through reflection; the status of the stream.
grpc::Status ListServices(const std::shared_ptr<grpc::Channel>& channel,
                          std::vector<std::string>* names, const std::string& token = "") {
  namespace refl = ::grpc::reflection::v1alpha;
  auto stub = refl::ServerReflection::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  if (!token.empty()) ctx.AddMetadata("authorization", token);
  auto stream = stub->ServerReflectionInfo(&ctx);
  refl::ServerReflectionRequest req;
  req.set_list_services("");
  stream->Write(req);
  stream->WritesDone();
  refl::ServerReflectionResponse resp;
  while (stream->Read(&resp)) {
    for (const auto& s : resp.list_services_response().service()) names->push_back(s.name());
  }
  return stream->Finish();
}

TEST(SecurityE2eTest, BearerTokensAreCheckedBeforeAnyWorkAndProbesStayOpen) {
  const std::string tokens = TokenFile({"# test tokens", "tok-alpha-123", "tok-beta-456"});
  ServerProcess::Options o;
  o.extra = {"--auth_tokens_file=" + tokens};
  o.auth_token = "tok-alpha-123";
  std::string error;
  auto server = ServerProcess::Start(o, &error);
  ASSERT_NE(server, nullptr) << error;
  auto stub = server->Stub();

  auto generate = [&](const std::vector<std::pair<std::string, std::string>>& md) {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
    for (const auto& [k, v] : md) ctx.AddMetadata(k, v);
    auto reader = stub->Generate(&ctx, Short());
    v1::GenerateResponse m;
    int messages = 0;
    while (reader->Read(&m)) ++messages;
    grpc::Status st = reader->Finish();
    if (!st.ok()) {
      EXPECT_EQ(messages, 0) << "a refused call streamed output";
    }
    return st;
  };
  auto tokenize = [&](const std::string& auth) {
    grpc::ClientContext ctx;
    if (!auth.empty()) ctx.AddMetadata("authorization", auth);
    v1::TokenizeRequest req;
    req.set_text("secret text");
    v1::TokenizeResponse resp;
    grpc::Status st = stub->Tokenize(&ctx, req, &resp);
    if (!st.ok()) {
      EXPECT_EQ(resp.token_ids_size(), 0) << "a refused call answered";
    }
    return st;
  };

  const std::vector<std::vector<std::pair<std::string, std::string>>> refused = {
      {},
      {{"authorization", "Bearer wrong"}},
      {{"authorization", "Bearer tok-alpha-12"}},    // a prefix
      {{"authorization", "Bearer tok-alpha-1234"}},  // longer
      {{"authorization", "tok-alpha-123"}},          // no scheme
      {{"authorization", "Basic tok-alpha-123"}},
      {{"authorization", "Bearer tok-alpha-123"}, {"authorization", "Bearer wrong"}},
      // The mark of a refused call only ever refuses: sending it gains nothing.
      {{"authorization", "Bearer tok-alpha-123"}, {"x-qwen-auth-denied", "0"}},
  };
  for (size_t k = 0; k < refused.size(); ++k) {
    grpc::Status st = generate(refused[k]);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAUTHENTICATED) << "case " << k;
  }
  for (const std::string bad : {"", "Bearer nope", "Bearer "}) {
    EXPECT_EQ(tokenize(bad).error_code(), grpc::StatusCode::UNAUTHENTICATED) << bad;
    EXPECT_EQ(Info(server->channel(), bad).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }
  // Nothing refused reached a worker.
  EXPECT_EQ(server->Info().serving().busy_slots(), 0u);
  EXPECT_THAT(server->Log(), HasSubstr("refused /qwen.v1.Qwen/"));

  // Both tokens work, on every method.
  EXPECT_TRUE(generate({{"authorization", "Bearer tok-alpha-123"}}).ok());
  EXPECT_TRUE(generate({{"authorization", "bearer tok-beta-456"}}).ok());
  EXPECT_TRUE(tokenize("Bearer tok-beta-456").ok());
  EXPECT_TRUE(Info(server->channel(), "Bearer tok-alpha-123").ok());

  // Probes need no token: health and reflection (kubelet, grpcurl list).
  auto open = grpc::CreateChannel(server->address(), grpc::InsecureChannelCredentials());
  {
    auto health = grpc::health::v1::Health::NewStub(open);
    grpc::ClientContext ctx;
    grpc::health::v1::HealthCheckRequest req;
    grpc::health::v1::HealthCheckResponse resp;
    ASSERT_TRUE(health->Check(&ctx, req, &resp).ok());
    EXPECT_EQ(resp.status(), Serving::SERVING);
  }
  std::vector<std::string> services;
  EXPECT_TRUE(ListServices(open, &services).ok());
  EXPECT_THAT(services, ::testing::Contains("qwen.v1.Qwen"));
  unlink(tokens.c_str());
}

TEST(SecurityE2eTest, ProbesNeedATokenTooWhenNotExempt) {
  const std::string tokens = TokenFile({"tok-gamma-789"});
  ServerProcess::Options o;
  o.extra = {"--auth_tokens_file=" + tokens, "--auth_exempt_probes=false"};
  o.auth_token = "tok-gamma-789";
  std::string error;
  auto server = ServerProcess::Start(o, &error);
  ASSERT_NE(server, nullptr) << error;
  auto open = grpc::CreateChannel(server->address(), grpc::InsecureChannelCredentials());
  auto health = grpc::health::v1::Health::NewStub(open);
  {
    grpc::ClientContext ctx;
    grpc::health::v1::HealthCheckRequest req;
    grpc::health::v1::HealthCheckResponse resp;
    grpc::Status st = health->Check(&ctx, req, &resp);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }
  {
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer tok-gamma-789");
    grpc::health::v1::HealthCheckRequest req;
    grpc::health::v1::HealthCheckResponse resp;
    ASSERT_TRUE(health->Check(&ctx, req, &resp).ok());
    EXPECT_EQ(resp.status(), Serving::SERVING);
  }
  std::vector<std::string> services;
  EXPECT_FALSE(ListServices(open, &services).ok());
  EXPECT_TRUE(services.empty());
  services.clear();
  EXPECT_TRUE(ListServices(open, &services, "Bearer tok-gamma-789").ok());
  EXPECT_FALSE(services.empty());
  unlink(tokens.c_str());
}

// With --max_concurrent_streams=2, a third call on the same connection waits for one of the
// first two to end, while another connection is served at once.
TEST(SecurityE2eTest, ConcurrentStreamsPerConnectionAreLimited) {
  ServerProcess::Options o;
  o.extra = {"--max_concurrent_streams=2"};
  std::string error;
  auto server = ServerProcess::Start(o, &error);
  ASSERT_NE(server, nullptr) << error;
  grpc::ChannelArguments args;
  args.SetInt("qwen.test.unique", 1);  // a connection of its own, not shared with the server's
  auto conn =
      grpc::CreateCustomChannel(server->address(), grpc::InsecureChannelCredentials(), args);
  auto stub = v1::Qwen::NewStub(conn);
  v1::GenerateRequest longer = Short();
  longer.mutable_stopping()->set_max_tokens(1500);
  auto a = std::make_unique<BackgroundStream>(stub.get(), longer);
  BackgroundStream b(stub.get(), longer);
  ASSERT_TRUE(a->WaitFirstMessage());
  ASSERT_TRUE(b.WaitFirstMessage());
  BackgroundStream third(stub.get(), Short());
  // Another connection is not held up.
  GenerateResult other = Generate(server->Stub().get(), Short());
  EXPECT_TRUE(other.status.ok()) << other.status.error_message();
  EXPECT_FALSE(third.WaitFirstMessage(absl::Seconds(2)))
      << "a third stream ran on a connection limited to two";
  a->Cancel();
  a.reset();
  ASSERT_TRUE(third.WaitDone(absl::Seconds(60)));
  EXPECT_TRUE(third.result().status.ok()) << third.result().status.error_message();
  b.Cancel();
}

TEST(SecurityE2eTest, WorkerSocketsAreInAPrivateDirectory) {
  ServerProcess::Options o;
  std::string error;
  auto server = ServerProcess::Start(o, &error);
  ASSERT_NE(server, nullptr) << error;
  const std::string dir = SocketDir(server->Log());
  ASSERT_FALSE(dir.empty()) << server->Log();
  struct stat st;
  ASSERT_EQ(stat(dir.c_str(), &st), 0) << dir;
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0700u) << dir;
  EXPECT_EQ(st.st_uid, geteuid());
  for (const char* name : {"worker-0.sock", "worker-1.sock"}) {
    ASSERT_EQ(stat(absl::StrCat(dir, "/", name).c_str(), &st), 0) << name;
    EXPECT_TRUE(S_ISSOCK(st.st_mode)) << name;
  }
  EXPECT_EQ(server->Stop(absl::Seconds(30)), 0);
  EXPECT_NE(stat(dir.c_str(), &st), 0) << "the socket directory outlived the server";
}

int Uid(pid_t pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(in, line)) {
    if (absl::StartsWith(line, "Uid:")) return std::stoi(line.substr(4));
  }
  return -1;
}

// Started as root, the test drops the server to nobody/nogroup (setpriv, no supplementary
// groups, no capabilities) with a world-readable copy of the tiny model: it serves, and its
// workers and their socket directory belong to nobody.
TEST(SecurityE2eTest, ServesAsAnUnprivilegedUser) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to drop privileges";
  const passwd* nobody = getpwnam("nobody");
  ASSERT_NE(nobody, nullptr);
  char tmpl[] = "/tmp/qwen-unpriv-XXXXXX";
  const std::string dir = mkdtemp(tmpl);
  ASSERT_EQ(chmod(dir.c_str(), 0755), 0);
  const std::string model = dir + "/tiny.gguf";
  int copied = -1;
  RunCommand(absl::StrCat("cp ", DataPath("models/tiny-qwen35-f32.gguf"), " ", model), &copied);
  ASSERT_EQ(copied, 0);
  ASSERT_EQ(chmod(model.c_str(), 0444), 0);
  const std::string sockets = dir + "/run";
  ASSERT_EQ(mkdir(sockets.c_str(), 0700), 0);
  ASSERT_EQ(chown(sockets.c_str(), nobody->pw_uid, nobody->pw_gid), 0);

  ServerProcess::Options o;
  o.model_path = model;
  o.wrapper = {"/usr/bin/setpriv", absl::StrCat("--reuid=", nobody->pw_uid),
               absl::StrCat("--regid=", nobody->pw_gid), "--clear-groups", "--inh-caps=-all",
               "--bounding-set=-all", "--no-new-privs",
               // The uid change clears the parent-death signal ServerProcess asked for; ask
               // again so that a crashed test leaves no server behind.
               "--pdeathsig=SIGKILL"};
  o.extra = {"--socket_dir=" + sockets};
  std::string error;
  auto server = ServerProcess::Start(o, &error);
  ASSERT_NE(server, nullptr) << error;
  EXPECT_EQ(Uid(server->pid()), static_cast<int>(nobody->pw_uid));
  const v1::GetModelInfoResponse info = server->Info();
  ASSERT_EQ(info.serving().worker_status_size(), 2);
  for (const auto& w : info.serving().worker_status()) {
    EXPECT_EQ(Uid(w.pid()), static_cast<int>(nobody->pw_uid)) << "worker " << w.index();
  }
  const std::string socket_dir = SocketDir(server->Log());
  struct stat st;
  ASSERT_EQ(stat(socket_dir.c_str(), &st), 0) << server->Log();
  EXPECT_EQ(st.st_uid, nobody->pw_uid);
  EXPECT_EQ(st.st_mode & 07777, 0700u);

  GenerateResult r = Generate(server->Stub().get(), Short());
  EXPECT_TRUE(r.status.ok()) << r.status.error_message() << "\n" << server->Log();
  EXPECT_EQ(r.completion.usage().generated_tokens(), 3u);
  const int status = server->Stop(absl::Seconds(30));
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  RunCommand(absl::StrCat("rm -rf ", dir), nullptr);
}

}  // namespace
}  // namespace qwen::testing
