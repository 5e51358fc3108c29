// Helpers of the CPU kernels: per-CPU clones of hot loops, fast conversions,
// the dtype switch. The CPU library uses only PyTorch's stable ABI
// (torch/csrc/stable, torch/headeronly), so one build loads under every torch
// from its TORCH_TARGET_VERSION on.
#pragma once

#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>
#include <torch/headeronly/core/ScalarType.h>
#include <torch/headeronly/util/BFloat16.h>
#include <torch/headeronly/util/Half.h>

#include <cstdint>
#include <cstring>

#include "../checks.h"

// Hot loops are compiled for the x86-64 levels v4 (AVX-512), v3 (AVX2, FMA)
// and a baseline; the dynamic loader picks by the features the CPU reports
// (clones named after CPU models would never match, say, an AMD CPU), so one
// build runs everywhere at full speed.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
#define FACENMS_CLONES \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#elif defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)  // older GCC: ISA clones
#define FACENMS_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define FACENMS_CLONES
#endif
#define FACENMS_INLINE inline __attribute__((always_inline))

namespace facenms {

using Tensor = torch::stable::Tensor;
using c10::ScalarType;

// Calls f(T{}) with T the element type of x: float, double, c10::Half or
// c10::BFloat16 (what AT_DISPATCH_FLOATING_TYPES_AND2(Half, BFloat16) covers).
template <typename F>
void dispatch_floating(ScalarType t, const char* name, F&& f) {
  switch (t) {
    case ScalarType::Float: return f(float{});
    case ScalarType::Double: return f(double{});
    case ScalarType::Half: return f(c10::Half{});
    case ScalarType::BFloat16: return f(c10::BFloat16{});
    default: FACENMS_CHECK(false, '"', name, "\" not implemented for '", t, "'");
  }
}

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
// Sums below use several accumulators combined in an order written out in
// the code (not chosen by the vectoriser), so every kernel that sums the
// same values gets the same bits, and no chain of dependent adds limits the
// speed.
typedef float v16 __attribute__((vector_size(64)));
typedef float v8 __attribute__((vector_size(32)));
typedef double v8d __attribute__((vector_size(64)));
typedef int32_t v16i __attribute__((vector_size(64)));

// Lanes of two v16 picked by index (0-15: a, 16-31: b); GCC before 12 has
// only __builtin_shuffle.
#if defined(__clang__)
#define FACENMS_SHUFFLE(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
#define FACENMS_SHUFFLE(a, b, ...) __builtin_shuffle(a, b, v16i{__VA_ARGS__})
#endif

FACENMS_INLINE v16 load16(const float* p) {
  v16 v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}
FACENMS_INLINE v16 load16(const double* p) {
  v8d a, b;
  __builtin_memcpy(&a, p, sizeof(a));
  __builtin_memcpy(&b, p + 8, sizeof(b));
  const v8 halves[2] = {__builtin_convertvector(a, v8), __builtin_convertvector(b, v8)};
  v16 v;
  __builtin_memcpy(&v, halves, sizeof(v));
  return v;
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

// Sums as a fixed tree: lanes pair as (i, i+8), (j, j+4), (k, k+2), (l, l+1).
FACENMS_INLINE float hsum(v16 v) {
  const v16 a = v + FACENMS_SHUFFLE(v, v, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7);
  const v16 b = a + FACENMS_SHUFFLE(a, a, 4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11);
  return (b[0] + b[2]) + (b[1] + b[3]);
}

// The four sums of a, b, c, d with hsum's tree, for the cost of about one.
FACENMS_INLINE void hsum4(v16 a, v16 b, v16 c, v16 d, float* out) {
  const v16 ab = FACENMS_SHUFFLE(a, b, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23) +
                 FACENMS_SHUFFLE(a, b, 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
  const v16 cd = FACENMS_SHUFFLE(c, d, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23) +
                 FACENMS_SHUFFLE(c, d, 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
  const v16 x = FACENMS_SHUFFLE(ab, cd, 0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27) +
                FACENMS_SHUFFLE(ab, cd, 4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31);
  const v16 y = x + FACENMS_SHUFFLE(x, x, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13);
  out[0] = y[0] + y[1], out[1] = y[4] + y[5], out[2] = y[8] + y[9], out[3] = y[12] + y[13];
}

// Sum of acc[0..32) as a fixed tree.
FACENMS_INLINE double tree_sum(double* acc) {
  for (int w = 16; w > 0; w >>= 1)
    for (int j = 0; j < w; ++j) acc[j] += acc[j + w];
  return acc[0];
}

// <a, b> in float64 (a, b of any element type). 32 partial sums: the loop
// over j vectorises (vcvtps2pd + vfmadd231pd on full registers) with no
// chain of dependent adds.
template <typename T, typename U>
FACENMS_INLINE double dot_f64(const T* a, const U* b, int64_t d) {
  double acc[32] = {};
  int64_t k = 0;
  for (; k + 32 <= d; k += 32)
    for (int j = 0; j < 32; ++j) acc[j] += to_double(a[k + j]) * to_double(b[k + j]);
  for (int j = 0; k < d; ++k, ++j) acc[j] += to_double(a[k]) * to_double(b[k]);
  return tree_sum(acc);
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
