// Notices when the TLS and token files change on disk and applies the change without a restart.
//
// Kubernetes updates a mounted Secret in place (an atomic swap of the volume's ..data link), e.g.
// when cert-manager renews a certificate or an operator rotates tokens. The watcher reads the
// files every interval and compares their contents:
// - the token file: a new set that parses replaces the Authenticator's tokens (new calls are
//   checked against it; admitted calls and open streams go on); one that does not parse (an
//   empty file caught mid-write, a bad line) keeps the previous set and logs a warning;
// - the TLS files: gRPC's own file watcher (service/tls.h, reload_interval_seconds) serves them
//   to new handshakes; this one only logs the change, so that operators see it happen.
#ifndef QWEN_SERVICE_CREDENTIALS_WATCHER_H_
#define QWEN_SERVICE_CREDENTIALS_WATCHER_H_

#include <map>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "service/auth.h"

namespace qwen::service {

// Owns one polling thread, stopped by the destructor. Thread-safe (nothing public but the
// constructor and destructor).
class CredentialsWatcher {
 public:
  struct File {
    std::string flag;  // "--tls_cert", "--auth_tokens_file", ...: how the log names it
    std::string path;
  };
  // `tokens_file` (may be empty) feeds `auth` (must outlive the watcher when the file is set);
  // `tls_files` are only logged. Reads every file once now, as the baseline.
  CredentialsWatcher(std::string tokens_file, Authenticator* auth, std::vector<File> tls_files,
                     absl::Duration interval);
  ~CredentialsWatcher();

  CredentialsWatcher(const CredentialsWatcher&) = delete;
  CredentialsWatcher& operator=(const CredentialsWatcher&) = delete;

 private:
  void Run();
  void Poll();

  const std::string tokens_file_;
  Authenticator* const auth_;
  const std::vector<File> tls_files_;
  const absl::Duration interval_;
  std::map<std::string, std::string> seen_;  // path -> contents last read (Run's thread only)
  absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace qwen::service

#endif  // QWEN_SERVICE_CREDENTIALS_WATCHER_H_
