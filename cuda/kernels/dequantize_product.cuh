// Epilogue of LLM.int8(): int32 products back to real units, plus the
// floating-point outlier columns and the bias, rounded once to the output dtype.
#pragma once

#include "cuda/kernels/common.cuh"

namespace llmint8::cuda {

template <typename TIn>
struct OutlierArgs {
  const TIn* a;          // [M, K], null when there are no outliers
  const int32_t* cols;   // column indices
  const int32_t* count;  // [1] on the device
  const int8_t* cb;      // [N, K]
  int64_t K;
};

// Thread = one output element, grid-stride. The outlier sum reads count from
// the device, so any number of outlier columns (0 to K) needs no host sync.
template <typename TIn, typename TOut>
__global__ void dequantize_product_kernel(const int32_t* __restrict__ acc, int64_t M, int64_t N,
                                          const float* __restrict__ row, const float* __restrict__ col,
                                          const float* __restrict__ bias, OutlierArgs<TIn> outliers,
                                          TOut* __restrict__ out) {
  const int64_t total = M * N;
  const int32_t n_out = outliers.a != nullptr ? *outliers.count : 0;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t m = i / N, n = i % N;
    float v = static_cast<float>(acc[i]) * (row[m] * col[n] * kInv127Squared);
    if (n_out > 0) {
      const TIn* a_row = outliers.a + m * outliers.K;
      const int8_t* w_row = outliers.cb + n * outliers.K;
      float s = 0.f;
      for (int32_t j = 0; j < n_out; ++j) {
        const int32_t c = outliers.cols[j];
        s += to_float(a_row[c]) * static_cast<float>(w_row[c]);
      }
      v += s * (col[n] / 127.f);
    }
    if (bias != nullptr) v += bias[n];
    out[i] = from_float<TOut>(v);
  }
}

}  // namespace llmint8::cuda
