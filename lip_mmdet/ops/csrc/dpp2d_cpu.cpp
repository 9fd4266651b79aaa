// Fused CPU kernels for dpp2d (Detail-Preserving Pooling).
//
// For window p with valid pixels q (n of them), guide g, per-channel alpha a and lambda:
//   d_q = x_q - g (asym: max(0, x_q - g)),  r_q = d_q^2 + eps^2,  m = mean_q r_q
//   t_q = lambda / 2 * (log r_q - log m),   weight W_q = a + exp(t_q)
//   out = sum_q W_q x_q / sum_q W_q
// Since max_q r_q >= m, T = max_q t_q >= 0: the kernel uses w_q = a e^-T + e^(t_q - T) (same
// ratio) whose terms lie in [0, a] and [0, 1], so no lambda can overflow it.
//
// The shift must be exact: the window's largest term has to come out as e^0 = 1 (else, for a
// large lambda, every e^(t_q - T) and a e^-T can underflow together and the window is 0 / 0).
// Computing T = h * L and then t_q - T = h * l_q - T (h = lambda / 2, l = log r - log m) is
// not exact: the compiler contracts h * l_q - T into one FMA, whose unrounded product differs
// from the rounded one T was taken over by up to half an ulp of T, which is huge for a large
// lambda. So the kernel takes the extremum L of s * l_q (s = sign of h; s * l is exact) and
// computes t_q - T as |h| * (s * l_q - L): the difference is exactly 0 for the extremum and
// <= 0 otherwise, rounding cannot change either sign, and no product is left to contract.
// L is clamped to >= 0 (its true value, which rounding of m can miss by an ulp), so that
// T = |h| L >= 0 and e^-T <= 1 for every lambda up to the largest finite one.
//
// Layout: contiguous NCHW; plane p has channel p % C. Each plane is copied into a zero-padded
// buffer; one output row is computed at a time, vectorised across its columns, with one
// array per window offset (K = kh * kw arrays of Wo values).
#include <algorithm>
#include <array>
#include <cstdint>
#include <vector>

#include "checks.h"
#include "parallel.h"
#include "vec_math.h"

namespace {

using lip_mmdet::exp_value;
using lip_mmdet::log_value;

constexpr double kEpsSquared = 1e-3;

struct DppGeometry : lip_mmdet::PoolGeometry {
  int64_t padded_width() const { return width + pad_left + pad_right; }
  int64_t padded_height() const { return height + pad_top + pad_bottom; }
  int64_t window() const { return kh * kw; }
};

template <typename T>
struct DppScratch {
  std::vector<T> padded, grad_padded;
  // Per window offset k, Wo values each.
  std::vector<T> value, deviation, penalty, log_ratio, weight_exp, valid, grad_t;
  // Per output column.
  std::vector<T> penalty_sum, count, log_mean, ratio_max, shift, weight_sum, weighted_sum, out;
  std::vector<T> grad_scale, grad_t_sum, beta_sum, lambda_terms, grad_guide, contribution;
  std::vector<int64_t> col_begin, col_end;  // valid output columns for each kernel column j

