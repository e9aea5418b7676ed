// What generation, the CLI and any bridge need from a causal language model, whatever its
// family: a forward against a KV cache, a new cache, bind() after replace_linear, and sizes.
// Every model family implements it (llama.h); load_model() reads any supported file.
#pragma once

#include <llmint8/config.h>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <torch/nn/module.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace llmint8::models {

// Keys and values of every layer for one generation, preallocated to the positions asked for.
struct KVCache {
  std::vector<at::Tensor> keys, values;  // per layer [batch, kv_heads, positions, head_dim]
  int64_t length = 0;                    // positions filled
};

struct CausalLMSizes {
  int64_t vocab_size = 0;
  int64_t max_seq_len = 0;  // context length: positions a cache may hold
  int64_t n_layers = 0;
  int64_t hidden_size = 0;
};

// A torch::nn::Module, so that replace_linear, load_state_dict, state_dict and to() work on it.
class CausalLM : public torch::nn::Module {
 public:
  // Logits [batch, T, vocab] (fp32) of tokens [batch, T] (int64, any device: moved to the
  // model's) at positions cache.length...; appends to the cache, which must have room for them.
  virtual at::Tensor forward(const at::Tensor& tokens, KVCache& cache) = 0;
  // Logits [batch, 1, vocab] (fp32) of tokens [batch, 1] (int64, on the model's device) at the
  // position held on the device in `position` ([1] int64, on the model's device), attending over
  // the whole cache under a mask. No shape or host-side value depends on the position, so one
  // CUDA graph capture replays at every position (generate.h). Writes the cache at the position
  // and leaves cache.length to the caller (a replayed graph cannot move a host counter).
  virtual at::Tensor decode_step(const at::Tensor& tokens, const at::Tensor& position, KVCache& cache) = 0;
  // Empty cache for `batch` sequences of up to `positions` tokens (default: max_seq_len), in the
  // model's dtype and device; an allocation failure is an error naming the cache's size.
  virtual KVCache new_cache(int64_t batch, int64_t positions = 0) const = 0;
  // Fetches every Linear handle again: call after replace_linear.
  virtual void bind() = 0;
  // For inference: runs the layers that read one input (q, k and v; gate and up) as one matmul
  // over their stacked rows, whose weights the parts then view (no memory added, the state dict
  // unchanged). load_model(path, options) does it on CUDA; forwards that record gradients, or
  // after replace_linear, bind() or to(), use the parts again. No-op by default.
  virtual void stack_projections() {}
  virtual CausalLMSizes sizes() const = 0;
};

// A model read from a file by load_model().
struct LoadedModel {
  std::shared_ptr<CausalLM> model;
  std::string format;                    // "llama2c", or "hf" (a Hugging Face folder)
  std::string model_type;                // config.json's model_type ("llama" for llama2.c files)
  std::vector<std::string> int8_layers;  // layers an 8-bit checkpoint loaded as Linear8bitLt
};

// A Hugging Face folder (hf.h: config.json's model_type picks the family) or a llama2.c
// checkpoint (llama2c.h), into a float32 CPU model; errors name the file and field.
LoadedModel load_model(const std::string& path);

// The form a model is loaded into.
struct LoadOptions {
  c10::Device device = c10::kCPU;
  at::ScalarType dtype = at::kFloat;  // of every floating-point parameter (not of 8-bit codes or scales)
  // Linear layers swapped for Linear8bitLt (replace_linear's rules: lm_head and skip modules kept)
  // and quantized on `device`; an 8-bit checkpoint's own settings win over these.
  std::optional<Int8Config> int8;
};

// The same files, straight into `options`' form: a Hugging Face folder's tensors go one at a
// time from the mapped safetensors files to `device` in `dtype` (Linear weights quantized there
// as they arrive), into a model built without initializing its parameters, so that neither a
// float copy of the whole model nor any fp32 staging exists. The checks and errors are
// load_model(path)'s. llama2.c files are read as load_model(path) reads them, then converted.
LoadedModel load_model(const std::string& path, const LoadOptions& options);

}  // namespace llmint8::models
