// The activations as the dequantized-activation product (dequantized_gemm_sm90.cuh) takes them:
// each row quantized as LLM.int8() does (absmax over the columns that are not outliers, codes
// rounded to nearest) and dequantized again, code * stat / 127, in the activations' own 16-bit
// type; outlier columns (|a| >= threshold in some row) keep their values. Two kernels: the
// column flags need every row before any row's stat.
#pragma once

#include "cuda/kernels/common.cuh"

namespace llmint8::cuda {

constexpr int kFlagBlock = 256;
constexpr int kFlagColumnThreads = 8;  // a block: 8 threads of 8 columns across 32 row groups
constexpr int kFlagRowGroups = kFlagBlock / kFlagColumnThreads;
constexpr int kFlagBlockColumns = kFlagColumnThreads * 8;

// flags[k] = 1 where |a[r, k]| >= threshold in some row r, else 0 (every byte written, so the
// scratch needs no clearing). A warp reads 4 rows x 128 bytes a load; 32 row groups keep a
// block's loads in flight together. T is 16-bit, K % 8 == 0, rows start on 16 bytes.
template <typename T>
__global__ void __launch_bounds__(kFlagBlock)
    outlier_flags_kernel(const T* __restrict__ a, int64_t rows, int64_t K, float threshold, uint8_t* __restrict__ flags) {
  static_assert(sizeof(T) == 2, "8 columns a 16-byte load");
  const int column_thread = threadIdx.x % kFlagColumnThreads, group = threadIdx.x / kFlagColumnThreads;
  const int64_t k = (static_cast<int64_t>(blockIdx.x) * kFlagColumnThreads + column_thread) * 8;
  uint32_t bits = 0;
  if (k < K) {
#pragma unroll 4
    for (int64_t r = group; r < rows; r += kFlagRowGroups) {
      const int4 raw = __ldg(reinterpret_cast<const int4*>(a + r * K + k));
      const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
      for (int i = 0; i < 8; ++i) bits |= static_cast<uint32_t>(fabsf(to_float(e[i])) >= threshold) << i;
    }
  }
  // OR over the warp's 4 row groups (lanes 8 apart), then over the block's 8 warps.
  bits |= __shfl_xor_sync(0xffffffffu, bits, 8);
  bits |= __shfl_xor_sync(0xffffffffu, bits, 16);
  __shared__ uint32_t warp_bits[kFlagBlock / 32][kFlagColumnThreads];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane < kFlagColumnThreads) warp_bits[warp][lane] = bits;
  __syncthreads();
  if (threadIdx.x < kFlagColumnThreads && k < K) {  // warp 0's first lanes: column_thread == threadIdx.x
    uint32_t all = 0;
#pragma unroll
    for (int w = 0; w < kFlagBlock / 32; ++w) all |= warp_bits[w][threadIdx.x];
    uint64_t bytes = 0;
#pragma unroll
    for (int i = 0; i < 8; ++i) bytes |= static_cast<uint64_t>((all >> i) & 1u) << (8 * i);
    *reinterpret_cast<uint64_t*>(flags + k) = bytes;
  }
}

constexpr int kDequantizeBlock = 256;

// One block per row: the absmax over the columns not flagged (flags null: all columns), then
// act = flagged ? a : code * stat / 127. A NaN or infinite stat gives NaN values (code 0 times
// the stat), as the int8 product's row scale would. The blocks also write the bias as fp32 for
// the product's epilogue (bias_f32 null: none), sparing a launch.
template <typename T>
__global__ void __launch_bounds__(kDequantizeBlock)
    dequantize_rows_kernel(const T* __restrict__ a, int64_t K, const uint8_t* __restrict__ flags, T* __restrict__ act,
                           const void* __restrict__ bias, FloatKind bias_kind, int64_t N, float* __restrict__ bias_f32) {
  static_assert(sizeof(T) == 2, "8 columns a 16-byte load");
  if (bias_f32 != nullptr) {
    for (int64_t n = static_cast<int64_t>(blockIdx.x) * kDequantizeBlock + threadIdx.x; n < N;
         n += static_cast<int64_t>(gridDim.x) * kDequantizeBlock) {
      bias_f32[n] = load_float(bias, bias_kind, n);
    }
  }
  const T* arow = a + static_cast<int64_t>(blockIdx.x) * K;
  T* out = act + static_cast<int64_t>(blockIdx.x) * K;
  const auto flag_bits = [&](int64_t k) {  // bit 8 i + 0: column k + i is an outlier
    return flags != nullptr ? __ldg(reinterpret_cast<const unsigned long long*>(flags + k)) : 0ull;
  };
  constexpr int64_t kStep = static_cast<int64_t>(kDequantizeBlock) * 8;
  float m = 0.f;
#pragma unroll 8
  for (int64_t k = static_cast<int64_t>(threadIdx.x) * 8; k < K; k += kStep) {
    const int4 raw = __ldg(reinterpret_cast<const int4*>(arow + k));
    const unsigned long long f = flag_bits(k);
    const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      if (((f >> (8 * i)) & 1ull) == 0ull) m = absmax_combine(m, fabsf(to_float(e[i])));
    }
  }
  m = block_absmax<kDequantizeBlock>(m);
  const float scale = code_scale(m);
#pragma unroll 8
  for (int64_t k = static_cast<int64_t>(threadIdx.x) * 8; k < K; k += kStep) {
    const int4 raw = __ldg(reinterpret_cast<const int4*>(arow + k));
    const unsigned long long f = flag_bits(k);
    const T* e = reinterpret_cast<const T*>(&raw);
    int4 packed;
    T* v = reinterpret_cast<T*>(&packed);
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const float code = scale == 0.f ? 0.f : static_cast<float>(quantize_value(to_float(e[i]), scale));
      v[i] = ((f >> (8 * i)) & 1ull) != 0ull ? e[i] : from_float<T>(code * m / 127.f);
    }
    *reinterpret_cast<int4*>(out + k) = packed;
  }
}

}  // namespace llmint8::cuda