  explicit DppScratch(const DppGeometry& g, bool backward) {
    const int64_t kwo = g.window() * g.out_width, wo = g.out_width;
    padded.assign(g.padded_height() * g.padded_width(), T(0));
    if (backward) grad_padded.assign(padded.size(), T(0));
    for (auto* v : {&value, &deviation, &penalty, &log_ratio, &weight_exp, &valid, &grad_t})
      v->resize(kwo);
    for (auto* v : {&penalty_sum, &count, &log_mean, &ratio_max, &shift, &weight_sum,
                    &weighted_sum, &out, &grad_scale, &grad_t_sum, &beta_sum, &lambda_terms,
                    &grad_guide, &contribution})
      v->resize(wo);
    col_begin.resize(g.kw);
    col_end.resize(g.kw);
    for (int64_t j = 0; j < g.kw; ++j) {
      // Output column ow reads input column ow * sw + j - pad_left; valid if in [0, W).
      int64_t begin = 0;
      while (begin < g.out_width && begin * g.sw + j - g.pad_left < 0) ++begin;
      int64_t end = begin;
      while (end < g.out_width && end * g.sw + j - g.pad_left < g.width) ++end;
      col_begin[j] = begin;
      col_end[j] = end;
    }
  }
};

template <typename T>
void load_plane(const T* x, const DppGeometry& g, DppScratch<T>& s) {
  const int64_t wp = g.padded_width();
  for (int64_t h = 0; h < g.height; ++h)
    std::copy(x + h * g.width, x + (h + 1) * g.width,
              s.padded.data() + (h + g.pad_top) * wp + g.pad_left);
}

// One window offset's deviation d, penalty r = d^2 + eps^2 and validity for a row.
template <typename T, bool Asym>
void penalties(const T* __restrict value, const T* __restrict guide_row, T row_ok,
               int64_t begin, int64_t end, T* __restrict deviation, T* __restrict penalty,
               T* __restrict valid, T* __restrict penalty_sum, T* __restrict count,
               int64_t wo) {
  const T eps = static_cast<T>(kEpsSquared);
  for (int64_t ow = 0; ow < wo; ++ow) {
    const T ok = (ow >= begin && ow < end) ? row_ok : T(0);
    T d = value[ow] - guide_row[ow];
    if (Asym) d = d < T(0) ? T(0) : d;  // a NaN stays NaN (it marks its window)
    const T r = d * d + eps;
    deviation[ow] = d;
    penalty[ow] = r;
    valid[ow] = ok;
    penalty_sum[ow] += r * ok;
    count[ow] += ok;
  }
}

// One window offset's dL/dx (direct and through d) for a row; subtracts dL/dd from the
// guide's gradient. Needs grad_t_sum already divided by the penalty sum.
template <typename T>
void input_grads(const T* __restrict valid, const T* __restrict deviation,
                 const T* __restrict penalty, const T* __restrict grad_t,
                 const T* __restrict weight_exp, const T* __restrict grad_t_sum,
                 const T* __restrict shift, const T* __restrict grad_scale,
                 T* __restrict contribution, T* __restrict grad_guide, T alpha, T half_lambda,
                 int64_t wo) {
  for (int64_t ow = 0; ow < wo; ++ow) {
    const T grad_r = half_lambda * (grad_t[ow] / penalty[ow] - grad_t_sum[ow]);
    // dL/dd = 2 d dL/dr is exactly 0 at padding and where d = 0 (asym below the guide),
    // also when a huge lambda overflows dL/dr (0 * inf would be NaN).
    const T grad_d = (valid[ow] > T(0) && deviation[ow] != T(0))
                         ? 2 * deviation[ow] * grad_r : T(0);
    const T w = valid[ow] * alpha * shift[ow] + weight_exp[ow];
    contribution[ow] = grad_scale[ow] * w + grad_d;
    grad_guide[ow] -= grad_d;
  }
}

// One window offset's weights for a row: e = exp(t - T), w = a e^-T + e (0 where invalid),
// with t - T = |h| (s l - L) (see the top of the file).
template <typename T>
void accumulate_weights(const T* __restrict log_ratio, const T* __restrict valid,
                        const T* __restrict value, const T* __restrict ratio_max,
                        const T* __restrict shift, T* __restrict weight_exp,
                        T* __restrict weight_sum, T* __restrict weighted_sum, T sign,
                        T abs_half_lambda, T alpha, int64_t wo) {
  for (int64_t ow = 0; ow < wo; ++ow) {
    // <= 0 for valid entries; the clamp keeps padding entries (weight 0) from inf * 0 and
    // keeps a NaN (from a NaN input), so that it reaches its window's output.
    const T shifted = abs_half_lambda * (sign * log_ratio[ow] - ratio_max[ow]);
    const T e = valid[ow] * exp_value(shifted > T(0) ? T(0) : shifted);
    const T w = valid[ow] * alpha * shift[ow] + e;
    weight_exp[ow] = e;
    weighted_sum[ow] += w * value[ow];
    weight_sum[ow] += w;
  }
}

// One window offset's dL/dt for a row, plus the per-column sums the other gradients need.
template <typename T>
void accumulate_grad_t(const T* __restrict value, const T* __restrict valid,
                       const T* __restrict weight_exp, const T* __restrict log_ratio,
                       const T* __restrict grad_scale, const T* __restrict out,
                       T* __restrict grad_t, T* __restrict grad_t_sum, T* __restrict beta_sum,
                       T* __restrict lambda_terms, int64_t wo) {
  for (int64_t ow = 0; ow < wo; ++ow) {
    const T beta = valid[ow] * grad_scale[ow] * (value[ow] - out[ow]);
    const T dt = beta * weight_exp[ow];
    grad_t[ow] = dt;
    grad_t_sum[ow] += dt;
    beta_sum[ow] += beta;
    lambda_terms[ow] += dt * log_ratio[ow];
  }
}

// Everything the forward pass needs for output row oh (kept in s for the backward pass).
template <typename T, bool Asym>
void dpp_row(const DppGeometry& g, int64_t oh, const T* guide_row, T alpha, T half_lambda,
             DppScratch<T>& s) {
  const int64_t wo = g.out_width, wp = g.padded_width();
  std::fill(s.penalty_sum.begin(), s.penalty_sum.end(), T(0));
  std::fill(s.count.begin(), s.count.end(), T(0));
  for (int64_t i = 0; i < g.kh; ++i) {
    const int64_t in_row = oh * g.sh + i - g.pad_top;
    const T row_ok = (in_row >= 0 && in_row < g.height) ? T(1) : T(0);
    const T* src_row = s.padded.data() + (oh * g.sh + i) * wp;
    for (int64_t j = 0; j < g.kw; ++j) {
      const int64_t k = (i * g.kw + j) * wo, begin = s.col_begin[j], end = s.col_end[j];
      const T* src = src_row + j;
      T* value = s.value.data() + k;
      for (int64_t ow = 0; ow < wo; ++ow) value[ow] = src[ow * g.sw];
      penalties<T, Asym>(value, guide_row, row_ok, begin, end, s.deviation.data() + k,
                         s.penalty.data() + k, s.valid.data() + k, s.penalty_sum.data(),
                         s.count.data(), wo);
    }
  }
  // The largest t of a window is h times the largest s * l (s = sign of h): the extremum is
  // taken over s * l, exact, and T is formed from it once (see the top of the file).
  const T sign = half_lambda < T(0) ? T(-1) : T(1);
  const T abs_half_lambda = sign * half_lambda;
  for (int64_t ow = 0; ow < wo; ++ow) {
    s.log_mean[ow] = log_value(s.penalty_sum[ow] / s.count[ow]);
    s.ratio_max[ow] = T(0);  // the clamp L >= 0 (every window holds a valid pixel)
  }
  const int64_t kwo = g.window() * wo;
  for (int64_t k = 0; k < kwo; k += wo) {
    const T* penalty = s.penalty.data() + k;
    const T* valid = s.valid.data() + k;
    T* log_ratio = s.log_ratio.data() + k;
    T* ratio_max = s.ratio_max.data();
    const T* log_mean = s.log_mean.data();
    for (int64_t ow = 0; ow < wo; ++ow) {
      const T lr = log_value(penalty[ow]) - log_mean[ow];
      const T signed_lr = sign * lr;
      log_ratio[ow] = lr;
      ratio_max[ow] =
          (valid[ow] > T(0) && signed_lr > ratio_max[ow]) ? signed_lr : ratio_max[ow];
    }
  }
  for (int64_t ow = 0; ow < wo; ++ow) {
    s.shift[ow] = exp_value(-(abs_half_lambda * s.ratio_max[ow]));  // e^-T in [0, 1]
    s.weight_sum[ow] = T(0);
    s.weighted_sum[ow] = T(0);
  }
  for (int64_t k = 0; k < kwo; k += wo)
    accumulate_weights(s.log_ratio.data() + k, s.valid.data() + k, s.value.data() + k,
                       s.ratio_max.data(), s.shift.data(), s.weight_exp.data() + k,
                       s.weight_sum.data(), s.weighted_sum.data(), sign, abs_half_lambda,
                       alpha, wo);
  for (int64_t ow = 0; ow < wo; ++ow) s.out[ow] = s.weighted_sum[ow] / s.weight_sum[ow];
}

template <typename T, bool Asym>
void dpp_plane_forward(const T* x, const T* guide, T* out, T alpha, T half_lambda,
                       const DppGeometry& g, DppScratch<T>& s) {
  load_plane(x, g, s);
  for (int64_t oh = 0; oh < g.out_height; ++oh) {
    dpp_row<T, Asym>(g, oh, guide + oh * g.out_width, alpha, half_lambda, s);
    std::copy(s.out.begin(), s.out.end(), out + oh * g.out_width);
  }
}

// Chain rule per window (G = grad_out, S = sum w, dt_q = dL/dt_q):
//   dL/dx_q (direct) = G w_q / S,   dt_q = G (x_q - out) / S * e_q,
//   dL/dalpha = e^-T sum_q G (x_q - out) / S,   dL/dlambda = sum_q dt_q (log r_q - log m) / 2,
//   dL/dr_q = lambda/2 (dt_q / r_q - sum_q' dt_q' / sum_q' r_q'),   dL/dd_q = 2 d_q dL/dr_q,
//   dL/dx_q += dL/dd_q,   dL/dguide = -sum_q dL/dd_q.
template <typename T, bool Asym>
void dpp_plane_backward(const T* x, const T* guide, const T* grad_out, T* grad_x,
                        T* grad_guide, double* grad_alpha, double* grad_lambda, T alpha,
                        T half_lambda, const DppGeometry& g, DppScratch<T>& s) {
  load_plane(x, g, s);
  std::fill(s.grad_padded.begin(), s.grad_padded.end(), T(0));
  const int64_t wo = g.out_width, wp = g.padded_width(), kwo = g.window() * wo;
  double alpha_acc = 0, lambda_acc = 0;
  for (int64_t oh = 0; oh < g.out_height; ++oh) {
    dpp_row<T, Asym>(g, oh, guide + oh * wo, alpha, half_lambda, s);
    for (int64_t ow = 0; ow < wo; ++ow) {
      s.grad_scale[ow] = grad_out[oh * wo + ow] / s.weight_sum[ow];
      s.grad_t_sum[ow] = T(0);
      s.beta_sum[ow] = T(0);
      s.lambda_terms[ow] = T(0);
      s.grad_guide[ow] = T(0);
    }
    for (int64_t k = 0; k < kwo; k += wo)
      accumulate_grad_t(s.value.data() + k, s.valid.data() + k, s.weight_exp.data() + k,
                        s.log_ratio.data() + k, s.grad_scale.data(), s.out.data(),
                        s.grad_t.data() + k, s.grad_t_sum.data(), s.beta_sum.data(),
                        s.lambda_terms.data(), wo);
    for (int64_t ow = 0; ow < wo; ++ow) {
      alpha_acc += s.shift[ow] * s.beta_sum[ow];
      lambda_acc += 0.5 * s.lambda_terms[ow];
      s.grad_t_sum[ow] /= s.penalty_sum[ow];  // now sum_q dt_q / sum_q r_q
    }
    for (int64_t i = 0; i < g.kh; ++i) {
      T* dst_row = s.grad_padded.data() + (oh * g.sh + i) * wp;
      for (int64_t j = 0; j < g.kw; ++j) {
        const int64_t k = (i * g.kw + j) * wo;
        input_grads(s.valid.data() + k, s.deviation.data() + k, s.penalty.data() + k,
                    s.grad_t.data() + k, s.weight_exp.data() + k, s.grad_t_sum.data(),
                    s.shift.data(), s.grad_scale.data(), s.contribution.data(),
                    s.grad_guide.data(), alpha, half_lambda, wo);
        T* dst = dst_row + j;
        for (int64_t ow = 0; ow < wo; ++ow) dst[ow * g.sw] += s.contribution[ow];
      }
    }
    std::copy(s.grad_guide.begin(), s.grad_guide.end(), grad_guide + oh * wo);
  }
  for (int64_t h = 0; h < g.height; ++h) {
    const T* src = s.grad_padded.data() + (h + g.pad_top) * wp + g.pad_left;
    std::copy(src, src + g.width, grad_x + h * g.width);
  }
  *grad_alpha = alpha_acc;
  *grad_lambda = lambda_acc;
}

// Validates dpp2d's geometry (check_pooling: it also bounds the scratch buffers, the padded
// plane and K = kh * kw rows of Wo values) and the thread count; fills g on success.
int dpp_arguments(const lip_mmdet::PoolGeometry* geometry, size_t element_bytes, int threads,
                  DppGeometry* g) {
  using namespace lip_mmdet;
  if (int status = check_pooling(geometry, static_cast<int64_t>(element_bytes))) return status;
  if (!threads_ok(threads)) return kBadThreads;
  *g = DppGeometry{*geometry};
  return kOk;
}

// Runs `plane(p, c, scratch)` for every plane p (channel c) on `threads` threads, each with
// its scratch buffers (`backward`: with the gradient's).
template <typename T, typename Plane>
int for_each_plane(const DppGeometry& g, int threads, bool backward, Plane plane) {
  return lip_mmdet::parallel_blocks(g.planes, threads, [&](int64_t first, int64_t last) {
    DppScratch<T> s(g, backward);
    for (int64_t p = first; p < last; ++p) plane(p, p % g.channels, s);
  });
}

template <typename T, bool Asym>
int forward(const T* x, const T* guide, const T* alpha, const T* lambda, T* out,
            const DppGeometry& g, int threads) {
  const int64_t in_plane = g.height * g.width, out_plane = g.out_height * g.out_width;
  return for_each_plane<T>(g, threads, false, [&](int64_t p, int64_t c, DppScratch<T>& s) {
    dpp_plane_forward<T, Asym>(x + p * in_plane, guide + p * out_plane, out + p * out_plane,
                               alpha[c], lambda[c] / 2, g, s);
  });
}

template <typename T, bool Asym>
int backward(const T* x, const T* guide, const T* alpha, const T* lambda, const T* grad_out,
             T* grad_x, T* grad_guide, double* grad_alpha, double* grad_lambda,
             const DppGeometry& g, int threads) {
  const int64_t in_plane = g.height * g.width, out_plane = g.out_height * g.out_width;
  return for_each_plane<T>(g, threads, true, [&](int64_t p, int64_t c, DppScratch<T>& s) {
    dpp_plane_backward<T, Asym>(x + p * in_plane, guide + p * out_plane,
                                grad_out + p * out_plane, grad_x + p * in_plane,
                                grad_guide + p * out_plane, grad_alpha + p, grad_lambda + p,
                                alpha[c], lambda[c] / 2, g, s);
  });
}

// Full-DPP guide: a per-plane 3x3 filter + bias at stride (sh, sw); tap (i, j) of output
// (oh, ow) reads input (oh * sh - top + i, ow * sw - left + j), zero outside the map.
struct FilterGeometry {
  int64_t planes, channels, height, width, out_height, out_width, sh, sw, top, left;
  // Output columns [begin, end) whose tap column j lies inside the map.
  void columns(int64_t j, int64_t* begin, int64_t* end) const {
    int64_t b = 0;
    while (b < out_width && b * sw - left + j < 0) ++b;
    int64_t e = b;
    while (e < out_width && e * sw - left + j < width) ++e;
    *begin = b;
    *end = e;
  }
};

template <typename T>
void filter_plane_forward(const T* x, const T* weight, T bias, T* out, const FilterGeometry& g) {
  std::fill(out, out + g.out_height * g.out_width, bias);
  for (int64_t j = 0; j < 3; ++j) {
    int64_t begin, end;
    g.columns(j, &begin, &end);
    for (int64_t oh = 0; oh < g.out_height; ++oh) {
      T* out_row = out + oh * g.out_width;
      for (int64_t i = 0; i < 3; ++i) {
        const int64_t r = oh * g.sh - g.top + i;
        if (r < 0 || r >= g.height) continue;
        const T w = weight[i * 3 + j];
        // Indexed from the row start: j - left can point far outside the map (only the
        // columns in [begin, end) are read), which a pointer may not.
        const T* src_row = x + r * g.width;
        const int64_t shift = j - g.left;
        for (int64_t ow = begin; ow < end; ++ow) out_row[ow] += w * src_row[ow * g.sw + shift];
      }
    }
  }
}

template <typename T>
void filter_plane_backward(const T* x, const T* weight, const T* grad_out, T* grad_x,
                           double* grad_weight, double* grad_bias, const FilterGeometry& g) {
  std::fill(grad_x, grad_x + g.height * g.width, T(0));
  double bias_acc = 0;
  for (int64_t k = 0; k < g.out_height * g.out_width; ++k) bias_acc += grad_out[k];
  *grad_bias = bias_acc;
  for (int64_t j = 0; j < 3; ++j) {
    int64_t begin, end;
    g.columns(j, &begin, &end);
    for (int64_t i = 0; i < 3; ++i) {
      const T w = weight[i * 3 + j];
      double weight_acc = 0;
      for (int64_t oh = 0; oh < g.out_height; ++oh) {
        const int64_t r = oh * g.sh - g.top + i;
        if (r < 0 || r >= g.height) continue;
        const T* g_row = grad_out + oh * g.out_width;
        const T* src_row = x + r * g.width;
        T* dst_row = grad_x + r * g.width;
        const int64_t shift = j - g.left;  // see filter_plane_forward
        T row_acc = 0;
        for (int64_t ow = begin; ow < end; ++ow) {
          row_acc += g_row[ow] * src_row[ow * g.sw + shift];
          dst_row[ow * g.sw + shift] += w * g_row[ow];
        }
        weight_acc += row_acc;
      }
      grad_weight[i * 3 + j] = weight_acc;
    }
  }
}

// Validates the filter guide's geometry (its 3x3 taps as the window, offsets pad_top and
// pad_left; the other padding is unused) and the thread count; fills g on success. Every tap
// is bounds-checked against the map, so any offsets (negative ones crop) are safe once the
// index arithmetic, out * stride - offset + 2, cannot overflow.
int filter_arguments(const lip_mmdet::PoolGeometry* geometry, size_t element_bytes,
                     int threads, FilterGeometry* g) {
  using namespace lip_mmdet;
  if (geometry == nullptr) return kNullPointer;
  const PoolGeometry& p = *geometry;
  const FilterGeometry f{p.planes,     p.channels, p.height, p.width,    p.out_height,
                         p.out_width,  p.sh,       p.sw,     p.pad_top,  p.pad_left};
  if (f.planes < 0 || f.channels < 1 || f.planes % f.channels != 0 || f.height < 1 ||
      f.width < 1 || f.out_height < 1 || f.out_width < 1)
    return kBadShape;
  if (p.kh != 3 || p.kw != 3 || f.sh < 1 || f.sw < 1) return kBadWindow;
  int64_t count, reach;
  const int64_t bytes = static_cast<int64_t>(element_bytes);
  if (!elements({f.planes, f.height, f.width}, bytes, &count) ||
      !elements({f.planes, f.out_height, f.out_width}, bytes, &count) ||
      !elements({f.channels, 9}, bytes, &count) || !elements({f.planes, 9}, 8, &count))
    return kOverflow;
  for (const auto& [out, stride, offset] : {std::array<int64_t, 3>{f.out_height, f.sh, f.top},
                                            std::array<int64_t, 3>{f.out_width, f.sw, f.left}}) {
    // Tap indices range over [-offset, (out - 1) * stride + 2 - offset] before the bounds
    // check against the map.
    if (offset == INT64_MIN || !mul(out - 1, stride, &reach) || !add(reach, 2, &reach) ||
        !add(reach, -offset, &reach))
      return kOverflow;
  }
  if (!threads_ok(threads)) return kBadThreads;
  *g = f;
  return kOk;
}

}  // namespace

