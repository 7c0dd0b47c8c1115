#include "cli/serve_config.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/reflection.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "inference/common/thread_pool.h"
#include "inference/engine/speculative_mode.h"
#include "inference/model/state.h"
#include "inference/multimodal/image_prompt.h"
#include "nlohmann/json.hpp"
#include "service/prefix_cache_budget.h"
#include "service/text_model.h"

ABSL_FLAG(bool, check_config, false,
          "Validate the command line and exit without serving: every flag, the socket directory "
          "(writable, when it exists here) and, when --model names a file that exists here, that "
          "it is a GGUF of architecture qwen35. Prints the effective configuration and the memory "
          "it needs (--json for JSON). Exit status 0 when valid, 2 when not.");

namespace qwen::cli {
namespace {

// Flags that say nothing about the server's configuration.
constexpr const char* kNotConfiguration[] = {"check_config", "json"};

bool IsServeFlag(const absl::CommandLineFlag& flag) {
  const std::string file = flag.Filename();
  if (absl::StrContains(file, "cli/serve")) return true;
  for (const std::string& f : ServeFlagFiles()) {
    if (absl::StrContains(file, absl::StrCat("cli/", f))) return true;
  }
  return false;
}

std::string GiB(int64_t bytes) {
  return absl::StrFormat("%.2f GiB", static_cast<double>(bytes) / (1 << 30));
}

absl::Status Positive(absl::string_view flag, absl::Duration d) {
  if (d <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat("--", flag, " must be positive"));
  }
  return absl::OkStatus();
}

absl::Status NotNegative(absl::string_view flag, absl::Duration d) {
  if (d < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat("--", flag, " must not be negative"));
  }
  return absl::OkStatus();
}

absl::Status InRange(absl::string_view flag, int64_t v, int64_t lo, int64_t hi) {
  if (v < lo || v > hi) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, " must be in [", lo, ", ", hi, "], not ", v));
  }
  return absl::OkStatus();
}

}  // namespace

MemoryEstimate EstimateMemory(const model::ModelConfig& config, int64_t file_bytes,
                              const service::FrontEndOptions& options) {
  const model::KvType kv = options.pool.kv_type;
  const model::StateSize s = model::SequenceState::SizeFor(config, options.pool.ctx_size, kv);
  MemoryEstimate m;
  m.weights_bytes = file_bytes;
  m.packed_bytes = options.pool.packed_dir.empty() ? 0 : file_bytes;
  // A slot that drafts keeps its verify checkpoints (and the MTP head's rows put aside) with
  // its state: up to --max_draft of them, allocated at its first speculative step.
  m.state_bytes_per_slot = static_cast<int64_t>(s.recurrent_bytes + s.conv_bytes +
                                                s.speculative_bytes(options.pool.max_draft));
  m.kv_bytes_per_token = static_cast<int64_t>(s.kv_bytes_per_token);
  m.ctx_size = options.pool.ctx_size;
  m.workers = options.pool.workers;
  m.slots = options.pool.slots;
  m.prefix_cache_bytes = options.pool.prefix_cache_mb << 20;
  return m;
}

