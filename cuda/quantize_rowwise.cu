// Launchers of the quantization kernels (torch-free; see launchers.h).
#include "cuda/kernels/quantize_rowwise.cuh"
#include "cuda/launchers.h"

#include <algorithm>

namespace llmint8::cuda {

namespace {

constexpr int kRowBlock = 256;
constexpr int kColumnBlock = 256;
constexpr int64_t kMaxGridY = 65535;

unsigned blocks_for(int64_t n, int threads) { return static_cast<unsigned>((n + threads - 1) / threads); }

}  // namespace

cudaError_t launch_mark_outlier_columns(FloatKind kind, const void* a, int64_t rows, int64_t K, float threshold,
                                        uint8_t* mask, cudaStream_t stream) {
  if (rows == 0 || K == 0) return cudaSuccess;
  // Enough row chunks to fill the GPU, each long enough to amortize its column loads.
  const int64_t rows_per_chunk = std::max<int64_t>(16, (rows + kMaxGridY - 1) / kMaxGridY);
  const dim3 grid(blocks_for(K, kColumnBlock), static_cast<unsigned>((rows + rows_per_chunk - 1) / rows_per_chunk));
  return with_float_type(kind, [&](auto tag) {
    using T = decltype(tag);
    mark_outlier_columns_kernel<T><<<grid, kColumnBlock, 0, stream>>>(static_cast<const T*>(a), rows, K,
                                                                      rows_per_chunk, threshold, mask);
    return cudaGetLastError();
  });
}

cudaError_t launch_compact_columns(const uint8_t* mask, int64_t K, int32_t* cols, int32_t* count,
                                   cudaStream_t stream) {
  compact_columns_kernel<1024><<<1, 1024, 0, stream>>>(mask, K, cols, count);
  return cudaGetLastError();
}

cudaError_t launch_quantize_rows(FloatKind kind, const void* a, int64_t rows, int64_t K, const uint8_t* mask,
                                 int8_t* q, float* stats, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  return with_float_type(kind, [&](auto tag) {
    using T = decltype(tag);
    quantize_rows_kernel<T, kRowBlock>
        <<<static_cast<unsigned>(rows), kRowBlock, 0, stream>>>(static_cast<const T*>(a), K, mask, q, stats);
    return cudaGetLastError();
  });
}

cudaError_t launch_quantize_columns(FloatKind kind, const void* a, int64_t rows, int64_t K, const uint8_t* mask,
                                    int8_t* q, float* col_stats, cudaStream_t stream) {
  if (K == 0) return cudaSuccess;
  return with_float_type(kind, [&](auto tag) {
    using T = decltype(tag);
    quantize_columns_kernel<T><<<blocks_for(K, kColumnBlock), kColumnBlock, 0, stream>>>(
        static_cast<const T*>(a), rows, K, mask, q, col_stats);
    return cudaGetLastError();
  });
}

cudaError_t launch_dequantize_rows(const int8_t* q, const float* stats, int64_t rows, int64_t K, float* out,
                                   cudaStream_t stream) {
  const int64_t total = rows * K;
  if (total == 0) return cudaSuccess;
  const unsigned grid = static_cast<unsigned>(std::min<int64_t>(blocks_for(total, 256), 65535));
  dequantize_rows_kernel<<<grid, 256, 0, stream>>>(q, stats, K, total, out);
  return cudaGetLastError();
}

}  // namespace llmint8::cuda
