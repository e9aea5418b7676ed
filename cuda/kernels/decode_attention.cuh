// A decode step's attention (one query a sequence) in one kernel: softmax(q k^T * scale + bias) v
// over the whole KV cache, one block a (sequence, query head), fp32 inside. In place of
// scaled_dot_product_attention's kernels on the CUDA-graph path: grouped-query heads read their
// key/value head where it is (no expanded copy of the cache), and the launch is programmatic,
// so the o_proj after it (gemv_fused) prefetches its weights while it runs.
// Each warp takes every kWarps-th key, kKeysAtOnce at a time (their loads issued together), and
// keeps an online softmax (running maximum, sum and weighted values); the warps' partial results
// are merged at the end. Lane l holds the head's elements [l * E, (l + 1) * E), E = hd / 32
// (1, 2, 4 or 8: head sizes 32, 64, 128 and 256).
#pragma once

#include "cuda/kernels/common.cuh"
#include "cuda/launchers.h"  // DecodeAttentionArgs

#include <math_constants.h>

namespace llmint8::cuda {

constexpr int kDecodeAttentionWarps = 4;
constexpr int kDecodeAttentionKeysAtOnce = 4;

template <typename T, int E>
__global__ void __launch_bounds__(kDecodeAttentionWarps * 32) decode_attention_kernel(DecodeAttentionArgs a) {
  constexpr int kAtOnce = kDecodeAttentionKeysAtOnce;
  wait_for_prior_grid();     // q and the caches are the kernels ahead's output
  allow_dependent_launch();  // o_proj may start its weight prefetch
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int64_t b = blockIdx.x / a.H, h = blockIdx.x % a.H, kv = h / (a.H / a.KV);
  const T* q = static_cast<const T*>(a.q) + (b * a.H + h) * a.hd + lane * E;
  const int64_t head = (b * a.KV + kv) * a.S * a.hd + lane * E;
  const T* k = static_cast<const T*>(a.k_cache) + head;
  const T* v = static_cast<const T*>(a.v_cache) + head;
  const T* bias = static_cast<const T*>(a.bias);

  float qv[E], acc[E];
#pragma unroll
  for (int e = 0; e < E; ++e) {
    qv[e] = to_float(q[e]) * a.scale;
    acc[e] = 0.f;
  }
  float running_max = -CUDART_INF_F, running_sum = 0.f;
  for (int64_t s0 = warp; s0 < a.S; s0 += kDecodeAttentionWarps * kAtOnce) {
    float kr[kAtOnce][E], vr[kAtOnce][E], score[kAtOnce];
#pragma unroll
    for (int j = 0; j < kAtOnce; ++j) {  // every load of the group in flight before any is used
      const int64_t s = s0 + j * kDecodeAttentionWarps;
      const bool in = s < a.S;
      score[j] = in ? to_float(bias[s]) : -CUDART_INF_F;
#pragma unroll
      for (int e = 0; e < E; ++e) {
        kr[j][e] = in ? to_float(k[s * a.hd + e]) : 0.f;
        vr[j][e] = in ? to_float(v[s * a.hd + e]) : 0.f;
      }
    }
#pragma unroll
    for (int j = 0; j < kAtOnce; ++j) {
      float dot = 0.f;
#pragma unroll
      for (int e = 0; e < E; ++e) dot += qv[e] * kr[j][e];
      for (int offset = 16; offset > 0; offset /= 2) dot += __shfl_xor_sync(0xffffffffu, dot, offset);
      score[j] += dot;  // (a hidden key's -inf bias stays -inf)
    }
#pragma unroll
    for (int j = 0; j < kAtOnce; ++j) {
      if (score[j] == -CUDART_INF_F) continue;  // hidden (or past the cache): no weight
      const float new_max = fmaxf(running_max, score[j]);
      const float rescale = expf(running_max - new_max), p = expf(score[j] - new_max);
      running_sum = running_sum * rescale + p;
#pragma unroll
      for (int e = 0; e < E; ++e) acc[e] = acc[e] * rescale + p * vr[j][e];
      running_max = new_max;
    }
  }

  // The warps' partial softmaxes merged: each rescaled to the largest maximum.
  __shared__ float warp_max[kDecodeAttentionWarps], warp_sum[kDecodeAttentionWarps];
  __shared__ float warp_acc[kDecodeAttentionWarps][E * 32];
  if (lane == 0) {
    warp_max[warp] = running_max;
    warp_sum[warp] = running_sum;
  }
#pragma unroll
  for (int e = 0; e < E; ++e) warp_acc[warp][lane * E + e] = acc[e];
  __syncthreads();
  float total_max = -CUDART_INF_F;
#pragma unroll
  for (int w = 0; w < kDecodeAttentionWarps; ++w) total_max = fmaxf(total_max, warp_max[w]);
  float weight[kDecodeAttentionWarps], total_sum = 0.f;
#pragma unroll
  for (int w = 0; w < kDecodeAttentionWarps; ++w) {
    // (a warp that saw no visible key has sum 0 and maximum -inf: weight 0)
    weight[w] = warp_sum[w] > 0.f ? expf(warp_max[w] - total_max) : 0.f;
    total_sum += warp_sum[w] * weight[w];
  }
  T* out = static_cast<T*>(a.out) + (b * a.H + h) * a.hd;
  for (int64_t d = threadIdx.x; d < a.hd; d += kDecodeAttentionWarps * 32) {
    float value = 0.f;
#pragma unroll
    for (int w = 0; w < kDecodeAttentionWarps; ++w) value += warp_acc[w][d] * weight[w];
    out[d] = from_float<T>(value / total_sum);
  }
}

}  // namespace llmint8::cuda
