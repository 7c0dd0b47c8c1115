// A RequestSink for tests: collects what the engine reports for one request.
#ifndef QWEN_TESTS_ENGINE_COLLECTOR_H_
#define QWEN_TESTS_ENGINE_COLLECTOR_H_

#include <cstdint>
#include <cstdlib>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "inference/engine/engine.h"

namespace qwen::testing {

// Thread-safe: the engine's scheduler thread reports, the test thread reads.
class Collector : public engine::RequestSink {
 public:
  void OnToken(const engine::TokenOutput& t) override {
    absl::MutexLock lock(&mu_);
    tokens_.push_back(t.token);
    if (t.logprob) logprobs_.push_back(*t.logprob);
  }
  void OnFinish(const engine::FinishInfo& info) override {
    {
      absl::MutexLock lock(&mu_);
      info_ = info;
    }
    done_.Notify();
  }
  // False when the request did not finish in time. Under an emulator (a cross build's tests,
  // which ctest starts with QWEN_TEST_EMULATOR set) 10 times as long, as ctest's own timeouts
  // are: qemu runs the model 10-30 times slower.
  bool Wait(absl::Duration d = absl::Seconds(60)) {
    const char* emulator = std::getenv("QWEN_TEST_EMULATOR");
    if (emulator != nullptr && *emulator != '\0') d *= 10;
    return done_.WaitForNotificationWithTimeout(d);
  }
  std::vector<int32_t> tokens() {
    absl::MutexLock lock(&mu_);
    return tokens_;
  }
  engine::FinishInfo info() {
    absl::MutexLock lock(&mu_);
    return info_;
  }
  std::vector<sampling::TokenLogprob> logprobs() {
    absl::MutexLock lock(&mu_);
    return logprobs_;
  }

 private:
  absl::Mutex mu_;
  std::vector<int32_t> tokens_;
  std::vector<sampling::TokenLogprob> logprobs_;
  engine::FinishInfo info_;
  absl::Notification done_;
};

}  // namespace qwen::testing

#endif  // QWEN_TESTS_ENGINE_COLLECTOR_H_