// Validates a dpp2d call (dpp_arguments), then runs `body(g)` (lip_mmdet::run_checked).
template <typename T, typename Body>
int dpp_entry(const lip_mmdet::PoolGeometry* geometry, int threads,
              std::initializer_list<const void*> pointers, Body body) {
  DppGeometry g{};
  const int status = dpp_arguments(geometry, sizeof(T), threads, &g);
  return lip_mmdet::run_checked(status, g.planes, pointers, [&] { return body(g); });
}

// Validates a filter guide call (filter_arguments), then runs `plane(p, c, g)` for every
// plane p (channel c) on `threads` threads.
template <typename T, typename Plane>
int filter_entry(const lip_mmdet::PoolGeometry* geometry, int threads,
                 std::initializer_list<const void*> pointers, Plane plane) {
  FilterGeometry g{};
  const int status = filter_arguments(geometry, sizeof(T), threads, &g);
  return lip_mmdet::run_checked(status, g.planes, pointers, [&] {
    return lip_mmdet::parallel_blocks(g.planes, threads, [&](int64_t first, int64_t last) {
      for (int64_t p = first; p < last; ++p) plane(p, p % g.channels, g);
    });
  });
}

// alpha, lambda: C values; grad_alpha, grad_lambda: one double per plane. Returns 0 on
// success, else a lip_mmdet::Status.
#define DPP2D_EXPORT(SUFFIX, T)                                                                \
  extern "C" int dpp2d_forward_##SUFFIX(const T* x, const T* guide, const T* alpha,           \
                                        const T* lambda, T* out,                              \
                                        const lip_mmdet::PoolGeometry* geometry, int asym,    \
                                        int threads) {                                        \
    return dpp_entry<T>(geometry, threads, {x, guide, alpha, lambda, out},                    \
                        [&](const DppGeometry& g) {                                           \
                          return asym ? forward<T, true>(x, guide, alpha, lambda, out, g,     \
                                                         threads)                             \
                                      : forward<T, false>(x, guide, alpha, lambda, out, g,    \
                                                          threads);                           \
                        });                                                                   \
  }                                                                                            \
  extern "C" int dpp2d_backward_##SUFFIX(                                                     \
      const T* x, const T* guide, const T* alpha, const T* lambda, const T* grad_out,         \
      T* grad_x, T* grad_guide, double* grad_alpha, double* grad_lambda,                      \
      const lip_mmdet::PoolGeometry* geometry, int asym, int threads) {                       \
    return dpp_entry<T>(                                                                      \
        geometry, threads,                                                                    \
        {x, guide, alpha, lambda, grad_out, grad_x, grad_guide, grad_alpha, grad_lambda},     \
        [&](const DppGeometry& g) {                                                           \
          return asym ? backward<T, true>(x, guide, alpha, lambda, grad_out, grad_x,          \
                                          grad_guide, grad_alpha, grad_lambda, g, threads)    \
                      : backward<T, false>(x, guide, alpha, lambda, grad_out, grad_x,         \
                                           grad_guide, grad_alpha, grad_lambda, g, threads);  \
        });                                                                                   \
  }

