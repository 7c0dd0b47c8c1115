#include "service/credentials_watcher.h"

#include <fstream>
#include <optional>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "service/log.h"

namespace qwen::service {
namespace {

constexpr char kComponent[] = "credentials";

// The file's contents, or nothing when it cannot be read right now (e.g. between the removal
// and the creation of a link during an update: the next round sees it).
std::optional<std::string> Contents(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

CredentialsWatcher::CredentialsWatcher(std::string tokens_file, Authenticator* auth,
                                       std::vector<File> tls_files, absl::Duration interval)
    : tokens_file_(std::move(tokens_file)),
      auth_(auth),
      tls_files_(std::move(tls_files)),
      interval_(interval) {
  if (!tokens_file_.empty()) {
    if (auto c = Contents(tokens_file_)) seen_[tokens_file_] = *c;
  }
  for (const File& f : tls_files_) {
    if (auto c = Contents(f.path)) seen_[f.path] = *c;
  }
  thread_ = std::thread([this] { Run(); });
}

CredentialsWatcher::~CredentialsWatcher() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  thread_.join();
}

void CredentialsWatcher::Run() {
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      if (mu_.AwaitWithTimeout(absl::Condition(&stop_), interval_)) return;
    }
    Poll();
  }
}

void CredentialsWatcher::Poll() {
  if (!tokens_file_.empty()) {
    std::optional<std::string> c = Contents(tokens_file_);
    if (c.has_value() && *c != seen_[tokens_file_]) {
      seen_[tokens_file_] = *c;
      absl::StatusOr<std::vector<std::string>> tokens = LoadAuthTokens(tokens_file_);
      if (tokens.ok()) {
        const size_t n = tokens->size();
        auth_->SetTokens(std::move(*tokens));
        LogInfo(kComponent,
                absl::StrCat("--auth_tokens_file ", tokens_file_, " changed: ", n,
                             " tokens from now on (calls already admitted go on)"),
                {{"event", "credentials_reloaded"},
                 {"flag", "--auth_tokens_file"},
                 {"tokens", static_cast<int64_t>(n)}});
      } else {
        LogWarning(kComponent,
                   absl::StrCat("--auth_tokens_file ", tokens_file_,
                                " changed but is not usable, keeping the previous "
                                "tokens: ",
                                tokens.status().message()),
                   {{"event", "credentials_reload_failed"}, {"flag", "--auth_tokens_file"}});
      }
    }
  }
  for (const File& f : tls_files_) {
    std::optional<std::string> c = Contents(f.path);
    if (c.has_value() && *c != seen_[f.path]) {
      seen_[f.path] = *c;
      LogInfo(kComponent,
              absl::StrCat(f.flag, " ", f.path,
                           " changed: new connections get it (established ones keep theirs)"),
              {{"event", "credentials_reloaded"}, {"flag", f.flag}});
    }
  }
}

}  // namespace qwen::service
