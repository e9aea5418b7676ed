// The fused Hopper product on 64 x 64 tiles, cutlass::half_t output (sm_90a; see gemm_sm90_run.cuh).
#include "cuda/sm90/gemm_sm90_run.cuh"

namespace llmint8::cuda::sm90 {

cudaError_t run_gemm_small_f16(const GemmArgs& args, cudaStream_t stream) {
  return run_gemm_small<cutlass::half_t>(args, stream);
}

}  // namespace llmint8::cuda::sm90