absl::Status ValidateServeOptions(const service::FrontEndOptions& o) {
  const service::WorkerPoolOptions& p = o.pool;
  std::vector<absl::Status> checks = {
      InRange("workers", p.workers, 1, 256),
      InRange("slots", p.slots, 1, 1024),
      InRange("threads", p.threads, 0, 4096),
      InRange("ctx_size", p.ctx_size, 2, int64_t{1} << 24),
      InRange("prefill_chunk", p.prefill_chunk, 1, int64_t{1} << 16),
      InRange("max_draft", p.max_draft, 0, engine::kMaxDraftTokens),
      InRange("mtp_draft_vocab", p.mtp_draft_vocab, 0, int64_t{1} << 31),
      InRange("prefix_cache_mb", p.prefix_cache_mb, service::kAutoPrefixCacheMb, int64_t{1} << 30),
      InRange("snapshot_interval", p.snapshot_interval, 1, int64_t{1} << 24),
      InRange("vision_cache_mb", p.vision_cache_mb, 0, int64_t{1} << 30),
      InRange("port", o.port, 0, 65535),
      InRange("metrics_port", o.metrics_port, 0, 65535),
      InRange("queue_size", o.queue_size, 0, 1 << 20),
      InRange("default_max_tokens", o.limits.default_max_tokens, 1, int64_t{1} << 24),
      InRange("max_retries", o.max_retries, 0, 100),
      NotNegative("grace_period", o.grace_period),
      Positive("heartbeat_interval", p.heartbeat_interval),
      Positive("heartbeat_timeout", p.heartbeat_timeout),
      Positive("worker_startup_timeout", p.startup_timeout),
      Positive("restart_backoff_min", p.restart_backoff_min),
      NotNegative("max_connection_age", o.max_connection_age),
      NotNegative("max_connection_age_grace", o.max_connection_age_grace),
      NotNegative("testing_video_pair_delay", p.testing_video_pair_delay),
  };
  for (const absl::Status& s : checks) {
    if (!s.ok()) return s;
  }
  if (p.restart_backoff_max < p.restart_backoff_min) {
    return absl::InvalidArgumentError(
        "--restart_backoff_max must be at least --restart_backoff_min");
  }
  if (o.host.empty()) return absl::InvalidArgumentError("--host must not be empty");
  if (p.image_min_pixels < 1 || p.image_max_pixels < p.image_min_pixels) {
    return absl::InvalidArgumentError(
        "--image_min_pixels must be positive and at most --image_max_pixels");
  }
  // Video input: the defaults within the maxima, and limits that let some video through.
  const video::VideoSettings& v = o.video;
  if (!(v.defaults.fps > 0) || !(v.defaults.fps <= v.max_fps) || !std::isfinite(v.max_fps)) {
    return absl::InvalidArgumentError(
        "--video_fps must be positive and at most --video_max_fps (finite)");
  }
  if (absl::Status s = InRange("video_max_frames", v.defaults.max_frames, 1, 1 << 16); !s.ok()) {
    return s;
  }
  if (v.defaults.min_pixels < 1 || v.defaults.max_pixels < v.defaults.min_pixels) {
    return absl::InvalidArgumentError(
        "--video_min_pixels must be positive and at most --video_max_pixels");
  }
  if (v.limits.max_bytes < 1 || !(v.limits.max_duration_seconds > 0) ||
      v.limits.max_frame_pixels < 1 || v.limits.max_frames < 1) {
    return absl::InvalidArgumentError(
        "--video_max_bytes, --video_max_duration, --video_max_frame_pixels and "
        "--video_max_source_frames must be positive");
  }
  // The security and limit flags, as the front end checks them before serving.
  return service::ValidateFrontEndOptions(o);
}

