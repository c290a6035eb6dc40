// Flush-to-zero / denormals-are-zero for the calling thread, for the lifetime of a guard.
//
// Subnormal floats are slow on x86: an operation with a subnormal operand or result takes a
// microcode assist (about a hundred cycles) unless MXCSR's FTZ and DAZ bits are set. The focal
// loss makes such values in its intermediates on confident logits (p^gamma of a probability near
// 0), so each CPU task sets the bits while it runs and restores the caller's mode afterwards (the
// thread pool's threads are shared with every other op). With the bits set a would-be subnormal
// intermediate is 0; the kernels' results are flushed below 2^-100 anyway (focal_loss_math.h).
// AArch64 handles subnormals at full speed and other targets are left as they are.
#pragma once

#if defined(__x86_64__) && defined(__GNUC__)
#include <xmmintrin.h>
#endif

namespace retdet {

class ScopedFlushDenormals {
 public:
#if defined(__x86_64__) && defined(__GNUC__)
  ScopedFlushDenormals() : saved_(_mm_getcsr()) {
    _mm_setcsr(saved_ | kFtzDaz);
    compiler_barrier();
  }
  ~ScopedFlushDenormals() {
    compiler_barrier();
    _mm_setcsr(saved_);
  }

 private:
  static constexpr unsigned kFtzDaz = 0x8040;  // bit 15 flush-to-zero, bit 6 denormals-are-zero
  // Keeps the compiler from moving the guarded loads and stores across the mode switch.
  static void compiler_barrier() { asm volatile("" ::: "memory"); }
  unsigned saved_;
#endif
 public:
  ScopedFlushDenormals(const ScopedFlushDenormals&) = delete;
  ScopedFlushDenormals& operator=(const ScopedFlushDenormals&) = delete;
};

}  // namespace retdet
