// The Hopper product of int8 weight codes and dequantized 16-bit activations (torch- and
// CUTLASS-free interface; kernel: cuda/kernels/dequantized_gemm_sm90.cuh, one translation
// unit per dtype here, compiled for sm_90a only).
#pragma once

#include "cuda/scaled_product.h"  // Scratch

#include <cuda_runtime_api.h>

#include <cstdint>

namespace llmint8::cuda::sm90 {

struct DequantizedGemmArgs {
  const void* act;    // [M, K] dequantized activations (fp16 or bf16), 16-byte aligned rows
  const int8_t* cb;   // [N, K] weight codes
  const float* col;   // [N] weight absmax stats (SCB)
  const float* bias;  // [N] fp32, or null
  void* out;          // [M, N], the activations' dtype
  int64_t M, N, K;
  int sm_count;
};

cudaError_t run_dequantized_gemm_f16(const DequantizedGemmArgs& args, const Scratch& scratch, cudaStream_t stream);
cudaError_t run_dequantized_gemm_bf16(const DequantizedGemmArgs& args, const Scratch& scratch, cudaStream_t stream);

}  // namespace llmint8::cuda::sm90
