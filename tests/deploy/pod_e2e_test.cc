// End to end: `qwen serve` run the way the Helm chart's Deployment runs it, on this machine.
//
// The container comes from the rendered chart (tests/deploy/deploy_lib.py container): its args,
// TMPDIR, user, read-only root and volumes. A "pod" here is a private mount namespace in which
// every filesystem is read-only except a tmpfs for each emptyDir of the manifest, the model
// directory is read-only, the working directory is /, and the server runs as the manifest's
// non-root user with no capabilities. Container paths P live under a scratch directory R as R/P
// (the arguments and TMPDIR are rewritten accordingly). The test changes only --host and --port
// (127.0.0.1 and a free port; the port's agreement with Services and probes is checked by
// deploy_chart_test), --threads (1: the test machine's two cores are shared with other tests,
// and spinning compute threads on oversubscribed cores crawl) and turns off the fixed metrics
// port when the build has one.
//
// Secret volumes (TLS, tokens) are laid out as the kubelet lays them out (files are links
// through a ..data link to a timestamped directory, replaced atomically on an update), with the
// test's certificates (tests/data/tls) and tokens.
//
// Checks: the server serves as that user with only the chart's writable paths (and fails
// clearly without them); readiness (health of the probes' service) is SERVING only while
// workers are up; SIGTERM drains running streams and the process exits within the pod's
// termination grace period minus the preStop sleep, even when streams cannot finish; the
// server-side connection age sends clients a GOAWAY while their streams finish; with TLS (and
// tokens that health needs too) the rendered probes' own command succeeds against the pod and
// fails while it drains; rotating the certificate and the tokens in the Secret volumes (as the
// kubelet does) makes new connections use the new ones while an open stream goes on.
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/service/server_process.h"

namespace qwen::testing {
namespace {

using json = nlohmann::json;
using Serving = ::grpc::health::v1::HealthCheckResponse;

std::string Popen(const std::string& command, int* status) {
  FILE* p = popen(command.c_str(), "r");
  std::string out;
  if (p == nullptr) return out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  const int st = pclose(p);
  *status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return out;
}

void RunShellOk(const std::string& cmd) {
  int status = 0;
  const std::string out = Popen(cmd + " 2>&1", &status);
  EXPECT_EQ(status, 0) << cmd << "\n" << out;
}

// The rendered qwen-serve container, with `values` (JSON) over the chart's defaults.
json RenderContainer(const std::string& values = "{}") {
  const char* py = std::getenv("QWEN_PYTHON");
  const std::string cmd =
      absl::StrCat(py != nullptr ? py : "python3", " tests/deploy/deploy_lib.py container --json '",
                   values, "'");
  int status = 0;
  const std::string out = Popen(cmd, &status);
  EXPECT_EQ(status, 0) << cmd << "\n" << out;
  return json::parse(out);
}

// Children of every thread of `pid` (the workers are forked by the pool's supervisor thread).
std::set<pid_t> Children(pid_t pid) {
  std::set<pid_t> out;
  const std::string tasks = absl::StrCat("/proc/", pid, "/task");
  DIR* dir = opendir(tasks.c_str());
  if (dir == nullptr) return out;
  while (dirent* e = readdir(dir)) {
    if (e->d_name[0] == '.') continue;
    const std::string text = ReadFile(absl::StrCat(tasks, "/", e->d_name, "/children"));
    for (absl::string_view s : absl::StrSplit(text, ' ', absl::SkipWhitespace())) {
      pid_t c;
      if (absl::SimpleAtoi(s, &c)) out.insert(c);
    }
  }
  closedir(dir);
  return out;
}

// Real and effective uid of a process, from /proc.
std::string Uids(pid_t pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(in, line)) {
    if (absl::StartsWith(line, "Uid:")) {
      std::vector<std::string> f = absl::StrSplit(line, '\t', absl::SkipEmpty());
      return absl::StrCat(f[1], ":", f[2]);
    }
  }
  return "";
}

// Files of a Secret volume: name -> contents.
using SecretFiles = std::map<std::string, std::string>;

// The kubelet's layout of a Secret volume at `dir` (AtomicWriter): the data in a new
// directory ..<version>, the link ..data to it replaced in one rename, and each file a link
// through ..data, so that readers see the old set or the new one. Files are mode 0440, group
// `gid` (defaultMode 0440 with the pod's fsGroup).
void WriteSecretVolume(const std::string& dir, const SecretFiles& files, int version, int gid) {
  const std::string data = absl::StrCat("..v", version);
  const std::string data_dir = absl::StrCat(dir, "/", data);
  ASSERT_EQ(mkdir(data_dir.c_str(), 0755), 0) << data_dir;
  for (const auto& [name, contents] : files) {
    const std::string path = absl::StrCat(data_dir, "/", name);
    std::ofstream(path, std::ios::binary) << contents;
    ASSERT_EQ(chown(path.c_str(), 0, gid), 0);
    ASSERT_EQ(chmod(path.c_str(), 0440), 0);
  }
  const std::string tmp = absl::StrCat(dir, "/..data_tmp");
  unlink(tmp.c_str());
  ASSERT_EQ(symlink(data.c_str(), tmp.c_str()), 0);
  ASSERT_EQ(rename(tmp.c_str(), absl::StrCat(dir, "/..data").c_str()), 0);
  for (const auto& [name, contents] : files) {
    const std::string link = absl::StrCat(dir, "/", name);
    struct stat st;
    if (lstat(link.c_str(), &st) != 0) {
      ASSERT_EQ(symlink(absl::StrCat("..data/", name).c_str(), link.c_str()), 0);
    }
  }
}

// A pod: the server in its own mount namespace, as the manifest says (see the file comment).
class Pod {
 public:
  struct Options {
    json container;
    bool mount_empty_dirs = true;            // false: the emptyDirs stay read-only directories
    std::map<std::string, std::string> set;  // flags to change (this build must know them)
    absl::Duration timeout = absl::Seconds(120);
    bool wait_serving = true;
    // Contents of the Secret volumes by mount path (e.g. "/etc/qwen/tls").
    std::map<std::string, SecretFiles> secrets;
    // How the test's client connects (TLS, a token); default plaintext.
    std::shared_ptr<grpc::ChannelCredentials> credentials;
  };

