// The table of product backends: adding a kernel is one file and one row here.
#include "cuda/scaled_product.h"

#include <iterator>
#include <string>
#include <vector>

namespace llmint8::cuda {

namespace {

const ProductBackend kBackends[] = {
    // The layer op for one or two rows in one kernel: each block quantizes the activations and
    // lists their outlier columns, then streams weight rows as gemv_dp4a does
    // (cuda/backend_gemv_fused.cu).
    {"gemv_fused",
     "layer op, 1 <= M <= 2, K % 16 == 0, 16-byte aligned rows, codes (t=6: and the outlier list) in 96 KB", true,
     gemv_fused_applies, gemv_fused_launch},
    // One or two rows: a warp per weight row, 512 contiguous bytes per load, dp4a, outliers and
    // bias in the same kernel (cuda/backend_gemv_dp4a.cu).
    {"gemv_dp4a", "1 <= M <= 2, K % 16 == 0, 16-byte aligned rows", false, gemv_dp4a_applies, gemv_dp4a_launch},
    // Decode sizes: tensor-core MMA over 16-row tiles, the weight streamed once, outliers
    // and bias in the same kernel (cuda/backend_small_m.cu).
    {"small_m_mma", "1 <= M <= 16, sm_80 and newer", false, small_m_applies, small_m_launch},
    // Short prefills with outliers (17 to 64 rows): the activations quantized and dequantized again (outlier
    // columns kept), then one tensor-core product that converts the weight codes in registers;
    // any number of outlier columns at no extra cost (cuda/backend_dequantized_mma.cu).
    {"dequantized_mma",
     "layer op at t > 0, 17 <= M <= 64, sm_80 and newer, fp16 or bf16, K % 64 == 0, N % 8 == 0, its K splits "
     "within 1.25 waves of blocks, 16-byte aligned rows",
     true, dequantized_mma_applies, dequantized_mma_launch},
#ifdef LLMINT8_WITH_SM90_GEMM
    // Prefill sizes bound by the weight's bytes on Hopper, with outliers: the activations
    // quantized and dequantized again (outlier columns kept), then CUTLASS's mixed-input GEMM
    // converts the weight codes in registers; any number of outlier columns at no extra cost
    // (cuda/sm90/backend_sm90_dequantized.cpp).
    {"sm90_dequantized",
     "layer op at t > 0, 33 <= M <= 128 on sm_90 (to 64 where dequantized_mma does not apply), fp16 or bf16, "
     "K % 16 == 0, N % 8 == 0, 16-byte aligned rows", true,
     sm90_dequantized_applies, sm90_dequantized_launch},
    // Prefill on Hopper: CUTLASS warpgroup GEMM, scales, bias and up to 8 outlier columns in
    // its epilogue (cuda/sm90/backend_sm90_gemm.cpp, kernels beside it).
    {"sm90_cutlass", "M > 16 on sm_90, K % 16 == 0, 16-byte aligned rows", false, sm90_gemm_applies, sm90_gemm_launch},
#endif
    // Everything else: int32 product (cuBLASLt, or the exact kernel), then one epilogue pass
    // (cuda/backend_int32_gemm.cpp).
    {"int32_gemm", "any shape, any card", false, int32_gemm_applies, int32_gemm_launch},
};

}  // namespace

const ProductBackend* product_backends(size_t* count) {
  *count = std::size(kBackends);
  return kBackends;
}

std::vector<std::string> product_backend_names() {
  std::vector<std::string> names;
  for (const auto& backend : kBackends) names.push_back(std::string(backend.name) + ": " + backend.applies_to);
  return names;
}

const ProductBackend* find_product_backend(const ScaledProduct& p) {
  const bool quantized = p.a != nullptr;
  for (const auto& backend : kBackends) {
    if (backend.quantizes_activations != quantized && backend.applies(p)) return &backend;
  }
  return nullptr;
}

cudaError_t launch_scaled_product(const ScaledProduct& p, const Scratch& scratch, cudaStream_t stream) {
  const ProductBackend* backend = find_product_backend(p);
  // Unreachable with codes: the last row applies to everything.
  return backend != nullptr ? backend->launch(p, scratch, stream) : cudaErrorNotSupported;
}

}  // namespace llmint8::cuda
