// Epilogue of LLM.int8() as its own pass: int32 products back to real units, plus the
// floating-point outlier columns and the bias, rounded once to the output dtype. Used where
// the product itself cannot fuse it (the int32 GEMM backend), and for the outlier columns a
// GEMM epilogue leaves over.
#pragma once

#include "cuda/kernels/common.cuh"

namespace llmint8::cuda {

// Gathers the first min(count, capacity) outlier columns of a and of the dequantized weight
// into compact buffers ([j][m] and [j][n]), and zeros up to zero_fill.
template <typename TIn>
__global__ void gather_outlier_columns_kernel(const TIn* __restrict__ a, const int32_t* __restrict__ cols,
                                              const int32_t* __restrict__ count, const int8_t* __restrict__ cb,
                                              const float* __restrict__ col, int64_t M, int64_t N, int64_t K,
                                              int zero_fill, float* __restrict__ sub_a, float* __restrict__ sub_w) {
  const int32_t used = min(*count, kOutlierCapacity);
  const int64_t filled = max(used, zero_fill);
  const int64_t weight_items = filled * N, total = weight_items + filled * M;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    if (i < weight_items) {
      const int64_t j = i / N, n = i % N;
      sub_w[i] = j < used ? static_cast<float>(cb[n * K + cols[j]]) * (col[n] / 127.f) : 0.f;
    } else {
      const int64_t j = (i - weight_items) / M, m = (i - weight_items) % M;
      sub_a[j * M + m] = j < used ? to_float(a[m * K + cols[j]]) : 0.f;
    }
  }
}

constexpr int kEpilogueRows = 8;  // output rows per thread: each gathered weight value is reused 8 times
constexpr int kEpilogueThreads = 128;

// Thread = one output column n for kEpilogueRows rows, grid-stride over tiles. Outliers past
// the buffers' capacity are read in place: slower, but any count (0 to K) is right, and the
// count comes from the device, so nothing waits on the host.
template <typename TIn, typename TOut>
__global__ void __launch_bounds__(kEpilogueThreads) dequantize_product_kernel(EpilogueArgs p) {
  const int32_t count = p.outliers.count != nullptr ? *p.outliers.count : 0;
  if (p.accumulate && count <= p.first_outlier) return;  // the GEMM epilogue took them all
  const TIn* a = static_cast<const TIn*>(p.outliers.a);
  const int32_t* cols = p.outliers.cols;
  const int32_t gathered = min(count, kOutlierCapacity);
  TOut* out = static_cast<TOut*>(p.out);
  const int64_t M = p.M, N = p.N, K = p.K;
  const int64_t n_tiles = (N + kEpilogueThreads - 1) / kEpilogueThreads;
  const int64_t m_tiles = (M + kEpilogueRows - 1) / kEpilogueRows;
  for (int64_t tile = blockIdx.x; tile < n_tiles * m_tiles; tile += gridDim.x) {
    const int64_t n = (tile % n_tiles) * kEpilogueThreads + threadIdx.x;
    const int64_t m0 = (tile / n_tiles) * kEpilogueRows;
    if (n >= N) continue;
    const float col_n = p.col[n];
    float s[kEpilogueRows] = {};
    for (int32_t j = p.first_outlier; j < gathered; ++j) {
      const float w = p.sub_w[j * N + n];
#pragma unroll
      for (int r = 0; r < kEpilogueRows; ++r) {
        if (m0 + r < M) s[r] += p.sub_a[j * M + m0 + r] * w;
      }
    }
    for (int32_t j = max(gathered, p.first_outlier); j < count; ++j) {
      const int32_t c = cols[j];
      const float w = static_cast<float>(p.cb[n * K + c]) * (col_n / 127.f);
#pragma unroll
      for (int r = 0; r < kEpilogueRows; ++r) {
        if (m0 + r < M) s[r] += to_float(a[(m0 + r) * K + c]) * w;
      }
    }
    const float bias_n = p.bias != nullptr ? load_float(p.bias, p.bias_kind, n) : 0.f;
#pragma unroll
    for (int r = 0; r < kEpilogueRows; ++r) {
      const int64_t m = m0 + r;
      if (m >= M) break;
      float v;
      if (p.accumulate) {
        v = to_float(out[m * N + n]) + s[r];
      } else {
        const float product =
            p.acc != nullptr ? static_cast<float>(p.acc[m * N + n]) * (p.row[m] * col_n * kInv127Squared) : 0.f;
        v = product + s[r] + bias_n;
      }
      out[m * N + n] = from_float<TOut>(v);
    }
  }
}

}  // namespace llmint8::cuda
