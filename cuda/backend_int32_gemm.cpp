// Product backend "int32_gemm": any shape on any card. The int32 product goes through memory
// (cuBLASLt's int8 tensor-core kernels, or the exact CUDA-core kernel where they do not apply),
// then one epilogue pass adds scales, outlier term and bias.
#include "cuda/int8_gemm_cublaslt.h"
#include "cuda/scaled_product.h"

namespace llmint8::cuda {

cudaError_t launch_int8_gemm_s32(const int8_t* A, const int8_t* B, int32_t* C, int64_t M, int64_t N, int64_t K,
                                 void* workspace, cudaStream_t stream) {
  if (M == 0 || N == 0) return cudaSuccess;
  if (K == 0) return cudaMemsetAsync(C, 0, sizeof(int32_t) * M * N, stream);
  if (cublaslt_int8_supported(A, B, C, N, K) && cublaslt_int8_gemm(A, B, C, M, N, K, workspace, stream)) {
    return cudaGetLastError();
  }
  return launch_int8_gemm_exact(A, B, C, M, N, K, stream);
}

bool int32_gemm_applies(const ScaledProduct&) { return true; }

cudaError_t int32_gemm_launch(const ScaledProduct& p, const Scratch& scratch, cudaStream_t stream) {
  auto* acc = static_cast<int32_t*>(scratch.get(sizeof(int32_t) * p.M * p.N));
  cudaError_t e = launch_int8_gemm_s32(p.a, p.b, acc, p.M, p.N, p.K, scratch.get(kCublasLtWorkspaceBytes), stream);
  if (e != cudaSuccess) return e;
  float* sub_a = nullptr;
  float* sub_w = nullptr;
  if (p.outliers != nullptr) {
    sub_a = static_cast<float*>(scratch.get(sizeof(float) * kOutlierCapacity * p.M));
    sub_w = static_cast<float*>(scratch.get(sizeof(float) * kOutlierCapacity * p.N));
    e = launch_gather_outlier_columns(*p.outliers, p.b, p.col, p.M, p.N, p.K, 0, sub_a, sub_w, stream);
    if (e != cudaSuccess) return e;
  }
  EpilogueArgs epilogue{};
  epilogue.acc = acc;
  epilogue.M = p.M;
  epilogue.N = p.N;
  epilogue.K = p.K;
  epilogue.row = p.row;
  epilogue.col = p.col;
  epilogue.bias = p.bias;
  epilogue.bias_kind = p.bias_kind;
  if (p.outliers != nullptr) epilogue.outliers = *p.outliers;
  epilogue.cb = p.b;
  epilogue.sub_a = sub_a;
  epilogue.sub_w = sub_w;
  epilogue.out_kind = p.out_kind;
  epilogue.out = p.out;
  return launch_dequantize_product(epilogue, stream);
}

}  // namespace llmint8::cuda
