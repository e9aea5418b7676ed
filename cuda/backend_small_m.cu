// Product backend "small_m_mma": decode sizes, 1 <= M <= 16 (see kernels/small_m_product.cuh).
#include "cuda/small_m_launch.cuh"

namespace llmint8::cuda {

namespace {

template <int G, int U>
cudaError_t launch_tiles(const SmallMParams& params, bool vector, cudaStream_t stream) {
  const unsigned grid = static_cast<unsigned>((params.N + 8 * G - 1) / (8 * G));
  constexpr unsigned block = kSmallMWarps * 32;
  if (params.M > 8) {
    return vector ? launch_decode_kernel(small_m_product_kernel<G, U, true, true>, grid, block, params, stream)
                  : launch_decode_kernel(small_m_product_kernel<G, U, true, false>, grid, block, params, stream);
  }
  return vector ? launch_decode_kernel(small_m_product_kernel<G, U, false, true>, grid, block, params, stream)
                : launch_decode_kernel(small_m_product_kernel<G, U, false, false>, grid, block, params, stream);
}

}  // namespace

bool small_m_applies(const ScaledProduct& p) { return p.M >= 1 && p.M <= kSmallMRows; }

cudaError_t small_m_launch(const ScaledProduct& p, const Scratch& /*scratch*/, cudaStream_t stream) {
  const SmallMParams params = small_m_params(p);
  const bool vector = p.K % 16 == 0 && reinterpret_cast<uintptr_t>(p.a) % 16 == 0 &&
                      reinterpret_cast<uintptr_t>(p.b) % 16 == 0;
  const int sms = decode_traits(p.device).sm_count;
  // Measured on an H200 with weights in turns through L2, as in a model (benchmarks/RESULTS.md):
  // 16-row tiles with 4 chunks in flight are the fastest or within 1 % at 3, 8 and 16 rows on
  // every layer; 8-row tiles give every SM a block on narrow ones. 32-row tiles, once taken
  // from 9 rows on wide layers (measured with one weight staying in L2), lost up to 6 %.
  if (p.N >= 16LL * sms) return launch_tiles<2, 4>(params, vector, stream);
  return launch_tiles<1, 8>(params, vector, stream);
}

}  // namespace llmint8::cuda
