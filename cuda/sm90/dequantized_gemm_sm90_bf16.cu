// The product of weight codes and dequantized activations, cutlass::bfloat16_t (sm_90a; see
// cuda/kernels/dequantized_gemm_sm90.cuh).
#include "cuda/kernels/dequantized_gemm_sm90.cuh"

namespace llmint8::cuda::sm90 {

cudaError_t run_dequantized_gemm_bf16(const DequantizedGemmArgs& args, const Scratch& scratch, cudaStream_t stream) {
  return DequantizedGemm<cutlass::bfloat16_t>::run(args, scratch, stream);
}

}  // namespace llmint8::cuda::sm90
