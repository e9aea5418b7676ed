// Launcher of the decode step's attention kernel (see kernels/decode_attention.cuh).
#include "cuda/kernels/decode_attention.cuh"
#include "cuda/small_m_launch.cuh"  // decode_overlap, launch_may_overlap

namespace llmint8::cuda {

namespace {

template <typename T, int E>
cudaError_t launch_with(const DecodeAttentionArgs& args, int device, cudaStream_t stream) {
  return launch_may_overlap(decode_attention_kernel<T, E>, dim3(static_cast<unsigned>(args.B * args.H)),
                            kDecodeAttentionWarps * 32, 0, args, decode_overlap(device), stream);
}

}  // namespace

cudaError_t launch_decode_attention(FloatKind kind, const DecodeAttentionArgs& args, int device, cudaStream_t stream) {
  if (args.B <= 0 || args.H <= 0 || args.KV <= 0 || args.H % args.KV != 0 || args.S <= 0 ||
      args.B * args.H >= (int64_t{1} << 31)) {
    return cudaErrorInvalidValue;
  }
  return with_float_type(kind, [&](auto tag) {
    using T = decltype(tag);
    switch (args.hd) {
      case 32: return launch_with<T, 1>(args, device, stream);
      case 64: return launch_with<T, 2>(args, device, stream);
      case 128: return launch_with<T, 4>(args, device, stream);
      case 256: return launch_with<T, 8>(args, device, stream);
      default: return cudaErrorInvalidValue;
    }
  });
}

}  // namespace llmint8::cuda
