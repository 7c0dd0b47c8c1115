// ThreadSanitizer annotations for Debian's Abseil synchronization library.
//
// Debian's libabsl_synchronization.so is built without -fsanitize=thread, so ThreadSanitizer
// does not see absl::Mutex or absl::Notification synchronize (their fast paths are atomics in
// uninstrumented code) and would report every access guarded by one as a race. The TSan build
// (-DQWEN_SANITIZE=thread) links this file into every executable. Its definitions of the
// functions below take precedence over the library's (an executable's symbols come first, also
// for the library's own calls through its PLT); each tells TSan what the real function does
// with the __tsan_mutex_* / __tsan_acquire / __tsan_release annotations Abseil itself uses in a
// TSan build, and calls the real function, found with dlsym(RTLD_NEXT).
//
// Covered: Mutex Lock/Unlock/TryLock and the reader variants, Await, LockWhen and ReaderLockWhen
// with and without a deadline, CondVar Wait and WaitWithDeadline, Notification Notify and
// WaitForNotification[WithTimeout]. The ...WithTimeout functions are not wrapped: the library
// implements them with the ...WithDeadline ones, through its PLT, so they arrive here (wrapping
// both would lock twice). Anything else of absl/synchronization that the project starts using
// must be added here; a missing one shows up as "unlock of an unlocked mutex".
#include <sanitizer/tsan_interface.h>

#include <string>

#include "absl/base/options.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "tests/sanitize/next_symbol.h"

#define QWEN_STR2(x) #x
#define QWEN_STR(x) QWEN_STR2(x)