int CheckServeConfig(const service::FrontEndOptions& o, bool json,
                     const absl::Status& flag_status) {
  std::vector<std::string> errors;
  std::vector<std::string> notes;
  nlohmann::json out = nlohmann::json::object();

  if (!flag_status.ok()) errors.emplace_back(flag_status.message());
  if (absl::Status s = ValidateServeOptions(o); !s.ok()) errors.emplace_back(s.message());

  // Every flag `qwen serve` takes, as it is in effect.
  nlohmann::json flags = nlohmann::json::object();
  std::map<std::string, std::string> sorted;
  for (const auto& [name, flag] : absl::GetAllFlags()) {
    if (flag->IsRetired() || !IsServeFlag(*flag)) continue;
    if (std::find(std::begin(kNotConfiguration), std::end(kNotConfiguration), name) !=
        std::end(kNotConfiguration)) {
      continue;
    }
    sorted[std::string(name)] = flag->CurrentValue();
  }
  for (const auto& [name, value] : sorted) flags[name] = value;
  out["flags"] = flags;

  // Values the server derives from the flags and the environment.
  nlohmann::json effective = nlohmann::json::object();
  effective["threads_per_worker"] = o.pool.threads;
  std::string socket_parent = o.pool.socket_dir;
  std::string socket_source = "--socket_dir";
  if (socket_parent.empty()) {
    const char* tmp = std::getenv("TMPDIR");
    socket_parent = tmp != nullptr && *tmp != '\0' ? tmp : "/tmp";
    socket_source = tmp != nullptr && *tmp != '\0' ? "$TMPDIR" : "default /tmp";
  }
  const std::string longest_socket = absl::StrCat(socket_parent, "/qwen-serve-XXXXXX/worker-",
                                                  std::max(0, o.pool.workers - 1), ".sock");
  effective["socket_parent_dir"] = socket_parent;
  effective["socket_parent_dir_from"] = socket_source;
  effective["longest_socket_path"] = longest_socket;
  if (longest_socket.size() >= sizeof(sockaddr_un{}.sun_path)) {
    errors.push_back(absl::StrCat("--socket_dir: the socket path ", longest_socket,
                                  " is longer than ", sizeof(sockaddr_un{}.sun_path) - 1,
                                  " bytes"));
  }
  struct stat st;
  if (stat(socket_parent.c_str(), &st) != 0) {
    notes.push_back(absl::StrCat("socket directory ", socket_parent, " (", socket_source,
                                 ") does not exist here: not checked"));
  } else if (!S_ISDIR(st.st_mode)) {
    errors.push_back(absl::StrCat("socket directory ", socket_parent, " (", socket_source,
                                  ") is not a directory"));
  } else if (access(socket_parent.c_str(), W_OK | X_OK) != 0) {
    errors.push_back(absl::StrCat("socket directory ", socket_parent, " (", socket_source,
                                  ") is not writable by this user (uid ", getuid(),
                                  "): the workers' sockets are made there"));
  }

  // Files the front end reads at start-up: when they exist here, they must be readable by this
  // user (a deployment that mounts them elsewhere gets a note, as for the model).
  const std::pair<const char*, const std::string*> files[] = {
      {"--tls_cert", &o.tls.cert_file},
      {"--tls_key", &o.tls.key_file},
      {"--tls_client_ca", &o.tls.client_ca_file},
      {"--auth_tokens_file", &o.auth_tokens_file}};
  for (const auto& [flag, file] : files) {
    if (file->empty()) continue;
    if (stat(file->c_str(), &st) != 0) {
      notes.push_back(absl::StrCat(flag, " ", *file, " does not exist here: not checked"));
    } else if (access(file->c_str(), R_OK) != 0) {
      errors.push_back(
          absl::StrCat(flag, " ", *file, " is not readable by this user (uid ", getuid(), ")"));
    }
  }

  // The model, when it is here: what the front end checks at start-up (a GGUF of architecture
  // qwen35 with a tokenizer and, if any, a chat template that parses), and the memory estimate.
  nlohmann::json model = nlohmann::json::object();
  const std::string& path = o.pool.model_path;
  model["path"] = path;
  model["checked"] = false;
  if (path.empty()) {
    notes.push_back("no --model given: the model was not checked (serving needs one)");
  } else if (stat(path.c_str(), &st) != 0) {
    notes.push_back(absl::StrCat("model ", path, " does not exist here: not checked"));
  } else {
    absl::StatusOr<std::unique_ptr<service::TextModel>> m = service::TextModel::Load(path);
    if (!m.ok()) {
      errors.push_back(absl::StrCat("--model: ", m.status().message()));
    } else {
      const model::ModelConfig& c = (*m)->config();
      model["checked"] = true;
      model["architecture"] = c.architecture;
      model["name"] = c.name;
      model["file_bytes"] = (*m)->file().file_size();
      model["context_length"] = c.context_length;
      model["layers"] = c.n_layer;
      model["attention_layers"] = c.n_attention_layers();
      model["vocab_size"] = c.n_vocab;
      model["chat_template"] = (*m)->chat_template() != nullptr;
      // The vision tower, when given and here: what the front end and workers load.
      const std::string& mmproj = o.pool.mmproj_path;
      if (!mmproj.empty()) {
        struct stat mst;
        if (stat(mmproj.c_str(), &mst) != 0) {
          notes.push_back(absl::StrCat("mmproj ", mmproj, " does not exist here: not checked"));
        } else if (auto v = multimodal::LoadMmproj(mmproj, c); !v.ok()) {
          errors.push_back(absl::StrCat("--mmproj: ", v.status().message()));
        } else {
          model["vision"] = {{"mmproj", mmproj}, {"projection_dim", (*v)->projection_dim()}};
        }
      }
      if (o.pool.ctx_size > c.context_length) {
        notes.push_back(absl::StrCat("--ctx_size ", o.pool.ctx_size,
                                     " exceeds the model's trained context of ", c.context_length,
                                     " tokens"));
      }
      // --prefix_cache_mb=auto, as the server will size it on this machine.
      service::FrontEndOptions resolved = o;
      if (o.pool.prefix_cache_mb == service::kAutoPrefixCacheMb) {
        const service::PrefixCacheBudget budget =
            service::AutoPrefixCacheBudget(c, o.pool.ctx_size, o.pool.kv_type, o.pool.slots,
                                           o.pool.workers, service::AvailableMemoryBytes());
        resolved.pool.prefix_cache_mb = budget.mb;
        effective["prefix_cache_mb"] = budget.mb;
        effective["prefix_cache_mb_from"] = absl::StrCat("auto: ", budget.reason);
        notes.push_back(absl::StrCat("--prefix_cache_mb=auto: ", budget.mb, " MiB per worker (",
                                     budget.reason, ") on this machine"));
      }
      const MemoryEstimate e =
          EstimateMemory(c, static_cast<int64_t>((*m)->file().file_size()), resolved);
      // RLIMIT_DATA counts the KV cache's address space when it is reserved at start-up, not as
      // tokens arrive: a limit below the slots' worst case makes every worker fail to start.
      const int64_t worker_needs = int64_t{e.slots} * e.slot_bytes() + e.worker_overhead_bytes;
      if (o.pool.memory_limit_bytes > 0 && o.pool.memory_limit_bytes < worker_needs) {
        errors.push_back(absl::StrCat("--worker_memory_limit ", GiB(o.pool.memory_limit_bytes),
                                      " is below what a worker ", "reserves: ", e.slots,
                                      " slots x (state + KV for ", e.ctx_size,
                                      " tokens) + overhead = ", GiB(worker_needs),
                                      " (the limit counts reserved address space)"));
      }
      out["memory"] = {
          {"weights_bytes", e.weights_bytes},
          {"packed_bytes", e.packed_bytes},
          {"state_bytes_per_slot", e.state_bytes_per_slot},
          {"kv_bytes_per_token", e.kv_bytes_per_token},
          {"ctx_size", e.ctx_size},
          {"slot_bytes", e.slot_bytes()},
          {"workers", e.workers},
          {"slots", e.slots},
          {"prefix_cache_bytes", e.prefix_cache_bytes},
          {"worker_overhead_bytes", e.worker_overhead_bytes},
          {"front_end_overhead_bytes", e.front_end_overhead_bytes},
          {"total_bytes", e.total_bytes()},
          {"formula",
           "weights + packed + workers x slots x (state_per_slot + kv_per_token x ctx_size) + "
           "workers x (prefix_cache + worker_overhead) + front_end_overhead"},
      };
    }
  }
  out["effective"] = effective;
  out["model"] = model;
  if (!model["checked"].get<bool>()) {
    notes.push_back("memory: needs the model's metadata; not estimated");
  }
  out["ok"] = errors.empty();
  out["errors"] = errors;
  out["notes"] = notes;

  if (json) {
    std::printf("%s\n", out.dump(2).c_str());
  } else {
    std::printf("qwen serve --check_config: %s\n", errors.empty() ? "valid" : "INVALID");
    for (const std::string& e : errors) std::printf("error: %s\n", e.c_str());
    for (const std::string& n : notes) std::printf("note: %s\n", n.c_str());
    std::printf("flags:\n");
    for (const auto& [name, value] : sorted) {
      std::printf("  --%s=%s\n", name.c_str(), value.c_str());
    }
    std::printf("effective:\n  threads per worker: %d\n  socket directory: %s (%s)\n",
                o.pool.threads, socket_parent.c_str(), socket_source.c_str());
    if (model["checked"].get<bool>()) {
      std::printf("model: %s: %s \"%s\", %lld bytes, context %lld, vocabulary %lld\n", path.c_str(),
                  model["architecture"].get<std::string>().c_str(),
                  model["name"].get<std::string>().c_str(),
                  static_cast<long long>(model["file_bytes"].get<int64_t>()),
                  static_cast<long long>(model["context_length"].get<int64_t>()),
                  static_cast<long long>(model["vocab_size"].get<int64_t>()));
      const nlohmann::json& mem = out["memory"];
      auto b = [&mem](const char* k) { return static_cast<long long>(mem[k].get<int64_t>()); };
      std::printf(
          "memory: weights %lld + packed copy %lld + %d workers x %d slots x (state %lld + KV "
          "%lld/token x %lld tokens) + %d workers x (prefix cache %lld + overhead %lld) + front "
          "end %lld = %lld bytes (%s)\n",
          b("weights_bytes"), b("packed_bytes"), o.pool.workers, o.pool.slots,
          b("state_bytes_per_slot"), b("kv_bytes_per_token"), b("ctx_size"), o.pool.workers,
          b("prefix_cache_bytes"), b("worker_overhead_bytes"), b("front_end_overhead_bytes"),
          b("total_bytes"), GiB(b("total_bytes")).c_str());
    }
  }
  return errors.empty() ? 0 : 2;
}

}  // namespace qwen::cli
