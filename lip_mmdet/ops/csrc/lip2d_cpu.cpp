// Fused CPU kernels for lip2d (Local Importance-based Pooling).
//
// out[p] = sum_q x[q] exp(l[q]) / sum_q exp(l[q]) over the valid pixels q of window p.
// Plain C ABI (loaded with ctypes), no torch headers, so it builds in a few seconds.
// Tensors are contiguous NCHW; each (n, c) plane is independent and planes are split over
// threads.
//
// Stability: in every plane the logits are shifted by the plane maximum. When the plane's
// logit range is at most `shift_range` (60 by default, far inside the float32 exponent range)
// every exp(l - max) lies in [e^-60, 1]: no overflow, no underflow, and each pixel's weight is
// computed once and shared by all windows that contain it. Otherwise the plane falls back to a
// per-window maximum, exact for any finite logits (fully underflowing terms are 0 and every
// window keeps its own maximum, weight 1).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "checks.h"
#include "parallel.h"
#include "vec_math.h"

namespace {

using lip_mmdet::exp_value;

struct Window {
  int64_t kh, kw, sh, sw, ph, pw;
};

struct Geometry {
  int64_t height, width, out_height, out_width;
};

// Valid [begin, end) input range of window `index` along one axis.
inline void span(int64_t index, int64_t stride, int64_t pad, int64_t kernel, int64_t size,
                 int64_t* begin, int64_t* end) {
  const int64_t start = index * stride - pad;
  *begin = std::max<int64_t>(start, 0);
  *end = std::min<int64_t>(start + kernel, size);
}

template <typename T>
struct Scratch {
  // Plane-sized: weights e, x * e and (backward) the scattered window terms A, B.
  std::vector<T> weight, weighted, spread, spread_out;
  std::vector<T> row_weight, row_weighted, row_spread, row_spread_out;
  void resize(const Geometry& g, bool backward) {
    for (auto* v : {&weight, &weighted}) v->resize(g.height * g.width);
    if (backward)
      for (auto* v : {&spread, &spread_out}) v->resize(g.height * g.width);
    for (auto* v : {&row_weight, &row_weighted, &row_spread, &row_spread_out})
      v->resize(g.width);
  }
};

template <typename T>
bool plane_range_fits(const T* logit, int64_t count, T shift_range, T* plane_max) {
  T hi = logit[0], lo = logit[0];
  for (int64_t i = 1; i < count; ++i) {
    hi = logit[i] > hi ? logit[i] : hi;
    lo = logit[i] < lo ? logit[i] : lo;
  }
  *plane_max = hi;
  return hi - lo <= shift_range;
}

// Shared-shift path, part 1: weights e = exp(l - max) and x * e for the whole plane.
template <typename T>
void plane_weights(const T* x, const T* logit, int64_t count, T plane_max, T* weight,
                   T* weighted) {
  for (int64_t i = 0; i < count; ++i) {
    const T e = exp_value(logit[i] - plane_max);
    weight[i] = e;
    weighted[i] = x[i] * e;
  }
}

// Shared-shift path, part 2: column sums of one output row's window rows.
template <typename T>
void window_row_sums(const Geometry& g, const Window& w, int64_t oh, Scratch<T>& s) {
  int64_t r0, r1;
  span(oh, w.sh, w.ph, w.kh, g.height, &r0, &r1);
  T* rw = s.row_weight.data();
  T* rx = s.row_weighted.data();
  std::fill(rw, rw + g.width, T(0));
  std::fill(rx, rx + g.width, T(0));
  for (int64_t r = r0; r < r1; ++r) {
    const T* ew = s.weight.data() + r * g.width;
    const T* ex = s.weighted.data() + r * g.width;
    for (int64_t c = 0; c < g.width; ++c) {
      rw[c] += ew[c];
      rx[c] += ex[c];
    }
  }
}

// Shared-shift path, part 3: window (oh, ow)'s sums of x e (num) and e (den) from the row
// sums, and its valid column range [c0, c1).
template <typename T>
void window_col_sums(const Geometry& g, const Window& w, int64_t ow, const Scratch<T>& s,
                     int64_t* c0, int64_t* c1, T* num, T* den) {
  span(ow, w.sw, w.pw, w.kw, g.width, c0, c1);
  T n = 0, d = 0;
  for (int64_t c = *c0; c < *c1; ++c) {
    n += s.row_weighted[c];
    d += s.row_weight[c];
  }
  *num = n;
  *den = d;
}

// Per-window path: the maximum logit of window (oh, ow) and its weight sums.
template <typename T>
void window_sums(const T* x, const T* logit, const Geometry& g, const Window& w, int64_t oh,
                 int64_t ow, T* win_max, T* num, T* den) {
  int64_t r0, r1, c0, c1;
  span(oh, w.sh, w.ph, w.kh, g.height, &r0, &r1);
  span(ow, w.sw, w.pw, w.kw, g.width, &c0, &c1);
  T m = logit[r0 * g.width + c0];
  for (int64_t r = r0; r < r1; ++r)
    for (int64_t c = c0; c < c1; ++c) m = std::max(m, logit[r * g.width + c]);
  T n = 0, d = 0;
  for (int64_t r = r0; r < r1; ++r) {
    for (int64_t c = c0; c < c1; ++c) {
      const T e = exp_value(logit[r * g.width + c] - m);
      n += x[r * g.width + c] * e;
      d += e;
    }
  }
  *win_max = m;
  *num = n;
  *den = d;
}

template <typename T>
void plane_forward(const T* x, const T* logit, T* out, const Geometry& g, const Window& w,
                   T shift_range, Scratch<T>& s) {
  T plane_max;
  if (plane_range_fits(logit, g.height * g.width, shift_range, &plane_max)) {
    plane_weights(x, logit, g.height * g.width, plane_max, s.weight.data(), s.weighted.data());
    for (int64_t oh = 0; oh < g.out_height; ++oh) {
      window_row_sums(g, w, oh, s);
      for (int64_t ow = 0; ow < g.out_width; ++ow) {
        int64_t c0, c1;
        T n, d;
        window_col_sums(g, w, ow, s, &c0, &c1, &n, &d);
        out[oh * g.out_width + ow] = n / d;
      }
    }
    return;
  }
  for (int64_t oh = 0; oh < g.out_height; ++oh) {
    for (int64_t ow = 0; ow < g.out_width; ++ow) {
      T m, n, d;
      window_sums(x, logit, g, w, oh, ow, &m, &n, &d);
      out[oh * g.out_width + ow] = n / d;
    }
  }
}

// grad_x[q] = sum_p G[p] e[p,q],  grad_l[q] = sum_p G[p] e[p,q] (x[q] - out[p]),
// with G = grad_out / den and e[p,q] the unnormalised weight of q in window p.
template <typename T>
void plane_backward(const T* x, const T* logit, const T* grad_out, T* grad_x, T* grad_l,
                    const Geometry& g, const Window& w, T shift_range, Scratch<T>& s) {
  const int64_t count = g.height * g.width;
  T plane_max;
  if (plane_range_fits(logit, count, shift_range, &plane_max)) {
    // The weights do not depend on the window: scatter A = sum_p G[p] and
    // B = sum_p G[p] out[p] over the windows p containing each pixel (in cache-resident
    // plane buffers), then grad_x = e A, grad_l = e (x A - B), each written once.
    plane_weights(x, logit, count, plane_max, s.weight.data(), s.weighted.data());
    T* spread = s.spread.data();
    T* spread_out = s.spread_out.data();
    std::fill(spread, spread + count, T(0));
    std::fill(spread_out, spread_out + count, T(0));
    T* acc_a = s.row_spread.data();
    T* acc_b = s.row_spread_out.data();
    for (int64_t oh = 0; oh < g.out_height; ++oh) {
      window_row_sums(g, w, oh, s);
      std::fill(acc_a, acc_a + g.width, T(0));
      std::fill(acc_b, acc_b + g.width, T(0));
      for (int64_t ow = 0; ow < g.out_width; ++ow) {
        int64_t c0, c1;
        T n, d;
        window_col_sums(g, w, ow, s, &c0, &c1, &n, &d);
        const T scale = grad_out[oh * g.out_width + ow] / d;
        const T scaled_out = scale * (n / d);
        for (int64_t c = c0; c < c1; ++c) {
          acc_a[c] += scale;
          acc_b[c] += scaled_out;
        }
      }
      int64_t r0, r1;
      span(oh, w.sh, w.ph, w.kh, g.height, &r0, &r1);
      for (int64_t r = r0; r < r1; ++r) {
        T* ga = spread + r * g.width;
        T* gb = spread_out + r * g.width;
        for (int64_t c = 0; c < g.width; ++c) {
          ga[c] += acc_a[c];
          gb[c] += acc_b[c];
        }
      }
    }
    const T* e = s.weight.data();
    for (int64_t i = 0; i < count; ++i) {
      grad_l[i] = e[i] * (x[i] * spread[i] - spread_out[i]);
      grad_x[i] = e[i] * spread[i];
    }
    return;
  }
  std::fill(grad_x, grad_x + count, T(0));
  std::fill(grad_l, grad_l + count, T(0));
  for (int64_t oh = 0; oh < g.out_height; ++oh) {
    for (int64_t ow = 0; ow < g.out_width; ++ow) {
      T m, n, d;
      window_sums(x, logit, g, w, oh, ow, &m, &n, &d);
      const T out = n / d;
      const T scale = grad_out[oh * g.out_width + ow] / d;
      int64_t r0, r1, c0, c1;
      span(oh, w.sh, w.ph, w.kh, g.height, &r0, &r1);
      span(ow, w.sw, w.pw, w.kw, g.width, &c0, &c1);
      for (int64_t r = r0; r < r1; ++r) {
        for (int64_t c = c0; c < c1; ++c) {
          const int64_t q = r * g.width + c;
          const T gw = exp_value(logit[q] - m) * scale;
          grad_x[q] += gw;
          grad_l[q] += gw * (x[q] - out);
        }
      }
    }
  }
}

template <typename T>
int forward(const T* x, const T* logit, T* out, int64_t planes, const Geometry& g,
            const Window& w, T shift_range, int threads) {
  const int64_t in_plane = g.height * g.width, out_plane = g.out_height * g.out_width;
  return lip_mmdet::parallel_blocks(planes, threads, [&](int64_t first, int64_t last) {
    Scratch<T> s;
    s.resize(g, false);
    for (int64_t p = first; p < last; ++p)
      plane_forward(x + p * in_plane, logit + p * in_plane, out + p * out_plane, g, w,
                    shift_range, s);
  });
}

template <typename T>
int backward(const T* x, const T* logit, const T* grad_out, T* grad_x, T* grad_l,
             int64_t planes, const Geometry& g, const Window& w, T shift_range, int threads) {
  const int64_t in_plane = g.height * g.width, out_plane = g.out_height * g.out_width;
  return lip_mmdet::parallel_blocks(planes, threads, [&](int64_t first, int64_t last) {
    Scratch<T> s;
    s.resize(g, true);
    for (int64_t p = first; p < last; ++p)
      plane_backward(x + p * in_plane, logit + p * in_plane, grad_out + p * out_plane,
                     grad_x + p * in_plane, grad_l + p * in_plane, g, w, shift_range, s);
  });
}

// The widest plane logit range the shared-shift path accepts: every weight exp(l - max) then
// stays above float32's smallest normal (e^-87), so no window's weight sum can be 0.
constexpr double kMaxShiftRange = 80.0;

// Validates lip2d's geometry (check_pooling), the thread count and shift_range; fills g, w
// and planes on success. The window starts at pad_top / pad_left; the bottom and right
// padding only set the output size.
int lip_arguments(const lip_mmdet::PoolGeometry* geometry, size_t element_bytes,
                  double shift_range, int threads, Geometry* g, Window* w, int64_t* planes) {
  using namespace lip_mmdet;
  if (int status = check_pooling(geometry, static_cast<int64_t>(element_bytes))) return status;
  if (!threads_ok(threads)) return kBadThreads;
  if (!(shift_range >= 0 && shift_range <= kMaxShiftRange)) return kBadScalar;  // NaN too
  const PoolGeometry& p = *geometry;
  *g = Geometry{p.height, p.width, p.out_height, p.out_width};
  *w = Window{p.kh, p.kw, p.sh, p.sw, p.pad_top, p.pad_left};
  *planes = p.planes;
  return kOk;
}

}  // namespace

