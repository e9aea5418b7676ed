// Decode-size LLM.int8() product (1 <= M <= 16) on the tensor cores, with its whole epilogue:
// the int8 product, the float outlier columns and the bias in one kernel, the weight read once.
//
// mma.sync m16n8k32 (s8 x s8 -> s32) takes the activation rows as its 16-row A tile and 8 weight
// rows as its B tile. A dot product may visit k in any order as long as both operands agree, so
// each thread loads 16 consecutive bytes of one weight row and of its activation rows (one
// 16-byte load each) and feeds them to two MMAs; the fragment layouts then pair the same k on
// both sides by construction. Block = 8 warps on BN = 8 * G weight rows; the warps split K and
// their partial sums meet in shared memory. The outlier term goes through the tensor cores too
// (mma m16n8k16 in fp16 or bf16 with fp32 sums: the listed columns' activations against the
// int8 codes there, which fp16 and bf16 hold exactly; codes times SCB / 127 are the dequantized
// weight), the warps splitting the list, so any number of columns costs a few L2 round trips:
// staging 64 columns at a time in shared memory took three barriers and two dependent L2 round
// trips a round (11008 x 4096, 1080 columns, 8 rows: 117 us against 22 at t=0 on an H200).
#pragma once

#include "cuda/kernels/common.cuh"