  static std::unique_ptr<Pod> Start(const Options& o, std::string* error) {
    std::unique_ptr<Pod> pod(new Pod());
    pod->c_ = o.container;
    char root[] = "/var/tmp/qwen-pod-XXXXXX";
    if (mkdtemp(root) == nullptr) {
      *error = "mkdtemp failed";
      return nullptr;
    }
    pod->root_ = root;
    chmod(root, 0755);
    const std::string& r = pod->root_;
    // The image: the program at its place, owned by root.
    RunShell(absl::StrCat("mkdir -p ", r, "/usr/local/bin && cp ", BinPath("qwen"), " ", r,
                          "/usr/local/bin/qwen && chmod 0755 ", r, "/usr/local/bin/qwen"));
    // Volumes: the model (read-only, root's), and the emptyDirs' mount points.
    std::vector<std::string> empty_dirs;
    for (const json& m : pod->c_["mounts"]) {
      const std::string path = r + m["path"].get<std::string>();
      RunShell(absl::StrCat("mkdir -p ", path));
      if (m["volume"] == "emptyDir" && !m["read_only"].get<bool>()) empty_dirs.push_back(path);
      if (m["volume"] == "secret") {
        auto it = o.secrets.find(m["path"].get<std::string>());
        if (it == o.secrets.end()) {
          *error = absl::StrCat("no contents for the Secret volume at ", m["path"].dump());
          return nullptr;
        }
        WriteSecretVolume(path, it->second, 1, pod->c_["run_as_group"].get<int>());
      }
    }
    const std::string model = pod->c_["flags"]["model"];
    RunShell(absl::StrCat("mkdir -p $(dirname ", r, model, ") && cp ",
                          DataPath("models/tiny-qwen35-q3_k_m.gguf"), " ", r, model,
                          " && chmod 0444 ", r, model, " && chmod 0555 $(dirname ", r, model, ")"));
    // Arguments: the chart's, with container paths under the root.
    std::vector<std::string> args = {"serve"};
    std::map<std::string, std::string> flags;
    for (auto& [k, v] : pod->c_["flags"].items()) flags[k] = v.get<std::string>();
    const std::set<std::string> knows = pod->c_["binary_knows"].get<std::set<std::string>>();
    flags["host"] = "127.0.0.1";
    flags["port"] = "0";
    flags["threads"] = "1";
    flags["metrics_port"] = "0";
    flags["log_format"] = "text";
    // The loopback health port, when the chart asks for one: any free port (the log says it).
    if (flags.count("health_port")) flags["health_port"] = "0";
    for (const auto& [k, v] : o.set) {
      if (!knows.count(k)) {
        *error = absl::StrCat("qwen serve does not know --", k);
        return nullptr;
      }
      flags[k] = v;
    }
    for (auto& [k, v] : flags) {
      if (absl::StartsWith(v, "/")) v = r + v;
      args.push_back(absl::StrCat("--", k, "=", v));
    }
    std::string tmpdir = pod->c_["env"]["TMPDIR"];
    tmpdir = r + tmpdir;

    // The namespace: tmpfs emptyDirs, everything else read-only, then the manifest's user.
    std::string script = "set -e\n";
    for (const std::string& d : empty_dirs) {
      if (o.mount_empty_dirs) {
        absl::StrAppend(&script, "mount -t tmpfs -o mode=0777,size=64m tmpfs ", d, "\n");
      }
    }
    std::string keep = "/proc|/proc/*|/sys|/sys/*|/dev|/dev/*";
    if (o.mount_empty_dirs) {
      for (const std::string& d : empty_dirs) absl::StrAppend(&keep, "|", d);
    }
    absl::StrAppend(&script, "for m in $(awk '{print $2}' /proc/self/mounts); do\n",
                    "  case \"$m\" in ", keep, ") ;; *) mount -o remount,bind,ro \"$m\" ",
                    "2>/dev/null || true ;; esac\ndone\n", "touch ", r,
                    "/.rw-probe 2>/dev/null && { echo 'root still writable' >&2; exit 97; }\n",
                    "cd /\n", "exec setpriv --reuid=", pod->c_["run_as_user"].get<int>(),
                    " --regid=", pod->c_["run_as_group"].get<int>(),
                    " --clear-groups --inh-caps=-all --bounding-set=-all --no-new-privs ",
                    "env -i TMPDIR=", tmpdir, " PATH=/usr/bin:/bin OPENBLAS_NUM_THREADS=1 ", r,
                    "/usr/local/bin/qwen");
    for (const std::string& a : args) absl::StrAppend(&script, " '", a, "'");
    absl::StrAppend(&script, "\n");
    pod->command_ = script;

    char log[] = "/tmp/qwen-pod-test-XXXXXX.log";
    const int fd = mkstemps(log, 4);
    pod->log_path_ = log;
    const pid_t parent = getpid();
    pod->credentials_ =
        o.credentials != nullptr ? o.credentials : grpc::InsecureChannelCredentials();
    const pid_t pid = fork();
    if (pid == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != parent) _exit(1);
      setpgid(0, 0);
      dup2(fd, STDOUT_FILENO);
      dup2(fd, STDERR_FILENO);
      close(fd);
      execl("/usr/bin/unshare", "unshare", "--mount", "--propagation", "private", "/bin/sh", "-c",
            script.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    close(fd);
    pod->pid_ = pid;
    const absl::Time deadline = absl::Now() + o.timeout;
    while (pod->port_ == 0 && absl::Now() < deadline) {
      const std::string text = pod->Log();
      const size_t at = text.find("listening on 127.0.0.1:");
      if (at != std::string::npos) {
        const size_t start = at + std::string("listening on 127.0.0.1:").size();
        size_t end = start;
        while (end < text.size() && isdigit(static_cast<unsigned char>(text[end]))) ++end;
        int port = 0;
        if (absl::SimpleAtoi(text.substr(start, end - start), &port)) pod->port_ = port;
      }
      const size_t h = text.find("health on 127.0.0.1:");
      if (h != std::string::npos && pod->health_port_ == 0) {
        const size_t start = h + std::string("health on 127.0.0.1:").size();
        size_t end = start;
        while (end < text.size() && isdigit(static_cast<unsigned char>(text[end]))) ++end;
        absl::SimpleAtoi(text.substr(start, end - start), &pod->health_port_);
      }
      if (pod->port_ == 0) {
        int status = 0;
        if (waitpid(pid, &status, WNOHANG) == pid) {
          pod->pid_ = 0;
          pod->exit_status_ = status;
          *error = absl::StrCat("qwen serve exited during start-up:\n", pod->Log());
          return pod;  // the caller may want the log and status
        }
        absl::SleepFor(absl::Milliseconds(10));
      }
    }
    if (pod->port_ == 0) {
      *error = absl::StrCat("no port reported:\n", pod->Log());
      return pod;
    }
    pod->channel_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", pod->port_), pod->credentials_);
    if (o.wait_serving && !pod->WaitHealth(Serving::SERVING, deadline - absl::Now())) {
      *error = absl::StrCat("not SERVING in time:\n", pod->Log());
    }
    return pod;
  }

  ~Pod() {
    if (pid_ > 0) Stop(absl::Seconds(30));
    if (!root_.empty()) RunShell(absl::StrCat("rm -rf ", root_));
    if (std::getenv("QWEN_KEEP_SERVER_LOGS") == nullptr && !log_path_.empty()) {
      unlink(log_path_.c_str());
    }
  }

  // SIGTERM, then waits up to `timeout` (SIGKILL to the group after it). Returns the wait
  // status, -2 after a SIGKILL.
  int Stop(absl::Duration timeout) {
    if (pid_ <= 0) return exit_status_;
    kill(pid_, SIGTERM);
    return Wait(timeout);
  }
  int Wait(absl::Duration timeout) {
    if (pid_ <= 0) return exit_status_;
    const absl::Time deadline = absl::Now() + timeout;
    int status = 0;
    while (waitpid(pid_, &status, WNOHANG) != pid_) {
      if (absl::Now() > deadline) {
        kill(-pid_, SIGKILL);
        kill(pid_, SIGKILL);
        waitpid(pid_, &status, 0);
        status = -2;
        break;
      }
      absl::SleepFor(absl::Milliseconds(10));
    }
    pid_ = 0;
    exit_status_ = status;
    return status;
  }

  pid_t pid() const { return pid_; }
  int port() const { return port_; }
  int health_port() const { return health_port_; }
  // A new channel (a new connection) to the public port with `credentials`.
  std::shared_ptr<grpc::Channel> NewChannel(
      std::shared_ptr<grpc::ChannelCredentials> credentials) const {
    grpc::ChannelArguments args;
    args.SetInt("grpc.use_local_subchannel_pool", 1);  // no connection shared across channels
    return grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", port_), credentials, args);
  }
  // Replaces the files of the Secret volume mounted at `mount_path` the way the kubelet does.
  void UpdateSecret(const std::string& mount_path, const SecretFiles& files) {
    WriteSecretVolume(root_ + mount_path, files, ++secret_version_, c_["run_as_group"].get<int>());
  }
  const json& container() const { return c_; }
  const std::string& root() const { return root_; }
  std::string Log() const { return ReadFile(log_path_); }
  std::shared_ptr<grpc::Channel> channel() const { return channel_; }
  std::unique_ptr<v1::Qwen::Stub> Stub() const { return v1::Qwen::NewStub(channel_); }

  Serving::ServingStatus Health(const std::string& service) const {
    auto stub = grpc::health::v1::Health::NewStub(channel_);
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
    grpc::health::v1::HealthCheckRequest req;
    req.set_service(service);
    grpc::health::v1::HealthCheckResponse resp;
    if (!stub->Check(&ctx, req, &resp).ok()) return Serving::UNKNOWN;
    return resp.status();
  }
  // The probes' service.
  Serving::ServingStatus Readiness() const { return Health(c_["probe_service"]); }
  bool WaitHealth(Serving::ServingStatus want, absl::Duration timeout) const {
    const absl::Time deadline = absl::Now() + timeout;
    while (absl::Now() < deadline) {
      if (Readiness() == want) return true;
      absl::SleepFor(absl::Milliseconds(20));
    }
    return false;
  }
  v1::GetModelInfoResponse Info() const {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
    v1::GetModelInfoResponse info;
    Stub()->GetModelInfo(&ctx, v1::GetModelInfoRequest(), &info);
    return info;
  }

 private:
  Pod() = default;
  static void RunShell(const std::string& cmd) {
    int status = 0;
    const std::string out = Popen(cmd + " 2>&1", &status);
    ASSERT_EQ(status, 0) << cmd << "\n" << out;
  }

  json c_;
  std::string root_;
  std::string command_;
  std::string log_path_;
  pid_t pid_ = 0;
  int exit_status_ = -1;
  int port_ = 0;
  int health_port_ = 0;
  int secret_version_ = 1;
  std::shared_ptr<grpc::ChannelCredentials> credentials_;
  std::shared_ptr<grpc::Channel> channel_;
};

v1::GenerateRequest Tokens(int n) {
  v1::GenerateRequest req;
  req.mutable_prompt_token_ids()->add_ids(42);
  req.mutable_sampling()->set_temperature(0);
  req.mutable_stopping()->set_max_tokens(n);
  req.mutable_stopping()->set_ignore_eos(true);
  req.mutable_output()->set_return_token_ids(true);
  return req;
}

class PodTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (geteuid() != 0) GTEST_SKIP() << "needs root for mount namespaces and setpriv";
  }
};

