// The whole decode-size layer op (one or two rows) in one kernel: every block quantizes the
// activations itself (a few KB, read from L2) and marks the outlier columns in a bitmask, then
// streams weight rows with dp4a like gemv_dp4a. No quantizer launch to wait for: the first
// weight rows are on their way into L2 while the block quantizes. The outlier columns' codes
// are zero; the block lists those columns once, and each warp, after streaming a row, gathers
// the row's bytes at the listed columns (from L2, where with many columns the stream keeps its
// rows) against the activations there (L1 hits), its lanes taking the list 32 entries at a time
// (with one row, each lane holds its first entry: loaded with the row's last chunks). The
// stream's work is the same at every threshold (only its L2 policy follows the outlier count):
// testing each 16-byte chunk for marked columns inside it cost every chunk a shared-memory
// read, and a lane with marks held its whole warp (1.2x the t=0 time with 8 outlier columns,
// 1.9x with 1080 on an H200). The grid is one resident wave at most and each warp loops over
// rows n, n + WARPS * gridDim.x, ...: a block past the first wave would repeat the prologue
// with nothing to hide it behind. Each warp keeps its next two rows on their way into L2 (its
// first two before the prologue): the row loads that follow hit L2 rather than wait on DRAM
// behind every other SM's requests.
#pragma once

#include "cuda/kernels/common.cuh"

#include <cub/block/block_scan.cuh>

