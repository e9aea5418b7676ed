// Product backend "gemv_fused": the layer op for one or two rows in one kernel, the activations
// quantized and their outlier columns found inside it (see kernels/gemv_fused.cuh).
#include "cuda/kernels/gemv_fused.cuh"
#include "cuda/scaled_product.h"

namespace llmint8::cuda {

namespace {

constexpr size_t kDefaultDynamicSmem = 48 * 1024;  // no opt-in attribute needed below it

}  // namespace

bool gemv_fused_applies(const ScaledProduct& p) {
  return p.x != nullptr && p.M >= 1 && p.M <= kFusedGemvMaxRows && p.K > 0 && p.K % 16 == 0 &&
         reinterpret_cast<uintptr_t>(p.x) % 16 == 0 && reinterpret_cast<uintptr_t>(p.b) % 16 == 0 &&
         fused_gemv_smem_bytes(static_cast<int>(p.M), p.K) <= kDefaultDynamicSmem;
}

cudaError_t gemv_fused_launch(const ScaledProduct& p, const Scratch& /*scratch*/, cudaStream_t stream) {
  const FusedGemvParams params{p.x, p.threshold, p.b, p.col, p.bias, p.bias_kind, p.out, p.out_kind, p.N, p.K};
  const unsigned grid = static_cast<unsigned>((p.N + kFusedGemvWarps - 1) / kFusedGemvWarps);
  const size_t smem = fused_gemv_smem_bytes(static_cast<int>(p.M), p.K);
  return with_float_type(p.x_kind, [&](auto tag) {
    using T = decltype(tag);
    if (p.M == 1) {
      gemv_fused_kernel<T, 1><<<grid, kFusedGemvThreads, smem, stream>>>(params);
    } else {
      gemv_fused_kernel<T, 2><<<grid, kFusedGemvThreads, smem, stream>>>(params);
    }
    return cudaGetLastError();
  });
}

}  // namespace llmint8::cuda
