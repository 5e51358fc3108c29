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

}  // namespace facenms
