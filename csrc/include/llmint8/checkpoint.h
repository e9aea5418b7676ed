// Checkpoints in bitsandbytes' layout, in safetensors files that Python's
// safetensors package reads and writes: per quantized layer "weight" int8
// [out, in], "SCB" fp32 [out], "weight_format" uint8 scalar 0, "bias".
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include <map>
#include <string>

namespace llmint8 {

using TensorMap = std::map<std::string, at::Tensor>;

// Writes tensors (any device; stored from the CPU) to a .safetensors file.
void save_safetensors(const std::string& path, const TensorMap& tensors);

// Reads a .safetensors file into CPU tensors. Validates the header, every
// dtype, shape and offset against the file size; errors name the key or offset.
TensorMap load_safetensors(const std::string& path);

// Parameters and buffers by dotted name, plus "<layer>.weight_format" for each
// quantized Linear8bitLt; unquantized layers have no SCB entry.
TensorMap state_dict(const torch::nn::Module& module);

// Loads such a map (from C++ or Python, float or quantized) into module, before
// or after it was moved to a device. Everything is checked before anything is
// changed: on error (missing or unexpected key in strict mode, wrong shape or
// dtype, legacy weight_format) the module is left as it was.
void load_state_dict(torch::nn::Module& module, const TensorMap& tensors, bool strict = true);

}  // namespace llmint8
