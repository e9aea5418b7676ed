// Exact int8 x int8 -> int32 GEMM on CUDA cores for any shape and alignment.
// The fallback where cuBLASLt's int8 tensor-core kernels do not apply.
#pragma once

#include <cstdint>

namespace llmint8::cuda {

constexpr int kExactTile = 16;   // output tile: 16 x 16, one thread per element
constexpr int kExactTileK = 32;  // K slice staged in shared memory

// C[m, n] = sum_k A[m, k] * B[n, k]. Grid: (M tiles, N tiles), block 16 x 16.
__global__ void int8_gemm_exact_kernel(const int8_t* __restrict__ A, const int8_t* __restrict__ B,
                                       int32_t* __restrict__ C, int64_t M, int64_t N, int64_t K) {
  __shared__ int8_t a_tile[kExactTile][kExactTileK + 4];
  __shared__ int8_t b_tile[kExactTile][kExactTileK + 4];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t m0 = static_cast<int64_t>(blockIdx.x) * kExactTile;
  const int64_t n0 = static_cast<int64_t>(blockIdx.y) * kExactTile;
  int32_t acc = 0;
  for (int64_t k0 = 0; k0 < K; k0 += kExactTileK) {
    for (int half = 0; half < 2; ++half) {
      const int kk = tx + half * kExactTile;
      const int64_t k = k0 + kk;
      a_tile[ty][kk] = (m0 + ty < M && k < K) ? A[(m0 + ty) * K + k] : int8_t{0};
      b_tile[ty][kk] = (n0 + ty < N && k < K) ? B[(n0 + ty) * K + k] : int8_t{0};
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kExactTileK; ++kk) acc += int32_t{a_tile[ty][kk]} * int32_t{b_tile[tx][kk]};
    __syncthreads();
  }
  const int64_t m = m0 + ty, n = n0 + tx;
  if (m < M && n < N) C[m * N + n] = acc;
}

}  // namespace llmint8::cuda
