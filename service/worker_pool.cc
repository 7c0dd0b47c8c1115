#include "service/worker_pool.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <iterator>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "service/log.h"
#include "service/worker_server.h"

extern char** environ;

namespace qwen::service {
namespace {

namespace wpb = ::qwen::worker::v1;

constexpr char kComponent[] = "pool";
constexpr absl::Duration kTick = absl::Milliseconds(20);
constexpr absl::Duration kStartupProbeEvery = absl::Milliseconds(100);
constexpr absl::Duration kStartupProbeDeadline = absl::Seconds(1);
// A worker that stayed up this long starts its back-off over when it dies.
constexpr absl::Duration kStableUptime = absl::Seconds(60);

std::string DescribeExit(int status) {
  if (WIFEXITED(status) && WEXITSTATUS(status) == kExitOutOfMemory) {
    return absl::StrCat("exited with status ", kExitOutOfMemory,
                        " (out of memory: over --worker_memory_limit)");
  }
  if (WIFEXITED(status)) return absl::StrCat("exited with status ", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    return absl::StrCat("was killed by signal ", WTERMSIG(status), " (",
                        strsignal(WTERMSIG(status)), ")");
  }
  return absl::StrCat("ended (wait status ", status, ")");
}

// The environment of a worker: ours, with OpenBLAS held to one thread (the engine's own pool
// owns the cores).
std::vector<std::string> WorkerEnvironment() {
  std::vector<std::string> env;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    if (absl::StartsWith(*e, "OPENBLAS_NUM_THREADS=")) continue;
    env.emplace_back(*e);
  }
  env.emplace_back("OPENBLAS_NUM_THREADS=1");
  return env;
}

std::vector<char*> Pointers(std::vector<std::string>& strings) {
  std::vector<char*> out;
  for (std::string& s : strings) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

struct ProbeCall {
  grpc::ClientContext ctx;
  wpb::HealthRequest req;
  wpb::HealthResponse resp;
};

}  // namespace

absl::StatusOr<std::unique_ptr<WorkerPool>> WorkerPool::Start(
    WorkerPoolOptions options, Dispatcher* dispatcher,
    std::function<void(int live_workers)> on_live_change) {
  if (options.workers < 1) return absl::InvalidArgumentError("--workers must be at least 1");
  if (options.slots < 1) return absl::InvalidArgumentError("--slots must be at least 1");
  std::string parent = options.socket_dir;
  if (parent.empty()) {
    const char* tmp = getenv("TMPDIR");
    parent = tmp != nullptr && *tmp != '\0' ? tmp : "/tmp";
  }
  std::string templ = absl::StrCat(parent, "/qwen-serve-XXXXXX");
  if (mkdtemp(templ.data()) == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(
        "--socket_dir: cannot create a private directory in ", parent, ": ", strerror(errno)));
  }
  // mkdtemp makes it 0700: only this user can reach the workers' sockets.
  std::unique_ptr<WorkerPool> pool(
      new WorkerPool(std::move(options), dispatcher, std::move(on_live_change)));
  pool->dir_ = templ;
  {
    absl::MutexLock lock(&pool->mu_);
    pool->workers_.resize(pool->options_.workers);
    for (int k = 0; k < pool->options_.workers; ++k) {
      Worker& w = pool->workers_[k];
      w.index = k;
      w.socket = absl::StrCat(templ, "/worker-", k, ".sock");
      w.backoff = pool->options_.restart_backoff_min;
      w.restart_at = absl::Now();
      if (w.socket.size() >= sizeof(sockaddr_un{}.sun_path)) {
        rmdir(templ.c_str());
        return absl::InvalidArgumentError(
            absl::StrCat("--socket_dir: the socket path ", w.socket, " is longer than ",
                         sizeof(sockaddr_un{}.sun_path) - 1, " bytes; choose a shorter directory"));
      }
    }
  }
  pool->supervisor_ = std::thread([p = pool.get()] { p->Supervise(); });
  return pool;
}

WorkerPool::WorkerPool(WorkerPoolOptions options, Dispatcher* dispatcher,
                       std::function<void(int)> on_live_change)
    : options_(std::move(options)),
      dispatcher_(dispatcher),
      on_live_change_(std::move(on_live_change)) {}

WorkerPool::~WorkerPool() { Stop(absl::Seconds(5)); }

