// `qwen bench`: speed and memory of the engine on one model file, with llama.cpp side by side.
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/notification.h"
#include "cli/commands.h"
#include "cli/common_flags.h"
#include "cli/flags_util.h"
#include "inference/common/cpu_features.h"
#include "inference/common/status_macros.h"
#include "inference/common/thread_pool.h"
#include "inference/engine/engine.h"
#include "inference/gguf/gguf_file.h"
#include "inference/grammar/spec.h"
#include "inference/model/model.h"
#include "inference/tokenizer/tokenizer.h"
#include "nlohmann/json.hpp"

ABSL_FLAG(int32_t, repeats, 3, "Repetitions of each measurement (median and spread reported).");
ABSL_FLAG(int32_t, prompt_tokens, 512, "Prompt length of the prefill and TTFT measurements.");
ABSL_FLAG(int32_t, decode_tokens, 128, "Tokens of the single-sequence decode measurement.");
ABSL_FLAG(std::string, parallel, "1,4,8", "Sequence counts of the aggregate decode measurement.");
ABSL_FLAG(int32_t, parallel_steps, 32, "Decode steps of each aggregate measurement.");
ABSL_FLAG(std::string, long_prompts, "",
          "Extra prefill lengths to measure once each, e.g. 8192,32768 (slow).");
ABSL_FLAG(std::string, memory_workers, "1,4",
          "Worker process counts of the memory measurement (empty: skip).");
ABSL_FLAG(std::string, only, "",
          "Comma-separated subset of: load,prefill,decode,parallel,ttft,long,memory,structured "
          "(structured runs only when named).");
ABSL_FLAG(int32_t, structured_tokens, 256,
          "Tokens per pass of the structured-output measurement (decode with and without a JSON "
          "schema).");
ABSL_FLAG(bool, memory_probe, false, "Internal: run as one memory-measurement worker.");
ABSL_FLAG(int32_t, probe_ctx, 4096, "Context of each memory-measurement worker's sequence.");

