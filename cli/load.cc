// `qwen load`: a bounded load generator for qwen serve. N streaming clients send Generate
// requests back to back for a fixed time (and at most a fixed number of requests), then it
// reports errors by status, time to first token and inter-token latency percentiles, throughput
// and, with --watch_pid, the resident memory of the server and its workers over the run.
//
// Loopback only unless --allow_remote: it is a test tool, not a way to load someone else's host.
#include <dirent.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "cli/commands.h"
#include "cli/flags_util.h"
#include "grpcpp/grpcpp.h"
#include "nlohmann/json.hpp"
#include "qwen/v1/qwen.grpc.pb.h"

ABSL_FLAG(std::string, target, "127.0.0.1:50051", "The server: HOST:PORT (loopback only).");
ABSL_FLAG(bool, allow_remote, false,
          "Allow a target that is not a loopback address (127.0.0.0/8, ::1, localhost).");
ABSL_FLAG(int32_t, concurrency, 8, "Streaming clients running at once (1..256).");
ABSL_FLAG(absl::Duration, duration, absl::Seconds(60),
          "How long to send requests (at most 24h); requests running at the end finish.");
ABSL_FLAG(int64_t, max_requests, 1000000, "Requests to send at most, all clients together.");
ABSL_FLAG(absl::Duration, warmup, absl::Seconds(10),
          "Memory is compared with its level this long after the start (allocators and caches "
          "settle first); latencies of this period are kept.");
ABSL_FLAG(int32_t, tokens_per_request, 32, "Tokens each request generates (ignore_eos is set).");
ABSL_FLAG(std::string, prompt_text, "Write a short story about a lighthouse keeper.",
          "Prompt text; each request appends its client and sequence number.");
ABSL_FLAG(absl::Duration, deadline, absl::Seconds(120), "Deadline of each request.");
ABSL_FLAG(std::string, auth_token_file, "", "Send the bearer token in this file's first line.");
ABSL_FLAG(int32_t, watch_pid, 0,
          "The server's pid: sample the resident memory of it and its child processes.");
ABSL_FLAG(double, max_rss_growth_mib, 0,
          "Fail (exit 1) when the watched resident memory grew more than this many MiB from the "
          "end of the warm-up to the end of the run (0: report only).");
ABSL_FLAG(std::string, report, "", "Also write the JSON report to this file.");