std::shared_ptr<wpb::Worker::Stub> WorkerPool::Stub(WorkerRef worker) const {
  absl::MutexLock lock(&mu_);
  if (worker.index < 0 || worker.index >= static_cast<int>(workers_.size())) return nullptr;
  const Worker& w = workers_[worker.index];
  if (w.epoch != worker.epoch || w.state != State::kUp) return nullptr;
  return w.stub;
}

void WorkerPool::ReportFailure(WorkerRef worker) {
  absl::MutexLock lock(&mu_);
  if (worker.index < 0 || worker.index >= static_cast<int>(workers_.size())) return;
  Worker& w = workers_[worker.index];
  if (w.epoch == worker.epoch) w.check_now = true;
}

int WorkerPool::LiveLocked() const {
  return static_cast<int>(std::count_if(workers_.begin(), workers_.end(),
                                        [](const Worker& w) { return w.state == State::kUp; }));
}

int WorkerPool::live() const {
  absl::MutexLock lock(&mu_);
  return LiveLocked();
}

std::vector<WorkerInfo> WorkerPool::Workers() const {
  absl::MutexLock lock(&mu_);
  std::vector<WorkerInfo> out;
  for (const Worker& w : workers_) {
    WorkerInfo info;
    info.index = w.index;
    info.pid = w.pid;
    info.restarts = w.restarts;
    switch (w.state) {
      case State::kBackoff:
        info.state = "restarting";
        break;
      case State::kStarting:
        info.state = "starting";
        break;
      case State::kUp:
        info.state = "up";
        break;
      case State::kStopped:
        info.state = "stopped";
        break;
    }
    out.push_back(std::move(info));
  }
  return out;
}

absl::Status WorkerPool::SpawnLocked(Worker& w) {
  unlink(w.socket.c_str());  // a socket left by the previous incarnation
  std::vector<std::string> args = {
      "qwen",
      "worker",
      absl::StrCat("--model=", options_.model_path),
      absl::StrCat("--socket=", w.socket),
      absl::StrCat("--index=", w.index),
      absl::StrCat("--slots=", options_.slots),
      absl::StrCat("--threads=", options_.threads),
      absl::StrCat("--ctx_size=", options_.ctx_size),
      absl::StrCat("--kv_type=", model::KvTypeName(options_.kv_type)),
      absl::StrCat("--prefill_chunk=", options_.prefill_chunk),
      absl::StrCat("--max_draft=", options_.max_draft),
      absl::StrCat("--mtp_draft_vocab=", options_.mtp_draft_vocab),
      absl::StrCat("--prefix_cache_mb=", options_.prefix_cache_mb),
      absl::StrCat("--snapshot_interval=", options_.snapshot_interval),
      absl::StrCat("--packed_dir=", options_.packed_dir),
      absl::StrCat("--parent_pid=", getpid()),
      absl::StrCat("--log_level=", LogLevelName(GetLogLevel())),
      absl::StrCat("--log_format=", LogFormatName(GetLogFormat())),
  };
  if (!options_.mmproj_path.empty()) {
    args.push_back(absl::StrCat("--mmproj=", options_.mmproj_path));
    args.push_back(absl::StrCat("--image_min_pixels=", options_.image_min_pixels));
    args.push_back(absl::StrCat("--image_max_pixels=", options_.image_max_pixels));
    args.push_back(absl::StrCat("--vision_cache_mb=", options_.vision_cache_mb));
    if (options_.testing_video_pair_delay > absl::ZeroDuration()) {
      args.push_back(absl::StrCat("--testing_video_pair_delay=",
                                  absl::FormatDuration(options_.testing_video_pair_delay)));
    }
  }
  if (options_.allow_forced_tokens) args.push_back("--testing_allow_forced_tokens");
  if (options_.allow_fault_injection) args.push_back("--testing_allow_fault_injection");
  rlimit memory_limit;
  memory_limit.rlim_cur = memory_limit.rlim_max =
      options_.memory_limit_bytes > 0 ? static_cast<rlim_t>(options_.memory_limit_bytes)
                                      : RLIM_INFINITY;
  std::vector<std::string> env = WorkerEnvironment();
  std::vector<char*> argv = Pointers(args);
  std::vector<char*> envp = Pointers(env);
  const char* exe = options_.exe.c_str();

  const pid_t pid = fork();
  if (pid < 0) return absl::ResourceExhaustedError(absl::StrCat("fork: ", strerror(errno)));
  if (pid == 0) {
    // Child: only async-signal-safe calls until exec. Signals the front end blocks (it takes
    // them with sigwait) must reach the worker, and no descriptor of the front end (its
    // listening socket, client connections) may leak into it.
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    signal(SIGPIPE, SIG_DFL);
    // Its own process group: a terminal's Ctrl-C (sent to the whole foreground group) must
    // reach only the front end, which then drains the streams before it stops the workers.
    setpgid(0, 0);
    if (memory_limit.rlim_cur != RLIM_INFINITY && setrlimit(RLIMIT_DATA, &memory_limit) != 0) {
      _exit(126);
    }
    close_range(3, ~0U, 0);
    execve(exe, argv.data(), envp.data());
    _exit(127);
  }
  ++w.epoch;
  w.pid = pid;
  w.spawned = absl::Now();
  w.state = State::kStarting;
  w.next_probe = w.spawned + absl::Milliseconds(50);
  // A probe of the previous incarnation may still be in flight; its answer is ignored (the
  // epoch differs), so it must not hold up this one's probes.
  w.probe_in_flight = false;
  w.probe_done = false;
  w.check_now = false;
  w.progress_seen = -1;
  RetireChannelLocked(w);
  grpc::ChannelArguments ch;
  ch.SetMaxReceiveMessageSize(64 << 20);
  // The socket appears only once the worker has loaded the model; retry the connection often
  // rather than backing off for the default minutes.
  ch.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  ch.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
  ch.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  // One channel per incarnation: a fresh one never carries state of the dead process.
  ch.SetInt("qwen.worker_epoch", static_cast<int>(w.epoch));
  w.channel = grpc::CreateCustomChannel(absl::StrCat("unix:", w.socket),
                                        grpc::InsecureChannelCredentials(), ch);
  w.stub = wpb::Worker::NewStub(w.channel);
  LogInfo(kComponent, absl::StrCat("worker ", w.index, " started (pid ", pid, ")"),
          {{"event", "worker_started"}, {"worker", w.index}, {"worker_pid", pid}});
  return absl::OkStatus();
}

