// Small device helpers shared by the CUDA kernels.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <cuda_fp16.h>

#include <c10/cuda/CUDAException.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

namespace facenms {
namespace cuda {

constexpr unsigned kFullMask = 0xffffffffu;

// Multiprocessors of the current device. (ATen/cuda/CUDAContext.h would
// give the same, but it drags in the cuSPARSE/cuBLAS headers.)
inline int sm_count() {
  int dev = 0, n = 0;
  C10_CUDA_CHECK(cudaGetDevice(&dev));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev));
  return n;
}

// Butterfly sum: every lane ends with the same bits (a + b == b + a), so the
// result is deterministic and identical across the warp.
template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
  return v;
}

// Element loads as float, for every input dtype.
__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(double v) { return static_cast<float>(v); }
__device__ __forceinline__ float to_float(c10::Half v) {
  return __half2float(*reinterpret_cast<const __half*>(&v));
}
__device__ __forceinline__ float to_float(c10::BFloat16 v) {
  return __bfloat162float(*reinterpret_cast<const __nv_bfloat16*>(&v));
}

// Element loads as double: exact for every dtype (prepare works in float64).
template <typename T>
__device__ __forceinline__ double to_double(T v) { return static_cast<double>(to_float(v)); }
__device__ __forceinline__ double to_double(double v) { return v; }

}  // namespace cuda
}  // namespace facenms
