#include "inference/ops/compute.h"

#include <cstdlib>
#include <new>

namespace qwen::ops {

void ScratchBuffer::Free::operator()(float* p) const { std::free(p); }

float* ScratchBuffer::Get(size_t n_floats) {
  if (n_floats > capacity_) {
    // Grow by half again so that a slowly growing request does not reallocate every call.
    size_t want = std::max(n_floats, capacity_ + capacity_ / 2);
    size_t bytes = (want * sizeof(float) + 63) / 64 * 64;
    void* p = std::aligned_alloc(64, bytes);
    if (p == nullptr) throw std::bad_alloc();
    data_.reset(static_cast<float*>(p));
    capacity_ = bytes / sizeof(float);
  }
  return data_.get();
}

ComputeContext::ComputeContext(ThreadPool* pool, MathMode mode)
    : pool_(pool), mode_(mode), thread_scratch_(pool->size()), shared_scratch_(kSlots) {
  for (auto& slots : thread_scratch_) slots.resize(kSlots);
}

float* ComputeContext::ThreadScratch(int thread, int slot, size_t n_floats) {
  return thread_scratch_[thread][slot].Get(n_floats);
}

uint8_t* ComputeContext::SharedScratch(int slot, size_t n_bytes) {
  return reinterpret_cast<uint8_t*>(shared_scratch_[slot].Get((n_bytes + 3) / 4));
}

}  // namespace qwen::ops
