// `qwen bench-http`: the cost of the HTTP front end against gRPC on a running `qwen serve`
// (docs/performance.md, "The HTTP API's cost"): the per-token time of streams through SSE and
// through gRPC at the same concurrency, and requests per second of GET /v1/models and of a
// 1-token completion over HTTP (and of the same 1-token Generate over gRPC).
#include <atomic>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "cli/commands.h"
#include "cli/flags_util.h"
#include "grpcpp/grpcpp.h"
#include "httplib.h"
#include "nlohmann/json.hpp"
#include "qwen/v1/qwen.grpc.pb.h"

ABSL_FLAG(std::string, grpc, "127.0.0.1:50051", "The server's gRPC address.");
ABSL_FLAG(std::string, http, "127.0.0.1:8080", "The server's HTTP API address.");
ABSL_FLAG(int32_t, streams, 8, "Concurrent streams of the per-token comparison.");
ABSL_FLAG(int32_t, stream_tokens, 256, "Tokens each stream generates (ignore_eos).");
ABSL_FLAG(int32_t, rounds, 3, "Rounds of the comparison (gRPC and HTTP alternate).");
ABSL_FLAG(int32_t, clients, 8, "Concurrent keep-alive clients of the requests-per-second runs.");
ABSL_FLAG(absl::Duration, rps_duration, absl::Seconds(5),
          "Length of each requests-per-second run.");

