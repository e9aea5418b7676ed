// Launcher of the decode-size fused int8 product (torch-free; see launchers.h).
#include "cuda/kernels/int8_gemv.cuh"
#include "cuda/launchers.h"

namespace llmint8::cuda {

namespace {

template <int ROWS, typename TIn, typename TOut>
void launch_rows(const int8_t* q, const float* row, const int8_t* cb, const float* col, const float* bias, int64_t N,
                 int64_t K, const OutlierArgs<TIn>& o, TOut* out, cudaStream_t stream) {
  const unsigned grid = static_cast<unsigned>((N + kGemvWarps - 1) / kGemvWarps);
  const bool vector = K % 16 == 0 && reinterpret_cast<uintptr_t>(q) % 16 == 0 &&
                      reinterpret_cast<uintptr_t>(cb) % 16 == 0;
  if (vector) {
    int8_gemv_kernel<ROWS, true, TIn, TOut>
        <<<grid, kGemvWarps * 32, 0, stream>>>(q, row, cb, col, bias, N, K, o, kOutlierCapacity, out);
  } else {
    int8_gemv_kernel<ROWS, false, TIn, TOut>
        <<<grid, kGemvWarps * 32, 0, stream>>>(q, row, cb, col, bias, N, K, o, kOutlierCapacity, out);
  }
}

template <typename TIn, typename TOut>
void launch_any_rows(int64_t M, const int8_t* q, const float* row, const int8_t* cb, const float* col,
                     const float* bias, int64_t N, int64_t K, const OutlierArgs<TIn>& o, TOut* out,
                     cudaStream_t stream) {
  if (M == 1) return launch_rows<1>(q, row, cb, col, bias, N, K, o, out, stream);
  return launch_rows<2>(q, row, cb, col, bias, N, K, o, out, stream);
}

}  // namespace

bool gemv_applies(int64_t M) { return M >= 1 && M <= kGemvMaxRows; }
static_assert(kGemvMaxRows == 2, "launch_any_rows instantiates 1 and 2 rows");

cudaError_t launch_int8_gemv(const int8_t* q, const float* row, int64_t M, const int8_t* cb, const float* col,
                             const float* bias, int64_t N, int64_t K, const OutlierTerm* outliers,
                             FloatKind out_kind, void* out, cudaStream_t stream) {
  if (!gemv_applies(M) || N == 0) return M == 0 || N == 0 ? cudaSuccess : cudaErrorInvalidValue;
  const FloatKind in_kind = outliers != nullptr ? outliers->kind : out_kind;
  return with_float_type(in_kind, [&](auto in_tag) {
    using TIn = decltype(in_tag);
    OutlierArgs<TIn> args{nullptr, nullptr, nullptr, nullptr, 0, nullptr, nullptr};
    if (outliers != nullptr) {
      args = {static_cast<const TIn*>(outliers->a), outliers->cols, outliers->count, outliers->cb, outliers->K,
              outliers->sub_a, outliers->sub_w};
    }
    return with_float_type(out_kind, [&](auto out_tag) {
      using TOut = decltype(out_tag);
      launch_any_rows<TIn, TOut>(M, q, row, cb, col, bias, N, K, args, static_cast<TOut*>(out), stream);
      return cudaGetLastError();
    });
  });
}

}  // namespace llmint8::cuda
