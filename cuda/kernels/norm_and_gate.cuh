// Two more steps of the C++ models' layers as single kernels, both launched programmatically on
// sm_90 (see launch_may_overlap): each waits for the kernel ahead before reading x, then allows
// the kernel after it to start, so that the projection that follows (gemv_fused at decode sizes)
// prefetches its weights while they finish, which ATen's kernels in their place do not allow.
// - rms_norm_kernel: one block a row, x * rsqrt(mean(x^2) + eps) * weight in fp32, rounded once
//   (ATen's formula; its sum of squares runs in another order, so a value may differ in its last
//   bit). With a residual it first adds it (the decoder layer's skip connection), rounded to the
//   type as ATen's add rounds it, and writes that sum too: one kernel where two ran.
// - silu_mul_kernel: silu(gate) rounded to the type, times up, rounded again: ATen's at::silu
//   then multiply, bit for bit (the same fp32 expressions).
#pragma once

#include "cuda/kernels/common.cuh"
#include "cuda/launchers.h"  // RmsNormArgs, SiluMulArgs

namespace llmint8::cuda {

constexpr int kRmsNormBlock = 256;
constexpr int kSiluMulBlock = 256;
// 16-byte chunks of a row each rms_norm thread holds on its vector path: rows of up to
// kRmsNormBlock * kRmsNormChunks * 16 bytes (8192 fp16 / bf16 elements, 4096 fp32).
constexpr int kRmsNormChunks = 4;

// Both kernels allow the kernel after them to start only once their own loads have returned
// (rms_norm) or at their end (silu_mul), not at their start: allowed at once, the projection's
// weight prefetches (megabytes) went out ahead of the few loads these kernels wait on. With
// that and the 16-byte loads below, rms_norm went from 7.5-9.1 us a row to 1.5 in an H200
// profile of the C++ decode, and the decode from 787 / 1046 / 1150 tok/s (fp16 / t=6 / t=0) to
// 852 / 1165 / 1287 (benchmarks/RESULTS.md, twenty-third session; the two changes were not
// measured apart).

// VECTOR: D % kPerVector<T> == 0, D within the chunks above, every pointer 16-byte aligned
// (the launcher checks): each thread issues all its loads at once, the weight's before the
// wait (a parameter: the kernel ahead does not write it), and keeps x in registers. Otherwise
// one element at a time.
template <typename T, bool VECTOR>
__global__ void __launch_bounds__(kRmsNormBlock) rms_norm_kernel(RmsNormArgs a) {
  const int64_t D = a.D, row = static_cast<int64_t>(blockIdx.x) * D;
  const T* x = static_cast<const T*>(a.x) + row;
  const T* residual = a.residual != nullptr ? static_cast<const T*>(a.residual) + row : nullptr;
  T* sum_out = residual != nullptr ? static_cast<T*>(a.sum) + row : nullptr;
  T* out = static_cast<T*>(a.out) + row;
  const T* weight = static_cast<const T*>(a.weight);
  // x, or x + residual rounded to T: the value normalized.
  const auto added = [&](T xe, T re) { return residual != nullptr ? from_float<T>(to_float(xe) + to_float(re)) : xe; };
  constexpr int V = kPerVector<T>;
  constexpr int kChunks = VECTOR ? kRmsNormChunks : 1;
  const int64_t vectors = D / V;
  int4 w[kChunks], v[kChunks];
  float sum = 0.f;
  if constexpr (VECTOR) {
#pragma unroll
    for (int c = 0; c < kChunks; ++c) {
      const int64_t i = threadIdx.x + c * kRmsNormBlock;
      w[c] = load16_or_zero<false>(reinterpret_cast<const int4*>(weight) + i, i < vectors);
    }
    wait_for_prior_grid();  // x (and the residual) are the kernels' ahead output
    const int4* x4 = reinterpret_cast<const int4*>(x);
    const int4* r4 = residual != nullptr ? reinterpret_cast<const int4*>(residual) : x4;  // (x4: never loaded)
    int4 r[kChunks];
#pragma unroll
    for (int c = 0; c < kChunks; ++c) {
      const int64_t i = threadIdx.x + c * kRmsNormBlock;
      v[c] = load16_or_zero<false>(x4 + i, i < vectors);
      r[c] = load16_or_zero<false>(r4 + i, residual != nullptr && i < vectors);
    }
#pragma unroll
    for (int c = 0; c < kChunks; ++c) {  // (zeros past the row add nothing)
#pragma unroll
      for (int e = 0; e < V; ++e) {
        T& ve = reinterpret_cast<T*>(&v[c])[e];
        ve = added(ve, reinterpret_cast<const T*>(&r[c])[e]);
        const float f = to_float(ve);
        sum += f * f;
      }
      const int64_t i = threadIdx.x + c * kRmsNormBlock;
      if (residual != nullptr && i < vectors) reinterpret_cast<int4*>(sum_out)[i] = v[c];
    }
  } else {
    wait_for_prior_grid();
    for (int64_t i = threadIdx.x; i < D; i += kRmsNormBlock) {
      const T ve = added(x[i], residual != nullptr ? residual[i] : T{});
      if (residual != nullptr) sum_out[i] = ve;
      const float f = to_float(ve);
      sum += f * f;
    }
  }
  allow_dependent_launch();  // this block's loads are in: the projection after it may start
  __shared__ float warp_sum[kRmsNormBlock / 32];
  for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
  if (threadIdx.x % 32 == 0) warp_sum[threadIdx.x / 32] = sum;
  __syncthreads();
  float total = 0.f;
#pragma unroll
  for (int w_i = 0; w_i < kRmsNormBlock / 32; ++w_i) total += warp_sum[w_i];
  const float rstd = rsqrtf(total / static_cast<float>(D) + a.eps);
  if constexpr (VECTOR) {
#pragma unroll
    for (int c = 0; c < kChunks; ++c) {
      const int64_t i = threadIdx.x + c * kRmsNormBlock;
      if (i >= vectors) break;
      int4 result;
#pragma unroll
      for (int e = 0; e < V; ++e) {
        const float xe = to_float(reinterpret_cast<const T*>(&v[c])[e]);
        reinterpret_cast<T*>(&result)[e] = from_float<T>(to_float(reinterpret_cast<const T*>(&w[c])[e]) * (rstd * xe));
      }
      reinterpret_cast<int4*>(out)[i] = result;
    }
  } else {
    for (int64_t i = threadIdx.x; i < D; i += kRmsNormBlock) {  // (x and the residual again: L1 hits)
      const T ve = added(x[i], residual != nullptr ? residual[i] : T{});
      out[i] = from_float<T>(to_float(weight[i]) * (rstd * to_float(ve)));
    }
  }
}

// VECTOR: n % kPerVector<T> == 0 and every pointer 16-byte aligned (the launcher checks): each
// thread takes 16 bytes of gate and of up a step; otherwise one element.
template <typename T, bool VECTOR>
__global__ void __launch_bounds__(kSiluMulBlock) silu_mul_kernel(SiluMulArgs a) {
  constexpr int V = VECTOR ? kPerVector<T> : 1;
  const int64_t steps = a.n / V, stride = static_cast<int64_t>(gridDim.x) * kSiluMulBlock;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * kSiluMulBlock + threadIdx.x;
  const T* gate = static_cast<const T*>(a.gate);
  const T* up = static_cast<const T*>(a.up);
  T* out = static_cast<T*>(a.out);
  wait_for_prior_grid();
  for (int64_t i = first; i < steps; i += stride) {
    alignas(16) T g[V], u[V], r[V];
    if constexpr (VECTOR) {
      *reinterpret_cast<int4*>(g) = load16_or_zero<false>(reinterpret_cast<const int4*>(gate) + i, true);
      *reinterpret_cast<int4*>(u) = load16_or_zero<false>(reinterpret_cast<const int4*>(up) + i, true);
    } else {
      g[0] = gate[i];
      u[0] = up[i];
    }
#pragma unroll
    for (int e = 0; e < V; ++e) {
      const float gf = to_float(g[e]);
      const T act = from_float<T>(gf / (1.f + expf(-gf)));  // at::silu's expression
      r[e] = from_float<T>(to_float(act) * to_float(u[e]));
    }
    if constexpr (VECTOR) {
      reinterpret_cast<int4*>(out)[i] = *reinterpret_cast<const int4*>(r);
    } else {
      out[i] = r[0];
    }
  }
  allow_dependent_launch();  // (at the end: see above; a decode-sized call is one step a thread)
}

}  // namespace llmint8::cuda
