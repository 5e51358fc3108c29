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
#include <string>

#include "checks.h"
#include "cpu/isa.h"

// Hot loops are compiled for the x86-64 levels v4 (AVX-512), v3 (AVX2, FMA)
// and a baseline, each with the vector width and register tile of its level
// (IsaV4, IsaV3, IsaBase below); cpu_isa() (isa.h) picks one per process by
// the features the CPU reports, or by FACENMS_CPU_ISA. Levels are named by
// features, not CPU models (a model clone would never match an AMD CPU), so
// one build runs everywhere at full speed.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
#define FACENMS_TARGET_V4 __attribute__((target("arch=x86-64-v4")))
#define FACENMS_TARGET_V3 __attribute__((target("arch=x86-64-v3")))
#elif defined(__x86_64__) && defined(__GNUC__)  // older GCC, clang: the levels' features
#define FACENMS_TARGET_V3 \
  __attribute__((target("avx2,fma,f16c,bmi,bmi2,lzcnt,movbe,popcnt")))
#define FACENMS_TARGET_V4 __attribute__(( \
  target("avx512f,avx512bw,avx512vl,avx512dq,avx512cd,avx2,fma,f16c,bmi,bmi2,lzcnt,movbe,popcnt")))
#else  // not x86-64: cpu_isa() is always the baseline
#define FACENMS_TARGET_V4
#define FACENMS_TARGET_V3
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

// Vectors of W floats; each level uses its own register width (W = 16: zmm,
// 8: ymm, 4: xmm). A vector wider than the level's registers would live in
// memory (GCC has no register mode for it), so W is never wider.
// Sums below use several accumulators combined in an order written out in
// the code (not chosen by the vectoriser), so every kernel of one level that
// sums the same values gets the same bits, and no chain of dependent adds
// limits the speed.
template <int W>
struct Vec {
  typedef float f __attribute__((vector_size(4 * W)));
  typedef double d __attribute__((vector_size(8 * W)));
  typedef uint32_t u __attribute__((vector_size(4 * W)));
  typedef uint16_t h __attribute__((vector_size(2 * W)));
  typedef int32_t i __attribute__((vector_size(4 * W)));
};
typedef Vec<16>::f v16;
typedef Vec<16>::i v16i;

// The register tile of each level: W-wide vectors, B candidates against U
// kept faces: B * U accumulators, U + 1 operands. v4 has 32 registers, v3 and
// the baseline 16 (4 x 3 + 3 + 1 = 16).
struct IsaV4 { static constexpr int W = 16, B = 4, U = 4; };
struct IsaV3 { static constexpr int W = 8, B = 4, U = 3; };
struct IsaBase { static constexpr int W = 4, B = 4, U = 3; };

// name(params) calls name##_v4, _v3 or _base: impl<IsaV4 / IsaV3 / IsaBase>
// compiled for that level (impl and what it inlines take the level's target).
#define FACENMS_ISA_VERSIONS(ret, name, impl, params, args)          \
  FACENMS_TARGET_V4 ret name##_v4 params { return impl<IsaV4> args; } \
  FACENMS_TARGET_V3 ret name##_v3 params { return impl<IsaV3> args; } \
  ret name##_base params { return impl<IsaBase> args; }              \
  inline ret name params {                                           \
    switch (cpu_isa()) {                                             \
      case Isa::v4: return name##_v4 args;                           \
      case Isa::v3: return name##_v3 args;                           \
      default: return name##_base args;                              \
    }                                                                \
  }

// Ops refuse to run when FACENMS_CPU_ISA asked for a level the CPU lacks.
inline void check_cpu_isa() {
  const std::string e = cpu_isa_error();
  FACENMS_CHECK(e.empty(), e);
}

// Lanes of two v16 picked by index (0-15: a, 16-31: b); GCC before 12 has
// only __builtin_shuffle.
#if defined(__clang__)
#define FACENMS_SHUFFLE(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
#define FACENMS_SHUFFLE(a, b, ...) __builtin_shuffle(a, b, v16i{__VA_ARGS__})
#endif

template <int W>
FACENMS_INLINE typename Vec<W>::f loadv(const float* p) {
  typename Vec<W>::f v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}
