// Branch-free exp/log for float so loops over them vectorise (compile with
// -fno-trapping-math); double uses the C library. Cephes polynomials, about 1 ulp.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

namespace lip_mmdet {

// exp(v) for v <= 88 (the kernels pass v <= 0); arguments below -87 give 0, NaN gives NaN.
inline float exp_value(float v) {
  const float lowest = -87.0f;
  // NaN fails the comparison, stays NaN and so flows through the polynomial to the result.
  const float xc = v < lowest ? lowest : v;
  const float magic = 12582912.0f;  // 1.5 * 2^23: adding and subtracting it rounds to integer
  const float n = (xc * 1.44269504088896341f + magic) - magic;
  float r = xc - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  // Converting NaN or a float beyond int's range to int is undefined, and so is shifting a
  // bit into the sign: n >= -126 already, and NaN or n > 128 become 128 (an infinite scale).
  // One min instruction, where clamping v itself and passing NaN on by a select cost the LIP
  // forward about a tenth of its time.
  const float exponent = n < 128.0f ? n : 128.0f;
  const int32_t bits = (static_cast<int32_t>(exponent) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return v < lowest ? 0.0f : p * scale;
}

inline double exp_value(double v) { return std::exp(v); }

// log(v) for positive, normal v; NaN and +inf pass through.
inline float log_value(float v) {
  int32_t bits;
  std::memcpy(&bits, &v, sizeof(bits));
  const int32_t exponent = ((bits >> 23) & 0xff) - 126;  // v = m * 2^exponent, m in [0.5, 1)
  const int32_t mantissa_bits = (bits & 0x007fffff) | 0x3f000000;
  float m;
  std::memcpy(&m, &mantissa_bits, sizeof(m));
  const bool low = m < 0.707106781186547524f;
  const float e = static_cast<float>(exponent) - (low ? 1.0f : 0.0f);
  const float x = low ? m + m - 1.0f : m - 1.0f;
  const float z = x * x;
  float y = 7.0376836292e-2f;
  y = y * x - 1.1514610310e-1f;
  y = y * x + 1.1676998740e-1f;
  y = y * x - 1.2420140846e-1f;
  y = y * x + 1.4249322787e-1f;
  y = y * x - 1.6668057665e-1f;
  y = y * x + 2.0000714765e-1f;
  y = y * x - 2.4999993993e-1f;
  y = y * x + 3.3333331174e-1f;
  y = y * x * z;
  y += -2.12194440e-4f * e;
  y += -0.5f * z;
  const float result = x + y + 0.693359375f * e;
  // The polynomial reads the bits of NaN and inf as a finite number; they must propagate.
  return v <= std::numeric_limits<float>::max() ? result : v;
}

inline double log_value(double v) { return std::log(v); }

}  // namespace lip_mmdet
