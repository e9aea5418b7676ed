// The LLM.int8() product at short prefill sizes (17 to 64 rows, bound by the weight's bytes), from
// dequantized activations (dequantize_activations.cuh: outlier columns as they are, every other
// value code * row stat / 127), on the tensor cores with mma.sync m16n8k16 and fp32 sums:
//   out[m, n] = col[n] / 127 * sum_k act[m, k] * CB[n, k] + bias[n]
// Both parts of LLM.int8() multiply the same codes by the same column scale, so one product
// covers them, however many outlier columns there are. The weight codes become the
// activations' 16-bit type in registers (exact: |code| <= 127).
//
// Activation rows are the MMA's A tile (16 rows an m-tile), weight rows its B tile (8 rows a
// group). A dot product may visit k in any order as long as both operands agree: each thread
// loads 16 consecutive codes of one weight row (one 16-byte load) for four MMAs, and reads the
// activations at the same 16 k from shared memory (two 16-byte reads a row); the fragment
// layouts then pair the same k on both sides by construction.
//
// Grid: (groups of 16 MT activation rows, blocks of kDmmaBlockRows weight rows, K splits of `chunk`
// columns), one wave of resident blocks. The row groups are the grid's fastest dimension, so the
// blocks that read the same weight tile for different rows run side by side and all but the first
// find it in L2. Each block loads its first weights, waits for the row pass ahead of it (a programmatic
// launch on sm_90 starts while that pass runs), stages its chunk of every activation row in
// shared memory, and each warp streams 32 weight rows over the chunk, DEPTH steps of V pieces of
// 64 codes in flight. Each split writes its fp32 sums to partials[split]; a second kernel adds
// the splits in order (the same bits every call, unlike atomic adds) and applies the epilogue.
#pragma once

#include "cuda/kernels/common.cuh"