namespace qwen::cli {
namespace {

using Clock = std::chrono::steady_clock;
double Since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

struct Stat {
  std::vector<double> v;
  double Median() const {
    std::vector<double> s = v;
    std::sort(s.begin(), s.end());
    if (s.empty()) return 0;
    return s.size() % 2 ? s[s.size() / 2] : 0.5 * (s[s.size() / 2 - 1] + s[s.size() / 2]);
  }
  double Min() const { return v.empty() ? 0 : *std::min_element(v.begin(), v.end()); }
  double Max() const { return v.empty() ? 0 : *std::max_element(v.begin(), v.end()); }
};

struct Row {
  std::string name;
  std::string unit;
  Stat stat;
};

std::vector<int32_t> RandomTokens(int64_t n, int64_t vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  // Stay in the first 100k ids: real text, not padding.
  std::uniform_int_distribution<int32_t> d(
      0, static_cast<int32_t>(std::min<int64_t>(vocab, 100000)) - 1);
  std::vector<int32_t> t(n);
  for (auto& x : t) x = d(rng);
  return t;
}

std::vector<int> ParseInts(const std::string& s) {
  std::vector<int> out;
  for (absl::string_view p : absl::StrSplit(s, ',', absl::SkipWhitespace())) {
    int v;
    if (absl::SimpleAtoi(p, &v)) out.push_back(v);
  }
  return out;
}

struct Bench {
  std::shared_ptr<model::Model> model;
  std::unique_ptr<ThreadPool> pool;
  std::unique_ptr<ops::ComputeContext> ctx;
  int threads;
};

// Prefill of one prompt of n tokens in one forward pass (chunks of 512 beyond that).
double PrefillSeconds(Bench& b, int64_t n, uint32_t seed) {
  const auto tokens = RandomTokens(n, b.model->config().n_vocab, seed);
  auto state = b.model->NewState(n + 16);
  std::vector<float> logits(b.model->config().n_vocab);
  const auto t0 = Clock::now();
  for (int64_t p = 0; p < n; p += 512) {
    const int64_t len = std::min<int64_t>(512, n - p);
    model::Segment seg{state->get(), absl::MakeConstSpan(tokens.data() + p, len),
                       p + len == n ? model::Logits::kLast : model::Logits::kNone};
    if (!b.model->Forward(*b.ctx, {seg}, logits.data()).ok()) return NAN;
  }
  return Since(t0);
}

// B sequences with short prompts, then `steps` decode steps of all of them at once.
double DecodeSeconds(Bench& b, int n_seq, int steps) {
  const int64_t V = b.model->config().n_vocab;
  std::vector<std::unique_ptr<model::SequenceState>> states;
  std::vector<int32_t> last(n_seq);
  std::vector<float> logits(n_seq * V);
  for (int s = 0; s < n_seq; ++s) {
    states.push_back(std::move(*b.model->NewState(64 + steps)));
    const auto prompt = RandomTokens(16, V, 100 + s);
    model::Segment seg{states.back().get(), absl::MakeConstSpan(prompt), model::Logits::kLast};
    (void)b.model->Forward(*b.ctx, {seg}, logits.data());
    last[s] =
        static_cast<int32_t>(std::max_element(logits.begin(), logits.begin() + V) - logits.begin());
  }
  const auto t0 = Clock::now();
  for (int i = 0; i < steps; ++i) {
    std::vector<model::Segment> segs;
    for (int s = 0; s < n_seq; ++s) {
      segs.push_back({states[s].get(), absl::MakeConstSpan(&last[s], 1), model::Logits::kLast});
    }
    if (!b.model->Forward(*b.ctx, segs, logits.data()).ok()) return NAN;
    for (int s = 0; s < n_seq; ++s) {
      const float* row = logits.data() + s * V;
      last[s] = static_cast<int32_t>(std::max_element(row, row + V) - row);
    }
  }
  return Since(t0);
}

class TtftSink : public engine::RequestSink {
 public:
  void OnToken(const engine::TokenOutput&) override {
    if (!first_.HasBeenNotified()) first_.Notify();
  }
  void OnFinish(const engine::FinishInfo& info) override {
    info_ = info;
    done_.Notify();
  }
  absl::Notification first_, done_;
  engine::FinishInfo info_;
};

// Time to first token of an n-token prompt, alone or while `busy` other sequences decode.
double TtftSeconds(Bench& b, engine::Engine& e, int64_t n, int busy, uint32_t seed) {
  const int64_t V = b.model->config().n_vocab;
  std::vector<std::shared_ptr<TtftSink>> others;
  for (int i = 0; i < busy; ++i) {
    engine::GenerationRequest r;
    r.id = 1000 + i;
    r.prompt = RandomTokens(16, V, seed + 10 + i);
    r.max_tokens = 100000;
    r.max_tokens = static_cast<int32_t>(e.options().n_ctx - 32);
    r.sampling.temperature = 0;
    others.push_back(std::make_shared<TtftSink>());
    (void)e.Submit(r, others.back());
  }
  for (auto& o : others) o->first_.WaitForNotification();
  engine::GenerationRequest r;
  r.id = 1;
  r.prompt = RandomTokens(n, V, seed);
  r.max_tokens = 1;
  r.sampling.temperature = 0;
  auto sink = std::make_shared<TtftSink>();
  const auto t0 = Clock::now();
  (void)e.Submit(r, sink);
  sink->first_.WaitForNotification();
  const double t = Since(t0);
  sink->done_.WaitForNotification();
  for (int i = 0; i < busy; ++i) e.Cancel(1000 + i);
  for (auto& o : others) o->done_.WaitForNotification();
  return t;
}

struct MemoryReport {
  double rss_mib = 0, pss_mib = 0, private_mib = 0;
};

MemoryReport ReadSmaps(pid_t pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/smaps_rollup"));
  std::string line;
  MemoryReport m;
  while (std::getline(in, line)) {
    std::vector<std::string> f = absl::StrSplit(line, ' ', absl::SkipWhitespace());
    if (f.size() < 2) continue;
    double kb = 0;
    if (!absl::SimpleAtod(f[1], &kb)) continue;
    if (f[0] == "Rss:") m.rss_mib = kb / 1024;
    if (f[0] == "Pss:") m.pss_mib = kb / 1024;
    // Private_Dirty: memory the process wrote itself (state, scratch, heap). Private_Clean would
    // also count file pages no other process maps at the moment, i.e. the weights of a lone
    // worker, which are shared the moment a second worker maps the file.
    if (f[0] == "Private_Dirty:") m.private_mib += kb / 1024;
  }
  return m;
}

// Starts n probe processes (this program with --memory_probe), each loading the model, running
// a short prompt and waiting; reads their memory while all are alive.
std::vector<MemoryReport> MeasureWorkers(const std::string& model_path, int n, int threads) {
  struct Child {
    pid_t pid;
    int to_child, from_child;
  };
  std::vector<Child> children;
  for (int i = 0; i < n; ++i) {
    int up[2], down[2];
    // Close-on-exec, so that no probe inherits another probe's pipe (it would never see EOF).
    if (pipe2(up, O_CLOEXEC) != 0 || pipe2(down, O_CLOEXEC) != 0) break;
    const pid_t pid = fork();
    if (pid == 0) {
      dup2(down[0], 0);
      dup2(up[1], 1);
      close(up[0]);
      close(down[1]);
      const std::string model_flag = "--model=" + model_path;
      const std::string threads_flag = absl::StrCat("--threads=", threads);
      const std::string ctx_flag = absl::StrCat("--probe_ctx=", absl::GetFlag(FLAGS_probe_ctx));
      execl("/proc/self/exe", "qwen", "bench", "--memory_probe", model_flag.c_str(),
            threads_flag.c_str(), ctx_flag.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    close(up[1]);
    close(down[0]);
    children.push_back({pid, down[1], up[0]});
  }
  for (const Child& c : children) {  // wait for "ready"
    char buf[16];
    (void)!read(c.from_child, buf, sizeof(buf));
  }
  std::vector<MemoryReport> out;
  for (const Child& c : children) out.push_back(ReadSmaps(c.pid));
  for (const Child& c : children) {
    close(c.to_child);
    close(c.from_child);
    waitpid(c.pid, nullptr, 0);
  }
  return out;
}

int MemoryProbe() {
  auto file = gguf::GgufFile::Open(absl::GetFlag(FLAGS_model));
  if (!file.ok()) return 2;
  auto model = model::Model::Load(std::shared_ptr<const gguf::GgufFile>(std::move(*file)));
  if (!model.ok()) return 2;
  ThreadPool pool(std::max(1, absl::GetFlag(FLAGS_threads)));
  ops::ComputeContext ctx(&pool, ops::MathMode::kFast);
  auto state = (*model)->NewState(absl::GetFlag(FLAGS_probe_ctx));
  const auto prompt = RandomTokens(64, (*model)->config().n_vocab, 5);
  std::vector<float> logits((*model)->config().n_vocab);
  model::Segment seg{state->get(), absl::MakeConstSpan(prompt), model::Logits::kLast};
  (void)(*model)->Forward(ctx, {seg}, logits.data());
  std::printf("ready\n");
  std::fflush(stdout);
  char c;
  while (read(0, &c, 1) > 0) {
  }
  return 0;
}

bool Wanted(const std::string& what) {
  const std::string only = absl::GetFlag(FLAGS_only);
  if (only.empty()) {
    if (what == "structured") return false;
    return what != "long" || !absl::GetFlag(FLAGS_long_prompts).empty();
  }
  for (absl::string_view p : absl::StrSplit(only, ',')) {
    if (p == what) return true;
  }
  return false;
}

}  // namespace

// A moderately complex schema: nested objects, an array of objects, enums, bounded numbers,
// a pattern, a format, anyOf with null and a $ref.
constexpr char kBenchSchema[] = R"({
  "$defs": {"item": {"type": "object", "properties": {
      "sku": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{4}$"},
      "quantity": {"type": "integer", "minimum": 1, "maximum": 100},
      "price": {"type": "number", "minimum": 0, "maximum": 10000},
      "gift": {"type": "boolean"}},
    "required": ["sku", "quantity", "price"]}},
  "type": "object",
  "properties": {
    "order_id": {"type": "string", "maxLength": 12},
    "customer": {"type": "object", "properties": {
        "name": {"type": "string", "maxLength": 24},
        "email": {"type": "string", "format": "email"},
        "tier": {"enum": ["free", "pro", "enterprise"]}},
      "required": ["name", "tier"]},
    "items": {"type": "array", "items": {"$ref": "#/$defs/item"}, "minItems": 1, "maxItems": 4},
    "status": {"enum": ["pending", "shipped", "delivered", "cancelled"]},
    "created": {"type": "string", "format": "date"},
    "note": {"anyOf": [{"type": "null"}, {"type": "string", "maxLength": 32}]}},
  "required": ["order_id", "customer", "items", "status"]
})";

struct StructuredResult {
  double step_s = 0;              // decode step, unconstrained (fastest pass)
  double step_median_s = 0;       // and the median pass
  double cold_s = 0;              // constraint time per token, first pass (empty mask caches)
  double warm_s = 0;              // constraint time per token, later passes
  double compile_s = 0;           // schema -> grammar -> prepared for the vocabulary
  double constrained_step_s = 0;  // decode step with the constraint (end to end)
  int64_t values = 0;             // complete JSON values produced
};

// Decode step time with and without the JSON schema above, and the constraint's own time per
// token (mask computation, the masked sampling, the matcher's advance), measured in the engine.
absl::StatusOr<StructuredResult> MeasureStructured(Bench& b, int tokens, int repeats) {
  const int64_t V = b.model->config().n_vocab;
  ASSIGN_OR_RETURN(std::unique_ptr<tokenizer::Tokenizer> tok,
                   tokenizer::Tokenizer::FromGguf(b.model->file()));
  StructuredResult out;
  const auto t0 = Clock::now();
  grammar::GrammarCache cache(grammar::TokenTableFromTokenizer(*tok, static_cast<int32_t>(V)));
  grammar::ConstraintSpec spec;
  spec.text = kBenchSchema;
  ASSIGN_OR_RETURN(std::shared_ptr<grammar::CompiledGrammar> g, cache.Get(spec));
  out.compile_s = Since(t0);

  engine::EngineOptions o;
  o.n_slots = 1;
  o.n_ctx = 64 + tokens + 8;  // prompt of 16
  o.n_threads = b.threads;
  ASSIGN_OR_RETURN(std::unique_ptr<engine::Engine> e, engine::Engine::Create(b.model, o));
  uint64_t id = 1;
  auto run = [&](bool constrained, int max_tokens, uint32_t seed) {
    engine::GenerationRequest r;
    r.id = id++;
    r.prompt = RandomTokens(16, V, seed);
    r.max_tokens = max_tokens;
    r.sampling.seed = seed;
    if (constrained) {
      r.grammar = g;
      r.stop_tokens = tok->end_of_generation_ids();
    }
    auto sink = std::make_shared<TtftSink>();
    (void)e->Submit(r, sink);
    sink->done_.WaitForNotification();
    return sink->info_;
  };
  // Passes alternate, so that both see the same load on a shared machine: an unconstrained
  // one (the step time), then a constrained one of `tokens` tokens (several values when they
  // finish early). The first constrained pass runs with cold caches.
  Stat step, warm, csteps;
  for (int pass = 0; pass <= repeats; ++pass) {
    const engine::FinishInfo u = run(false, tokens, 11 + pass);
    if (u.generated_tokens > 1) {
      step.v.push_back(absl::ToDoubleSeconds(u.decode_time) / (u.generated_tokens - 1));
    }
    int64_t n = 0;
    double ctime = 0, dtime = 0;
    int64_t dsteps = 0;
    uint32_t seed = 100 + pass * 1000;
    while (n < tokens) {
      const engine::FinishInfo f = run(true, tokens - static_cast<int>(n), seed++);
      n += f.generated_tokens;
      ctime += absl::ToDoubleSeconds(f.constraint_time);
      dtime += absl::ToDoubleSeconds(f.decode_time);
      dsteps += std::max(0, f.generated_tokens - 1);
      if (f.reason == engine::FinishReason::kStopToken) ++out.values;
    }
    if (pass == 0) {
      out.cold_s = ctime / n;
    } else {
      warm.v.push_back(ctime / n);
    }
    if (dsteps > 0) csteps.v.push_back(dtime / dsteps);
  }
  // The fastest step: the ratio is then an upper bound.
  out.step_s = step.Min();
  out.step_median_s = step.Median();
  out.warm_s = warm.Median();
  out.constrained_step_s = csteps.Median();
  return out;
}

int RunBench(int argc, char** argv) {
  std::vector<std::string> args = ParseFlags(
      "bench",
      "qwen bench --model FILE [--json]: prefill, decode, batched decode, time to first token, "
      "start-up time and memory, each repeated (median and spread).",
      argc, argv);
  if (absl::GetFlag(FLAGS_memory_probe)) return MemoryProbe();
  const std::string path = absl::GetFlag(FLAGS_model);
  if (path.empty()) {
    std::fprintf(stderr, "usage: qwen bench --model FILE [--json]\n");
    return 2;
  }
  const int repeats = std::max(1, absl::GetFlag(FLAGS_repeats));
  const int64_t prompt_n = absl::GetFlag(FLAGS_prompt_tokens);
  std::vector<Row> rows;
  Bench b;
  b.threads = absl::GetFlag(FLAGS_threads) > 0 ? absl::GetFlag(FLAGS_threads) : AvailableCores();

  Row load{"start to ready (load model, first token)", "s", {}};
  uint64_t load_file_size = 0;
  for (int r = 0; r < repeats; ++r) {
    const auto t0 = Clock::now();
    auto file = gguf::GgufFile::Open(path);
    if (!file.ok()) {
      std::fprintf(stderr, "qwen bench: %s\n", std::string(file.status().message()).c_str());
      return 2;
    }
    auto model = model::Model::Load(std::shared_ptr<const gguf::GgufFile>(std::move(*file)));
    if (!model.ok()) {
      std::fprintf(stderr, "qwen bench: %s\n", std::string(model.status().message()).c_str());
      return 2;
    }
    b.model = std::move(*model);
    load_file_size = b.model->file().file_size();
    b.pool = std::make_unique<ThreadPool>(b.threads);
    b.ctx = std::make_unique<ops::ComputeContext>(b.pool.get(), ops::MathMode::kFast);
    auto state = b.model->NewState(64);
    std::vector<float> logits(b.model->config().n_vocab);
    int32_t tok = 1;
    model::Segment seg{state->get(), absl::MakeConstSpan(&tok, 1), model::Logits::kLast};
    (void)b.model->Forward(*b.ctx, {seg}, logits.data());
    load.stat.v.push_back(Since(t0));
  }
  if (Wanted("load")) rows.push_back(load);

  if (Wanted("prefill")) {
    Row row{absl::StrCat("prefill, ", prompt_n, "-token prompt"), "tok/s", {}};
    for (int r = 0; r < repeats; ++r)
      row.stat.v.push_back(prompt_n / PrefillSeconds(b, prompt_n, r));
    rows.push_back(row);
  }
  if (Wanted("decode")) {
    const int n = absl::GetFlag(FLAGS_decode_tokens);
    Row row{absl::StrCat("decode, 1 sequence, ", n, " tokens"), "tok/s", {}};
    for (int r = 0; r < repeats; ++r) row.stat.v.push_back(n / DecodeSeconds(b, 1, n));
    rows.push_back(row);
  }
  if (Wanted("parallel")) {
    const int steps = absl::GetFlag(FLAGS_parallel_steps);
    for (int p : ParseInts(absl::GetFlag(FLAGS_parallel))) {
      Row row{absl::StrCat("decode aggregate, ", p, " sequences"), "tok/s", {}};
      for (int r = 0; r < repeats; ++r)
        row.stat.v.push_back(p * steps / DecodeSeconds(b, p, steps));
      rows.push_back(row);
    }
  }
  if (Wanted("ttft")) {
    engine::EngineOptions o;
    o.n_slots = 5;
    o.n_ctx = std::max<int64_t>(prompt_n + 64, 1024);
    o.n_threads = b.threads;
    o.prefill_chunk = 512;
    auto e = engine::Engine::Create(b.model, o);
    if (e.ok()) {
      Row alone{absl::StrCat("TTFT, ", prompt_n, "-token prompt, alone"), "s", {}};
      Row busy{absl::StrCat("TTFT, ", prompt_n, "-token prompt, 4 sequences decoding"), "s", {}};
      for (int r = 0; r < repeats; ++r) {
        alone.stat.v.push_back(TtftSeconds(b, **e, prompt_n, 0, 7 + r));
        busy.stat.v.push_back(TtftSeconds(b, **e, prompt_n, 4, 7 + r));
      }
      Row ratio{"TTFT ratio, busy / alone", "x", {}};
      ratio.stat.v.push_back(busy.stat.Median() / alone.stat.Median());
      rows.push_back(alone);
      rows.push_back(busy);
      rows.push_back(ratio);
    }
  }
  if (Wanted("long")) {
    for (int n : ParseInts(absl::GetFlag(FLAGS_long_prompts))) {
      Row row{absl::StrCat("prefill, ", n, "-token prompt"), "tok/s", {}};
      row.stat.v.push_back(n / PrefillSeconds(b, n, 3));
      rows.push_back(row);
    }
  }
  if (Wanted("memory")) {
    const model::StateSize size = model::SequenceState::SizeFor(
        b.model->config(), absl::GetFlag(FLAGS_probe_ctx), model::KvType::kF16);
    // The measuring process lets go of its own mapping first: PSS divides shared pages among
    // every process that maps them, and only the workers should count.
    b.ctx.reset();
    b.pool.reset();
    b.model.reset();
    for (int n : ParseInts(absl::GetFlag(FLAGS_memory_workers))) {
      std::vector<MemoryReport> m = MeasureWorkers(path, n, std::max(1, b.threads / n));
      Row rss{absl::StrCat("memory, ", n, " worker(s): RSS per worker"), "MiB", {}};
      Row pss{absl::StrCat("memory, ", n, " worker(s): PSS per worker"), "MiB", {}};
      Row priv{absl::StrCat("memory, ", n, " worker(s): private dirty per worker"), "MiB", {}};
      Row total{absl::StrCat("memory, ", n, " worker(s): total PSS"), "MiB", {}};
      double sum = 0;
      for (const MemoryReport& r : m) {
        rss.stat.v.push_back(r.rss_mib);
        pss.stat.v.push_back(r.pss_mib);
        priv.stat.v.push_back(r.private_mib);
        sum += r.pss_mib;
      }
      total.stat.v.push_back(sum);
      rows.push_back(rss);
      rows.push_back(pss);
      rows.push_back(priv);
      rows.push_back(total);
    }
    Row state{absl::StrCat("per-sequence state (", absl::GetFlag(FLAGS_probe_ctx),
                           "-token context, F16 KV)"),
              "MiB",
              {}};
    state.stat.v.push_back(size.resident_bytes(absl::GetFlag(FLAGS_probe_ctx)) / 1048576.0);
    rows.push_back(state);
  }

  if (Wanted("structured")) {
    absl::StatusOr<StructuredResult> st =
        MeasureStructured(b, absl::GetFlag(FLAGS_structured_tokens), repeats);
    if (!st.ok()) {
      std::fprintf(stderr, "qwen bench: structured: %s\n",
                   std::string(st.status().message()).c_str());
      return 2;
    }
    auto row = [&](std::string name, std::string unit, double v) {
      rows.push_back({std::move(name), std::move(unit), {{v}}});
    };
    row("structured: compile JSON schema for the vocabulary", "ms", st->compile_s * 1e3);
    row("structured: decode step, unconstrained (fastest pass)", "ms", st->step_s * 1e3);
    row("structured: decode step, unconstrained (median pass)", "ms", st->step_median_s * 1e3);
    row("structured: decode step, JSON schema (end to end)", "ms", st->constrained_step_s * 1e3);
    row("structured: constraint time per token, cold caches", "ms", st->cold_s * 1e3);
    row("structured: constraint time per token, warm", "ms", st->warm_s * 1e3);
    row("structured: constraint / fastest decode step, cold", "%", 100 * st->cold_s / st->step_s);
    row("structured: constraint / fastest decode step, warm", "%", 100 * st->warm_s / st->step_s);
    row("structured: JSON values completed", "count", static_cast<double>(st->values));
  }

  const uint64_t model_bytes = load_file_size;
  if (absl::GetFlag(FLAGS_json)) {
    nlohmann::ordered_json out;
    out["model"] = path;
    out["model_bytes"] = model_bytes;
    out["threads"] = b.threads;
    out["isa"] = std::string(IsaName(ActiveIsa()));
    out["repeats"] = repeats;
    nlohmann::ordered_json results = nlohmann::ordered_json::array();
    for (const Row& r : rows) {
      results.push_back({{"name", r.name},
                         {"unit", r.unit},
                         {"median", r.stat.Median()},
                         {"min", r.stat.Min()},
                         {"max", r.stat.Max()},
                         {"samples", r.stat.v}});
    }
    out["results"] = results;
    std::printf("%s\n", out.dump(2).c_str());
  } else {
    std::printf("model: %s (%.1f MiB), %d threads, kernels: %s, %d repeat(s)\n", path.c_str(),
                model_bytes / 1048576.0, b.threads, std::string(IsaName(ActiveIsa())).c_str(),
                repeats);
    std::printf("%-55s %12s %12s %12s  %s\n", "measure", "median", "min", "max", "unit");
    for (const Row& r : rows) {
      std::printf("%-55s %12.3f %12.3f %12.3f  %s\n", r.name.c_str(), r.stat.Median(), r.stat.Min(),
                  r.stat.Max(), r.unit.c_str());
    }
  }
  return 0;
}

}  // namespace qwen::cli
