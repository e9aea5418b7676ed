// Product backend "sm90_dequantized": the layer op with outliers (threshold > 0) at the prefill
// sizes a Hopper card spends reading the weight (17 to 128 rows), fp16 and bf16 activations.
// Three launches (outlier flags, rows dequantized, then the product) where the int8 path takes
// seven; the outlier term rides in the product however many outlier columns there are
// (cuda/kernels/dequantized_gemm_sm90.cuh). On an H200 the layer op at t=6 runs at 0.44-0.79x fp16
// on Llama-2-7B layers this way, 1.0-1.4x faster than the int8 path with its outlier passes; at
// threshold 0 the int8 GEMM is faster and keeps those (benchmarks/NOTES.md, fifteenth session).
#include "cuda/scaled_product.h"
#include "cuda/sm90/dequantized_gemm_sm90.h"
#include "cuda/sm90/gemm_sm90.h"

#include <cstdint>

namespace llmint8::cuda {


bool sm90_dequantized_applies(const ScaledProduct& p) {
  const bool sixteen_bit = p.x_kind == FloatKind::f16 || p.x_kind == FloatKind::bf16;
  return p.x != nullptr && p.threshold > 0.f && sixteen_bit && p.out_kind == p.x_kind &&
         sm90::device_traits(p.device).hopper == 1 && p.M >= kDequantizedMinRows && p.M <= kDequantizedMaxRows &&
         p.K > 0 && p.K % 16 == 0 && p.N % 8 == 0 && p.N < (int64_t{1} << 31) && p.K < (int64_t{1} << 31) &&
         aligned16(p.x) && aligned16(p.b) && aligned16(p.out);
}

cudaError_t sm90_dequantized_launch(const ScaledProduct& p, const Scratch& scratch, cudaStream_t stream) {
  void* act = scratch.get(static_cast<size_t>(p.M * p.K) * 2);
  auto* flags = p.threshold > 0.f ? static_cast<uint8_t*>(scratch.get(static_cast<size_t>(p.K))) : nullptr;
  auto* row_maxima =
      static_cast<float*>(scratch.get(sizeof(float) * static_cast<size_t>(p.M * dequantize_column_blocks(p.K))));
  const float* bias = static_cast<const float*>(p.bias);
  float* bias_f32 = nullptr;
  if (p.bias != nullptr && p.bias_kind != FloatKind::f32) {  // the epilogue reads an fp32 bias
    bias_f32 = static_cast<float*>(scratch.get(sizeof(float) * p.N));
    bias = bias_f32;
  }
  cudaError_t e = launch_dequantize_activations(p.x_kind, p.x, p.M, p.K, p.threshold, flags, row_maxima, act,
                                                p.bias, p.bias_kind, p.N, bias_f32, stream);
  if (e != cudaSuccess) return e;
  const sm90::DequantizedGemmArgs args{act, p.b, p.col, bias, p.out, p.M, p.N, p.K,
                                       sm90::device_traits(p.device).sm_count};
  return p.x_kind == FloatKind::f16 ? sm90::run_dequantized_gemm_f16(args, scratch, stream)
                                    : sm90::run_dequantized_gemm_bf16(args, scratch, stream);
}

}  // namespace llmint8::cuda