void WorkerPool::RetireChannelLocked(Worker& w) {
  w.stub.reset();
  if (w.channel != nullptr) retired_channels_.push_back(std::move(w.channel));
}

void WorkerPool::Supervise() {
  int last_live = -1;
  while (true) {
    std::vector<std::function<void()>> actions;          // run once the lock is released
    std::vector<std::shared_ptr<grpc::Channel>> unused;  // released once the lock is
    bool stopping = false;
    absl::Duration grace;
    {
      absl::MutexLock lock(&mu_);
      stopping = stop_requested_;
      grace = stop_grace_;
      const absl::Time now = absl::Now();
      // A use count of 1 is our reference alone: no call can take a new one (the stub is gone).
      auto first_unused = std::partition(retired_channels_.begin(), retired_channels_.end(),
                                         [](const auto& c) { return c.use_count() > 1; });
      std::move(first_unused, retired_channels_.end(), std::back_inserter(unused));
      retired_channels_.erase(first_unused, retired_channels_.end());
      for (Worker& w : workers_) {
        if (stopping) break;
        // Reap first: a dead worker is not probed.
        if (w.pid > 0) {
          int status = 0;
          const pid_t r = waitpid(w.pid, &status, WNOHANG);
          if (r == w.pid || (r < 0 && errno == ECHILD)) {
            const bool was_up = w.state == State::kUp;
            if (was_up && now - w.up_since >= kStableUptime) {
              w.backoff = options_.restart_backoff_min;
            }
            LogWarning(kComponent,
                       absl::StrCat("worker ", w.index, " (pid ", w.pid, ") ",
                                    r == w.pid ? DescribeExit(status) : "vanished",
                                    "; restarting in ", absl::FormatDuration(w.backoff)),
                       {{"event", "worker_exited"},
                        {"worker", w.index},
                        {"worker_pid", w.pid},
                        {"exit", r == w.pid ? DescribeExit(status) : "vanished"},
                        {"restart_in_ms", absl::ToInt64Milliseconds(w.backoff)}});
            w.pid = 0;
            RetireChannelLocked(w);
            w.state = State::kBackoff;
            w.restart_at = now + w.backoff;
            w.backoff = std::min(w.backoff * 2, options_.restart_backoff_max);
            ++w.restarts;
            if (was_up) actions.push_back([this, k = w.index] { dispatcher_->WorkerDown(k); });
            continue;
          }
        }
        auto probe = [&](absl::Duration deadline) {
          w.probe_in_flight = true;
          ++probes_in_flight_;
          auto call = std::make_shared<ProbeCall>();
          call->ctx.set_deadline(absl::ToChronoTime(now + deadline));
          actions.push_back([this, call, stub = w.stub, k = w.index, epoch = w.epoch] {
            stub->async()->Health(&call->ctx, &call->req, &call->resp,
                                  [this, call, k, epoch](grpc::Status s) {
                                    // Before the count drops: the pool outlives this call.
                                    if (s.ok() && options_.on_health) {
                                      options_.on_health(k, epoch, call->resp);
                                    }
                                    absl::MutexLock lock(&mu_);
                                    --probes_in_flight_;
                                    Worker& w = workers_[k];
                                    if (w.epoch != epoch) return;
                                    w.probe_in_flight = false;
                                    w.probe_done = true;
                                    w.probe_ok = s.ok();
                                    w.probe_error = s.error_message();
                                    w.probe_progress = call->resp.layers_done();
                                    w.probe_busy = call->resp.active() + call->resp.queued() > 0;
                                  });
          });
        };
        switch (w.state) {
          case State::kBackoff:
            if (now >= w.restart_at) {
              absl::Status st = SpawnLocked(w);
              if (!st.ok()) {
                LogError(kComponent, absl::StrCat("worker ", w.index, ": ", st.message()),
                         {{"event", "worker_spawn_failed"}, {"worker", w.index}});
                w.restart_at = now + w.backoff;
                w.backoff = std::min(w.backoff * 2, options_.restart_backoff_max);
              }
            }
            break;
          case State::kStarting:
            if (w.probe_done) {
              w.probe_done = false;
              if (w.probe_ok) {
                w.state = State::kUp;
                w.up_since = now;
                w.progress_seen = w.probe_progress;
                w.progress_at = now;
                w.next_probe = now + options_.heartbeat_interval;
                LogInfo(kComponent,
                        absl::StrCat("worker ", w.index, " (pid ", w.pid, ") is up after ",
                                     absl::FormatDuration(
                                         absl::Trunc(now - w.spawned, absl::Milliseconds(1)))),
                        {{"event", "worker_up"},
                         {"worker", w.index},
                         {"worker_pid", w.pid},
                         {"startup_ms", absl::ToInt64Milliseconds(now - w.spawned)}});
                actions.push_back([this, k = w.index, epoch = w.epoch] {
                  dispatcher_->WorkerUp(k, epoch, options_.slots);
                });
                break;
              }
            }
            if (now - w.spawned > options_.startup_timeout) {
              LogError(
                  kComponent,
                  absl::StrCat("worker ", w.index, " (pid ", w.pid, ") did not come up within ",
                               absl::FormatDuration(options_.startup_timeout), "; killing it"),
                  {{"event", "worker_startup_timeout"},
                   {"worker", w.index},
                   {"worker_pid", w.pid}});
              kill(w.pid, SIGKILL);
              w.spawned = absl::InfiniteFuture();  // reaped next tick; do not kill again
            } else if (!w.probe_in_flight && now >= w.next_probe &&
                       access(w.socket.c_str(), F_OK) == 0) {
              probe(kStartupProbeDeadline);
              w.next_probe = now + kStartupProbeEvery;
            }
            break;
          case State::kUp:
            if (w.probe_done) {
              w.probe_done = false;
              // A worker whose engine has work must show progress: its count of layer passes
              // grows (within a long step too, so a slow prefill chunk is not a wedge).
              bool stalled = false;
              if (w.probe_ok) {
                if (!w.probe_busy || w.probe_progress != w.progress_seen) {
                  w.progress_seen = w.probe_progress;
                  w.progress_at = now;
                } else if (now - w.progress_at > options_.heartbeat_timeout) {
                  stalled = true;
                  w.probe_error = absl::StrCat("its engine has work but made no progress for ",
                                               absl::FormatDuration(absl::Trunc(
                                                   now - w.progress_at, absl::Milliseconds(1))));
                }
              }
              if (!w.probe_ok || stalled) {
                LogError(kComponent,
                         absl::StrCat("worker ", w.index, " (pid ", w.pid,
                                      ") failed its heartbeat (", w.probe_error, "); killing it"),
                         {{"event", "worker_wedged"},
                          {"worker", w.index},
                          {"worker_pid", w.pid},
                          {"error", w.probe_error}});
                kill(w.pid, SIGKILL);
                // Out of the dispatcher now; the reaping above restarts it.
                w.state = State::kStarting;
                w.spawned = absl::InfiniteFuture();
                w.probe_in_flight = true;  // no more probes of this incarnation
                actions.push_back([this, k = w.index] { dispatcher_->WorkerDown(k); });
                break;
              }
            }
            if (!w.probe_in_flight && (w.check_now || now >= w.next_probe)) {
              probe(options_.heartbeat_timeout);
              w.next_probe = now + options_.heartbeat_interval;
            }
            w.check_now = false;
            break;
          case State::kStopped:
            break;
        }
      }
    }
    if (stopping) {
      {
        absl::MutexLock lock(&mu_);
        StopAllLocked(grace);
      }
      for (int k = 0; k < options_.workers; ++k) dispatcher_->WorkerDown(k);
      if (last_live != 0 && on_live_change_) on_live_change_(0);
      return;
    }
    for (auto& a : actions) a();
    int live_now;
    {
      absl::MutexLock lock(&mu_);
      live_now = LiveLocked();
    }
    if (live_now != last_live) {
      last_live = live_now;
      if (on_live_change_) on_live_change_(live_now);
    }
    absl::MutexLock lock(&mu_);
    auto wake = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      if (stop_requested_) return true;
      for (const Worker& w : workers_) {
        if (w.check_now || w.probe_done) return true;
      }
      return false;
    };
    mu_.AwaitWithTimeout(absl::Condition(&wake), kTick);
  }
}