TEST_F(PodTest, ServesAsTheManifestsUserWithOnlyItsWritableVolumes) {
  std::string error;
  Pod::Options o;
  o.container = RenderContainer();
  ASSERT_TRUE(o.container["read_only_root"].get<bool>());
  auto pod = Pod::Start(o, &error);
  ASSERT_TRUE(pod != nullptr && error.empty()) << error;

  const std::string uid = std::to_string(o.container["run_as_user"].get<int>());
  EXPECT_EQ(Uids(pod->pid()), absl::StrCat(uid, ":", uid));
  const std::set<pid_t> workers = Children(pod->pid());
  EXPECT_EQ(static_cast<int>(workers.size()),
            std::stoi(o.container["flags"]["workers"].get<std::string>()));
  for (pid_t w : workers) EXPECT_EQ(Uids(w), absl::StrCat(uid, ":", uid)) << w;

  // The workers' sockets are in a private directory on the socket volume (seen through the
  // server's own mount namespace).
  const std::string socket_dir =
      absl::StrCat("/proc/", pod->pid(), "/root", pod->root(),
                   o.container["flags"]["socket_dir"].get<std::string>());
  DIR* dir = opendir(socket_dir.c_str());
  ASSERT_NE(dir, nullptr) << socket_dir;
  int private_dirs = 0;
  while (dirent* e = readdir(dir)) {
    if (!absl::StartsWith(e->d_name, "qwen-serve-")) continue;
    struct stat st;
    ASSERT_EQ(stat(absl::StrCat(socket_dir, "/", e->d_name).c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0700u);
    EXPECT_EQ(std::to_string(st.st_uid), uid);
    ++private_dirs;
  }
  closedir(dir);
  EXPECT_EQ(private_dirs, 1);

  // It serves.
  auto stub = pod->Stub();
  GenerateResult r = Generate(stub.get(), Tokens(16));
  ASSERT_TRUE(r.status.ok()) << r.status.error_message() << "\n" << pod->Log();
  EXPECT_EQ(r.token_ids.size(), 16u);
  EXPECT_EQ(pod->Readiness(), Serving::SERVING);

  const int status = pod->Stop(absl::Seconds(60));
  ASSERT_TRUE(WIFEXITED(status)) << status << "\n" << pod->Log();
  EXPECT_EQ(WEXITSTATUS(status), 0) << pod->Log();
}

TEST_F(PodTest, WithoutTheSocketVolumeItFailsClearly) {
  // The negative control of the sandbox: the same pod without its emptyDirs cannot start.
  std::string error;
  Pod::Options o;
  o.container = RenderContainer();
  o.mount_empty_dirs = false;
  o.timeout = absl::Seconds(60);
  auto pod = Pod::Start(o, &error);
  ASSERT_NE(pod, nullptr);
  EXPECT_NE(pod->Wait(absl::Seconds(30)), 0);
  EXPECT_TRUE(absl::StrContains(pod->Log(), "--socket_dir: cannot create a private directory"))
      << pod->Log();
  EXPECT_TRUE(absl::StrContains(pod->Log(), "Read-only file system")) << pod->Log();
}

TEST_F(PodTest, ReadinessIsServingOnlyWhileWorkersAreUp) {
  // The workers are stopped (SIGSTOP) as soon as they exist: the gRPC server answers, but the
  // probes' service stays NOT_SERVING until a worker is up. A worker that was up before it was
  // caught makes the attempt inconclusive; it is tried again.
  for (int attempt = 0; attempt < 5; ++attempt) {
    std::string error;
    Pod::Options o;
    o.container = RenderContainer();
    o.wait_serving = false;
    // Slow heartbeats, so that stopped workers are not restarted during the check.
    o.set = {{"heartbeat_timeout", "60s"}, {"worker_startup_timeout", "120s"}};
    // Start, and stop each worker the moment it appears.
    std::unique_ptr<Pod> pod;
    std::set<pid_t> stopped;
    std::thread catcher;
    std::atomic<pid_t> front{0};
    std::atomic<bool> done{false};
    catcher = std::thread([&] {
      while (!done.load()) {
        const pid_t p = front.load();
        if (p > 0) {
          // The server is the last exec of the sandbox's chain; its children are the workers.
          for (pid_t c : Children(p)) {
            // Only workers (after their exec): not the sandbox's own helpers.
            const std::string cmd = ReadFile(absl::StrCat("/proc/", c, "/cmdline"));
            if (!absl::StrContains(cmd, std::string("\0worker\0", 8))) continue;
            if (stopped.insert(c).second) kill(c, SIGSTOP);
          }
        }
        absl::SleepFor(absl::Microseconds(200));
      }
    });
    // The pod's pid is the server's (unshare, sh and setpriv exec in place): watch it at once.
    std::thread starter([&] { pod = Pod::Start(o, &error); });
    while (front.load() == 0) {
      // Find our child that is the pod (the only child of this process in its own group).
      for (pid_t c : Children(getpid())) {
        if (getpgid(c) == c) front.store(c);
      }
      absl::SleepFor(absl::Microseconds(100));
    }
    starter.join();
    ASSERT_TRUE(pod != nullptr && error.empty()) << error;
    const int workers = std::stoi(o.container["flags"]["workers"].get<std::string>());
    const absl::Time wait_all = absl::Now() + absl::Seconds(30);
    while (static_cast<int>(stopped.size()) < workers && absl::Now() < wait_all) {
      absl::SleepFor(absl::Milliseconds(5));
    }
    done.store(true);
    catcher.join();
    if (pod->Info().serving().live_workers() > 0 || pod->Readiness() == Serving::SERVING) {
      std::printf("attempt %d: a worker came up before it was stopped; again\n", attempt);
      continue;
    }
    // Workers frozen: the server answers, NOT_SERVING, for the whole window.
    const absl::Time until = absl::Now() + absl::Seconds(2);
    while (absl::Now() < until) {
      ASSERT_EQ(pod->Readiness(), Serving::NOT_SERVING);
      ASSERT_EQ(pod->Health(""), Serving::NOT_SERVING);
      absl::SleepFor(absl::Milliseconds(50));
    }
    // Workers released: SERVING, and whenever it says so a worker is live.
    for (pid_t w : stopped) kill(w, SIGCONT);
    ASSERT_TRUE(pod->WaitHealth(Serving::SERVING, absl::Seconds(60))) << pod->Log();
    EXPECT_GE(pod->Info().serving().live_workers(), 1u);
    EXPECT_EQ(WEXITSTATUS(pod->Stop(absl::Seconds(60))), 0);
    return;
  }
  FAIL() << "workers always came up before they could be stopped";
}

TEST_F(PodTest, SigtermDrainsRunningStreams) {
  std::string error;
  Pod::Options o;
  o.container = RenderContainer();
  auto pod = Pod::Start(o, &error);
  ASSERT_TRUE(pod != nullptr && error.empty()) << error;
  auto stub = pod->Stub();
  const int n = 2000;
  BackgroundStream stream(stub.get(), Tokens(n));
  ASSERT_TRUE(stream.WaitFirstMessage()) << pod->Log();
  if (stream.done()) std::printf("note: the stream ended before SIGTERM; drain not exercised\n");
  const absl::Time sigterm = absl::Now();
  kill(pod->pid(), SIGTERM);
  // Readiness drops at once (the Services stop sending calls), new calls are refused ...
  ASSERT_TRUE(pod->WaitHealth(Serving::NOT_SERVING, absl::Seconds(5)) ||
              pod->Readiness() == Serving::UNKNOWN);
  GenerateResult late = Generate(stub.get(), Tokens(4), absl::Seconds(10));
  EXPECT_EQ(late.status.error_code(), grpc::StatusCode::UNAVAILABLE);
  // ... and the running stream finishes whole.
  ASSERT_TRUE(stream.WaitDone(absl::Seconds(120)));
  GenerateResult r = stream.result();
  EXPECT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(static_cast<int>(r.token_ids.size()), n);
  const int status = pod->Wait(absl::Seconds(120));
  ASSERT_TRUE(WIFEXITED(status)) << pod->Log();
  EXPECT_EQ(WEXITSTATUS(status), 0);
  const int budget = o.container["termination_grace_period_seconds"].get<int>() -
                     o.container["pre_stop_sleep_seconds"].get<int>();
  EXPECT_LT(absl::Now() - sigterm, absl::Seconds(budget));
}

TEST_F(PodTest, StuckStreamsStillEndWithinTheTerminationGracePeriod) {
  // The worst case the pod's budget must cover: streams that cannot finish (their workers are
  // frozen). The server waits the chart's --grace_period, cancels them, stops the workers and
  // exits before the kubelet's SIGKILL (terminationGracePeriodSeconds after the preStop hook
  // began, which sleeps pre_stop_sleep_seconds first).
  std::string error;
  Pod::Options o;
  o.container = RenderContainer();
  o.set = {{"heartbeat_timeout", "600s"}};
  auto pod = Pod::Start(o, &error);
  ASSERT_TRUE(pod != nullptr && error.empty()) << error;
  auto stub = pod->Stub();
  BackgroundStream stream(stub.get(), Tokens(14000));
  ASSERT_TRUE(stream.WaitFirstMessage()) << pod->Log();
  for (pid_t w : Children(pod->pid())) kill(w, SIGSTOP);
  const absl::Time sigterm = absl::Now();
  kill(pod->pid(), SIGTERM);
  const int tgps = o.container["termination_grace_period_seconds"].get<int>();
  const int pre_stop = o.container["pre_stop_sleep_seconds"].get<int>();
  const int status = pod->Wait(absl::Seconds(tgps + 30));
  const absl::Duration took = absl::Now() - sigterm;
  ASSERT_TRUE(WIFEXITED(status)) << status << "\n" << pod->Log();
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_LT(took, absl::Seconds(tgps - pre_stop)) << pod->Log();
  ASSERT_TRUE(stream.WaitDone(absl::Seconds(10)));
  EXPECT_EQ(stream.result().status.error_code(), grpc::StatusCode::UNAVAILABLE);
  std::printf("stuck stream: exit %.1f s after SIGTERM (grace %s, budget %d s)\n",
              absl::ToDoubleSeconds(took),
              o.container["flags"]["grace_period"].get<std::string>().c_str(), tgps - pre_stop);
}

TEST_F(PodTest, MaxConnectionAgeSendsGoawayWhileStreamsFinish) {
  // The chart's connection age, shortened to be seen: a connection older than it is closed
  // with a GOAWAY (the client channel goes idle and reconnects on the next call), and a stream
  // running across that moment still completes.
  std::string error;
  Pod::Options o;
  o.container = RenderContainer();
  ASSERT_TRUE(o.container["flags"].contains("max_connection_age"));
  o.set = {{"max_connection_age", "1s"}};
  auto pod = Pod::Start(o, &error);
  ASSERT_TRUE(pod != nullptr && error.empty()) << error;
  auto channel = grpc::CreateChannel(absl::StrCat("127.0.0.1:", pod->port()),
                                     grpc::InsecureChannelCredentials());
  auto stub = v1::Qwen::NewStub(channel);
  const absl::Time start = absl::Now();
  GenerateResult r = Generate(stub.get(), Tokens(3000));
  const absl::Duration took = absl::Now() - start;
  ASSERT_TRUE(r.status.ok()) << r.status.error_message() << "\n" << pod->Log();
  EXPECT_EQ(r.token_ids.size(), 3000u);
  // An idle wait past the age: the server has closed the connection.
  absl::SleepFor(absl::Seconds(3));
  EXPECT_EQ(channel->GetState(false), GRPC_CHANNEL_IDLE);
  // The next call reconnects.
  GenerateResult again = Generate(stub.get(), Tokens(4));
  EXPECT_TRUE(again.status.ok()) << again.status.error_message() << "\n" << pod->Log();
  std::printf("a %.1f s stream across a 1 s connection age completed\n",
              absl::ToDoubleSeconds(took));
}

// TLS, mTLS and tokens as the chart mounts them: tests/data/tls's certificates and one token.
constexpr char kToken[] = "pod-test-token-1";
constexpr char kTlsMount[] = "/etc/qwen/tls";
constexpr char kAuthMount[] = "/etc/qwen/auth";

std::string TlsData(const std::string& name) { return ReadFile(DataPath("tls/" + name)); }

std::shared_ptr<grpc::ChannelCredentials> TlsCredentials(const std::string& ca_pem,
                                                         const std::string& token,
                                                         bool client_cert) {
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = ca_pem;
  if (client_cert) {
    ssl.pem_cert_chain = TlsData("client.pem");
    ssl.pem_private_key = TlsData("client.key");
  }
  auto creds = grpc::SslCredentials(ssl);
  if (token.empty()) return creds;
  return grpc::CompositeChannelCredentials(creds, grpc::AccessTokenCredentials(token));
}

// Runs a probe's exec command (the container's program is this build's qwen), with the health
// port the pod's log reported. Returns the exit status and prints the output.
int RunProbe(const json& probe, int health_port) {
  std::vector<std::string> cmd = probe["exec"]["command"].get<std::vector<std::string>>();
  EXPECT_EQ(cmd[0], "/usr/local/bin/qwen");
  cmd[0] = BinPath("qwen");
  EXPECT_TRUE(absl::StartsWith(cmd.back(), "127.0.0.1:")) << cmd.back();
  cmd.back() = absl::StrCat("127.0.0.1:", health_port);
  std::string line;
  for (const std::string& a : cmd) absl::StrAppend(&line, "'", a, "' ");
  int status = 0;
  const std::string out = Popen(line + "2>&1", &status);
  std::printf("probe: %s-> %d: %s", line.c_str(), status, out.c_str());
  return status;
}

// Renders the chart with TLS, mTLS and tokens that health needs too, and starts the pod with
// the test's certificates in its Secret volumes.
std::unique_ptr<Pod> StartTlsPod(std::map<std::string, std::string> set, bool client_ca,
                                 std::string* error) {
  Pod::Options o;
  o.container = RenderContainer(absl::StrCat(
      R"({"tls": {"enabled": true, "secretName": "qwen-tls", "clientCA": )",
      client_ca ? "true" : "false",
      R"(}, "auth": {"enabled": true, "secretName": "qwen-tokens", "exemptProbes": false}})"));
  EXPECT_TRUE(o.container["flags"].contains("health_port")) << o.container.dump();
  EXPECT_TRUE(o.container["readiness_probe"].contains("exec")) << o.container.dump();
  SecretFiles tls = {{"tls.crt", TlsData("server.pem")}, {"tls.key", TlsData("server.key")}};
  if (client_ca) tls["ca.crt"] = TlsData("ca.pem");
  o.secrets = {{kTlsMount, tls}, {kAuthMount, {{"tokens", absl::StrCat(kToken, "\n")}}}};
  o.credentials = TlsCredentials(TlsData("ca.pem"), kToken, client_ca);
  o.set = std::move(set);
  return Pod::Start(o, error);
}

TEST_F(PodTest, ProbesStayHealthChecksWithTls) {
  std::string error;
  auto pod = StartTlsPod({}, /*client_ca=*/true, &error);
  ASSERT_TRUE(pod != nullptr && error.empty()) << error;
  ASSERT_GT(pod->health_port(), 0) << pod->Log();
  const json& c = pod->container();
  // The public port speaks mTLS and wants a token, for health too.
  auto plain = v1::Qwen::NewStub(pod->NewChannel(grpc::InsecureChannelCredentials()));
  EXPECT_FALSE(Generate(plain.get(), Tokens(2), absl::Seconds(5)).status.ok());
  auto no_token = grpc::health::v1::Health::NewStub(
      pod->NewChannel(TlsCredentials(TlsData("ca.pem"), "", true)));
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
    grpc::health::v1::HealthCheckRequest req;
    grpc::health::v1::HealthCheckResponse resp;
    EXPECT_EQ(no_token->Check(&ctx, req, &resp).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }
  auto stub = pod->Stub();
  GenerateResult r = Generate(stub.get(), Tokens(8));
  ASSERT_TRUE(r.status.ok()) << r.status.error_message() << "\n" << pod->Log();
  // The probes' own command, as the kubelet runs it in the container: SERVING.
  EXPECT_EQ(RunProbe(c["readiness_probe"], pod->health_port()), 0) << pod->Log();
  // While the pod drains, the same command fails (readiness drops at once).
  BackgroundStream stream(stub.get(), Tokens(3000));
  ASSERT_TRUE(stream.WaitFirstMessage()) << pod->Log();
  kill(pod->pid(), SIGTERM);
  const absl::Time until = absl::Now() + absl::Seconds(10);
  int status = 0;
  while ((status = RunProbe(c["readiness_probe"], pod->health_port())) == 0 &&
         absl::Now() < until) {
    absl::SleepFor(absl::Milliseconds(100));
  }
  EXPECT_NE(status, 0) << "the probe still succeeds while the pod drains";
  if (stream.done()) std::printf("note: the stream ended before the probe saw the drain\n");
  ASSERT_TRUE(stream.WaitDone(absl::Seconds(120)));
  EXPECT_TRUE(stream.result().status.ok()) << stream.result().status.error_message();
  const int exit_status = pod->Wait(absl::Seconds(120));
  ASSERT_TRUE(WIFEXITED(exit_status)) << pod->Log();
  EXPECT_EQ(WEXITSTATUS(exit_status), 0);
}

// A second CA and a server certificate it signs (for 127.0.0.1 and localhost), made with
// openssl: what a renewal by another issuer looks like. Returns {ca, cert, key} PEMs.
std::vector<std::string> NewCertificate(const std::string& dir) {
  int status = 0;
  const std::string out = Popen(
      absl::StrCat(
          "(cd ", dir, " && ",
          "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 ",
          "-subj /CN=qwen-rotated-ca -addext basicConstraints=critical,CA:TRUE ",
          "-addext keyUsage=critical,keyCertSign,cRLSign && ",
          "openssl req -x509 -newkey rsa:2048 -nodes -keyout server.key -out server.pem -days 2 ",
          "-subj /CN=localhost -CA ca.pem -CAkey ca.key ",
          "-addext subjectAltName=DNS:localhost,IP:127.0.0.1) 2>&1"),
      &status);
  EXPECT_EQ(status, 0) << out;
  return {ReadFile(dir + "/ca.pem"), ReadFile(dir + "/server.pem"), ReadFile(dir + "/server.key")};
}

// GetModelInfo on a new connection: OK, or the failure.
grpc::Status CallOnNewConnection(const Pod& pod,
                                 std::shared_ptr<grpc::ChannelCredentials> credentials) {
  auto stub = v1::Qwen::NewStub(pod.NewChannel(credentials));
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
  v1::GetModelInfoResponse info;
  return stub->GetModelInfo(&ctx, v1::GetModelInfoRequest(), &info);
}

TEST_F(PodTest, RotatedCertificateAndTokensApplyWithoutDroppingStreams) {
  char dir[] = "/tmp/qwen-rotate-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  const std::vector<std::string> next = NewCertificate(dir);
  RunShellOk(absl::StrCat("rm -rf ", dir));
  ASSERT_FALSE(next[0].empty());

  std::string error;
  // TLS without client certificates here: a renewal changes the server's certificate.
  auto pod = StartTlsPod({{"credentials_reload_interval", "1s"}}, /*client_ca=*/false, &error);
  ASSERT_TRUE(pod != nullptr && error.empty()) << error;
  const auto old_ca = TlsCredentials(TlsData("ca.pem"), kToken, false);
  ASSERT_TRUE(CallOnNewConnection(*pod, old_ca).ok()) << pod->Log();

  // A stream on the old certificate and the old token, running across the rotation.
  auto stream_stub = v1::Qwen::NewStub(pod->NewChannel(old_ca));
  const int n = 12000;
  BackgroundStream stream(stream_stub.get(), Tokens(n));
  ASSERT_TRUE(stream.WaitFirstMessage()) << pod->Log();

  // A token file that does not parse (here: empty, as a careless update leaves it) keeps the
  // tokens the server has.
  pod->UpdateSecret(kAuthMount, {{"tokens", ""}});
  const absl::Time emptied = absl::Now();
  while (!absl::StrContains(pod->Log(), "keeping the previous tokens") &&
         absl::Now() - emptied < absl::Seconds(30)) {
    absl::SleepFor(absl::Milliseconds(100));
  }
  ASSERT_TRUE(absl::StrContains(pod->Log(), "keeping the previous tokens")) << pod->Log();
  ASSERT_TRUE(CallOnNewConnection(*pod, old_ca).ok()) << pod->Log();

  // The Secrets change as the kubelet changes them: a new certificate from another CA, and the
  // token list with the old token gone and a new one in.
  const std::string new_token = "pod-test-token-2";
  pod->UpdateSecret(kTlsMount, {{"tls.crt", next[1]}, {"tls.key", next[2]}});
  pod->UpdateSecret(kAuthMount, {{"tokens", absl::StrCat("# rotated\n", new_token, "\n")}});
  const auto new_ca = TlsCredentials(next[0], new_token, false);
  const absl::Time rotated = absl::Now();
  grpc::Status st;
  while (!(st = CallOnNewConnection(*pod, new_ca)).ok() &&
         absl::Now() - rotated < absl::Seconds(30)) {
    absl::SleepFor(absl::Milliseconds(200));
  }
  ASSERT_TRUE(st.ok()) << "the new certificate and token are not in use after 30 s: "
                       << st.error_message() << "\n"
                       << pod->Log();
  const bool stream_open = !stream.done();
  std::printf("rotation in use %.1f s after the update; stream at %d of %d tokens\n",
              absl::ToDoubleSeconds(absl::Now() - rotated), stream.tokens(), n);
  EXPECT_TRUE(stream_open) << "the stream ended before the rotation was seen: not exercised";

  // New connections get the new certificate only, and only the new token is accepted.
  EXPECT_EQ(
      CallOnNewConnection(*pod, TlsCredentials(TlsData("ca.pem"), new_token, false)).error_code(),
      grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(CallOnNewConnection(*pod, TlsCredentials(next[0], kToken, false)).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  // The stream opened before goes on to its end.
  ASSERT_TRUE(stream.WaitDone(absl::Seconds(300)));
  GenerateResult r = stream.result();
  EXPECT_TRUE(r.status.ok()) << r.status.error_message() << "\n" << pod->Log();
  EXPECT_EQ(static_cast<int>(r.token_ids.size()), n);
  const std::string log = pod->Log();
  EXPECT_TRUE(absl::StrContains(log, "--auth_tokens_file")) << log;
  EXPECT_TRUE(absl::StrContains(log, "changed: 1 tokens from now on")) << log;
  EXPECT_TRUE(absl::StrContains(log, "--tls_cert")) << log;
  EXPECT_EQ(WEXITSTATUS(pod->Stop(absl::Seconds(60))), 0);
}

}  // namespace
}  // namespace qwen::testing
