// Device helpers shared by the llmint8 CUDA kernels (no ATen).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "cuda/launchers.h"

#include <cstdint>

namespace llmint8::cuda {

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) { return x; }
template <>
__device__ __forceinline__ __half from_float<__half>(float x) { return __float2half_rn(x); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

// NaN-propagating absmax of two stats (both >= 0 or NaN): a NaN anywhere wins,
// so a row holding non-finite values can never dequantize to finite garbage.
__device__ __forceinline__ float absmax_combine(float a, float b) { return (b > a || isnan(b)) ? b : a; }

// 127 / stat rounded as IEEE division (same bits as the CPU), or 0 when the
// stat is 0 or not finite.
__device__ __forceinline__ float code_scale(float stat) {
  return (isfinite(stat) && stat > 0.f) ? __fdiv_rn(127.f, stat) : 0.f;
}

// rint(x * scale) in fp32, round half to even, in [-127, 127].
__device__ __forceinline__ int8_t quantize_value(float x, float scale) {
  const int q = __float2int_rn(__fmul_rn(x, scale));
  return static_cast<int8_t>(max(-127, min(127, q)));
}

// Host side: runs f(T{}) with the CUDA element type T matching kind.
template <typename F>
cudaError_t with_float_type(FloatKind kind, F&& f) {
  switch (kind) {
    case FloatKind::f16: return f(__half{});
    case FloatKind::bf16: return f(__nv_bfloat16{});
    case FloatKind::f32: return f(float{});
  }
  return cudaErrorInvalidValue;
}

constexpr float kInv127Squared = 1.f / (127.f * 127.f);

// NaN-propagating absmax over a block of BLOCK threads; every thread gets the result.
template <int BLOCK>
__device__ float block_absmax(float v) {
  static_assert(BLOCK % 32 == 0 && BLOCK <= 1024, "BLOCK must be a multiple of 32, at most 1024");
  __shared__ float warp_results[BLOCK / 32];
  for (int offset = 16; offset > 0; offset /= 2) v = absmax_combine(v, __shfl_xor_sync(0xffffffffu, v, offset));
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) warp_results[warp] = v;
  __syncthreads();
  v = lane < BLOCK / 32 ? warp_results[lane] : 0.f;
  for (int offset = 16; offset > 0; offset /= 2) v = absmax_combine(v, __shfl_xor_sync(0xffffffffu, v, offset));
  __syncthreads();  // warp_results may be reused by the caller's next reduction
  return v;
}

}  // namespace llmint8::cuda