namespace llmint8::cuda {

constexpr int kDmmaWarps = 8;
constexpr int kDmmaThreads = kDmmaWarps * 32;
constexpr int kDmmaWarpRows = 32;  // four groups of 8 weight rows
constexpr int kDmmaBlockRows = kDmmaWarps * kDmmaWarpRows;
constexpr int kDmmaPiece = 64;     // codes of a weight row a piece: 16 per thread, 4 threads
constexpr int kDmmaPad = 8;        // elements after each staged row: the 8 rows of a read phase hit distinct banks

struct DmmaParams {
  const void* act;    // [M, K] dequantized activations, fp16 or bf16
  const int8_t* cb;   // [N, K] weight codes
  const float* col;   // [N] weight absmax stats (SCB)
  const void* bias;   // [N] or null
  FloatKind bias_kind;
  void* out;          // [M, N], the activations' type
  float* partials;    // [splits, M, N] fp32
  int splits;
  int M;
  int64_t N, K;
  int64_t chunk;      // columns of a K split, a multiple of the step
};

// Four int8 codes (one 32-bit word, k ascending) as two registers of 16-bit pairs: (k0, k1) and
// (k2, k3). fp16: 1024 + (code + 128) by placing the biased byte in the mantissa of 1024, then
// minus 1152; bf16 through fp32 the same way (2^23 + byte), exact, truncated to bf16 (exact too).
template <typename T>
__device__ __forceinline__ void codes_to_pairs(uint32_t w, uint32_t& lo, uint32_t& hi);

template <>
__device__ __forceinline__ void codes_to_pairs<__half>(uint32_t w, uint32_t& lo, uint32_t& hi) {
  const uint32_t u = w ^ 0x80808080u;  // code + 128 in each byte
  const uint32_t l = __byte_perm(u, 0x64646464u, 0x4140), h = __byte_perm(u, 0x64646464u, 0x4342);
  const __half2 bias = __half2half2(__ushort_as_half(0x6480));  // 1152
  const __half2 lv = __hsub2(*reinterpret_cast<const __half2*>(&l), bias);
  const __half2 hv = __hsub2(*reinterpret_cast<const __half2*>(&h), bias);
  lo = *reinterpret_cast<const uint32_t*>(&lv);
  hi = *reinterpret_cast<const uint32_t*>(&hv);
}

template <>
__device__ __forceinline__ void codes_to_pairs<__nv_bfloat16>(uint32_t w, uint32_t& lo, uint32_t& hi) {
  const uint32_t u = w ^ 0x80808080u;
  float f[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    f[i] = __uint_as_float(__byte_perm(u, 0x4B000000u, 0x7440 + i)) - 8388736.f;  // 2^23 + 128
  }
  lo = __byte_perm(__float_as_uint(f[0]), __float_as_uint(f[1]), 0x7632);
  hi = __byte_perm(__float_as_uint(f[2]), __float_as_uint(f[3]), 0x7632);
}

// MT: m-tiles of 16 activation rows in a row group. A step is V pieces of 64 codes of each weight
// row, piece v of thread t at codes 64 v + 16 t (each piece reads shared memory as the first
// does: no bank conflicts); DEPTH steps of weight loads in flight.
template <typename T, int MT, int V, int DEPTH>
__global__ void __launch_bounds__(kDmmaThreads, 2) dequantized_mma_kernel(const DmmaParams p) {
  static_assert(sizeof(T) == 2, "16-bit activations");
  constexpr int kStep = kDmmaPiece * V;
  extern __shared__ int4 staged_raw[];
  T* staged = reinterpret_cast<T*>(staged_raw);  // [16 MT][chunk + kDmmaPad]
  const int64_t pitch = p.chunk + kDmmaPad;
  const int m0 = static_cast<int>(blockIdx.x) * 16 * MT;  // this block's first activation row
  const int rows = min(16 * MT, p.M - m0);
  const int64_t k0 = static_cast<int64_t>(blockIdx.z) * p.chunk;
  const int64_t width = min(p.chunk, p.K - k0);
  const int steps = static_cast<int>(width / kStep);

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int64_t n_warp = static_cast<int64_t>(blockIdx.y) * kDmmaBlockRows + warp * kDmmaWarpRows;
  bool group_in[4];  // N % 8 == 0: a group of 8 rows is all in or all out
  const int8_t* wrow[4];
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    group_in[j] = n_warp + 8 * j < p.N;
    wrow[j] = p.cb + (group_in[j] ? n_warp + 8 * j + g : 0) * p.K + k0 + 16 * t;
  }
  int4 w[DEPTH][V][4];
  const auto load_piece = [&](int4 (&dst)[4], int s, int v) {
    const bool in = s < steps;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      dst[j] = load16_or_zero<true>(wrow[j] + (in ? s : 0) * kStep + v * kDmmaPiece, in && group_in[j]);
    }
  };
