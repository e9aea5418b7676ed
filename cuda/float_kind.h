// The launchers' FloatKind of an ATen dtype, for the ATen-side wrappers of the CUDA kernels.
#pragma once

#include "cuda/launchers.h"

#include <c10/core/ScalarType.h>
#include <c10/util/Exception.h>

namespace llmint8::cuda {

inline FloatKind float_kind(at::ScalarType t) {
  switch (t) {
    case at::kHalf: return FloatKind::f16;
    case at::kBFloat16: return FloatKind::bf16;
    case at::kFloat: return FloatKind::f32;
    default: TORCH_CHECK(false, "llmint8: no CUDA kernel for dtype ", t);
  }
}

}  // namespace llmint8::cuda
