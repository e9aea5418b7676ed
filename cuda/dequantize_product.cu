// Launchers of the dequantization epilogue (torch-free; see launchers.h).
#include "cuda/kernels/dequantize_product.cuh"
#include "cuda/launchers.h"

#include <algorithm>

namespace llmint8::cuda {

namespace {

template <typename TIn>
OutlierArgs<TIn> outlier_args(const OutlierTerm* o) {
  if (o == nullptr) return {nullptr, nullptr, nullptr, nullptr, 0, nullptr, nullptr};
  return {static_cast<const TIn*>(o->a), o->cols, o->count, o->cb, o->K, o->sub_a, o->sub_w};
}

}  // namespace

cudaError_t launch_gather_outlier_columns(const OutlierTerm& outliers, int64_t M, int64_t N, const float* col_scale,
                                          cudaStream_t stream) {
  // Sized for a full buffer; threads past the device-side count return at once.
  const int64_t total = static_cast<int64_t>(kOutlierCapacity) * (N + M);
  if (total == 0) return cudaSuccess;
  const unsigned grid = static_cast<unsigned>(std::min<int64_t>((total + 255) / 256, 4096));
  return with_float_type(outliers.kind, [&](auto tag) {
    using TIn = decltype(tag);
    gather_outlier_columns_kernel<TIn><<<grid, 256, 0, stream>>>(outlier_args<TIn>(&outliers), M, N, kOutlierCapacity,
                                                                 col_scale, outliers.sub_a, outliers.sub_w);
    return cudaGetLastError();
  });
}

cudaError_t launch_dequantize_product(const int32_t* acc, int64_t M, int64_t N, const float* row, const float* col,
                                      const float* bias, const OutlierTerm* outliers, FloatKind out_kind, void* out,
                                      cudaStream_t stream) {
  if (M == 0 || N == 0) return cudaSuccess;
  constexpr int kThreads = 128;
  const dim3 grid(static_cast<unsigned>((N + kThreads - 1) / kThreads),
                  static_cast<unsigned>(std::min<int64_t>((M + kEpilogueRows - 1) / kEpilogueRows, 65535)));
  // Without outliers the input type is irrelevant: use the output's.
  const FloatKind in_kind = outliers != nullptr ? outliers->kind : out_kind;
  return with_float_type(in_kind, [&](auto in_tag) {
    using TIn = decltype(in_tag);
    return with_float_type(out_kind, [&](auto out_tag) {
      using TOut = decltype(out_tag);
      dequantize_product_kernel<TIn, TOut><<<grid, kThreads, 0, stream>>>(
          acc, M, N, row, col, bias, outlier_args<TIn>(outliers), kOutlierCapacity, static_cast<TOut*>(out));
      return cudaGetLastError();
    });
  });
}

}  // namespace llmint8::cuda
