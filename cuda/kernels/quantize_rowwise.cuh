// Row-wise (and column-wise) absmax quantization with outlier-column detection.
#pragma once

#include "cuda/kernels/common.cuh"

#include <cub/block/block_scan.cuh>

namespace llmint8::cuda {

// Grid: (column blocks, row chunks). Thread = one column over a chunk of rows,
// so a warp reads 32 consecutive elements of a row. Flags only ever go 0 -> 1.
template <typename T>
__global__ void mark_outlier_columns_kernel(const T* __restrict__ a, int64_t rows, int64_t K, int64_t rows_per_chunk,
                                            float threshold, uint8_t* __restrict__ mask) {
  const int64_t k = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (k >= K) return;
  const int64_t r0 = static_cast<int64_t>(blockIdx.y) * rows_per_chunk;
  const int64_t r1 = min(rows, r0 + rows_per_chunk);
  for (int64_t r = r0; r < r1; ++r) {
    if (fabsf(to_float(a[r * K + k])) >= threshold) {
      mask[k] = 1;
      return;
    }
  }
}

// One block: each thread scans a contiguous slice of the mask, a block-wide
// exclusive scan gives each slice its first output slot. Output is sorted.
template <int BLOCK>
__global__ void compact_columns_kernel(const uint8_t* __restrict__ mask, int64_t K, int32_t* __restrict__ cols,
                                       int32_t* __restrict__ count) {
  using Scan = cub::BlockScan<int32_t, BLOCK>;
  __shared__ typename Scan::TempStorage scan_storage;
  const int64_t slice = (K + BLOCK - 1) / BLOCK;
  const int64_t k0 = threadIdx.x * slice, k1 = min(K, k0 + slice);
  int32_t local = 0;
  for (int64_t k = k0; k < k1; ++k) local += mask[k] ? 1 : 0;
  int32_t offset = 0, total = 0;
  Scan(scan_storage).ExclusiveSum(local, offset, total);
  for (int64_t k = k0; k < k1; ++k) {
    if (mask[k]) cols[offset++] = static_cast<int32_t>(k);
  }
  if (threadIdx.x == 0) *count = total;
}

// One block per row: absmax over the kept columns, then the codes.
template <typename T, int BLOCK>
__global__ void quantize_rows_kernel(const T* __restrict__ a, int64_t K, const uint8_t* __restrict__ mask,
                                     int8_t* __restrict__ q, float* __restrict__ stats) {
  const int64_t row = blockIdx.x;
  const T* arow = a + row * K;
  int8_t* qrow = q + row * K;
  float m = 0.f;
  for (int64_t k = threadIdx.x; k < K; k += BLOCK) {
    if (mask == nullptr || !mask[k]) m = absmax_combine(m, fabsf(to_float(arow[k])));
  }
  m = block_absmax<BLOCK>(m);
  const float scale = code_scale(m);
  if (threadIdx.x == 0) stats[row] = m;
  for (int64_t k = threadIdx.x; k < K; k += BLOCK) {
    const bool skip = scale == 0.f || (mask != nullptr && mask[k]);
    qrow[k] = skip ? int8_t{0} : quantize_value(to_float(arow[k]), scale);
  }
}

// Thread = one column: absmax down the column, then its codes.
template <typename T>
__global__ void quantize_columns_kernel(const T* __restrict__ a, int64_t rows, int64_t K,
                                        const uint8_t* __restrict__ mask, int8_t* __restrict__ q,
                                        float* __restrict__ col_stats) {
  const int64_t k = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (k >= K) return;
  const bool outlier = mask != nullptr && mask[k];
  float m = 0.f;
  if (!outlier) {
    for (int64_t r = 0; r < rows; ++r) m = absmax_combine(m, fabsf(to_float(a[r * K + k])));
  }
  col_stats[k] = m;
  const float scale = code_scale(m);
  for (int64_t r = 0; r < rows; ++r) q[r * K + k] = scale == 0.f ? int8_t{0} : quantize_value(to_float(a[r * K + k]), scale);
}

__global__ void dequantize_rows_kernel(const int8_t* __restrict__ q, const float* __restrict__ stats, int64_t K,
                                       int64_t total, float* __restrict__ out) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[i] = __fdiv_rn(static_cast<float>(q[i]) * stats[i / K], 127.f);
  }
}

}  // namespace llmint8::cuda
