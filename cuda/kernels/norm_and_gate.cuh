// Two more steps of the C++ models' layers as single kernels, both launched programmatically on
// sm_90 (see launch_may_overlap): each waits for the kernel ahead before reading, then at once
// allows the kernel after it to start, so that the projection that follows (gemv_fused at decode
// sizes) prefetches its weights while they run, which ATen's kernels in their place do not allow.
// - rms_norm_kernel: one block a row, x * rsqrt(mean(x^2) + eps) * weight in fp32, rounded once
//   (ATen's formula; its sum of squares runs in another order, so a value may differ in its last
//   bit).
// - silu_mul_kernel: silu(gate) rounded to the type, times up, rounded again: ATen's at::silu
//   then multiply, bit for bit (the same fp32 expressions).
#pragma once

#include "cuda/kernels/common.cuh"
#include "cuda/launchers.h"  // RmsNormArgs, SiluMulArgs

namespace llmint8::cuda {

constexpr int kRmsNormBlock = 256;
constexpr int kSiluMulBlock = 256;

template <typename T>
__global__ void __launch_bounds__(kRmsNormBlock) rms_norm_kernel(RmsNormArgs a) {
  wait_for_prior_grid();     // x is the kernel ahead's output
  allow_dependent_launch();  // the projection after this one may start its weight prefetch
  const int64_t D = a.D;
  const T* x = static_cast<const T*>(a.x) + static_cast<int64_t>(blockIdx.x) * D;
  T* out = static_cast<T*>(a.out) + static_cast<int64_t>(blockIdx.x) * D;
  const T* weight = static_cast<const T*>(a.weight);
  float sum = 0.f;
  for (int64_t i = threadIdx.x; i < D; i += kRmsNormBlock) {
    const float v = to_float(x[i]);
    sum += v * v;
  }
  __shared__ float warp_sum[kRmsNormBlock / 32];
  for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
  if (threadIdx.x % 32 == 0) warp_sum[threadIdx.x / 32] = sum;
  __syncthreads();
  float total = 0.f;
#pragma unroll
  for (int w = 0; w < kRmsNormBlock / 32; ++w) total += warp_sum[w];
  const float rstd = rsqrtf(total / static_cast<float>(D) + a.eps);
  for (int64_t i = threadIdx.x; i < D; i += kRmsNormBlock) {  // (x again: L1 hits)
    out[i] = from_float<T>(to_float(weight[i]) * (rstd * to_float(x[i])));
  }
}

template <typename T>
__global__ void __launch_bounds__(kSiluMulBlock) silu_mul_kernel(SiluMulArgs a) {
  wait_for_prior_grid();
  allow_dependent_launch();
  const T* gate = static_cast<const T*>(a.gate);
  const T* up = static_cast<const T*>(a.up);
  T* out = static_cast<T*>(a.out);
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kSiluMulBlock;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kSiluMulBlock + threadIdx.x; i < a.n; i += stride) {
    const float g = to_float(gate[i]);
    const T act = from_float<T>(g / (1.f + expf(-g)));  // at::silu's expression
    out[i] = from_float<T>(to_float(act) * to_float(up[i]));
  }
}

}  // namespace llmint8::cuda