namespace llmint8::cuda {

constexpr int kSmallMWarps = 8;

struct SmallMParams {
  const int8_t* a;  // [M, K] activation codes
  const float* row;  // [M]
  const int8_t* b;  // [N, K] weight codes
  const float* col;  // [N]
  const void* bias;  // [N] or null
  FloatKind bias_kind;
  const void* a_float;  // [M, K] activations for the outlier term; null: no outliers
  FloatKind a_kind;
  const int32_t* cols;
  const int32_t* count;
  void* out;  // [M, N]
  FloatKind out_kind;
  int M;
  int64_t N, K;
  int prefetch_bytes;  // > 0: launched to overlap the quantizer (programmatic dependent launch)
};

// Outlier columns of the decode kernels, staged in shared memory: the first kOutlierCapacity
// column indices and the activations of `rows` rows there; later columns are read in place.
template <int ROWS>
struct StagedOutliers {
  float a[ROWS][kOutlierCapacity];
  int32_t cols[kOutlierCapacity];
};

// Fills `s` with list entries [first, first + kOutlierCapacity) for rows < `rows` and returns
// the outlier count (on the device; 0 without outliers). Ends with a barrier on the column
// indices only: the activations are ready after the caller's next barrier.
template <int ROWS>
__device__ int32_t stage_outliers(const SmallMParams& p, int rows, StagedOutliers<ROWS>& s, int32_t first = 0) {
  const int32_t count = p.a_float != nullptr ? *p.count : 0;
  const int32_t staged = max(0, min(count - first, kOutlierCapacity));
  for (int j = threadIdx.x; j < staged; j += blockDim.x) s.cols[j] = p.cols[first + j];
  __syncthreads();
  for (int i = threadIdx.x; i < rows * staged; i += blockDim.x) {
    const int m = i / staged, j = i % staged;
    s.a[m][j] = load_float(p.a_float, p.a_kind, m * p.K + s.cols[j]);
  }
  return count;
}

// out[m, n] from the exact int32 product `total`: row and column scales, the outlier term (the
// int8 codes of those columns times SCB / 127 are the dequantized weight) and the bias, in fp32,
// rounded once to the output dtype.
template <int ROWS>
__device__ __forceinline__ void finish_output(const SmallMParams& p, int m, int64_t n, int32_t total, int32_t count,
                                              const StagedOutliers<ROWS>& s) {
  const float col_n = p.col[n];
  float sum = 0.f;
  if (count > 0) {
    const float w_scale = col_n / 127.f;
    const int8_t* wrow = p.b + n * p.K;
    const int32_t staged = min(count, kOutlierCapacity);
    for (int32_t j = 0; j < staged; ++j) sum += s.a[m][j] * (static_cast<float>(wrow[s.cols[j]]) * w_scale);
    for (int32_t j = staged; j < count; ++j) {
      const int32_t c = p.cols[j];
      sum += load_float(p.a_float, p.a_kind, m * p.K + c) * (static_cast<float>(wrow[c]) * w_scale);
    }
  }
  store_scaled_product(p.out, p.out_kind, p.N, m, n, total, p.row[m], col_n, sum, p.bias, p.bias_kind);
}

// d += a (16 x 32, row-major fragments) * b (32 x 8, column-major fragments), exact in int32.
__device__ __forceinline__ void mma_s8_16x8x32(int32_t (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                               uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// 16 bytes of row p from byte k (zeros where invalid). VECTOR: one 16-byte load (K % 16 == 0,
// aligned rows), issued unconditionally from a clamped address so that the loads of an
// iteration form straight-line code the compiler keeps in flight together; STREAM marks data
// read once (the weight), so it does not evict the activations.
template <bool VECTOR, bool STREAM>
__device__ __forceinline__ int4 load16(const int8_t* p, int64_t k, int64_t K, bool valid) {
  if constexpr (VECTOR) {
    return load16_or_zero<STREAM>(p + k, valid);
  } else {
    int8_t bytes[16] = {};
    if (valid) {
#pragma unroll
      for (int e = 0; e < 16; ++e) bytes[e] = k + e < K ? p[k + e] : int8_t{0};
    }
    int4 v;
    memcpy(&v, bytes, 16);
    return v;
  }
}

// d += a (16 x 16, row-major fragments) * b (16 x 8, column-major fragments), in fp32; BF16:
// bf16 operands, else fp16.
template <bool BF16>
__device__ __forceinline__ void mma_16x8x16(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                            uint32_t b0, uint32_t b1) {
  if constexpr (BF16) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
  }
}

__device__ __forceinline__ uint32_t pack_halves(uint16_t low, uint16_t high) {
  return static_cast<uint32_t>(low) | (static_cast<uint32_t>(high) << 16);
}

// An int8 weight code as the bits of the same value in fp16 or bf16 (exact in both).
template <bool BF16>
__device__ __forceinline__ uint16_t code_bits(int8_t c) {
  if constexpr (BF16) {
    return __bfloat16_as_ushort(__int2bfloat16_rn(c));
  } else {
    return __half_as_ushort(__int2half_rn(c));
  }
}

// Activations in the outlier MMAs: fp16 and bf16 as they are (one part: exact products, fp32
// sums), fp32 as three bf16 parts hi + mid + lo (24 bits, the fp32 significand).
enum class OutlierOperand { f16, bf16, f32_split };

// The outlier term of the block's 16 x BN outputs on the tensor cores, into this warp's C
// fragments o (o[i][0..1]: row g, weight rows 8i + 2t and 2t + 1; o[i][2..3]: row g + 8). The
// listed columns go 16 a step, warp w taking steps w, w + 8, ...; lane (g, t) loads entries
// 4t..4t+3 of a step: their column indices (those of its next step ahead of time), the
// activations of rows g and g + 8 there and the codes of weight rows 8i + g there. Entries 4t,
// 4t+1 sit at k = 2t, 2t+1 and 4t+2, 4t+3 at k = 2t+8, 2t+9 on both sides (the fragments'
// layout), so all lanes agree on which entry a k holds. The codes times col[n] / 127 are the
// dequantized weight: the caller applies that scale to the sums.
template <int G, OutlierOperand KIND>
__device__ __forceinline__ void outlier_fragments(const SmallMParams& p, int64_t n0, int32_t count, int warp, int g,
                                                  int t, float (&o)[G][4]) {
  constexpr bool BF16 = KIND != OutlierOperand::f16;
  constexpr int PARTS = KIND == OutlierOperand::f32_split ? 3 : 1;
  const int M = p.M;
  const int64_t N = p.N, K = p.K;
  const int32_t steps = (count + 15) / 16;
  const auto columns = [&](int32_t step, int32_t (&c)[4]) {
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      const int32_t e = step * 16 + 4 * t + q;
      c[q] = step < steps && e < count ? __ldg(p.cols + e) : -1;
    }
  };
  int32_t next[4];
  columns(warp, next);
  for (int32_t step = warp; step < steps; step += kSmallMWarps) {
    int32_t c[4];
#pragma unroll
    for (int q = 0; q < 4; ++q) c[q] = next[q];
    columns(step + kSmallMWarps, next);
    uint16_t a[PARTS][2][4];  // [part][row g, g + 8][entry]
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int m = g + 8 * r;
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const bool in = c[q] >= 0 && m < M;
        const int64_t i = static_cast<int64_t>(m) * K + (in ? c[q] : 0);
        if constexpr (KIND == OutlierOperand::f32_split) {
          const float v = in ? static_cast<const float*>(p.a_float)[i] : 0.f;
          const __nv_bfloat16 hi = __float2bfloat16_rn(v);
          const float rest = v - __bfloat162float(hi);
          const __nv_bfloat16 mid = __float2bfloat16_rn(rest);
          const __nv_bfloat16 lo = __float2bfloat16_rn(rest - __bfloat162float(mid));
          a[0][r][q] = __bfloat16_as_ushort(hi);
          a[1][r][q] = __bfloat16_as_ushort(mid);
          a[2][r][q] = __bfloat16_as_ushort(lo);
        } else {
          a[0][r][q] = in ? static_cast<const uint16_t*>(p.a_float)[i] : uint16_t{0};
        }
      }
    }
#pragma unroll
    for (int i = 0; i < G; ++i) {
      const int64_t n = n0 + 8 * i + g;
      uint16_t w[4];
#pragma unroll
      for (int q = 0; q < 4; ++q) w[q] = code_bits<BF16>(c[q] >= 0 && n < N ? __ldg(p.b + n * K + c[q]) : int8_t{0});
      const uint32_t b0 = pack_halves(w[0], w[1]), b1 = pack_halves(w[2], w[3]);
#pragma unroll
      for (int part = 0; part < PARTS; ++part) {
        mma_16x8x16<BF16>(o[i], pack_halves(a[part][0][0], a[part][0][1]), pack_halves(a[part][1][0], a[part][1][1]),
                          pack_halves(a[part][0][2], a[part][0][3]), pack_halves(a[part][1][2], a[part][1][3]), b0,
                          b1);
      }
    }
  }
}

