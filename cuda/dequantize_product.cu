// Launcher of the dequantization epilogue (torch-free; see launchers.h).
#include "cuda/kernels/dequantize_product.cuh"
#include "cuda/launchers.h"

#include <algorithm>

namespace llmint8::cuda {

cudaError_t launch_dequantize_product(const int32_t* acc, int64_t M, int64_t N, const float* row, const float* col,
                                      const float* bias, const OutlierTerm* outliers, FloatKind out_kind, void* out,
                                      cudaStream_t stream) {
  const int64_t total = M * N;
  if (total == 0) return cudaSuccess;
  const unsigned grid = static_cast<unsigned>(std::min<int64_t>((total + 255) / 256, 65535 * 8));
  // Without outliers the input type is irrelevant: use the output's.
  const FloatKind in_kind = outliers != nullptr ? outliers->kind : out_kind;
  return with_float_type(in_kind, [&](auto in_tag) {
    using TIn = decltype(in_tag);
    OutlierArgs<TIn> args{nullptr, nullptr, nullptr, nullptr, 0};
    if (outliers != nullptr) {
      args = {static_cast<const TIn*>(outliers->a), outliers->cols, outliers->count, outliers->cb, outliers->K};
    }
    return with_float_type(out_kind, [&](auto out_tag) {
      using TOut = decltype(out_tag);
      dequantize_product_kernel<TIn, TOut>
          <<<grid, 256, 0, stream>>>(acc, M, N, row, col, bias, args, static_cast<TOut*>(out));
      return cudaGetLastError();
    });
  });
}

}  // namespace llmint8::cuda
