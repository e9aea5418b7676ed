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
  const float* sub_a;    // [M, capacity] gathered a[:, cols[j]]
  const float* sub_w;    // [capacity, N] gathered cb[:, cols[j]] * col / 127
};

constexpr int kEpilogueRows = 8;  // output rows per thread: each gathered weight value is reused 8 times

// Gathers the first min(count, capacity) outlier columns of a and of the
// dequantized weight into compact buffers, so the epilogue reads them coalesced.
template <typename TIn>
__global__ void gather_outlier_columns_kernel(OutlierArgs<TIn> o, int64_t M, int64_t N, int capacity,
                                              const float* __restrict__ col, float* __restrict__ sub_a,
                                              float* __restrict__ sub_w) {
  const int32_t used = min(*o.count, capacity);
  const int64_t weight_items = static_cast<int64_t>(used) * N, total = weight_items + M * used;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    if (i < weight_items) {
      const int64_t j = i / N, n = i % N;
      sub_w[j * N + n] = static_cast<float>(o.cb[n * o.K + o.cols[j]]) * (col[n] / 127.f);
    } else {
      const int64_t m = (i - weight_items) / used, j = (i - weight_items) % used;
      sub_a[m * capacity + j] = to_float(o.a[m * o.K + o.cols[j]]);
    }
  }
}

// Thread = one output column n for kEpilogueRows rows. Without acc (null) it writes the
// outlier term plus bias alone: the source that the fused Hopper GEMM then adds to. Outliers past the
// buffers' capacity are read in place: slower, but any count (0 to K) is
// right, and the count comes from the device, so nothing waits on the host.
template <typename TIn, typename TOut>
__global__ void dequantize_product_kernel(const int32_t* __restrict__ acc, int64_t M, int64_t N,
                                          const float* __restrict__ row, const float* __restrict__ col,
                                          const float* __restrict__ bias, OutlierArgs<TIn> o, int capacity,
                                          TOut* __restrict__ out) {
  const int64_t n = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (n >= N) return;
  const int32_t count = o.a != nullptr ? *o.count : 0;
  const int32_t gathered = min(count, capacity);
  const float col_n = col[n];
  const float bias_n = bias != nullptr ? bias[n] : 0.f;
  for (int64_t m0 = static_cast<int64_t>(blockIdx.y) * kEpilogueRows; m0 < M;
       m0 += static_cast<int64_t>(gridDim.y) * kEpilogueRows) {
    float s[kEpilogueRows] = {};
    for (int32_t j = 0; j < gathered; ++j) {
      const float w = o.sub_w[j * N + n];
#pragma unroll
      for (int r = 0; r < kEpilogueRows; ++r) {
        if (m0 + r < M) s[r] += o.sub_a[(m0 + r) * capacity + j] * w;
      }
    }
    for (int32_t j = gathered; j < count; ++j) {
      const int32_t c = o.cols[j];
      const float w = static_cast<float>(o.cb[n * o.K + c]) * (col_n / 127.f);
#pragma unroll
      for (int r = 0; r < kEpilogueRows; ++r) {
        if (m0 + r < M) s[r] += to_float(o.a[(m0 + r) * o.K + c]) * w;
      }
    }
#pragma unroll
    for (int r = 0; r < kEpilogueRows; ++r) {
      const int64_t m = m0 + r;
      if (m >= M) break;
      const float product = acc != nullptr ? static_cast<float>(acc[m * N + n]) * (row[m] * col_n * kInv127Squared) : 0.f;
      const float v = product + s[r] + bias_n;
      out[m * N + n] = from_float<TOut>(v);
    }
  }
}

}  // namespace llmint8::cuda