#pragma unroll
  for (int d = 0; d < DEPTH; ++d) {
#pragma unroll
    for (int v = 0; v < V; ++v) load_piece(w[d][v], d, v);
  }
  allow_dependent_launch();  // the reduction's blocks may take their places (they wait for this grid)
  wait_for_prior_grid();     // the dequantized activations are written

  // The group's activation chunk (rows past M are zeros) while the first weights load.
  const int vectors = static_cast<int>(width / 8);
  const T* act = static_cast<const T*>(p.act) + static_cast<int64_t>(m0) * p.K;
  for (int i = threadIdx.x; i < 16 * MT * vectors; i += kDmmaThreads) {
    const int r = i / vectors, c = (i % vectors) * 8;
    T* dst = staged + r * pitch + c;
    if (r < rows) {
      copy16_async(dst, act + r * p.K + k0 + c);
    } else {
      *reinterpret_cast<int4*>(dst) = make_int4(0, 0, 0, 0);
    }
  }
  wait_async_copies();
  __syncthreads();

  float acc[MT][4][4] = {};
  for (int s0 = 0; s0 < steps; s0 += DEPTH) {
#pragma unroll
    for (int d = 0; d < DEPTH; ++d) {
      const int s = s0 + d;
      if (s >= steps) break;
#pragma unroll
      for (int v = 0; v < V; ++v) {
        // This piece's codes as 16-bit pairs, then the load of step s + DEPTH into the same registers.
        uint32_t b[4][4][2];  // [group][mma][register]
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          codes_to_pairs<T>(static_cast<uint32_t>(w[d][v][j].x), b[j][0][0], b[j][0][1]);
          codes_to_pairs<T>(static_cast<uint32_t>(w[d][v][j].y), b[j][1][0], b[j][1][1]);
          codes_to_pairs<T>(static_cast<uint32_t>(w[d][v][j].z), b[j][2][0], b[j][2][1]);
          codes_to_pairs<T>(static_cast<uint32_t>(w[d][v][j].w), b[j][3][0], b[j][3][1]);
        }
        load_piece(w[d][v], s + DEPTH, v);
        // The activations at the same k: row g and g + 8 of each m-tile, 16 elements each.
        const T* base = staged + s * kStep + v * kDmmaPiece + 16 * t;
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          const T* lo_row = base + (16 * mt + g) * pitch;
          const T* hi_row = lo_row + 8 * pitch;
          const uint4 lo[2] = {*reinterpret_cast<const uint4*>(lo_row), *reinterpret_cast<const uint4*>(lo_row + 8)};
          const uint4 hi[2] = {*reinterpret_cast<const uint4*>(hi_row), *reinterpret_cast<const uint4*>(hi_row + 8)};
#pragma unroll
          for (int q = 0; q < 4; ++q) {  // MMA q: codes 4q..4q+3 of each thread's 16
            const uint4& l = lo[q / 2];
            const uint4& h = hi[q / 2];
            const uint32_t a[4] = {q % 2 == 0 ? l.x : l.z, q % 2 == 0 ? h.x : h.z, q % 2 == 0 ? l.y : l.w,
                                   q % 2 == 0 ? h.y : h.w};
#pragma unroll
            for (int j = 0; j < 4; ++j) mma_16x8x16<T>(acc[mt][j], a, b[j][q][0], b[j][q][1]);
          }
        }
      }
    }
  }

  // This split's sums: element (row g (+8) of the m-tile, weight rows 2t, 2t+1 of the group).
  float* partials = p.partials + (static_cast<int64_t>(blockIdx.z) * p.M + m0) * p.N;
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t n = n_warp + 8 * j + 2 * t;
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int m = 16 * mt + g + 8 * half;
        if (group_in[j] && m < rows) {
          *reinterpret_cast<float2*>(partials + m * p.N + n) =
              make_float2(acc[mt][j][2 * half], acc[mt][j][2 * half + 1]);
        }
      }
    }
  }
}

constexpr int kDmmaReduceThreads = 256;

// out[m, n] = (sum over the splits, in order, of partials[s, m, n]) * col[n] / 127 + bias[n], four
// n a thread (N % 8 == 0).
template <typename T>
__global__ void __launch_bounds__(kDmmaReduceThreads) dequantized_mma_reduce_kernel(const DmmaParams p) {
  wait_for_prior_grid();
  const int64_t i = (static_cast<int64_t>(blockIdx.x) * kDmmaReduceThreads + threadIdx.x) * 4;
  const int64_t MN = p.M * p.N;
  if (i >= MN) return;
  const int64_t n = i % p.N;
  // The splits' loads in flight together, eight at a time, added in split order.
  float4 sum = make_float4(0.f, 0.f, 0.f, 0.f);
  for (int s0 = 0; s0 < p.splits; s0 += 8) {
    float4 v[8];
#pragma unroll
    for (int s = 0; s < 8; ++s) {
      v[s] = s0 + s < p.splits ? __ldcg(reinterpret_cast<const float4*>(p.partials + (s0 + s) * MN + i))
                               : make_float4(0.f, 0.f, 0.f, 0.f);
    }
#pragma unroll
    for (int s = 0; s < 8; ++s) {
      sum.x += v[s].x;
      sum.y += v[s].y;
      sum.z += v[s].z;
      sum.w += v[s].w;
    }
  }
  const float total[4] = {sum.x, sum.y, sum.z, sum.w};
  T result[4];
#pragma unroll
  for (int e = 0; e < 4; ++e) {
    const float b = p.bias != nullptr ? load_float(p.bias, p.bias_kind, n + e) : 0.f;
    result[e] = from_float<T>(fmaf(total[e], p.col[n + e] / 127.f, b));
  }
  uint2 packed;
  memcpy(&packed, result, 8);
  *reinterpret_cast<uint2*>(static_cast<T*>(p.out) + i) = packed;
}

}  // namespace llmint8::cuda
