// Argument checks shared by the kernels' C entry points, and the library's ABI version.
//
// The entry points take their geometry as one PoolGeometry (native.py's KernelGeometry, field
// for field); the loader cannot vouch for it, so each entry point validates it before touching
// memory: sizes positive (or non-negative where
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
#define LIP_MMDET_POOLING_ABI 3

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

// The sizes of one call: `planes` = N * C (n, c) planes of height x width pooled to
// out_height x out_width by a kh x kw window at stride (sh, sw) with the padding on each side.
// The filter guide reads its 3x3 taps as the window and its offsets (which may be negative:
// they crop) as pad_top and pad_left.
struct PoolGeometry {
  int64_t planes, channels, height, width, out_height, out_width;
  int64_t kh, kw, sh, sw, pad_top, pad_bottom, pad_left, pad_right;
};

// The checks every pooling entry point (lip2d, dpp2d) makes: positive sizes, planes a
// multiple of the channels, a valid window whose output size is the one given, and element
// counts (the tensors, a padded plane, K = kh * kw rows of out_width values of scratch) whose
// bytes fit int64.
inline int check_pooling(const PoolGeometry* g, int64_t element_bytes) {
  if (g == nullptr) return kNullPointer;
  if (g->planes < 0 || g->channels < 1 || g->planes % g->channels != 0 || g->height < 1 ||
      g->width < 1 || g->out_height < 1 || g->out_width < 1)
    return kBadShape;
  int64_t expected_h, expected_w;
  if (int status = pooled_axis(g->height, g->kh, g->sh, g->pad_top, g->pad_bottom, &expected_h))
    return status;
  if (int status = pooled_axis(g->width, g->kw, g->sw, g->pad_left, g->pad_right, &expected_w))
    return status;
  if (g->out_height != expected_h || g->out_width != expected_w) return kBadOutputSize;
  // pooled_axis checked the padded sizes' sums.
  int64_t count;
  if (!elements({g->planes, g->height, g->width}, element_bytes, &count) ||
      !elements({g->planes, g->out_height, g->out_width}, element_bytes, &count) ||
      !elements({g->height + g->pad_top + g->pad_bottom, g->width + g->pad_left + g->pad_right},
                element_bytes, &count) ||
      !elements({g->kh, g->kw, g->out_width}, element_bytes, &count))
    return kOverflow;
  return kOk;
}

inline bool threads_ok(int threads) { return threads >= 1 && threads <= kMaxThreads; }

inline bool all_non_null(std::initializer_list<const void*> pointers) {
  for (const void* p : pointers)
    if (p == nullptr) return false;
  return true;
}

// The last steps every entry point shares once its arguments passed (`status` kOk): nothing to
// read or write without planes, a null tensor pointer refused, then `run()`.
template <typename Run>
int run_checked(int status, int64_t planes, std::initializer_list<const void*> pointers,
                Run run) {
  if (status != kOk) return status;
  if (planes == 0) return kOk;
  if (!all_non_null(pointers)) return kNullPointer;
  return run();
}

}  // namespace lip_mmdet
