// The outlier columns a GEMM epilogue left over, on tensor cores: for the listed columns
// j in [first, count) (count read on the device),
//   out[m, n] += col[n] / 127 * sum_j a[m, cols[j]] * cb[n, cols[j]].
// Each step gathers 32 listed columns of the activations (fp16 or bf16, as they are) and of
// the weight codes (exact in either type) into shared memory and runs mma.sync m16n8k16 with
// fp32 accumulation, so the cost follows the number of outlier columns, not K. Blocks of a
// split take every splits-th step; with more than one split each writes fp32 partial sums
// and a second kernel adds them to the output (a small grid of tiles still fills the card).
// Where the backend gathered every column (at most kOutlierCapacity), the same tiles read its
// compact buffers instead (add_gathered_columns).
#pragma once

#include "cuda/kernels/common.cuh"

namespace llmint8::cuda {

constexpr int kOutlierMmaRows = 32;     // BM: activation rows of a tile (two m16 fragments)
constexpr int kOutlierMmaCols = 64;     // BN: weight rows of a tile (a warp takes 16: two n8 fragments)
constexpr int kOutlierMmaStep = 32;     // listed columns gathered per step (two k16 fragments)
constexpr int kOutlierMmaThreads = 128;
constexpr int kOutlierMmaMaxSplits = 16;
constexpr int kOutlierMmaPitch = kOutlierMmaStep + 8;  // halves per shared row: conflict-free fragment loads

template <typename T>
__device__ __forceinline__ uint32_t pair_at(const T* p) {  // two consecutive elements as one register
  return *reinterpret_cast<const uint32_t*>(p);
}

__device__ __forceinline__ uint32_t bits_of(__half x) { return __half_as_ushort(x); }
__device__ __forceinline__ uint32_t bits_of(__nv_bfloat16 x) { return __bfloat16_as_ushort(x); }

// Eight 16-bit values as one 16-byte vector, the first in the lowest bits.
template <typename T>
__device__ __forceinline__ int4 pack8(const T (&v)[8]) {
  uint32_t w[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) w[i] = bits_of(v[2 * i]) | (bits_of(v[2 * i + 1]) << 16);
  return make_int4(static_cast<int>(w[0]), static_cast<int>(w[1]), static_cast<int>(w[2]), static_cast<int>(w[3]));
}

// Output rows of a tile a thread takes on the gathered path (a thread per column, rows r0, r0 + 2, ...).
constexpr int kGatheredRowStep = kOutlierMmaThreads / kOutlierMmaCols;
constexpr int kGatheredRows = kOutlierMmaRows / kGatheredRowStep;

// The gathered path: the columns [first, count) from the backend's compact buffers (sub_w holds
// the dequantized weight, so the sums are in output units), split s taking columns first + s,
// first + s + splits, ... A warp covers 32 consecutive output columns of one row (coalesced),
// its sub_a reads are one address (a broadcast), and the output is loaded before the sums so
// that both loads are in flight together: two dependent memory steps a tile where the
// tensor-core path takes four (the count, the step's list, the gathers, the output).
template <typename TOut>
__device__ __forceinline__ void add_gathered_columns(const OutlierMmaArgs& p, int32_t count, int64_t m0, int64_t n0,
                                                     int split) {
  const int64_t n = n0 + threadIdx.x % kOutlierMmaCols;
  const int r0 = static_cast<int>(threadIdx.x / kOutlierMmaCols);
  if (n >= p.N) return;
  TOut* out = static_cast<TOut*>(p.out);
  const bool direct = p.splits == 1;
  float before[kGatheredRows] = {};
  if (direct) {
#pragma unroll
    for (int i = 0; i < kGatheredRows; ++i) {
      const int64_t m = m0 + r0 + kGatheredRowStep * i;
      if (m < p.M) before[i] = to_float(out[m * p.N + n]);
    }
  }
  float sum[kGatheredRows] = {};
  for (int64_t j = p.first + split; j < count; j += p.splits) {
    const float w = p.sub_w[j * p.N + n];
#pragma unroll
    for (int i = 0; i < kGatheredRows; ++i) {
      const int64_t m = m0 + r0 + kGatheredRowStep * i;
      if (m < p.M) sum[i] = fmaf(p.sub_a[j * p.M + m], w, sum[i]);
    }
  }
#pragma unroll
  for (int i = 0; i < kGatheredRows; ++i) {
    const int64_t m = m0 + r0 + kGatheredRowStep * i;
    if (m >= p.M) continue;
    if (direct) {
      out[m * p.N + n] = from_float<TOut>(before[i] + sum[i]);
    } else {
      p.partials[(static_cast<int64_t>(split) * p.M + m) * p.N + n] = sum[i];
    }
  }
}

// Whether the columns come from the gathered buffers (then the partial sums are in output units).
__device__ __forceinline__ bool reads_gathered(const OutlierMmaArgs& p, int32_t count) {
  return p.sub_a != nullptr && p.sub_w != nullptr && count <= kOutlierCapacity;
}

template <typename T, typename TOut>
__global__ void __launch_bounds__(kOutlierMmaThreads) outlier_mma_kernel(OutlierMmaArgs p) {
  const int32_t count = *p.count;
  if (count <= p.first) return;  // the epilogue took them all (the usual case): nothing to add
  if (reads_gathered(p, count)) {
    add_gathered_columns<TOut>(p, count, static_cast<int64_t>(blockIdx.y) * kOutlierMmaRows,
                               static_cast<int64_t>(blockIdx.x) * kOutlierMmaCols, static_cast<int>(blockIdx.z));
    return;
  }
  __shared__ __align__(16) T a_tile[kOutlierMmaRows][kOutlierMmaPitch];
  __shared__ __align__(16) T w_tile[kOutlierMmaCols][kOutlierMmaPitch];
  __shared__ int32_t step_cols[kOutlierMmaStep];

  const T* a = static_cast<const T*>(p.a);
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int g = lane / 4, t = lane % 4;  // the fragment's row group and column pair
  const int64_t m0 = static_cast<int64_t>(blockIdx.y) * kOutlierMmaRows;  // grid: (N tiles, M tiles, splits)
  const int64_t n0 = static_cast<int64_t>(blockIdx.x) * kOutlierMmaCols;
  const int split = static_cast<int>(blockIdx.z);
  // Gather duties: 8 activations of row a_row, 16 codes of weight row w_row.
  const int a_row = tid / 4, a_col = (tid % 4) * 8;
  const int w_row = tid / 2, w_col = (tid % 2) * 16;
  const bool a_valid = m0 + a_row < p.M, w_valid = n0 + w_row < p.N;
  const T* a_src = a + (a_valid ? m0 + a_row : 0) * p.K;
  const int8_t* w_src = p.cb + (w_valid ? n0 + w_row : 0) * p.K;

  float acc[2][2][4] = {};  // [m16 fragment][n8 fragment][element]
  for (int64_t j0 = p.first + static_cast<int64_t>(split) * kOutlierMmaStep; j0 < count;
       j0 += static_cast<int64_t>(p.splits) * kOutlierMmaStep) {
    __syncthreads();  // the previous step's tiles are consumed
    if (tid < kOutlierMmaStep) step_cols[tid] = j0 + tid < count ? p.cols[j0 + tid] : -1;
    __syncthreads();
    T a_values[8], w_low[8], w_high[8];
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const int32_t c = step_cols[a_col + i];
      a_values[i] = a_valid && c >= 0 ? a_src[c] : from_float<T>(0.f);
    }
#pragma unroll
    for (int i = 0; i < 8; ++i) {  // |code| <= 127: exact in fp16 and bf16
      const int32_t c = step_cols[w_col + i], d = step_cols[w_col + 8 + i];
      w_low[i] = from_float<T>(w_valid && c >= 0 ? static_cast<float>(w_src[c]) : 0.f);
      w_high[i] = from_float<T>(w_valid && d >= 0 ? static_cast<float>(w_src[d]) : 0.f);
    }
    *reinterpret_cast<int4*>(&a_tile[a_row][a_col]) = pack8(a_values);
    *reinterpret_cast<int4*>(&w_tile[w_row][w_col]) = pack8(w_low);
    *reinterpret_cast<int4*>(&w_tile[w_row][w_col + 8]) = pack8(w_high);
    __syncthreads();
#pragma unroll
    for (int k = 0; k < kOutlierMmaStep; k += 16) {
      uint32_t af[2][4];
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        const int r = i * 16 + g;
        af[i][0] = pair_at(&a_tile[r][k + 2 * t]);
        af[i][1] = pair_at(&a_tile[r + 8][k + 2 * t]);
        af[i][2] = pair_at(&a_tile[r][k + 2 * t + 8]);
        af[i][3] = pair_at(&a_tile[r + 8][k + 2 * t + 8]);
      }
#pragma unroll
      for (int f = 0; f < 2; ++f) {
        const int wr = warp * 16 + f * 8 + g;
        const uint32_t b0 = pair_at(&w_tile[wr][k + 2 * t]);
        const uint32_t b1 = pair_at(&w_tile[wr][k + 2 * t + 8]);
#pragma unroll
        for (int i = 0; i < 2; ++i) mma_16x8x16<T>(acc[i][f], af[i], b0, b1);
      }
    }
  }

  // Element e of fragment (i, f): row m0 + 16 i + g + 8 (e / 2), column n0 + 16 warp + 8 f + 2 t + e % 2.
  TOut* out = static_cast<TOut*>(p.out);
