// The definition a symbol would have had without ours: for the sanitizer shims that interpose a
// library's functions (tsan_absl_annotations.cc, tsan_grpc_annotations.cc) and call through.
#ifndef QWEN_TESTS_SANITIZE_NEXT_SYMBOL_H_
#define QWEN_TESTS_SANITIZE_NEXT_SYMBOL_H_

#include <dlfcn.h>

#include <cstdio>
#include <cstdlib>

namespace qwen::sanitize {

// Looks `name` up after this executable (dlsym(RTLD_NEXT)) once and caches it in `*slot`; aborts
// when it is missing, since a shim without the real function cannot go on. Thread-safe.
template <typename F>
F NextSymbol(F* slot, const char* name) {
  F f = __atomic_load_n(slot, __ATOMIC_ACQUIRE);
  if (f == nullptr) {
    f = reinterpret_cast<F>(dlsym(RTLD_NEXT, name));
    if (f == nullptr) {
      std::fprintf(stderr, "sanitizer shim: %s not found\n", name);
      std::abort();
    }
    __atomic_store_n(slot, f, __ATOMIC_RELEASE);
  }
  return f;
}

}  // namespace qwen::sanitize

#endif  // QWEN_TESTS_SANITIZE_NEXT_SYMBOL_H_
