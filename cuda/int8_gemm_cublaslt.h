// int8 x int8 -> int32 GEMM through cuBLASLt's tensor-core kernels (torch-free).
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace llmint8::cuda {

// Workspace handed to cuBLASLt (the caller allocates it, once per device).
constexpr size_t kCublasLtWorkspaceBytes = size_t{32} << 20;

// Whether cuBLASLt's int8 kernels take this product: K and N multiples of 4
// (its leading-dimension rule) and 16-byte aligned pointers.
bool cublaslt_int8_supported(const void* A, const void* B, const void* C, int64_t N, int64_t K);

// C[M, N] = A[M, K] @ B[N, K]^T exactly, in int32, on `stream`. The handle,
// descriptors and chosen algorithm are cached per (device, M, N, K) and reused.
// Returns false when cuBLASLt has no algorithm for the shape (the caller falls
// back); throws std::runtime_error on a cuBLASLt error.
bool cublaslt_int8_gemm(const int8_t* A, const int8_t* B, int32_t* C, int64_t M, int64_t N, int64_t K,
                        void* workspace, cudaStream_t stream);

}  // namespace llmint8::cuda
