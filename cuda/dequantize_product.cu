// Launchers of the outlier gather and the epilogue pass (torch-free; see launchers.h).
#include "cuda/kernels/dequantize_product.cuh"
#include "cuda/launchers.h"

#include <algorithm>

namespace llmint8::cuda {

cudaError_t launch_gather_outlier_columns(const OutlierTerm& outliers, const int8_t* cb, const float* col, int64_t M,
                                          int64_t N, int64_t K, int zero_fill, float* sub_a, float* sub_w,
                                          cudaStream_t stream) {
  if (zero_fill < 0 || zero_fill > kOutlierCapacity) return cudaErrorInvalidValue;
  // Sized for full buffers; threads past the device-side count return at once.
  const int64_t total = static_cast<int64_t>(kOutlierCapacity) * (N + M);
  if (total == 0) return cudaSuccess;
  const unsigned grid = static_cast<unsigned>(std::min<int64_t>((total + 255) / 256, 2048));
  return with_float_type(outliers.kind, [&](auto tag) {
    using TIn = decltype(tag);
    gather_outlier_columns_kernel<TIn><<<grid, 256, 0, stream>>>(static_cast<const TIn*>(outliers.a), outliers.cols,
                                                                 outliers.count, cb, col, M, N, K, zero_fill, sub_a,
                                                                 sub_w);
    return cudaGetLastError();
  });
}

cudaError_t launch_dequantize_product(const EpilogueArgs& args, cudaStream_t stream) {
  if (args.M == 0 || args.N == 0) return cudaSuccess;
  const int64_t tiles = ((args.N + kEpilogueThreads - 1) / kEpilogueThreads) *
                        ((args.M + kEpilogueRows - 1) / kEpilogueRows);
  // Grid-stride: a bounded grid keeps the launch cheap when the kernel has nothing to do
  // (the leftover-outlier pass after a GEMM that took every outlier).
  const unsigned grid = static_cast<unsigned>(std::min<int64_t>(tiles, args.accumulate ? 1024 : 8192));
  // Without outliers the input type is irrelevant: use the output's.
  const FloatKind in_kind = args.outliers.count != nullptr ? args.outliers.kind : args.out_kind;
  return with_float_type(in_kind, [&](auto in_tag) {
    using TIn = decltype(in_tag);
    return with_float_type(args.out_kind, [&](auto out_tag) {
      using TOut = decltype(out_tag);
      dequantize_product_kernel<TIn, TOut><<<grid, kEpilogueThreads, 0, stream>>>(args);
      return cudaGetLastError();
    });
  });
}

namespace {

__global__ void to_float_kernel(const void* in, FloatKind kind, int64_t n, float* out) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[i] = load_float(in, kind, i);
  }
}

}  // namespace

cudaError_t launch_to_float(FloatKind kind, const void* in, int64_t n, float* out, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  const unsigned grid = static_cast<unsigned>(std::min<int64_t>((n + 255) / 256, 1024));
  to_float_kernel<<<grid, 256, 0, stream>>>(in, kind, n, out);
  return cudaGetLastError();
}

}  // namespace llmint8::cuda
