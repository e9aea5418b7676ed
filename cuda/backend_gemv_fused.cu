// Product backend "gemv_fused": the layer op for one or two rows in one kernel, the activations
// quantized and their outlier columns found inside it (see kernels/gemv_fused.cuh).
#include "cuda/kernels/gemv_fused.cuh"
#include "cuda/small_m_launch.cuh"  // decode_overlap, decode_prefetch_bytes, launch_may_overlap

#include <algorithm>
#include <map>
#include <mutex>
#include <tuple>

namespace llmint8::cuda {

namespace {

// Blocks of `kernel` resident at once on the current device with `smem` bytes each: the grid
// is never larger (the kernel loops over rows past it). Queried once per device, kernel and
// size, after allowing the kernel up to kFusedGemvMaxSmem there (past the 48 KB default).
template <typename Kernel>
int64_t resident_blocks(Kernel kernel, int threads, size_t smem) {
  static std::mutex mutex;
  static std::map<std::tuple<int, const void*, size_t>, int64_t> known;
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) return 1;
  const auto key = std::make_tuple(device, reinterpret_cast<const void*>(kernel), smem);
  std::lock_guard<std::mutex> lock(mutex);
  auto found = known.find(key);
  if (found != known.end()) return found->second;
  int per_sm = 0, sms = 0;
  if (cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                           static_cast<int>(kFusedGemvMaxSmem)) != cudaSuccess ||
      cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, smem) != cudaSuccess ||
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess) {
    return 1;  // the launch that follows reports the error
  }
  return known[key] = std::max<int64_t>(1, static_cast<int64_t>(per_sm) * sms);
}

// Outlier columns from which gemv_fused streams its weight rows under evict-normal rather than
// evict-first, so that the gather after each row finds the row's bytes at those columns in L2:
// past 32, where the gather starts (the first 32 are each held by a lane, fetched during the
// stream). On an H200, graph replay, weights in turns, t=6, us with an evict-first ->
// evict-normal stream (benchmarks/RESULTS.md), one row: 11008 x 4096 at 8 columns 15.8 -> 17.1,
// 32: 15.9 -> 17.3, 64: 18.1 -> 17.8, 320: 24.7 -> 20.0; 4096 x 11008 at 32 17.2 -> 17.6, 64:
// 19.9 -> 17.9. (Two rows, before they held columns too, crossed near K / 512 columns.)
constexpr int kRereadColumns = 33;

template <typename T, int ROWS, int WARPS>
cudaError_t launch_blocks(FusedGemvParams params, size_t smem, int device, cudaStream_t stream) {
  const auto kernel = gemv_fused_kernel<T, ROWS, WARPS>;
  const int64_t row_groups = (params.N + WARPS - 1) / WARPS;
  if (row_groups == 0) return cudaSuccess;
  const auto grid = static_cast<unsigned>(std::min(row_groups, resident_blocks(kernel, WARPS * 32, smem)));
  params.l2_ahead = decode_prefetch_bytes(params.K);  // of each of a warp's next two rows
  params.reread_columns = kRereadColumns;
  return launch_may_overlap(kernel, grid, WARPS * 32, smem, params, decode_overlap(device), stream);
}

template <typename T, int ROWS>
cudaError_t launch(FusedGemvParams params, size_t smem, int device, cudaStream_t stream) {
  return params.K > kFusedGemvLargeBlockK ? launch_blocks<T, ROWS, 32>(params, smem, device, stream)
                                          : launch_blocks<T, ROWS, 16>(params, smem, device, stream);
}

size_t smem_bytes(const ScaledProduct& p) {
  return fused_gemv_smem_bytes(static_cast<int>(p.M), p.K, p.threshold > 0.f);
}

}  // namespace

bool gemv_fused_applies(const ScaledProduct& p) {
  return p.x != nullptr && p.M >= 1 && p.M <= kFusedGemvMaxRows && p.K > 0 && p.K % 16 == 0 &&
         reinterpret_cast<uintptr_t>(p.x) % 16 == 0 && reinterpret_cast<uintptr_t>(p.b) % 16 == 0 &&
         smem_bytes(p) <= kFusedGemvMaxSmem;
}

cudaError_t gemv_fused_launch(const ScaledProduct& p, const Scratch& /*scratch*/, cudaStream_t stream) {
  const FusedGemvParams params{p.x,        p.threshold, p.b, p.col, p.bias,
                               p.bias_kind, p.out,       p.out_kind, p.N, p.K,
                               static_cast<int>(p.M), 0, 0};
  const size_t smem = smem_bytes(p);
  return with_float_type(p.x_kind, [&](auto tag) {
    using T = decltype(tag);
    return p.M == 1 ? launch<T, 1>(params, smem, p.device, stream) : launch<T, 2>(params, smem, p.device, stream);
  });
}

}  // namespace llmint8::cuda
