// The fused Hopper product's interface (torch- and CUTLASS-free): what the backend in
// cuda/sm90/backend_sm90_gemm.cpp calls. Kernels: cuda/kernels/int8_scaled_gemm_sm90.cuh, one
// translation unit per output dtype here, compiled for sm_90a only.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace llmint8::cuda::sm90 {

// What the Hopper backends ask of a device, queried once (cuda/sm90/backend_sm90_gemm.cpp).
struct DeviceTraits {
  int hopper = 0;  // 0 unknown, 1 sm_90, 2 other
  int sm_count = 0;
};
const DeviceTraits& device_traits(int device);

// Outlier columns the GEMM epilogue adds itself (the rest go through the leftover pass).
constexpr int kEpilogueOutliers = 8;

// What one launch of the fused product needs. sub_a / sub_w null: no outlier term.
struct GemmArgs {
  const int8_t* a;  // [M, K] activation codes
  const int8_t* b;  // [N, K] weight codes
  int64_t M, N, K;
  const float* row;    // [M]
  const float* col;    // [N]
  const float* bias;   // [N] fp32, or null
  const float* sub_a;  // [kEpilogueOutliers, M] gathered outlier activations
  const float* sub_w;  // [kEpilogueOutliers, N] gathered dequantized weight columns
  void* out;           // [M, N] of the function's output type
  int sm_count;
};

cudaError_t run_gemm_f16(const GemmArgs& args, cudaStream_t stream);
cudaError_t run_gemm_bf16(const GemmArgs& args, cudaStream_t stream);
cudaError_t run_gemm_f32(const GemmArgs& args, cudaStream_t stream);

// The same on 64 x 64 tiles (small M: more tiles than SMs where 128 x 128 gives fewer); one
// translation unit each (gemm_sm90_small_*.cu), so that they compile in parallel.
cudaError_t run_gemm_small_f16(const GemmArgs& args, cudaStream_t stream);
cudaError_t run_gemm_small_bf16(const GemmArgs& args, cudaStream_t stream);
cudaError_t run_gemm_small_f32(const GemmArgs& args, cudaStream_t stream);

// Whether the 64 x 64 tiles serve M x N better: 128 x 128 tiles would leave SMs idle. On an
// H200, 4096 x 4096 layer op at t=0: M = 32 and 128 took 20.8 and 21.5 us with them against
// 23.7 and 26.1 without, but M = 512 took 32.0 against 28.9 (benchmarks/NOTES.md).
inline bool use_small_tiles(int64_t M, int64_t N, int sm_count) {
  const int64_t large_tiles = ((M + 127) / 128) * ((N + 127) / 128);
  return M <= 256 && large_tiles < sm_count;
}

}  // namespace llmint8::cuda::sm90
