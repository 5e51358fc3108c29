// Helpers of the CPU kernels: per-CPU clones of hot loops, fast conversions.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>
#include <cstring>

// Hot loops are compiled for AVX-512, AVX2 and a baseline; the dynamic loader
// picks the best the CPU has, so one build runs everywhere at full speed.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define FACENMS_CLONES \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define FACENMS_CLONES
#endif
#define FACENMS_INLINE inline __attribute__((always_inline))

namespace facenms {

// Conversions written so the compiler can vectorise them (vcvtph2ps, shifts);
// c10's scalar conversions do not vectorise.
FACENMS_INLINE float to_float(float v) { return v; }
FACENMS_INLINE float to_float(double v) { return static_cast<float>(v); }
FACENMS_INLINE float to_float(c10::BFloat16 v) {
  const uint32_t u = static_cast<uint32_t>(v.x) << 16;
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}
// IEEE half -> float with integer ops and one multiply: the exponent is
// re-biased by scaling by 2**112 (subnormal halves land on float subnormals,
// which the multiply normalises); Inf and NaN get the all-ones exponent.
FACENMS_INLINE float to_float(c10::Half v) {
  const uint32_t h = v.x, em = h & 0x7fffu;
  const uint32_t shifted = em << 13;
  float f;
  std::memcpy(&f, &shifted, sizeof(f));
  f *= 0x1p112f;
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  u |= (em >= 0x7c00u ? 0x7f800000u : 0u) | ((h & 0x8000u) << 16);
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

FACENMS_INLINE double to_double(double v) { return v; }
template <typename T>
FACENMS_INLINE double to_double(T v) { return static_cast<double>(to_float(v)); }

// Fixed-width vectors; GCC maps each to zmm, ymm or xmm registers per clone.
// Sums below use several accumulators in a fixed order, written out: the
// result does not depend on the clone, and no chain of dependent adds limits
// the speed.
typedef float v16 __attribute__((vector_size(64)));
typedef float v8 __attribute__((vector_size(32)));
typedef float v4 __attribute__((vector_size(16)));
typedef double v8d __attribute__((vector_size(64)));
typedef double v4d __attribute__((vector_size(32)));
typedef double v2d __attribute__((vector_size(16)));

FACENMS_INLINE v16 load16(const float* p) {
  v16 v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}
FACENMS_INLINE v16 load16(const double* p) {
  v8d a, b;
  __builtin_memcpy(&a, p, sizeof(a));
  __builtin_memcpy(&b, p + 8, sizeof(b));
  const v8 fa = __builtin_convertvector(a, v8), fb = __builtin_convertvector(b, v8);
  return __builtin_shufflevector(fa, fb, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
}

// 16-bit floats, 16 at a time, with the integer tricks of to_float above
// (GCC 12 would convert a vector of _Float16 one element at a time).
typedef uint32_t v16u __attribute__((vector_size(64)));
typedef uint16_t v16h __attribute__((vector_size(32)));

FACENMS_INLINE v16 load16(const c10::BFloat16* p) {
  v16h h;
  __builtin_memcpy(&h, p, sizeof(h));
  const v16u u = __builtin_convertvector(h, v16u) << 16;
  v16 f;
  __builtin_memcpy(&f, &u, sizeof(f));
  return f;
}
FACENMS_INLINE v16 load16(const c10::Half* p) {
  v16h h;
  __builtin_memcpy(&h, p, sizeof(h));
  const v16u w = __builtin_convertvector(h, v16u), em = w & 0x7fffu;
  const v16u shifted = em << 13;
  v16 f;
  __builtin_memcpy(&f, &shifted, sizeof(f));
  f *= 0x1p112f;
  v16u u;
  __builtin_memcpy(&u, &f, sizeof(u));
  u |= ((v16u)(em >= 0x7c00u) & 0x7f800000u) | ((w & 0x8000u) << 16);
  __builtin_memcpy(&f, &u, sizeof(f));
  return f;
}

// 16 values as two vectors of 8 doubles.
FACENMS_INLINE void load16d(const float* p, v8d& lo, v8d& hi) {
  v8 a, b;
  __builtin_memcpy(&a, p, sizeof(a));
  __builtin_memcpy(&b, p + 8, sizeof(b));
  lo = __builtin_convertvector(a, v8d);
  hi = __builtin_convertvector(b, v8d);
}
template <typename T>
FACENMS_INLINE void load16d(const T* p, v8d& lo, v8d& hi) {
  const v16 f = load16(p);
  lo = __builtin_convertvector(__builtin_shufflevector(f, f, 0, 1, 2, 3, 4, 5, 6, 7), v8d);
  hi = __builtin_convertvector(__builtin_shufflevector(f, f, 8, 9, 10, 11, 12, 13, 14, 15), v8d);
}
FACENMS_INLINE void load16d(const double* p, v8d& lo, v8d& hi) {
  __builtin_memcpy(&lo, p, sizeof(lo));
  __builtin_memcpy(&hi, p + 8, sizeof(hi));
}

// Sums as a fixed tree of halves.
FACENMS_INLINE float hsum(v16 v) {
  const v8 a = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
               __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
  const v4 b = __builtin_shufflevector(a, a, 0, 1, 2, 3) + __builtin_shufflevector(a, a, 4, 5, 6, 7);
  return (b[0] + b[2]) + (b[1] + b[3]);
}
FACENMS_INLINE double hsum(v8d v) {
  const v4d a = __builtin_shufflevector(v, v, 0, 1, 2, 3) + __builtin_shufflevector(v, v, 4, 5, 6, 7);
  const v2d b = __builtin_shufflevector(a, a, 0, 1) + __builtin_shufflevector(a, a, 2, 3);
  return b[0] + b[1];
}

// <a, b> in float64 (a, b of any element type).
template <typename T, typename U>
FACENMS_INLINE double dot_f64(const T* a, const U* b, int64_t d) {
  v8d s0 = {}, s1 = {}, s2 = {}, s3 = {}, a0, a1, a2, a3, b0, b1, b2, b3;
  int64_t k = 0;
  for (; k + 32 <= d; k += 32) {
    load16d(a + k, a0, a1), load16d(a + k + 16, a2, a3);
    load16d(b + k, b0, b1), load16d(b + k + 16, b2, b3);
    s0 += a0 * b0, s1 += a1 * b1, s2 += a2 * b2, s3 += a3 * b3;
  }
  for (; k + 16 <= d; k += 16) {
    load16d(a + k, a0, a1), load16d(b + k, b0, b1);
    s0 += a0 * b0, s1 += a1 * b1;
  }
  double t = hsum((s0 + s1) + (s2 + s3));
  for (; k < d; ++k) t += to_double(a[k]) * to_double(b[k]);
  return t;
}

// Sum of squares of a[0..d) in float32, converted from any element type.
template <typename T>
FACENMS_INLINE float sumsq_f32(const T* a, int64_t d) {
  v16 s0 = {}, s1 = {};
  int64_t k = 0;
  for (; k + 32 <= d; k += 32) {
    const v16 u = load16(a + k), w = load16(a + k + 16);
    s0 += u * u;
    s1 += w * w;
  }
  for (; k + 16 <= d; k += 16) {
    const v16 u = load16(a + k);
    s0 += u * u;
  }
  float t = hsum(s0 + s1);
  for (; k < d; ++k) t += to_float(a[k]) * to_float(a[k]);
  return t;
}

}  // namespace facenms