// Validates a call (lip_arguments), then runs `body(planes, g, w)` (lip_mmdet::run_checked).
template <typename T, typename Body>
int lip_entry(const lip_mmdet::PoolGeometry* geometry, double shift_range, int threads,
              std::initializer_list<const void*> pointers, Body body) {
  Geometry g{};
  Window w{};
  int64_t planes = 0;
  const int status = lip_arguments(geometry, sizeof(T), shift_range, threads, &g, &w, &planes);
  return lip_mmdet::run_checked(status, planes, pointers, [&] { return body(planes, g, w); });
}

// Returns 0 on success, else a lip_mmdet::Status.
#define LIP2D_EXPORT(SUFFIX, T)                                                               \
  extern "C" int lip2d_forward_##SUFFIX(const T* x, const T* logit, T* out,                  \
                                        const lip_mmdet::PoolGeometry* geometry,             \
                                        double shift_range, int threads) {                   \
    return lip_entry<T>(geometry, shift_range, threads, {x, logit, out},                     \
                        [&](int64_t planes, const Geometry& g, const Window& w) {            \
                          return forward<T>(x, logit, out, planes, g, w,                     \
                                            static_cast<T>(shift_range), threads);           \
                        });                                                                  \
  }                                                                                           \
  extern "C" int lip2d_backward_##SUFFIX(const T* x, const T* logit, const T* grad_out,      \
                                         T* grad_x, T* grad_l,                               \
                                         const lip_mmdet::PoolGeometry* geometry,            \
                                         double shift_range, int threads) {                  \
    return lip_entry<T>(geometry, shift_range, threads, {x, logit, grad_out, grad_x, grad_l}, \
                        [&](int64_t planes, const Geometry& g, const Window& w) {            \
                          return backward<T>(x, logit, grad_out, grad_x, grad_l, planes, g,  \
                                             w, static_cast<T>(shift_range), threads);       \
                        });                                                                  \
  }

LIP2D_EXPORT(f32, float)
LIP2D_EXPORT(f64, double)