namespace {

// "_ZN4absl" + <inline namespace> + `rest`, e.g. rest = "5Mutex4LockEv", looked up once.
template <typename F>
F Get(F* slot, const char* rest, bool is_const = false) {
  F f = __atomic_load_n(slot, __ATOMIC_ACQUIRE);
  if (f != nullptr) return f;
  const std::string ns = QWEN_STR(ABSL_OPTION_INLINE_NAMESPACE_NAME);
  const std::string name =
      std::string(is_const ? "_ZNK4absl" : "_ZN4absl") + std::to_string(ns.size()) + ns + rest;
  return qwen::sanitize::NextSymbol(slot, name.c_str());
}

#define QWEN_REAL(type, rest, ...) \
  using RealFn = type;             \
  static RealFn slot = nullptr;    \
  const RealFn real = Get(&slot, rest, ##__VA_ARGS__)

// Await-style calls release the mutex while waiting and hold it again on return.
void ReleaseHeld(void* mu, unsigned flags) {
  __tsan_mutex_pre_unlock(mu, flags);
  __tsan_mutex_post_unlock(mu, flags);
  __tsan_mutex_pre_lock(mu, flags);
}

}  // namespace

namespace absl {
ABSL_NAMESPACE_BEGIN

void Mutex::Lock() {
  QWEN_REAL(void (*)(Mutex*), "5Mutex4LockEv");
  __tsan_mutex_pre_lock(this, 0);
  real(this);
  __tsan_mutex_post_lock(this, 0, 0);
}

void Mutex::Unlock() {
  QWEN_REAL(void (*)(Mutex*), "5Mutex6UnlockEv");
  __tsan_mutex_pre_unlock(this, 0);
  real(this);
  __tsan_mutex_post_unlock(this, 0);
}

bool Mutex::TryLock() {
  QWEN_REAL(bool (*)(Mutex*), "5Mutex7TryLockEv");
  __tsan_mutex_pre_lock(this, __tsan_mutex_try_lock);
  const bool ok = real(this);
  __tsan_mutex_post_lock(this, __tsan_mutex_try_lock | (ok ? 0 : __tsan_mutex_try_lock_failed), 0);
  return ok;
}

void Mutex::ReaderLock() {
  QWEN_REAL(void (*)(Mutex*), "5Mutex10ReaderLockEv");
  __tsan_mutex_pre_lock(this, __tsan_mutex_read_lock);
  real(this);
  __tsan_mutex_post_lock(this, __tsan_mutex_read_lock, 0);
}

void Mutex::ReaderUnlock() {
  QWEN_REAL(void (*)(Mutex*), "5Mutex12ReaderUnlockEv");
  __tsan_mutex_pre_unlock(this, __tsan_mutex_read_lock);
  real(this);
  __tsan_mutex_post_unlock(this, __tsan_mutex_read_lock);
}

bool Mutex::ReaderTryLock() {
  QWEN_REAL(bool (*)(Mutex*), "5Mutex13ReaderTryLockEv");
  const unsigned flags = __tsan_mutex_read_lock | __tsan_mutex_try_lock;
  __tsan_mutex_pre_lock(this, flags);
  const bool ok = real(this);
  __tsan_mutex_post_lock(this, flags | (ok ? 0 : __tsan_mutex_try_lock_failed), 0);
  return ok;
}

void Mutex::Await(const Condition& cond) {
  QWEN_REAL(void (*)(Mutex*, const Condition&), "5Mutex5AwaitERKNS0_9ConditionE");
  ReleaseHeld(this, 0);
  real(this, cond);
  __tsan_mutex_post_lock(this, 0, 0);
}

bool Mutex::AwaitWithDeadline(const Condition& cond, absl::Time deadline) {
  QWEN_REAL(bool (*)(Mutex*, const Condition&, absl::Time),
            "5Mutex17AwaitWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  ReleaseHeld(this, 0);
  const bool ok = real(this, cond, deadline);
  __tsan_mutex_post_lock(this, 0, 0);
  return ok;
}

void Mutex::LockWhen(const Condition& cond) {
  QWEN_REAL(void (*)(Mutex*, const Condition&), "5Mutex8LockWhenERKNS0_9ConditionE");
  __tsan_mutex_pre_lock(this, 0);
  real(this, cond);
  __tsan_mutex_post_lock(this, 0, 0);
}

bool Mutex::LockWhenWithDeadline(const Condition& cond, absl::Time deadline) {
  QWEN_REAL(bool (*)(Mutex*, const Condition&, absl::Time),
            "5Mutex20LockWhenWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  __tsan_mutex_pre_lock(this, 0);
  const bool ok = real(this, cond, deadline);  // holds the lock either way
  __tsan_mutex_post_lock(this, 0, 0);
  return ok;
}

void Mutex::ReaderLockWhen(const Condition& cond) {
  QWEN_REAL(void (*)(Mutex*, const Condition&), "5Mutex14ReaderLockWhenERKNS0_9ConditionE");
  __tsan_mutex_pre_lock(this, __tsan_mutex_read_lock);
  real(this, cond);
  __tsan_mutex_post_lock(this, __tsan_mutex_read_lock, 0);
}

bool Mutex::ReaderLockWhenWithDeadline(const Condition& cond, absl::Time deadline) {
  QWEN_REAL(bool (*)(Mutex*, const Condition&, absl::Time),
            "5Mutex26ReaderLockWhenWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  __tsan_mutex_pre_lock(this, __tsan_mutex_read_lock);
  const bool ok = real(this, cond, deadline);
  __tsan_mutex_post_lock(this, __tsan_mutex_read_lock, 0);
  return ok;
}

void CondVar::Wait(Mutex* mu) {
  QWEN_REAL(void (*)(CondVar*, Mutex*), "7CondVar4WaitEPNS0_5MutexE");
  ReleaseHeld(mu, 0);
  real(this, mu);
  __tsan_mutex_post_lock(mu, 0, 0);
}

bool CondVar::WaitWithDeadline(Mutex* mu, absl::Time deadline) {
  QWEN_REAL(bool (*)(CondVar*, Mutex*, absl::Time),
            "7CondVar16WaitWithDeadlineEPNS0_5MutexENS0_4TimeE");
  ReleaseHeld(mu, 0);
  const bool r = real(this, mu, deadline);
  __tsan_mutex_post_lock(mu, 0, 0);
  return r;
}

void Notification::Notify() {
  QWEN_REAL(void (*)(Notification*), "12Notification6NotifyEv");
  __tsan_release(this);
  real(this);
}

void Notification::WaitForNotification() const {
  QWEN_REAL(void (*)(const Notification*), "12Notification19WaitForNotificationEv", true);
  real(this);
  __tsan_acquire(const_cast<Notification*>(this));
}

bool Notification::WaitForNotificationWithTimeout(absl::Duration timeout) const {
  QWEN_REAL(bool (*)(const Notification*, absl::Duration),
            "12Notification30WaitForNotificationWithTimeoutENS0_8DurationE", true);
  const bool ok = real(this, timeout);
  if (ok) __tsan_acquire(const_cast<Notification*>(this));
  return ok;
}

ABSL_NAMESPACE_END
}  // namespace absl