void WorkerPool::StopAllLocked(absl::Duration grace) {
  // The lock is dropped while waiting so that Stub() and Workers() callers are not held up.
  std::vector<pid_t> pids;
  for (Worker& w : workers_) {
    if (w.pid > 0) {
      kill(w.pid, SIGTERM);
      pids.push_back(w.pid);
    }
    w.state = State::kStopped;
    RetireChannelLocked(w);
  }
  mu_.Unlock();
  const absl::Time deadline = absl::Now() + grace;
  auto reap = [&pids] {
    for (pid_t& p : pids) {
      if (p <= 0) continue;
      const pid_t r = waitpid(p, nullptr, WNOHANG);
      if (r == p || (r < 0 && errno == ECHILD)) p = 0;
    }
    return std::all_of(pids.begin(), pids.end(), [](pid_t p) { return p == 0; });
  };
  while (!reap() && absl::Now() < deadline) absl::SleepFor(kTick);
  for (pid_t p : pids) {
    if (p > 0) {
      LogWarning(kComponent, absl::StrCat("worker pid ", p, " did not stop in time; killing it"));
      kill(p, SIGKILL);
      waitpid(p, nullptr, 0);
    }
  }
  mu_.Lock();
  for (Worker& w : workers_) {
    w.pid = 0;
    unlink(w.socket.c_str());
  }
  rmdir(dir_.c_str());
  // Health calls to the dead workers fail at once; their callbacks touch this object.
  auto no_probes = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return probes_in_flight_ == 0; };
  mu_.AwaitWithTimeout(absl::Condition(&no_probes), absl::Seconds(30));
  // Calls to the dead workers (health probes, generations the front end cancelled) end at once;
  // their ClientContexts are destroyed just after their callbacks, on gRPC's threads. Wait for
  // that, so that this thread drops the channels last (see retired_channels_).
  std::vector<std::shared_ptr<grpc::Channel>> channels = std::move(retired_channels_);
  retired_channels_.clear();
  mu_.Unlock();
  const absl::Time channels_deadline = absl::Now() + absl::Seconds(10);
  auto unused = [&channels] {
    return std::all_of(channels.begin(), channels.end(),
                       [](const auto& c) { return c.use_count() == 1; });
  };
  while (!unused() && absl::Now() < channels_deadline) absl::SleepFor(absl::Milliseconds(2));
  if (!unused()) {
    // A call still holds one: releasing ours could make that call's thread the last holder.
    // Keep them for the life of the process instead.
    LogWarning(kComponent, "calls to the workers are still running; their channels stay open");
    auto* kept = new std::vector<std::shared_ptr<grpc::Channel>>(std::move(channels));
    (void)kept;
  }
  channels.clear();
  mu_.Lock();
  LogInfo(kComponent, "workers stopped");
}

void WorkerPool::Stop(absl::Duration grace) {
  {
    absl::MutexLock lock(&mu_);
    if (stopped_) return;
    stopped_ = true;
    stop_requested_ = true;
    stop_grace_ = grace;
  }
  if (supervisor_.joinable()) supervisor_.join();
}

}  // namespace qwen::service