template <int W>
FACENMS_INLINE typename Vec<W>::f loadv(const double* p) {
  typename Vec<W>::d a;
  __builtin_memcpy(&a, p, sizeof(a));
  return __builtin_convertvector(a, typename Vec<W>::f);
}

// 16-bit floats, W at a time, with the integer tricks of to_float above
// (GCC 12 would convert a vector of _Float16 one element at a time).
template <int W>
FACENMS_INLINE typename Vec<W>::f loadv(const c10::BFloat16* p) {
  typename Vec<W>::h h;
  __builtin_memcpy(&h, p, sizeof(h));
  const typename Vec<W>::u u = __builtin_convertvector(h, typename Vec<W>::u) << 16;
  typename Vec<W>::f f;
  __builtin_memcpy(&f, &u, sizeof(f));
  return f;
}
template <int W>
FACENMS_INLINE typename Vec<W>::f loadv(const c10::Half* p) {
  using U = typename Vec<W>::u;
  typename Vec<W>::h h;
  __builtin_memcpy(&h, p, sizeof(h));
  const U w = __builtin_convertvector(h, U), em = w & 0x7fffu;
  const U shifted = em << 13;
  typename Vec<W>::f f;
  __builtin_memcpy(&f, &shifted, sizeof(f));
  f *= 0x1p112f;
  U u;
  __builtin_memcpy(&u, &f, sizeof(u));
  u |= ((U)(em >= 0x7c00u) & 0x7f800000u) | ((w & 0x8000u) << 16);
  __builtin_memcpy(&f, &u, sizeof(f));
  return f;
}

// Sums as a fixed tree: the halves add lane by lane down to four lanes
// ((i, i+8), (j, j+4) for W = 16), then (l, l+2), (m, m+1).
template <int W>
FACENMS_INLINE float hsum(typename Vec<W>::f v) {
  if constexpr (W == 4) {
    return (v[0] + v[2]) + (v[1] + v[3]);
  } else {
    typename Vec<W / 2>::f lo, hi;
    __builtin_memcpy(&lo, &v, sizeof(lo));
    __builtin_memcpy(&hi, reinterpret_cast<const char*>(&v) + sizeof(lo), sizeof(hi));
    return hsum<W / 2>(lo + hi);
  }
}
FACENMS_INLINE float hsum(v16 v) { return hsum<16>(v); }

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

// Sum of acc[0..32) as a fixed tree: (j, j+16), (j, j+8), (j, j+4), then (0, 2)
// and (1, 3). Written out level by level so that it stays in registers (a loop
// over the levels went through memory).
FACENMS_INLINE double tree_sum(const double* acc) {
  double h[16], q[8], o[4];
  for (int j = 0; j < 16; ++j) h[j] = acc[j] + acc[j + 16];
  for (int j = 0; j < 8; ++j) q[j] = h[j] + h[j + 8];
  for (int j = 0; j < 4; ++j) o[j] = q[j] + q[j + 4];
  return (o[0] + o[2]) + (o[1] + o[3]);
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
  // the tail with compile-time lanes: acc stays in registers (a runtime index
  // would put it in memory)
  const int64_t rem = d - k;
#pragma GCC unroll 32
  for (int j = 0; j < 32; ++j)
    if (j < rem) acc[j] += to_double(a[k + j]) * to_double(b[k + j]);
  return tree_sum(acc);
}

// Sum of squares of a[0..d) in float32, converted from any element type,
// W lanes at a time.
template <int W, typename T>
FACENMS_INLINE float sumsq_f32(const T* a, int64_t d) {
  typename Vec<W>::f s0 = {}, s1 = {};
  int64_t k = 0;
  for (; k + 2 * W <= d; k += 2 * W) {
    const auto u = loadv<W>(a + k), w = loadv<W>(a + k + W);
    s0 += u * u;
    s1 += w * w;
  }
  for (; k + W <= d; k += W) {
    const auto u = loadv<W>(a + k);
    s0 += u * u;
  }
  float t = hsum<W>(s0 + s1);
  for (; k < d; ++k) t += to_float(a[k]) * to_float(a[k]);
  return t;
}

}  // namespace facenms
