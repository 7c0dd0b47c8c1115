// What every op needs to run: the thread pool, the math mode and reusable scratch memory.
#ifndef QWEN_INFERENCE_OPS_COMPUTE_H_
#define QWEN_INFERENCE_OPS_COMPUTE_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "absl/strings/string_view.h"
#include "inference/common/thread_pool.h"

namespace qwen::ops {

enum class MathMode {
  // Quantized weights multiply activations rounded to 8 bits (integer dot products), the way
  // fast CPU engines do; float weights use float math.
  kFast,
  // Every product in float32 from dequantized weights: the exact reference, for tests.
  kReference,
};

// A 64-byte aligned float buffer that only grows.
class ScratchBuffer {
 public:
  float* Get(size_t n_floats);
  size_t capacity() const { return capacity_; }

 private:
  struct Free {
    void operator()(float* p) const;
  };
  std::unique_ptr<float, Free> data_;
  size_t capacity_ = 0;
};

// Called with each named intermediate tensor (names as llama.cpp's graph uses them, e.g.
// "attn_norm-0", "conv_output_silu-0"), its data and its shape [n_tokens, width].
using Observer = std::function<void(absl::string_view name, const float* data, int64_t n_rows,
                                    int64_t row_width)>;

// Execution context of one model instance: not thread-safe (one forward pass at a time), but
// the ops it runs fan out over `pool`. Exceptions: layers_done() may be read, and the flag of
// set_cancel_flag() set, from any thread.
class ComputeContext {
 public:
  ComputeContext(ThreadPool* pool, MathMode mode);

  ThreadPool& pool() { return *pool_; }
  int n_threads() const { return pool_->size(); }
  MathMode mode() const { return mode_; }
  void set_mode(MathMode mode) { mode_ = mode; }

  // Scratch owned by pool thread `thread`; `slot` tells apart buffers used at the same time.
  float* ThreadScratch(int thread, int slot, size_t n_floats);
  // Scratch shared by all threads of one op (e.g. quantized activations).
  uint8_t* SharedScratch(int slot, size_t n_bytes);

  // Layer passes completed by forward passes on this context since it was made. A supervisor
  // reads it from another thread to tell a long step (it grows) from a stuck one (it does not).
  void NoteLayerDone() { layers_done_.fetch_add(1, std::memory_order_relaxed); }
  int64_t layers_done() const { return layers_done_.load(std::memory_order_relaxed); }

  // A flag that long computations on this context (an image encode) poll between layers,
  // giving up with CANCELLED once it is set; nullptr: none. The thread that runs computations on
  // the context sets it between them; the flag itself may be set from any thread.
  void set_cancel_flag(const std::atomic<bool>* flag) { cancel_flag_ = flag; }
  bool cancelled() const {
    return cancel_flag_ != nullptr && cancel_flag_->load(std::memory_order_relaxed);
  }

  void set_observer(Observer observer) { observer_ = std::move(observer); }
  bool observing() const { return static_cast<bool>(observer_); }
  void Observe(absl::string_view name, const float* data, int64_t n_rows, int64_t width) {
    if (observer_) observer_(name, data, n_rows, width);
  }

 private:
  static constexpr int kSlots = 6;
  ThreadPool* pool_;
  MathMode mode_;
  std::vector<std::vector<ScratchBuffer>> thread_scratch_;  // [thread][slot]
  std::vector<ScratchBuffer> shared_scratch_;               // [slot]
  Observer observer_;
  std::atomic<int64_t> layers_done_{0};
  const std::atomic<bool>* cancel_flag_ = nullptr;
};

}  // namespace qwen::ops

#endif  // QWEN_INFERENCE_OPS_COMPUTE_H_