namespace qwen::cli {
namespace {

using Json = nlohmann::json;

v1::GenerateRequest StreamRequest(int tokens, int k) {
  v1::GenerateRequest r;
  r.set_prompt(absl::StrCat("Stream ", k, " counts:"));
  r.mutable_sampling()->set_temperature(0);
  r.mutable_stopping()->set_max_tokens(static_cast<uint32_t>(tokens));
  r.mutable_stopping()->set_ignore_eos(true);
  r.set_prefix_cache(false);
  return r;
}

// Wall time of `streams` concurrent gRPC streams of `tokens` tokens each; false on an error.
bool GrpcStreams(v1::Qwen::Stub* stub, int streams, int tokens, absl::Duration* wall) {
  std::atomic<bool> ok{true};
  std::vector<std::thread> threads;
  const absl::Time t0 = absl::Now();
  for (int k = 0; k < streams; ++k) {
    threads.emplace_back([&, k] {
      grpc::ClientContext ctx;
      auto reader = stub->Generate(&ctx, StreamRequest(tokens, k));
      v1::GenerateResponse m;
      while (reader->Read(&m)) {
      }
      if (!reader->Finish().ok()) ok = false;
    });
  }
  for (auto& t : threads) t.join();
  *wall = absl::Now() - t0;
  return ok;
}

// The same through SSE (/v1/completions with stream: true).
bool HttpStreams(const std::string& host, int port, int streams, int tokens, absl::Duration* wall) {
  std::atomic<bool> ok{true};
  std::vector<std::thread> threads;
  const absl::Time t0 = absl::Now();
  for (int k = 0; k < streams; ++k) {
    threads.emplace_back([&, k] {
      httplib::Client cli(host, port);
      cli.set_read_timeout(600, 0);
      // As curl and the OpenAI SDKs do: without it the request's body waits behind Nagle's
      // algorithm for the ACK of its headers, which the server delays by 40 ms.
      cli.set_tcp_nodelay(true);
      Json body = {{"prompt", absl::StrCat("Stream ", k, " counts:")},
                   {"max_tokens", tokens},
                   {"temperature", 0},
                   {"ignore_eos", true},
                   {"stream", true}};
      httplib::Request req;
      req.method = "POST";
      req.path = "/v1/completions";
      req.body = body.dump();
      req.set_header("Content-Type", "application/json");
      std::string tail;
      bool done = false;
      req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
        tail.append(data, n);
        if (tail.find("data: [DONE]") != std::string::npos) done = true;
        if (tail.size() > 64) tail.erase(0, tail.size() - 64);
        return true;
      };
      auto res = cli.send(req);
      if (!res || res->status != 200 || !done) ok = false;
    });
  }
  for (auto& t : threads) t.join();
  *wall = absl::Now() - t0;
  return ok;
}

// Requests per second of `one` (true: success) from `clients` threads for `duration`.
template <typename Make>
double RequestsPerSecond(int clients, absl::Duration duration, Make make_client,
                         std::atomic<int>* errors) {
  std::atomic<int64_t> done{0};
  const absl::Time end = absl::Now() + duration;
  std::vector<std::thread> threads;
  const absl::Time t0 = absl::Now();
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&] {
      auto one = make_client();
      while (absl::Now() < end) {
        if (one()) {
          ++done;
        } else {
          ++*errors;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  return static_cast<double>(done.load()) / absl::ToDoubleSeconds(absl::Now() - t0);
}

}  // namespace

int RunBenchHttp(int argc, char** argv) {
  std::vector<std::string> args = ParseFlags(
      "bench-http",
      "qwen bench-http [--grpc HOST:PORT] [--http HOST:PORT] [--streams 8] ...\n\n"
      "Measures a running qwen serve (started with --http_port and at least --streams slots):\n"
      "the per-token time of concurrent streams through the HTTP API's Server-Sent Events\n"
      "against gRPC streams, and requests per second of GET /v1/models and of 1-token\n"
      "completions. Prints one JSON object.",
      // Its flags live in cli/http_bench.cc (a file named bench_* would lend them to `qwen bench`).
      argc, argv, {"http_bench"});
  if (!args.empty()) {
    std::fprintf(stderr, "qwen bench-http: unexpected argument \"%s\"\n", args[0].c_str());
    return 2;
  }
  const std::vector<std::string> http = absl::StrSplit(absl::GetFlag(FLAGS_http), ':');
  int port = 0;
  if (http.size() != 2 || !absl::SimpleAtoi(http[1], &port)) {
    std::fprintf(stderr, "qwen bench-http: --http must be HOST:PORT\n");
    return 2;
  }
  const std::string host = http[0];
  if (absl::GetFlag(FLAGS_rounds) < 1 || absl::GetFlag(FLAGS_streams) < 1 ||
      absl::GetFlag(FLAGS_stream_tokens) < 1 || absl::GetFlag(FLAGS_clients) < 1) {
    std::fprintf(stderr,
                 "qwen bench-http: --rounds, --streams, --stream_tokens and --clients "
                 "must be at least 1\n");
    return 2;
  }
  const int streams = absl::GetFlag(FLAGS_streams), tokens = absl::GetFlag(FLAGS_stream_tokens);
  auto channel = grpc::CreateChannel(absl::GetFlag(FLAGS_grpc), grpc::InsecureChannelCredentials());
  auto stub = v1::Qwen::NewStub(channel);

  Json out;
  double grpc_total = 0, http_total = 0;
  Json rounds = Json::array();
  for (int r = 0; r < absl::GetFlag(FLAGS_rounds); ++r) {
    absl::Duration g, h;
    if (!GrpcStreams(stub.get(), streams, tokens, &g) ||
        !HttpStreams(host, port, streams, tokens, &h)) {
      std::fprintf(stderr,
                   "qwen bench-http: a stream failed (is the server up, with --http_port "
                   "and at least --streams slots?)\n");
      return 1;
    }
    const double g_ms = absl::ToDoubleMilliseconds(g) / tokens;
    const double h_ms = absl::ToDoubleMilliseconds(h) / tokens;
    rounds.push_back({{"grpc_ms_per_token", g_ms}, {"http_ms_per_token", h_ms}});
    grpc_total += g_ms;
    http_total += h_ms;
  }
  out["streams"] = streams;
  out["stream_tokens"] = tokens;
  out["rounds"] = rounds;
  out["grpc_ms_per_token"] = grpc_total / rounds.size();
  out["http_ms_per_token"] = http_total / rounds.size();
  out["http_overhead_percent"] = 100.0 * (http_total - grpc_total) / grpc_total;

  const int clients = absl::GetFlag(FLAGS_clients);
  const absl::Duration duration = absl::GetFlag(FLAGS_rps_duration);
  std::atomic<int> errors{0};
  out["models_per_second"] = RequestsPerSecond(
      clients, duration,
      [&] {
        auto cli = std::make_shared<httplib::Client>(host, port);
        cli->set_keep_alive(true);
        cli->set_tcp_nodelay(true);  // see HttpStreams
        return [cli] {
          auto res = cli->Get("/v1/models");
          return res && res->status == 200;
        };
      },
      &errors);
  const std::string one_token = R"({"prompt": "Hi", "max_tokens": 1, "temperature": 0})";
  out["http_1_token_completions_per_second"] = RequestsPerSecond(
      clients, duration,
      [&] {
        auto cli = std::make_shared<httplib::Client>(host, port);
        cli->set_keep_alive(true);
        cli->set_tcp_nodelay(true);  // see HttpStreams
        return [cli, &one_token] {
          auto res = cli->Post("/v1/completions", one_token, "application/json");
          return res && res->status == 200;
        };
      },
      &errors);
  out["grpc_1_token_generates_per_second"] = RequestsPerSecond(
      clients, duration,
      [&] {
        return [&stub] {
          grpc::ClientContext ctx;
          v1::GenerateRequest r;
          r.set_prompt("Hi");
          r.mutable_sampling()->set_temperature(0);
          r.mutable_stopping()->set_max_tokens(1);
          auto reader = stub->Generate(&ctx, r);
          v1::GenerateResponse m;
          while (reader->Read(&m)) {
          }
          return reader->Finish().ok();
        };
      },
      &errors);
  out["errors"] = errors.load();
  std::printf("%s\n", out.dump(2).c_str());
  return errors.load() == 0 ? 0 : 1;
}

}  // namespace qwen::cli
