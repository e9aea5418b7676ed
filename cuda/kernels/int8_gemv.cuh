// Decode-size LLM.int8() product (M <= kGemvMaxRows): one warp per weight row
// streams it once with 16-byte loads, multiplies it exactly with dp4a against
// every activation row, and finishes with the dequantization, outlier and bias
// epilogue in registers: no int32 round trip through memory.
#pragma once

#include "cuda/kernels/dequantize_product.cuh"

namespace llmint8::cuda {

// Measured on an H200 (benchmarks/RESULTS.md): the fused GEMV beats cuBLASLt plus
// the epilogue at 1 and 2 rows; from 4 rows on, its activation reloads cost more.
constexpr int kGemvMaxRows = 2;
constexpr int kGemvWarps = 8;  // weight rows per block

template <int ROWS, bool VECTOR, typename TIn, typename TOut>
__global__ void __launch_bounds__(kGemvWarps * 32)
    int8_gemv_kernel(const int8_t* __restrict__ q, const float* __restrict__ row, const int8_t* __restrict__ cb,
                     const float* __restrict__ col, const float* __restrict__ bias, int64_t N, int64_t K,
                     OutlierArgs<TIn> o, int capacity, TOut* __restrict__ out) {
  const int lane = threadIdx.x % 32;
  const int64_t n = static_cast<int64_t>(blockIdx.x) * kGemvWarps + threadIdx.x / 32;
  if (n >= N) return;
  const int8_t* w = cb + n * K;
  int32_t acc[ROWS] = {};
  if constexpr (VECTOR) {  // K % 16 == 0 and 16-byte aligned rows
    const int4* w4 = reinterpret_cast<const int4*>(w);
    for (int64_t c = lane; c < K / 16; c += 32) {
      const int4 wv = __ldg(w4 + c);
#pragma unroll
      for (int r = 0; r < ROWS; ++r) {
        const int4 av = __ldg(reinterpret_cast<const int4*>(q + r * K) + c);
        acc[r] = __dp4a(av.x, wv.x, acc[r]);
        acc[r] = __dp4a(av.y, wv.y, acc[r]);
        acc[r] = __dp4a(av.z, wv.z, acc[r]);
        acc[r] = __dp4a(av.w, wv.w, acc[r]);
      }
    }
  } else {
    for (int64_t k = lane; k < K; k += 32) {
      const int32_t wk = w[k];
#pragma unroll
      for (int r = 0; r < ROWS; ++r) acc[r] += int32_t{q[r * K + k]} * wk;
    }
  }
#pragma unroll
  for (int r = 0; r < ROWS; ++r) {
    for (int offset = 16; offset > 0; offset /= 2) acc[r] += __shfl_xor_sync(0xffffffffu, acc[r], offset);
  }
  // Lane r finishes row r: the same arithmetic as dequantize_product_kernel.
  const int32_t count = o.a != nullptr ? *o.count : 0;
  const int32_t gathered = min(count, capacity);
  const float col_n = col[n];
#pragma unroll
  for (int r = 0; r < ROWS; ++r) {
    if (lane != r) continue;
    float s = 0.f;
    for (int32_t j = 0; j < gathered; ++j) s += o.sub_a[r * capacity + j] * o.sub_w[j * N + n];
    for (int32_t j = gathered; j < count; ++j) {
      const int32_t c = o.cols[j];
      s += to_float(o.a[r * o.K + c]) * (static_cast<float>(w[c]) * (col_n / 127.f));
    }
    const float v = static_cast<float>(acc[r]) * (row[r] * col_n * kInv127Squared) + s +
                    (bias != nullptr ? bias[n] : 0.f);
    out[r * N + n] = from_float<TOut>(v);
  }
}

}  // namespace llmint8::cuda
