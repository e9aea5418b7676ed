// Launchers of the models' RMSNorm and SiLU gate kernels (see kernels/norm_and_gate.cuh).
#include "cuda/kernels/norm_and_gate.cuh"
#include "cuda/small_m_launch.cuh"  // decode_overlap, launch_may_overlap, aligned16

#include <algorithm>

namespace llmint8::cuda {

cudaError_t launch_rms_norm(FloatKind kind, const RmsNormArgs& args, int device, cudaStream_t stream) {
  if (args.rows <= 0 || args.rows >= (int64_t{1} << 31) || args.D <= 0) return cudaErrorInvalidValue;
  return with_float_type(kind, [&](auto tag) {
    using T = decltype(tag);
    constexpr int V = kPerVector<T>;
    const bool vector = args.D % V == 0 && args.D <= int64_t{kRmsNormBlock} * kRmsNormChunks * V &&
                        aligned16(args.x) && aligned16(args.weight) && aligned16(args.out) &&
                        aligned16(args.residual) && aligned16(args.sum);
    return launch_may_overlap(vector ? rms_norm_kernel<T, true> : rms_norm_kernel<T, false>,
                              dim3(static_cast<unsigned>(args.rows)), kRmsNormBlock, 0, args, decode_overlap(device),
                              stream);
  });
}

cudaError_t launch_silu_mul(FloatKind kind, const SiluMulArgs& args, int device, cudaStream_t stream) {
  if (args.n <= 0) return cudaErrorInvalidValue;
  constexpr int64_t kMaxBlocks = 4096;  // past it the blocks loop (grid stride)
  return with_float_type(kind, [&](auto tag) {
    using T = decltype(tag);
    const bool vector = args.n % kPerVector<T> == 0 && aligned16(args.gate) && aligned16(args.up) &&
                        aligned16(args.out);
    const int64_t steps = vector ? args.n / kPerVector<T> : args.n;
    const auto blocks = static_cast<unsigned>(std::min(kMaxBlocks, (steps + kSiluMulBlock - 1) / kSiluMulBlock));
    return launch_may_overlap(vector ? silu_mul_kernel<T, true> : silu_mul_kernel<T, false>, dim3(blocks),
                              kSiluMulBlock, 0, args, decode_overlap(device), stream);
  });
}

}  // namespace llmint8::cuda