// A warp's C fragments into its [row][weight row] slice of shared memory: c[i][0..1] are row g,
// weight rows 8i + 2t and 2t + 1; c[i][2..3] row g + 8 (only with UPPER: more than 8 rows).
template <bool UPPER, typename T, int G, int BN>
__device__ __forceinline__ void store_c_fragments(T (&slice)[kSmallMRows][BN], const T (&c)[G][4], int g, int t) {
#pragma unroll
  for (int i = 0; i < G; ++i) {
    const int nl = 8 * i + 2 * t;
    slice[g][nl] = c[i][0];
    slice[g][nl + 1] = c[i][1];
    if (UPPER) {
      slice[g + 8][nl] = c[i][2];
      slice[g + 8][nl + 1] = c[i][3];
    }
  }
}

// G: 8-row groups of weight rows per block. U: 64-byte chunks per thread in flight per
// iteration. UPPER: M > 8 (the second half of the 16-row tile is used). VECTOR: 16-byte loads.
template <int G, int U, bool UPPER, bool VECTOR>
__global__ void __launch_bounds__(kSmallMWarps * 32, 1) small_m_product_kernel(SmallMParams p) {
  constexpr int BN = 8 * G;
  constexpr int kThreads = kSmallMWarps * 32;
  constexpr int kOutputsPerThread = (kSmallMRows * BN + kThreads - 1) / kThreads;
  // The warps' int32 partial sums, then their outlier sums, one after the other in the same
  // memory: the more shared memory a block takes, the less L1 is left for the activations every
  // warp rereads.
  union SharedSums {
    int32_t partial[kSmallMWarps][kSmallMRows][BN];
    float outlier_partial[kSmallMWarps][kSmallMRows][BN];
  };
  __shared__ SharedSums sums;
  auto& partial = sums.partial;
  auto& outlier_partial = sums.outlier_partial;

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int g = lane / 4, t = lane % 4;  // MMA fragment coordinates: group (row) and thread in group
  const int M = p.M;
  const int64_t N = p.N, K = p.K;
  const int64_t n0 = static_cast<int64_t>(blockIdx.x) * BN;

  if (p.prefetch_bytes > 0) {
    const int64_t lines = (min(K, static_cast<int64_t>(p.prefetch_bytes)) + 127) / 128;
    for (int64_t i = tid; i < BN * lines; i += blockDim.x) {
      const int64_t n = n0 + i / lines;
      if (n < N) prefetch_to_l2(p.b + n * K + (i % lines) * 128);
    }
    wait_for_prior_grid();
  }

  // The outlier count (on the device, written by the quantizer) loads during the stream: nothing
  // about the outliers is waited for before it (staging them there held every warp for two
  // dependent L2 round trips, the count then the column indices).
  const int32_t count = p.a_float != nullptr ? *p.count : 0;

  const int8_t* a_lo = p.a + static_cast<int64_t>(g) * K;  // activation row g
  const int8_t* a_hi = p.a + static_cast<int64_t>(g + 8) * K;  // activation row g + 8
  const bool lo_valid = g < M, hi_valid = UPPER && g + 8 < M;
  const int8_t* w[G];
  bool w_valid[G];
#pragma unroll
  for (int i = 0; i < G; ++i) {
    const int64_t n = n0 + 8 * i + g;
    w_valid[i] = n < N;
    w[i] = p.b + (w_valid[i] ? n : 0) * K;
  }

  int32_t acc[G][4] = {};
  // A warp takes U consecutive 64-byte chunks of its rows per iteration: whole 128-byte lines,
  // and U * 64 contiguous bytes of each row.
  const int64_t groups = (K + 64 * U - 1) / (64 * U);
  for (int64_t group = warp; group < groups; group += kSmallMWarps) {
    int4 lo[U], hi[U], wv[U][G];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int64_t k = (group * U + u) * 64 + t * 16;
      const bool in = k < K;  // chunks past the end start past K too
      lo[u] = load16<VECTOR, false>(a_lo, k, K, in && lo_valid);
      hi[u] = UPPER ? load16<VECTOR, false>(a_hi, k, K, in && hi_valid) : make_int4(0, 0, 0, 0);
#pragma unroll
      for (int i = 0; i < G; ++i) wv[u][i] = load16<VECTOR, true>(w[i], k, K, in && w_valid[i]);
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
#pragma unroll
      for (int i = 0; i < G; ++i) {
        // Bytes 0-7 of the thread's 16 feed the first MMA (A: rows g, g+8; B: weight row g),
        // bytes 8-15 the second.
        mma_s8_16x8x32(acc[i], lo[u].x, hi[u].x, lo[u].y, hi[u].y, wv[u][i].x, wv[u][i].y);
        mma_s8_16x8x32(acc[i], lo[u].z, hi[u].z, lo[u].w, hi[u].w, wv[u][i].z, wv[u][i].w);
      }
    }
  }

  store_c_fragments<UPPER>(partial[warp], acc, g, t);

  // The outlier term on the tensor cores while the partial sums settle (registers only).
  float o[G][4] = {};
  if (count > 0) {
    switch (p.a_kind) {
      case FloatKind::f16: outlier_fragments<G, OutlierOperand::f16>(p, n0, count, warp, g, t, o); break;
      case FloatKind::bf16: outlier_fragments<G, OutlierOperand::bf16>(p, n0, count, warp, g, t, o); break;
      case FloatKind::f32: outlier_fragments<G, OutlierOperand::f32_split>(p, n0, count, warp, g, t, o); break;
    }
  }
  __syncthreads();  // the partial sums are in

  int32_t total[kOutputsPerThread];