DPP2D_EXPORT(f32, float)
DPP2D_EXPORT(f64, double)

// The geometry's window is the 3x3 filter, pad_top / pad_left its offsets; weight: C x 9,
// bias: C; grad_weight: planes x 9 and grad_bias: planes doubles. Returns 0 on success, else
// a lip_mmdet::Status.
#define FILTER_GUIDE_EXPORT(SUFFIX, T)                                                         \
  extern "C" int dpp_filter_guide_forward_##SUFFIX(const T* x, const T* weight,                \
                                                   const T* bias, T* out,                      \
                                                   const lip_mmdet::PoolGeometry* geometry,    \
                                                   int threads) {                              \
    return filter_entry<T>(geometry, threads, {x, weight, bias, out},                          \
                           [&](int64_t p, int64_t c, const FilterGeometry& g) {                \
                             const int64_t in_plane = g.height * g.width;                      \
                             filter_plane_forward(x + p * in_plane, weight + c * 9, bias[c],   \
                                                  out + p * g.out_height * g.out_width, g);    \
                           });                                                                 \
  }                                                                                            \
  extern "C" int dpp_filter_guide_backward_##SUFFIX(                                           \
      const T* x, const T* weight, const T* grad_out, T* grad_x, double* grad_weight,          \
      double* grad_bias, const lip_mmdet::PoolGeometry* geometry, int threads) {               \
    return filter_entry<T>(geometry, threads, {x, weight, grad_out, grad_x, grad_weight,       \
                                               grad_bias},                                     \
                           [&](int64_t p, int64_t c, const FilterGeometry& g) {                \
                             const int64_t in_plane = g.height * g.width;                      \
                             filter_plane_backward(x + p * in_plane, weight + c * 9,           \
                                                   grad_out + p * g.out_height * g.out_width,  \
                                                   grad_x + p * in_plane, grad_weight + p * 9, \
                                                   grad_bias + p, g);                          \
                           });                                                                 \
  }

FILTER_GUIDE_EXPORT(f32, float)
FILTER_GUIDE_EXPORT(f64, double)
