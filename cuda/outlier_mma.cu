// Launchers of the tensor-core leftover outlier pass (torch-free; see kernels/outlier_mma.cuh).
#include "cuda/kernels/outlier_mma.cuh"
#include "cuda/launchers.h"
#include "cuda/scaled_product.h"

#include <algorithm>

namespace llmint8::cuda {

namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace

bool outlier_mma_applies(FloatKind activation_kind, int64_t M, int64_t N, int64_t K) {
  return activation_kind != FloatKind::f32 && M > 0 && N > 0 && K < (int64_t{1} << 31) &&
         ceil_div(M, kOutlierMmaRows) <= 65535;  // M tiles on the grid's y
}

int outlier_mma_splits(int64_t M, int64_t N, int sm_count) {
  const int64_t tiles = ceil_div(M, kOutlierMmaRows) * ceil_div(N, kOutlierMmaCols);
  const int64_t wanted = 8 * std::max(sm_count, 1);  // blocks enough to keep every SM's loads in flight
  if (tiles >= wanted / 2) return 1;
  return static_cast<int>(std::min<int64_t>(kOutlierMmaMaxSplits, ceil_div(wanted, tiles)));
}

cudaError_t launch_outlier_mma(const OutlierMmaArgs& args, FloatKind activation_kind, FloatKind out_kind,
                               cudaStream_t stream) {
  if (!outlier_mma_applies(activation_kind, args.M, args.N, args.K) || args.splits < 1 ||
      args.splits > kOutlierMmaMaxSplits || (args.splits > 1 && args.partials == nullptr)) {
    return cudaErrorInvalidValue;
  }
  const dim3 grid(static_cast<unsigned>(ceil_div(args.N, kOutlierMmaCols)),
                  static_cast<unsigned>(ceil_div(args.M, kOutlierMmaRows)), static_cast<unsigned>(args.splits));
  const auto run = [&](auto in_tag) {
    using T = decltype(in_tag);
    return with_float_type(out_kind, [&](auto out_tag) {
      using TOut = decltype(out_tag);
      outlier_mma_kernel<T, TOut><<<grid, kOutlierMmaThreads, 0, stream>>>(args);
      cudaError_t e = cudaGetLastError();
      if (e != cudaSuccess || args.splits == 1) return e;
      const unsigned blocks = static_cast<unsigned>(std::min<int64_t>(ceil_div(args.M * args.N, 256), 4096));
      outlier_partials_kernel<TOut><<<blocks, 256, 0, stream>>>(args);
      return cudaGetLastError();
    });
  };
  return activation_kind == FloatKind::f16 ? run(__half{}) : run(__nv_bfloat16{});
}

cudaError_t launch_outlier_rest(const ScaledProduct& p, int first, int sm_count, const Scratch& scratch,
                                cudaStream_t stream, const float* sub_a, const float* sub_w) {
  OutlierMmaArgs rest{};
  rest.a = p.outliers->a;
  rest.cols = p.outliers->cols;
  rest.count = p.outliers->count;
  rest.first = first;
  rest.cb = p.b;
  rest.col = p.col;
  rest.M = p.M;
  rest.N = p.N;
  rest.K = p.K;
  rest.splits = outlier_mma_splits(p.M, p.N, sm_count);
  if (rest.splits > 1) rest.partials = static_cast<float*>(scratch.get(sizeof(float) * rest.splits * p.M * p.N));
  rest.out = p.out;
  rest.sub_a = sub_a;
  rest.sub_w = sub_w;
  return launch_outlier_mma(rest, p.outliers->kind, p.out_kind, stream);
}

}  // namespace llmint8::cuda
