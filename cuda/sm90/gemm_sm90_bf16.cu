// The fused Hopper product with cutlass::bfloat16_t output (sm_90a; see gemm_sm90_run.cuh).
#include "cuda/sm90/gemm_sm90_run.cuh"

namespace llmint8::cuda::sm90 {

cudaError_t run_gemm_bf16(const GemmArgs& args, cudaStream_t stream) { return run_gemm<cutlass::bfloat16_t>(args, stream); }

}  // namespace llmint8::cuda::sm90
