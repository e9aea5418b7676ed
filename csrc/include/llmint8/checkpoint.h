// Checkpoints in bitsandbytes' layout: per quantized layer "weight" int8 [out, in],
// "SCB" fp32 [out], "weight_format" uint8 scalar 0, "bias". The files that hold them
// (safetensors) are read and written by llmint8_models: <llmint8/models/safetensors.h>.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include <functional>
#include <map>
#include <string>

namespace llmint8 {

using TensorMap = std::map<std::string, at::Tensor>;

// Parameters and buffers by dotted name, plus "<layer>.weight_format" for each
// quantized Linear8bitLt; unquantized layers have no SCB entry.
TensorMap state_dict(const torch::nn::Module& module);

// Loads such a map (from C++ or Python, float or quantized) into module, before
// or after it was moved to a device: the checkpoint validator every loader calls.
// Everything is checked before anything is changed: on error (missing or unexpected
// key in strict mode, wrong shape or dtype, non-finite values, legacy weight_format)
// the module is left as it was, and one error lists the problems (untrusted.h's table).
void load_state_dict(torch::nn::Module& module, const TensorMap& tensors, bool strict = true);

// Called with a source tensor once a loader no longer reads it (a mapped file may drop its pages).
using TensorReleased = std::function<void(const at::Tensor& source)>;

// For a module just built to be loaded (its parameters may be uninitialized, of any dtype, on
// the CPU): load_state_dict's checks (strict), then each tensor converted and installed one at a
// time on `device`, float parameters as `float_dtype`; the float weights of Linear8bitLt layers
// that are not in training mode (has_fp16_weights false) are quantized on `device` as they
// arrive, 8-bit codes and scales are installed as they are. No float copy of the whole model is
// made. A failure in the checks leaves the module unchanged; one after them (out of memory) can
// leave it partly loaded: the caller then discards it.
void load_state_dict_into_new(torch::nn::Module& module, const TensorMap& tensors, torch::Device device,
                              at::ScalarType float_dtype, const TensorReleased& released = {});

}  // namespace llmint8
