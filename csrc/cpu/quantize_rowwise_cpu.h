// Building blocks shared by the CPU quantization and layer ops.
#pragma once

#include "tensor_utils.h"

#include <ATen/core/Tensor.h>

#include <optional>
#include <utility>
#include <vector>

namespace llmint8::cpu {

// uint8 [K] mask of the columns where some row has |A| >= threshold. A2: [rows, K].
at::Tensor outlier_column_mask(const at::Tensor& A2, double threshold);

// Row-wise quantization of A2 [rows, K] leaving out the columns flagged in
// mask (undefined = no outliers): (CA int8 [rows, K], SCA fp32 [rows]).
std::pair<at::Tensor, at::Tensor> quantize_rows(const at::Tensor& A2, const at::Tensor& mask);

}  // namespace llmint8::cpu