namespace llmint8::cuda {

// The registers allow 1024 threads an SM (64 a thread). A block's warps share one prologue, so
// the fewer and larger the blocks, the less of it each SM repeats: 16 warps (two blocks an SM)
// where K <= 8192, 32 (one) above. On an H200, cold L2, against 8 warps (four blocks an SM),
// t=6 us at M = 1: 4096 x 4096 9.6 -> 8.7, 11008 x 4096 18.8 -> 16.2 (16 warps) and 15.7
// (32); 32 warps lost at K = 4096 (9.1) and tied at 8192 (benchmarks/RESULTS.md).
constexpr int kFusedGemvThreadsPerSm = 1024;
constexpr int64_t kFusedGemvLargeBlockK = 8192;  // K above it: 32-warp blocks
// Two rows at most: kernels for 4 and 8 rows ran slower on an H200 than small_m_mma does (M = 8,
// 4096 x 4096: 34 us against 22; benchmarks/NOTES.md).
constexpr int kFusedGemvMaxRows = 2;
constexpr int kFusedGemvUnroll = 4;  // 16-byte weight loads in flight per lane
// 16-byte activation chunks of each row a prologue thread loads at once (3 or 4 made ptxas spill
// with one row at the 64 registers allowed, beside the weight chunks already in flight).
constexpr int kFusedGemvPrologueBatch = 2;

struct FusedGemvParams {
  const void* x;  // [M, K] activations (the kernel's T), 16-byte aligned rows
  float threshold;
  const int8_t* b;  // [N, K] weight codes, 16-byte aligned rows
  const float* col;  // [N]
  const void* bias;  // [N] or null
  FloatKind bias_kind;
  void* out;  // [M, N]
  FloatKind out_kind;
  int64_t N, K;  // K % 16 == 0
  int rows;      // M, at most the kernel's ROWS
  int l2_ahead;  // bytes of each weight row pulled into L2 two rows ahead of its loads (0: none)
  int reread_columns;  // outlier columns from which the stream keeps its rows in L2 for the gather
};

// Dynamic shared memory of a block: the outlier bitmask, the codes of every row, then (with a
// threshold) the list of outlier columns, 16-bit: with the list a column takes over 3 bytes,
// so the 96 KB allow K < 32768 and every index fits. Past 48 KB the launch opts in to more
// (kFusedGemvMaxSmem).
constexpr size_t kFusedGemvMaxSmem = 96 * 1024;
__host__ __device__ inline size_t fused_gemv_bitmask_bytes(int64_t K) {
  return static_cast<size_t>((K + 127) / 128) * 16;  // whole 16-byte units: the codes after it stay aligned
}
inline size_t fused_gemv_smem_bytes(int rows, int64_t K, bool outliers) {
  const size_t codes = static_cast<size_t>(rows * K);
  return fused_gemv_bitmask_bytes(K) + codes + (outliers ? static_cast<size_t>(K) * sizeof(uint16_t) : 0);
}

// 16-byte chunks c0, c0 + 32, ... (kFusedGemvUnroll of them) of a weight row; zeros past the end.
// Under the L2 `policy` (weight_stream_policy).
__device__ __forceinline__ void load_weight_chunks(const int4* w4, int64_t c0, int64_t vectors, uint64_t policy,
                                                   int4 (&wv)[kFusedGemvUnroll]) {
#pragma unroll
  for (int u = 0; u < kFusedGemvUnroll; ++u) {  // all in flight; nothing waits on them here
    const int64_t c = c0 + u * 32;
    wv[u] = load16_stream_or_zero(w4 + c, c < vectors, policy);
  }
}

// Pulls bytes [0, min(K, limit)) of a weight row into L2 (the warp's lanes 128 bytes apart): the
// loads that follow hit L2 instead of queueing behind the whole card's requests to DRAM.
__device__ __forceinline__ void prefetch_row_to_l2(const int8_t* w, int64_t K, int limit, int lane) {
  const int64_t end = min(K, static_cast<int64_t>(limit));
  for (int64_t off = static_cast<int64_t>(lane) * 128; off < end; off += 32 * 128) {
    prefetch_to_l2(w + off);
  }
}

template <typename T, int ROWS, int WARPS>  // WARPS: weight rows a block takes at once, one a warp
__global__ void __launch_bounds__(WARPS * 32, kFusedGemvThreadsPerSm / (WARPS * 32))
    gemv_fused_kernel(FusedGemvParams p) {
  constexpr int kThreads = WARPS * 32;
  static_assert(ROWS >= 1 && ROWS <= kFusedGemvMaxRows, "1 or 2 rows");
  static_assert(WARPS == 16 || WARPS == 32, "one or two blocks an SM");
  constexpr int V = kPerVector<T>;  // elements per 16-byte activation load
  constexpr int kPrologueBatch = kFusedGemvPrologueBatch;
  extern __shared__ __align__(16) uint8_t dynamic_smem[];
  __shared__ float warp_max[WARPS][ROWS];
  __shared__ float row_stat[ROWS];
  __shared__ int32_t listed;  // outlier columns in the list

  const int64_t K = p.K, N = p.N, words = (K + 31) / 32, vectors = K / 16;
  uint32_t* bits = reinterpret_cast<uint32_t*>(dynamic_smem);  // one bit per column
  const int rows = p.rows;  // <= ROWS; the loops below run to ROWS (unrolled) and skip the rest
  int8_t* codes = reinterpret_cast<int8_t*>(dynamic_smem + fused_gemv_bitmask_bytes(K));  // [rows][K]
  uint16_t* list = reinterpret_cast<uint16_t*>(codes + rows * K);  // [K] at most, with a threshold only
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int64_t row_stride = static_cast<int64_t>(gridDim.x) * WARPS;
  const int64_t first_row = static_cast<int64_t>(blockIdx.x) * WARPS + warp;
  const T* x = static_cast<const T*>(p.x);
  const bool find_outliers = p.threshold > 0.f;
  // Steps 1 and 2 read the activations kPrologueBatch 16-byte chunks of every row at a time, all
  // loads issued before any is used: one chunk of one row at a time, each row's load waited for
  // the previous row's flags (SASS), a chain of L2 round trips (12 at K = 11008 with two rows,
  // where two rows took 6 us more than one on an H200).
  const int64_t prologue_step = static_cast<int64_t>(kThreads) * V;
  const auto load_activation_batch = [&](int64_t k0, int4(&raw)[kPrologueBatch][ROWS]) {
#pragma unroll
    for (int i = 0; i < kPrologueBatch; ++i) {
#pragma unroll
      for (int m = 0; m < ROWS; ++m) {
        const int64_t k = k0 + i * prologue_step;
        raw[i][m] = load16_or_zero<false>(x + m * K + k, k < K && m < rows);
      }
    }
  };
  const auto element = [](const int4& raw, int e) { return to_float(reinterpret_cast<const T*>(&raw)[e]); };

  // Every warp asks for its first row now: the whole card's weight reads are under way while the
  // blocks quantize. With a programmatic launch (sm_90) this runs before the kernel ahead has
  // ended, so nothing it may have written is read before wait_for_prior_grid(): prefetches only.
  // Its second row too: each row's loads go out with a row in L2 ahead of them.
  for (int i = 0; i < 2; ++i) {
    const int64_t n = first_row + i * row_stride;
    if (n < N) prefetch_row_to_l2(p.b + n * K, K, p.l2_ahead, lane);
  }
  wait_for_prior_grid();
  allow_dependent_launch();  // a programmatic launch after this one may start its prefetches

  // 1. Outlier columns (any row at or above the threshold, as quantize_small_m decides) into the
  //    bitmask, and each row's absmax over the other columns.
  for (int64_t i = tid; i < words; i += kThreads) bits[i] = 0u;
  __syncthreads();
  float row_max[ROWS];
#pragma unroll
  for (int m = 0; m < ROWS; ++m) row_max[m] = 0.f;
  for (int64_t k0 = static_cast<int64_t>(tid) * V; k0 < K; k0 += kPrologueBatch * prologue_step) {
    int4 raw[kPrologueBatch][ROWS];
    load_activation_batch(k0, raw);
#pragma unroll
    for (int i = 0; i < kPrologueBatch; ++i) {
      const int64_t k = k0 + i * prologue_step;
      if (k >= K) break;
      uint32_t flags = 0;  // bit e: column k + e is an outlier (V <= 8 and k % V == 0: one word)
      if (find_outliers) {
#pragma unroll
        for (int m = 0; m < ROWS; ++m) {
          if (m >= rows) break;
#pragma unroll
          for (int e = 0; e < V; ++e) flags |= static_cast<uint32_t>(fabsf(element(raw[i][m], e)) >= p.threshold) << e;
        }
        if (flags != 0) atomicOr(&bits[k >> 5], flags << (k & 31));
      }
#pragma unroll
      for (int m = 0; m < ROWS; ++m) {  // every row's absmax over its other columns
        if (m >= rows) break;
#pragma unroll
        for (int e = 0; e < V; ++e) {
          if (!((flags >> e) & 1u)) row_max[m] = absmax_combine(row_max[m], fabsf(element(raw[i][m], e)));
        }
      }
    }
  }
#pragma unroll
  for (int m = 0; m < ROWS; ++m) {
    float v = row_max[m];
    for (int offset = 16; offset > 0; offset /= 2) v = absmax_combine(v, __shfl_xor_sync(0xffffffffu, v, offset));
    if (lane == 0) warp_max[warp][m] = v;
  }
  __syncthreads();  // bits and warp maxima final
  if (tid < rows) {
    float v = 0.f;
    for (int i = 0; i < WARPS; ++i) v = absmax_combine(v, warp_max[i][tid]);
    row_stat[tid] = v;
  }
  __syncthreads();  // row_stat visible

  // 2. The codes of every row into shared memory (outlier columns zero: their term is in float).
  float scale[ROWS];
#pragma unroll
  for (int m = 0; m < ROWS; ++m) scale[m] = m < rows ? code_scale(row_stat[m]) : 0.f;
  for (int64_t k0 = static_cast<int64_t>(tid) * V; k0 < K; k0 += kPrologueBatch * prologue_step) {
    int4 raw[kPrologueBatch][ROWS];
    load_activation_batch(k0, raw);  // L1 hits mostly: step 1 read the same bytes
#pragma unroll
    for (int i = 0; i < kPrologueBatch; ++i) {
      const int64_t k = k0 + i * prologue_step;
      if (k >= K) break;
      const uint32_t flags = find_outliers ? bits[k >> 5] >> (k & 31) : 0u;
#pragma unroll
      for (int m = 0; m < ROWS; ++m) {
        if (m >= rows) break;
        int8_t c[V];
#pragma unroll
        for (int e = 0; e < V; ++e) {
          const bool skip = scale[m] == 0.f || ((flags >> e) & 1u);
          c[e] = skip ? int8_t{0} : quantize_value(element(raw[i][m], e), scale[m]);
        }
        store_codes<V>(codes + m * K + k, c);
      }
    }
  }
  // 3. The outlier columns in order (a block scan of the bitmask's counts: thread i takes a
  //    contiguous run of words).
  if (find_outliers) {
    using Scan = cub::BlockScan<int32_t, kThreads>;
    __shared__ typename Scan::TempStorage scan_storage;
    const int64_t run = (words + kThreads - 1) / kThreads;
    const int64_t w_begin = min(words, tid * run), w_end = min(words, w_begin + run);
    int32_t mine = 0;
    for (int64_t w = w_begin; w < w_end; ++w) mine += __popc(bits[w]);
    int32_t at = 0, total = 0;
    Scan(scan_storage).ExclusiveSum(mine, at, total);
    for (int64_t w = w_begin; w < w_end; ++w) {
      for (uint32_t b = bits[w]; b != 0u; b &= b - 1u) {
        list[at++] = static_cast<uint16_t>(w * 32 + __ffs(static_cast<int>(b)) - 1);
      }
    }
    if (tid == 0) listed = total;
  }
  __syncthreads();  // codes and list complete: from here on each warp works alone
  const int32_t outlier_count = find_outliers ? listed : 0;
  // With many outlier columns the gather rereads much of each row right after its stream: the
  // stream then keeps its rows in L2 (evict-normal); with few, evict-first, which was faster
  // (launcher: the count where the two cross). The vote keeps the policy in a uniform register.
  const uint64_t stream_policy =
      weight_stream_policy(__any_sync(0xffffffffu, outlier_count > 0 && outlier_count >= p.reread_columns));
  // The first 32 listed columns are held, one a lane: the row's byte there is fetched during the
  // stream, so a few outliers add no L2 round trip of their own to a row (gathered after the
  // stream, 8 columns cost 8 us of 64 on an H200's 8192 x 28672 layer). One row: loaded with the
  // row's last chunks into a register. Two rows have no register to spare (ptxas spilled): the
  // byte's aligned word is copied into shared memory (cp.async) as the row starts and read after
  // the stream (H200, t=6, 8 columns: 1.02-1.08x faster than gathering it after the stream, t=0
  // 0.1-0.3 us slower; with one row it was up to 4 % slower than the register).
  constexpr bool kHeldInRegister = ROWS == 1;
  const int32_t lane_col = kHeldInRegister && lane < outlier_count ? list[lane] : -1;
  __shared__ uint32_t held_word[kHeldInRegister ? 1 : WARPS][32];
  // The first row's first chunks (in L2 by now: prefetched before the prologue) and its column
  // scale, loaded only now. Loaded before the prologue, they shared a scoreboard with its
  // activation loads, so the prologue waited for them from DRAM (SASS, sm_90) instead of
  // running under them.
  int4 wv[kFusedGemvUnroll];
  load_weight_chunks(reinterpret_cast<const int4*>(p.b + (first_row < N ? first_row : 0) * K), lane, vectors,
                     stream_policy, wv);
  float col_n = p.col[first_row < N ? first_row : 0];

  const int4* a4 = reinterpret_cast<const int4*>(codes);
  for (int64_t n = first_row; n < N; n += row_stride) {
    const int8_t* w = p.b + n * K;
    const int4* w4 = reinterpret_cast<const int4*>(w);

    // The row's byte at the lane's held column. One row: pulled into L2 now and loaded with the
    // row's last chunks, whose wait it then shares (loaded with the first chunks, L2 hits
    // prefetched ahead, it made their wait a DRAM round trip; loaded after the stream, an L2
    // round trip of its own at the row's end). Two rows: its word copied into shared memory now.
    if constexpr (kHeldInRegister) {
      if (lane_col >= 0) prefetch_to_l2(w + lane_col);
    } else {  // (w and K are 16-byte aligned: so is the byte's word)
      if (lane < outlier_count) copy_word_async(&held_word[warp][lane], w + (list[lane] & ~3));
    }
    int8_t lane_w = 0;

    // 4. The exact int32 product of the codes with the weight row, streamed once.
    int32_t acc[ROWS] = {};
    float outlier_sum[ROWS];
    for (int64_t c0 = lane; c0 < vectors; c0 += 32 * kFusedGemvUnroll) {
      int4 current[kFusedGemvUnroll];
#pragma unroll
      for (int u = 0; u < kFusedGemvUnroll; ++u) current[u] = wv[u];
      if (c0 + 32 * kFusedGemvUnroll < vectors) {
        load_weight_chunks(w4, c0 + 32 * kFusedGemvUnroll, vectors, stream_policy, wv);
        if (lane_col >= 0 && c0 + 64 * kFusedGemvUnroll >= vectors) lane_w = __ldg(w + lane_col);
      }
#pragma unroll
      for (int u = 0; u < kFusedGemvUnroll; ++u) {
        const int64_t c = c0 + u * 32;
        if (c >= vectors) break;
#pragma unroll
        for (int r = 0; r < ROWS; ++r) {
          if (r >= rows) break;
          const int4 av = a4[r * vectors + c];
          acc[r] = __dp4a(av.x, current[u].x, acc[r]);
          acc[r] = __dp4a(av.y, current[u].y, acc[r]);
          acc[r] = __dp4a(av.z, current[u].z, acc[r]);
          acc[r] = __dp4a(av.w, current[u].w, acc[r]);
        }
      }
    }

    // 5. The outlier columns' products (before the row's scale): the lane's own column, then
    //    the rest of the list 32 columns a step, their loads independent of each other (L2
    //    hits: the row was just streamed). 4 entries a lane in flight with one row, 1 with two:
    //    more live registers than that made ptxas spill at the 64 a thread allowed.
    // The held column's activations are read here (L1 hits: the prologue read x), not held
    // through the stream in registers.
    if constexpr (kHeldInRegister) {
      const float lane_x = lane_col >= 0 ? to_float(x[lane_col]) : 0.f;
      // A lane whose stream was one step (lane + 128 >= vectors) had no later chunks to load it with.
      if (lane_col >= 0 && lane + 32 * kFusedGemvUnroll >= vectors) lane_w = __ldg(w + lane_col);
      outlier_sum[0] = lane_x * static_cast<float>(lane_w);
    } else {  // (the column read from the list here: kept live through the stream, it made ptxas spill)
      const int32_t held_col = lane < outlier_count ? list[lane] : -1;
      float held_w = 0.f;
      if (held_col >= 0) {
        wait_async_copies();
        held_w = static_cast<float>(static_cast<int8_t>(held_word[warp][lane] >> (8 * (held_col & 3))));
      }
#pragma unroll
      for (int r = 0; r < ROWS; ++r) {
        outlier_sum[r] = r < rows && held_col >= 0 ? to_float(x[r * K + held_col]) * held_w : 0.f;
      }
    }
#pragma unroll(ROWS == 1 ? 4 : 1)
    for (int32_t j = lane + 32; j < outlier_count; j += 32) {
      const int64_t c = list[j];
      const float wk = static_cast<float>(__ldg(w + c));
#pragma unroll
      for (int r = 0; r < ROWS; ++r) {
        if (r < rows) outlier_sum[r] += to_float(x[r * K + c]) * wk;
      }
    }

    // The next row's first chunks and column scale, in flight during this row's reductions.
    const float w_scale = col_n / 127.f;
    const float row_col = col_n;
    if (n + row_stride < N) {
      load_weight_chunks(reinterpret_cast<const int4*>(w + row_stride * K), lane, vectors, stream_policy, wv);
      col_n = p.col[n + row_stride];
    }
#pragma unroll
    for (int r = 0; r < ROWS; ++r) {
      if (r >= rows) break;  // (rows is the same in every lane)
      for (int offset = 16; offset > 0; offset /= 2) {
        acc[r] += __shfl_xor_sync(0xffffffffu, acc[r], offset);
        outlier_sum[r] += __shfl_xor_sync(0xffffffffu, outlier_sum[r], offset);
      }
    }
    // Lane r writes row r: scales, outlier term and bias in fp32, rounded once.
    if (lane < rows) {
      int32_t total = 0;
      float term = 0.f;
#pragma unroll
      for (int r = 0; r < ROWS; ++r) {
        total = r == lane ? acc[r] : total;
        term = r == lane ? outlier_sum[r] * w_scale : term;
      }
      store_scaled_product(p.out, p.out_kind, N, lane, n, total, row_stat[lane], row_col, term, p.bias, p.bias_kind);
    }
    const int64_t ahead = n + 2 * row_stride;  // the row after next, into L2 (the next one went at the start)
    if (ahead < N) prefetch_row_to_l2(p.b + ahead * K, K, p.l2_ahead, lane);
  }  // rows of this warp
}

}  // namespace llmint8::cuda
