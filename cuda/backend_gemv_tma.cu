// Product backend "gemv_tma": the layer op for one or two rows in one kernel on sm_90, the weight
// rows copied into a shared-memory ring by the TMA unit (see kernels/gemv_tma.cuh).
#include "cuda/kernels/gemv_tma.cuh"
#include "cuda/small_m_launch.cuh"  // decode_traits, decode_overlap, launch_may_overlap

#include <algorithm>
#include <array>
#include <mutex>

namespace llmint8::cuda {

namespace {

// Shared memory a block may opt in to on `device` (227 KB on an H100 or H200), read once.
size_t block_smem_limit(int device) {
  static std::array<int, 64> known{};
  if (device < 0 || device >= 64) return 0;
  if (known[device] == 0) {
    int bytes = 0;
    cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
    known[device] = std::max(bytes, 1);
  }
  return static_cast<size_t>(known[device]);
}

// Pieces a warp keeps in flight: as many as fit beside the prologue's arrays, at most
// kTmaGemvMaxStages; below kTmaGemvMinStages the backend does not apply.
int stages_for(const ScaledProduct& p) {
  const size_t limit = block_smem_limit(p.device);
  const size_t prologue = fused_gemv_smem_bytes(static_cast<int>(p.M), p.K, p.threshold > 0.f);
  if (limit < kTmaGemvStaticSmem + prologue) return 0;
  const size_t per_stage = static_cast<size_t>(kTmaGemvWarps) * kTmaGemvPiece;
  return static_cast<int>(std::min<size_t>(kTmaGemvMaxStages, (limit - kTmaGemvStaticSmem - prologue) / per_stage));
}

template <typename T, int ROWS>
cudaError_t launch(const TmaGemvParams& params, size_t smem, int device, cudaStream_t stream) {
  const auto kernel = gemv_tma_kernel<T, ROWS>;
  static std::mutex mutex;  // the opt-in past 48 KB, once a device
  static std::array<bool, 64> opted{};
  {
    std::lock_guard<std::mutex> lock(mutex);
    if (!opted[device]) {
      const auto allowed = static_cast<int>(block_smem_limit(device) - kTmaGemvStaticSmem);
      const cudaError_t status =
          cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, allowed);
      if (status != cudaSuccess) return status;
      opted[device] = true;
    }
  }
  const int64_t row_groups = (params.op.N + kTmaGemvWarps - 1) / kTmaGemvWarps;
  const auto grid = static_cast<unsigned>(std::min<int64_t>(row_groups, decode_traits(device).sm_count));
  return launch_may_overlap(kernel, grid, kTmaGemvWarps * 32, smem, params, decode_overlap(device), stream);
}

}  // namespace

bool gemv_tma_applies(const ScaledProduct& p) {
  return p.x != nullptr && p.M >= 1 && p.M <= kFusedGemvMaxRows && p.K > 0 && p.K % 16 == 0 &&
         p.device >= 0 && p.device < 64 && decode_traits(p.device).major >= 9 && aligned16(p.x) &&
         aligned16(p.b) && p.K < 65536 && stages_for(p) >= kTmaGemvMinStages;
}

cudaError_t gemv_tma_launch(const ScaledProduct& p, const Scratch& /*scratch*/, cudaStream_t stream) {
  const int stages = stages_for(p);
  const TmaGemvParams params{{p.x, p.threshold, p.b, p.col, p.bias, p.bias_kind, p.out, p.out_kind, p.N, p.K,
                              static_cast<int>(p.M), 0, 0},
                             stages};
  const size_t smem = tma_gemv_smem_bytes(static_cast<int>(p.M), p.K, p.threshold > 0.f, stages);
  return with_float_type(p.x_kind, [&](auto tag) {
    using T = decltype(tag);
    return p.M == 1 ? launch<T, 1>(params, smem, p.device, stream) : launch<T, 2>(params, smem, p.device, stream);
  });
}

}  // namespace llmint8::cuda
