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

// A block takes 64 columns of every row. flags (null at threshold 0: no outliers): flags[k] = 1
// where |a[r, k]| >= threshold in some row r, else 0 (every byte written, so the scratch needs no
// clearing). Then, knowing its columns' flags, the block writes each row's absmax over its columns
// that are not outliers to row_maxima[r, blockIdx.x], so that the row pass needs no reduction over
// the row (dequantize_rows_kernel runs on (chunk, row) blocks). A warp reads 4 rows x 128 bytes a
// load. T is 16-bit, K % 8 == 0, rows start on 16 bytes.
template <typename T>
__global__ void __launch_bounds__(kFlagBlock)
    outlier_flags_kernel(const T* __restrict__ a, int64_t rows, int64_t K, float threshold, uint8_t* __restrict__ flags,
                         float* __restrict__ row_maxima) {
  static_assert(sizeof(T) == 2, "8 columns a 16-byte load");
  const int column_thread = threadIdx.x % kFlagColumnThreads, group = threadIdx.x / kFlagColumnThreads;
  const int64_t k = (static_cast<int64_t>(blockIdx.x) * kFlagColumnThreads + column_thread) * 8;
  const bool in = k < K;
  const auto load = [&](int64_t r) { return __ldg(reinterpret_cast<const int4*>(a + r * K + k)); };
  __shared__ uint32_t column_bits[kFlagColumnThreads];
  if (flags != nullptr) {
    uint32_t bits = 0;
    if (in) {
#pragma unroll 4
      for (int64_t r = group; r < rows; r += kFlagRowGroups) {
        const int4 raw = load(r);
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
    if (threadIdx.x < kFlagColumnThreads) {  // warp 0's first lanes: column_thread == threadIdx.x
      uint32_t all = 0;
#pragma unroll
      for (int w = 0; w < kFlagBlock / 32; ++w) all |= warp_bits[w][threadIdx.x];
      column_bits[threadIdx.x] = all;
      if (in) {
        uint64_t bytes = 0;
#pragma unroll
        for (int i = 0; i < 8; ++i) bytes |= static_cast<uint64_t>((all >> i) & 1u) << (8 * i);
        *reinterpret_cast<uint64_t*>(flags + k) = bytes;
      }
    }
  } else if (threadIdx.x < kFlagColumnThreads) {
    column_bits[threadIdx.x] = 0u;
  }
  __syncthreads();
  const uint32_t outliers = column_bits[column_thread];
  // Row maxima: the rows again (an L1 hit: the block just read them), a uniform trip count so
  // that the shuffles see the whole warp; the 8 column threads of a row are neighbouring lanes.
  const int64_t steps = (rows + kFlagRowGroups - 1) / kFlagRowGroups;
  for (int64_t step = 0; step < steps; ++step) {
    const int64_t r = group + step * kFlagRowGroups;
    float m = 0.f;
    if (in && r < rows) {
      const int4 raw = load(r);
      const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        if (((outliers >> i) & 1u) == 0u) m = absmax_combine(m, fabsf(to_float(e[i])));
      }
    }
    for (int offset = 1; offset < kFlagColumnThreads; offset *= 2) {
      m = absmax_combine(m, __shfl_xor_sync(0xffffffffu, m, offset));
    }
    if (column_thread == 0 && r < rows) row_maxima[r * gridDim.x + blockIdx.x] = m;
  }
}

constexpr int kDequantizeBlock = 256;
constexpr int kDequantizeBlockColumns = kDequantizeBlock * 8;

// Block (chunk, row): the row's absmax from the column blocks' maxima (column_blocks of them),
// then act = flagged ? a : code * stat / 127 for the chunk's 2048 columns. The chunk's loads are
// issued before the maxima's reduction. A NaN or infinite stat gives NaN values (code 0 times the
// stat), as the int8 product's row scale would. The blocks also write the bias as fp32 for the
// product's epilogue (bias_f32 null: none), sparing a launch.
template <typename T>
__global__ void __launch_bounds__(kDequantizeBlock)
    dequantize_rows_kernel(const T* __restrict__ a, int64_t K, const float* __restrict__ row_maxima,
                           int64_t column_blocks, const uint8_t* __restrict__ flags, T* __restrict__ act,
                           const void* __restrict__ bias, FloatKind bias_kind, int64_t N, float* __restrict__ bias_f32) {
  static_assert(sizeof(T) == 2, "8 columns a 16-byte load");
  allow_dependent_launch();  // the product may start loading its weights (it waits for this grid's end)
  const int64_t block = static_cast<int64_t>(blockIdx.y) * gridDim.x + blockIdx.x;
  if (bias_f32 != nullptr) {
    for (int64_t n = block * kDequantizeBlock + threadIdx.x; n < N;
         n += static_cast<int64_t>(gridDim.x) * gridDim.y * kDequantizeBlock) {
      bias_f32[n] = load_float(bias, bias_kind, n);
    }
  }
  const int64_t row = blockIdx.y;
  const int64_t k = static_cast<int64_t>(blockIdx.x) * kDequantizeBlockColumns + threadIdx.x * 8;
  const bool in = k < K;
  int4 raw = make_int4(0, 0, 0, 0);
  unsigned long long f = 0ull;  // bit 8 i + 0: column k + i is an outlier
  if (in) {
    raw = __ldg(reinterpret_cast<const int4*>(a + row * K + k));
    if (flags != nullptr) f = __ldg(reinterpret_cast<const unsigned long long*>(flags + k));
  }
  float m = 0.f;
  for (int64_t j = threadIdx.x; j < column_blocks; j += kDequantizeBlock) {
    m = absmax_combine(m, __ldg(row_maxima + row * column_blocks + j));
  }
  m = block_absmax<kDequantizeBlock>(m);
  if (!in) return;
  const float scale = code_scale(m);
  const T* e = reinterpret_cast<const T*>(&raw);
  int4 packed;
  T* v = reinterpret_cast<T*>(&packed);
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const float code = scale == 0.f ? 0.f : static_cast<float>(quantize_value(to_float(e[i]), scale));
    v[i] = ((f >> (8 * i)) & 1ull) != 0ull ? e[i] : from_float<T>(code * m / 127.f);
  }
  *reinterpret_cast<int4*>(act + row * K + k) = packed;
}

}  // namespace llmint8::cuda