#pragma unroll
  for (int s = 0; s < kOutputsPerThread; ++s) {
    const int out = tid + s * kThreads, m = out / BN, nl = out % BN;
    total[s] = 0;
    if (m >= M) continue;
#pragma unroll
    for (int v = 0; v < kSmallMWarps; ++v) total[s] += partial[v][m][nl];
  }
  float outlier_sum[kOutputsPerThread] = {};
  if (count > 0) {  // (the same in every thread)
    __syncthreads();  // partial is read: its memory takes the outlier sums
    store_c_fragments<UPPER>(outlier_partial[warp], o, g, t);
    __syncthreads();
#pragma unroll
    for (int s = 0; s < kOutputsPerThread; ++s) {
      const int out = tid + s * kThreads, m = out / BN, nl = out % BN;
      if (m >= M) continue;
#pragma unroll
      for (int v = 0; v < kSmallMWarps; ++v) outlier_sum[s] += outlier_partial[v][m][nl];
    }
  }

#pragma unroll
  for (int s = 0; s < kOutputsPerThread; ++s) {
    const int out = tid + s * kThreads, m = out / BN, nl = out % BN;
    const int64_t n = n0 + nl;
    if (m >= M || n >= N) continue;
    const float col_n = p.col[n];
    store_scaled_product(p.out, p.out_kind, p.N, m, n, total[s], p.row[m], col_n, outlier_sum[s] * (col_n / 127.f),
                         p.bias, p.bias_kind);
  }
}

}  // namespace llmint8::cuda
