// Product backend "sm90_cutlass": prefill sizes on Hopper. One CUTLASS warpgroup GEMM whose
// epilogue applies the scales, adds the bias and the first 8 outlier columns (gathered into
// vectors first), writing the output once; a second pass adds further outlier columns (on
// tensor cores for fp16 and bf16 activations) and returns at once when there are none (the
// count lives on the device).
#include "cuda/scaled_product.h"
#include "cuda/sm90/gemm_sm90.h"

#include <array>

namespace llmint8::cuda {

const sm90::DeviceTraits& sm90::device_traits(int device) {
  static std::array<DeviceTraits, 64> all{};
  static const DeviceTraits none{2, 0};
  if (device < 0 || device >= 64) return none;
  DeviceTraits& t = all[device];
  if (t.hopper == 0) {
    int major = 0, minor = 0;
    cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device);
    cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device);
    cudaDeviceGetAttribute(&t.sm_count, cudaDevAttrMultiProcessorCount, device);
    t.hopper = (major == 9 && minor == 0) ? 1 : 2;
  }
  return t;
}

using sm90::device_traits;

bool sm90_gemm_applies(const ScaledProduct& p) {
  const int64_t out_align = p.out_kind == FloatKind::f32 ? 4 : 8;  // 16-byte output rows for TMA
  return device_traits(p.device).hopper == 1 && p.M > kSmallMRows && p.K > 0 && p.K % 16 == 0 && p.N % out_align == 0 &&
         p.M < (int64_t{1} << 31) && p.N < (int64_t{1} << 31) && p.K < (int64_t{1} << 31) && aligned16(p.a) &&
         aligned16(p.b) && aligned16(p.out);
}

cudaError_t sm90_gemm_launch(const ScaledProduct& p, const Scratch& scratch, cudaStream_t stream) {
  cudaError_t e = cudaSuccess;
  const float* bias = static_cast<const float*>(p.bias);
  if (p.bias != nullptr && p.bias_kind != FloatKind::f32) {  // the epilogue reads an fp32 bias
    auto* converted = static_cast<float*>(scratch.get(sizeof(float) * p.N));
    if ((e = launch_to_float(p.bias_kind, p.bias, p.N, converted, stream)) != cudaSuccess) return e;
    bias = converted;
  }
  float* sub_a = nullptr;
  float* sub_w = nullptr;
  if (p.outliers != nullptr) {
    sub_a = static_cast<float*>(scratch.get(sizeof(float) * kOutlierCapacity * p.M));
    sub_w = static_cast<float*>(scratch.get(sizeof(float) * kOutlierCapacity * p.N));
    e = launch_gather_outlier_columns(*p.outliers, p.b, p.col, p.M, p.N, p.K, sm90::kEpilogueOutliers, sub_a, sub_w,
                                      stream);
    if (e != cudaSuccess) return e;
  }
  const sm90::GemmArgs args{p.a,  p.b,   p.M,   p.N,   p.K,   p.row,
                            p.col, bias, sub_a, sub_w, p.out, device_traits(p.device).sm_count};
  const bool small = sm90::use_small_tiles(p.M, p.N, device_traits(p.device).sm_count);
  switch (p.out_kind) {
    case FloatKind::f16:
      e = small ? sm90::run_gemm_small_f16(args, stream) : sm90::run_gemm_f16(args, stream);
      break;
    case FloatKind::bf16:
      e = small ? sm90::run_gemm_small_bf16(args, stream) : sm90::run_gemm_bf16(args, stream);
      break;
    case FloatKind::f32:
      e = small ? sm90::run_gemm_small_f32(args, stream) : sm90::run_gemm_f32(args, stream);
      break;
  }
  if (e != cudaSuccess || p.outliers == nullptr) return e;
  if (outlier_mma_applies(p.outliers->kind, p.M, p.N, p.K)) {  // fp16 and bf16 activations: tensor cores
    return launch_outlier_rest(p, sm90::kEpilogueOutliers, device_traits(p.device).sm_count, scratch, stream, sub_a,
                               sub_w);
  }
  EpilogueArgs leftover{};
  leftover.M = p.M;
  leftover.N = p.N;
  leftover.K = p.K;
  leftover.col = p.col;
  leftover.outliers = *p.outliers;
  leftover.cb = p.b;
  leftover.sub_a = sub_a;
  leftover.sub_w = sub_w;
  leftover.first_outlier = sm90::kEpilogueOutliers;
  leftover.accumulate = true;
  leftover.out_kind = p.out_kind;
  leftover.out = p.out;
  return launch_dequantize_product(leftover, stream);
}

}  // namespace llmint8::cuda
