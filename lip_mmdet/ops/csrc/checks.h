// Argument checks shared by the kernels' C entry points, and the library's ABI version.
//
// The entry points take their geometry as one int64 array; the loader cannot vouch for it, so
// each entry point validates it before touching memory: sizes positive (or non-negative where
// zero is meaningful), every product and sum it indexes with computed in checked 64-bit
// arithmetic, and the window relations the indexing relies on (padding below the kernel, the
// output size the one the input, kernel, stride and padding give). The checks run once per
// call, outside every loop. Each failure has its own status code; native.py turns it into a
// ValueError naming the problem.
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <initializer_list>

// Bumped whenever an entry point's arguments or the meaning of a status code change: the
// loader refuses a library whose lip_mmdet_pooling_abi() differs from the one it expects.
#define LIP_MMDET_POOLING_ABI 2

namespace lip_mmdet {

enum Status : int {
  kOk = 0,
  kFailed = 1,          // a worker threw (out of memory)
  kBadShape = 2,        // a size is not positive (planes: negative), or planes % channels
  kBadWindow = 3,       // kernel or stride not positive, padding negative or >= the kernel
  kBadOutputSize = 4,   // output size differs from the one input, window and padding give
  kOverflow = 5,        // an element count, byte count or index overflows int64
  kBadThreads = 6,      // thread count outside [1, kMaxThreads]
  kBadScalar = 7,       // a scalar argument outside its range (lip2d's shift_range)
  kNullPointer = 8,     // a tensor pointer is null
};

// More threads than any machine this runs on has cores; also bounds the per-call
// allocations that scale with the thread count.
constexpr int kMaxThreads = 4096;

// Checked int64 arithmetic: false when the exact result does not fit.
inline bool mul(int64_t a, int64_t b, int64_t* out) { return !__builtin_mul_overflow(a, b, out); }
inline bool add(int64_t a, int64_t b, int64_t* out) { return !__builtin_add_overflow(a, b, out); }

// Product of non-negative factors; also checks that `bytes_per_element` times it fits, so
// that pointer offsets into a buffer of that many elements cannot overflow.
inline bool elements(std::initializer_list<int64_t> factors, int64_t bytes_per_element,
                     int64_t* out) {
  int64_t product = 1, bytes;
  for (int64_t f : factors)
    if (!mul(product, f, &product)) return false;
  if (!mul(product, bytes_per_element, &bytes)) return false;
  *out = product;
  return true;
}

// Floor-mode pooled size along one axis: (size + pad_before + pad_after - kernel) / stride + 1,
// with the window relations the kernels' indexing relies on: kernel, stride positive; each
// padding in [0, kernel) (so every window holds a real pixel); the padded size at least the
// kernel. Writes the expected output size; returns a status.
inline int pooled_axis(int64_t size, int64_t kernel, int64_t stride, int64_t pad_before,
                       int64_t pad_after, int64_t* out) {
  if (size < 1) return kBadShape;
  if (kernel < 1 || stride < 1 || pad_before < 0 || pad_after < 0 || pad_before >= kernel ||
      pad_after >= kernel)
    return kBadWindow;
  int64_t padded;
  if (!add(size, pad_before, &padded) || !add(padded, pad_after, &padded)) return kOverflow;
  if (padded < kernel) return kBadWindow;
  *out = (padded - kernel) / stride + 1;
  return kOk;
}

inline bool threads_ok(int threads) { return threads >= 1 && threads <= kMaxThreads; }

inline bool all_non_null(std::initializer_list<const void*> pointers) {
  for (const void* p : pointers)
    if (p == nullptr) return false;
  return true;
}

}  // namespace lip_mmdet