namespace qwen::cli {
namespace {

bool IsLoopback(const std::string& target) {
  std::string host = target;
  if (absl::StartsWith(host, "dns:///")) host = host.substr(7);
  if (absl::StartsWith(host, "ipv4:") || absl::StartsWith(host, "ipv6:")) host = host.substr(5);
  if (absl::StartsWith(host, "unix:")) return true;
  if (!host.empty() && host[0] == '[') {
    const size_t close = host.find(']');
    host = close == std::string::npos ? host : host.substr(1, close - 1);
  } else {
    const size_t colon = host.rfind(':');
    if (colon != std::string::npos && host.find(':') == colon) host = host.substr(0, colon);
  }
  if (host == "localhost" || host == "::1") return true;
  std::vector<std::string> parts = absl::StrSplit(host, '.');
  int first = 0;
  return parts.size() == 4 && absl::SimpleAtoi(parts[0], &first) && first == 127;
}

// Resident memory in KiB of `pid` and, recursively, its children.
int64_t TreeRssKib(int pid) {
  int64_t total = 0;
  std::ifstream status(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(status, line)) {
    if (absl::StartsWith(line, "VmRSS:")) {
      int64_t kib = 0;
      std::istringstream(line.substr(6)) >> kib;
      total += kib;
    }
  }
  const std::string task_dir = absl::StrCat("/proc/", pid, "/task");
  if (DIR* d = opendir(task_dir.c_str())) {
    while (dirent* e = readdir(d)) {
      if (e->d_name[0] == '.') continue;
      std::ifstream children(absl::StrCat(task_dir, "/", e->d_name, "/children"));
      int child;
      while (children >> child) total += TreeRssKib(child);
    }
    closedir(d);
  }
  return total;
}

double Percentile(std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t k = std::min(v.size() - 1, static_cast<size_t>(std::ceil(p * v.size())) - 1);
  return v[std::max<size_t>(k, 0)];
}

struct Totals {
  std::mutex mu;
  int64_t ok = 0;
  int64_t tokens = 0;
  std::map<std::string, int64_t> errors;  // status code name -> count
  std::vector<std::string> error_samples;
  std::vector<double> ttft_ms;
  std::vector<double> itl_ms;
};

const char* CodeName(grpc::StatusCode c) {
  switch (c) {
    case grpc::StatusCode::CANCELLED:
      return "CANCELLED";
    case grpc::StatusCode::UNKNOWN:
      return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::UNAVAILABLE:
      return "UNAVAILABLE";
    case grpc::StatusCode::UNAUTHENTICATED:
      return "UNAUTHENTICATED";
    case grpc::StatusCode::INTERNAL:
      return "INTERNAL";
    default:
      return "OTHER";
  }
}

}  // namespace

int RunLoad(int argc, char** argv) {
  std::vector<std::string> args = ParseFlags(
      "load",
      "qwen load [--target 127.0.0.1:50051] [--concurrency 8] [--duration 60s] ...\n\n"
      "Drives a qwen serve with N concurrent streaming Generate clients for a bounded time and\n"
      "number of requests; reports errors, time to first token, inter-token latency and memory.\n"
      "Exits 1 on any error (or memory growth over --max_rss_growth_mib).",
      argc, argv);
  if (!args.empty()) {
    std::fprintf(stderr, "qwen load: unexpected argument \"%s\"\n", args[0].c_str());
    return 2;
  }
  const std::string target = absl::GetFlag(FLAGS_target);
  if (!IsLoopback(target) && !absl::GetFlag(FLAGS_allow_remote)) {
    std::fprintf(stderr,
                 "qwen load: %s is not a loopback address; pass --allow_remote to load it\n",
                 target.c_str());
    return 2;
  }
  const int concurrency = absl::GetFlag(FLAGS_concurrency);
  const absl::Duration duration = absl::GetFlag(FLAGS_duration);
  const int64_t max_requests = absl::GetFlag(FLAGS_max_requests);
  if (concurrency < 1 || concurrency > 256 || duration <= absl::ZeroDuration() ||
      duration > absl::Hours(24) || max_requests < 1) {
    std::fprintf(stderr,
                 "qwen load: --concurrency must be in [1, 256], --duration in (0, 24h], "
                 "--max_requests >= 1\n");
    return 2;
  }
  std::string token;
  if (!absl::GetFlag(FLAGS_auth_token_file).empty()) {
    std::ifstream in(absl::GetFlag(FLAGS_auth_token_file));
    std::getline(in, token);
    if (token.empty()) {
      std::fprintf(stderr, "qwen load: no token in --auth_token_file\n");
      return 2;
    }
  }

  auto channel = grpc::CreateChannel(target, grpc::InsecureChannelCredentials());
  if (!channel->WaitForConnected(absl::ToChronoTime(absl::Now() + absl::Seconds(10)))) {
    std::fprintf(stderr, "qwen load: cannot connect to %s\n", target.c_str());
    return 1;
  }
  auto stub = qwen::v1::Qwen::NewStub(channel);
  const int pid = absl::GetFlag(FLAGS_watch_pid);
  const absl::Time start = absl::Now();
  const absl::Time stop_at = start + duration;
  const absl::Time warm_at = start + std::min(absl::GetFlag(FLAGS_warmup), duration / 2);
  std::atomic<int64_t> issued{0};
  std::atomic<bool> done{false};
  Totals totals;

  // Memory samples once a second.
  std::vector<std::pair<double, int64_t>> rss;  // (seconds since start, KiB)
  int64_t rss_warm = -1;
  std::thread sampler([&] {
    while (!done.load()) {
      if (pid > 0) {
        const int64_t kib = TreeRssKib(pid);
        const double t = absl::ToDoubleSeconds(absl::Now() - start);
        std::lock_guard<std::mutex> lock(totals.mu);
        rss.emplace_back(t, kib);
        if (rss_warm < 0 && absl::Now() >= warm_at) rss_warm = kib;
      }
      for (int i = 0; i < 10 && !done.load(); ++i) absl::SleepFor(absl::Milliseconds(100));
    }
  });

  std::vector<std::thread> clients;
  for (int c = 0; c < concurrency; ++c) {
    clients.emplace_back([&, c] {
      for (int64_t seq = 0;; ++seq) {
        if (absl::Now() >= stop_at || issued.fetch_add(1) >= max_requests) return;
        qwen::v1::GenerateRequest req;
        req.set_prompt(
            absl::StrCat(absl::GetFlag(FLAGS_prompt_text), " (client ", c, ", request ", seq, ")"));
        req.set_request_id(absl::StrCat("load-", c, "-", seq));
        req.mutable_sampling()->set_temperature(0.8f);
        req.mutable_sampling()->set_seed(static_cast<uint64_t>(c) * 1000003 + seq);
        req.mutable_stopping()->set_max_tokens(absl::GetFlag(FLAGS_tokens_per_request));
        req.mutable_stopping()->set_ignore_eos(true);
        req.mutable_output()->set_return_token_ids(true);
        grpc::ClientContext ctx;
        ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::GetFlag(FLAGS_deadline)));
        if (!token.empty()) ctx.AddMetadata("authorization", absl::StrCat("Bearer ", token));
        const absl::Time t0 = absl::Now();
        absl::Time last = t0;
        bool first = true;
        std::vector<double> ttft, itl;
        int64_t tokens = 0;
        auto reader = stub->Generate(&ctx, req);
        qwen::v1::GenerateResponse m;
        while (reader->Read(&m)) {
          const int n = m.token_ids_size();
          if (n == 0) continue;
          const absl::Time now = absl::Now();
          if (first) {
            ttft.push_back(absl::ToDoubleMilliseconds(now - t0));
            first = false;
            for (int k = 1; k < n; ++k) itl.push_back(0);
          } else {
            // Several tokens in one message arrived together: the gap is spread over them.
            const double gap = absl::ToDoubleMilliseconds(now - last) / n;
            for (int k = 0; k < n; ++k) itl.push_back(gap);
          }
          tokens += n;
          last = now;
        }
        const grpc::Status st = reader->Finish();
        std::lock_guard<std::mutex> lock(totals.mu);
        totals.tokens += tokens;
        if (st.ok()) {
          ++totals.ok;
          totals.ttft_ms.insert(totals.ttft_ms.end(), ttft.begin(), ttft.end());
          totals.itl_ms.insert(totals.itl_ms.end(), itl.begin(), itl.end());
        } else {
          ++totals.errors[CodeName(st.error_code())];
          if (totals.error_samples.size() < 5) {
            totals.error_samples.push_back(absl::StrCat(
                req.request_id(), ": ", CodeName(st.error_code()), ": ", st.error_message()));
          }
        }
      }
    });
  }
  for (auto& t : clients) t.join();
  const absl::Duration elapsed = absl::Now() - start;
  done.store(true);
  sampler.join();

  int64_t errors = 0;
  for (const auto& [code, n] : totals.errors) errors += n;
  nlohmann::ordered_json report;
  report["target"] = target;
  report["concurrency"] = concurrency;
  report["seconds"] = absl::ToDoubleSeconds(elapsed);
  report["requests_ok"] = totals.ok;
  report["errors"] = errors;
  report["errors_by_status"] = totals.errors;
  report["error_samples"] = totals.error_samples;
  report["tokens"] = totals.tokens;
  report["tokens_per_second"] = totals.tokens / absl::ToDoubleSeconds(elapsed);
  report["ttft_ms"] = {{"p50", Percentile(totals.ttft_ms, 0.50)},
                       {"p99", Percentile(totals.ttft_ms, 0.99)},
                       {"max", Percentile(totals.ttft_ms, 1.0)}};
  report["itl_ms"] = {{"p50", Percentile(totals.itl_ms, 0.50)},
                      {"p99", Percentile(totals.itl_ms, 0.99)},
                      {"max", Percentile(totals.itl_ms, 1.0)}};
  bool memory_ok = true;
  if (pid > 0 && !rss.empty()) {
    int64_t peak = 0;
    for (const auto& [t, kib] : rss) peak = std::max(peak, kib);
    const int64_t warm = rss_warm >= 0 ? rss_warm : rss.front().second;
    const double growth = (rss.back().second - warm) / 1024.0;
    report["rss_mib"] = {{"start", rss.front().second / 1024.0},
                         {"after_warmup", warm / 1024.0},
                         {"end", rss.back().second / 1024.0},
                         {"peak", peak / 1024.0},
                         {"growth_after_warmup", growth}};
    const double limit = absl::GetFlag(FLAGS_max_rss_growth_mib);
    memory_ok = limit <= 0 || growth <= limit;
    report["rss_ok"] = memory_ok;
  }
  const std::string text = report.dump(2);
  std::printf("%s\n", text.c_str());
  if (!absl::GetFlag(FLAGS_report).empty()) {
    std::ofstream out(absl::GetFlag(FLAGS_report));
    out << text << "\n";
  }
  std::printf(
      "load: %lld requests ok, %lld errors, ttft p50 %.1f ms p99 %.1f ms, itl p50 %.2f "
      "ms p99 %.2f ms, %.1f tokens/s\n",
      static_cast<long long>(totals.ok), static_cast<long long>(errors),
      report["ttft_ms"]["p50"].get<double>(), report["ttft_ms"]["p99"].get<double>(),
      report["itl_ms"]["p50"].get<double>(), report["itl_ms"]["p99"].get<double>(),
      report["tokens_per_second"].get<double>());
  return errors == 0 && totals.ok > 0 && memory_ok ? 0 : 1;
}

}  // namespace qwen::cli
