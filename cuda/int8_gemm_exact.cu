// Launcher of the exact CUDA-core int8 GEMM (torch-free; see launchers.h).
#include "cuda/kernels/int8_gemm_exact.cuh"
#include "cuda/launchers.h"

namespace llmint8::cuda {

cudaError_t launch_int8_gemm_exact(const int8_t* A, const int8_t* B, int32_t* C, int64_t M, int64_t N, int64_t K,
                                   cudaStream_t stream) {
  if (M == 0 || N == 0) return cudaSuccess;
  const int64_t n_tiles = (N + kExactTile - 1) / kExactTile;
  if (n_tiles > 65535) return cudaErrorInvalidConfiguration;  // N > 1,048,560: no layer is that wide
  const dim3 grid(static_cast<unsigned>((M + kExactTile - 1) / kExactTile), static_cast<unsigned>(n_tiles));
  int8_gemm_exact_kernel<<<grid, dim3(kExactTile, kExactTile), 0, stream>>>(A, B, C, M, N, K);
  return cudaGetLastError();
}

}  // namespace llmint8::cuda