#pragma unroll
  for (int i = 0; i < 2; ++i) {
#pragma unroll
    for (int f = 0; f < 2; ++f) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int64_t m = m0 + i * 16 + g + 8 * (e / 2), n = n0 + warp * 16 + f * 8 + 2 * t + e % 2;
        if (m >= p.M || n >= p.N) continue;
        if (p.splits > 1) {
          p.partials[(static_cast<int64_t>(split) * p.M + m) * p.N + n] = acc[i][f][e];
        } else {
          out[m * p.N + n] = from_float<TOut>(to_float(out[m * p.N + n]) + acc[i][f][e] * (p.col[n] / 127.f));
        }
      }
    }
  }
}

// out[m, n] += col[n] / 127 * (the splits' partial sums, in split order): deterministic.
template <typename TOut>
__global__ void outlier_partials_kernel(OutlierMmaArgs p) {
  const int32_t count = *p.count;
  if (count <= p.first) return;
  const bool output_units = reads_gathered(p, count);
  TOut* out = static_cast<TOut*>(p.out);
  const int64_t total = p.M * p.N;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float sum = 0.f;
    for (int s = 0; s < p.splits; ++s) sum += p.partials[s * total + i];
    out[i] = from_float<TOut>(to_float(out[i]) + (output_units ? sum : sum * (p.col[i % p.N] / 127.f)));
  }
}

}  // namespace llmint8::cuda
