// Product backend "small_m_fused": the layer op for 3 to 16 rows in one kernel, the activations
// quantized and their outlier columns listed inside it (see kernels/small_m_fused.cuh).
#include "cuda/kernels/small_m_fused.cuh"
#include "cuda/small_m_launch.cuh"  // decode_traits, decode_overlap, launch_may_overlap, resident_blocks

#include <algorithm>

namespace llmint8::cuda {

namespace {

// Shared memory a block of small_m_fused may take: what the card allows less 16 KB (the static
// sums, row stats and scan), and at most 160 KB. Past it (16 x 11008 codes with their list take
// 193 KB) the two kernels run instead.
size_t max_smem(int device) {
  const int optin = decode_traits(device).max_block_smem;
  return static_cast<size_t>(std::clamp(optin - 16 * 1024, 0, 160 * 1024));
}

size_t smem_bytes(const ScaledProduct& p) {
  return small_m_fused_smem_bytes(static_cast<int>(p.M), p.K, p.threshold > 0.f);
}

template <typename T, int ROWS, int G>
cudaError_t launch_tiles(const SmallMFusedParams& params, int64_t grid, size_t smem, int device,
                         cudaStream_t stream) {
  return launch_may_overlap(small_m_fused_kernel<T, ROWS, G>, static_cast<unsigned>(grid), kSmallMWarps * 32, smem,
                            params, decode_overlap(device), stream);
}

// Tiles of 16 weight rows (G = 2) or 8 (G = 1): the grid is one resident wave, so a block takes
// ceil(tiles / grid) tiles; the size that gives a block fewer weight rows in all wins (16 where
// equal: half the tile epilogues). 11008 rows on 132 SMs: 6 tiles of 16 (96 rows) against 11
// of 8 (88).
template <typename T, int ROWS>
cudaError_t launch_rows(const SmallMFusedParams& params, size_t smem, int device, cudaStream_t stream) {
  const int64_t N = params.product.N;
  const size_t limit = max_smem(device);
  const int64_t tiles16 = (N + 15) / 16, tiles8 = (N + 7) / 8;
  const int64_t grid16 =
      std::min(tiles16, resident_blocks(small_m_fused_kernel<T, ROWS, 2>, kSmallMWarps * 32, smem, limit));
  const int64_t grid8 =
      std::min(tiles8, resident_blocks(small_m_fused_kernel<T, ROWS, 1>, kSmallMWarps * 32, smem, limit));
  const int64_t rows16 = (tiles16 + grid16 - 1) / grid16 * 16, rows8 = (tiles8 + grid8 - 1) / grid8 * 8;
  if (rows16 <= rows8) return launch_tiles<T, ROWS, 2>(params, grid16, smem, device, stream);
  return launch_tiles<T, ROWS, 1>(params, grid8, smem, device, stream);
}

}  // namespace

bool small_m_fused_applies(const ScaledProduct& p) {
  return p.x != nullptr && p.M >= 3 && p.M <= kSmallMRows && p.K > 0 && p.K % 16 == 0 &&
         reinterpret_cast<uintptr_t>(p.x) % 16 == 0 && reinterpret_cast<uintptr_t>(p.b) % 16 == 0 &&
         decode_traits(p.device).major >= 8 && smem_bytes(p) <= max_smem(p.device);
}

cudaError_t small_m_fused_launch(const ScaledProduct& p, const Scratch& /*scratch*/, cudaStream_t stream) {
  if (p.N == 0) return cudaSuccess;
  SmallMFusedParams params{small_m_params(p), p.threshold, small_m_fused_code_stride(p.K)};
  params.product.a_float = p.x;
  params.product.a_kind = p.x_kind;
  const size_t smem = smem_bytes(p);
  return with_float_type(p.x_kind, [&](auto tag) {
    using T = decltype(tag);
    if (p.M <= 4) return launch_rows<T, 4>(params, smem, p.device, stream);
    if (p.M <= 8) return launch_rows<T, 8>(params, smem, p.device, stream);
    return launch_rows<T, 16>(params, smem, p.device, stream);
  });
}

}  // namespace llmint8::cuda
