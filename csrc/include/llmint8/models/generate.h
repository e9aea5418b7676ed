// Token-by-token generation: the prompt in one batched forward (prefill), then one token per
// step against the KV cache; on CUDA each step is a replay of one captured CUDA graph.
#pragma once

#include <llmint8/models/causal_lm.h>

#include <cstdint>
#include <functional>
#include <random>
#include <vector>

namespace llmint8::models {

struct SamplingOptions {
  double temperature = 1.0;  // 0: greedy (argmax)
  double top_p = 0.9;        // nucleus sampling; 1 or more: the whole distribution
  uint64_t seed = 0;
};

// How the decode runs, not what it computes: greedy ids are the same either way.
struct DecodeOptions {
  // On CUDA, capture the decode step in a CUDA graph after the prefill and replay it for each
  // token (one launch per token instead of one per op). Ignored on the CPU and in builds
  // without the CUDA backend.
  bool cuda_graph = true;
};

struct GenerationResult {
  std::vector<int64_t> tokens;  // generated, without the prompt
  bool stopped = false;         // ended on a stop token rather than the limit
  double prefill_seconds = 0;   // the prompt's forward, up to the first new token
  double decode_seconds = 0;    // every later token (without the graph capture)
  bool cuda_graph = false;      // the decode replayed a CUDA graph
  double graph_capture_seconds = 0;  // one-time, between prefill and decode: warm-up and capture of that graph
};

// One token from fp32 logits [vocab] by the options (greedy at temperature 0).
int64_t sample_token(const at::Tensor& logits, const SamplingOptions& options, std::mt19937_64& rng);

// Generates up to max_new_tokens after prompt (which must fit the context),
// stopping after any of stop_tokens. on_token sees each new token as it comes.
GenerationResult generate(CausalLM& model, const std::vector<int64_t>& prompt, int64_t max_new_tokens,
                          const SamplingOptions& options, const std::vector<int64_t>& stop_tokens,
                          const std::function<void(int64_t)>& on_token = nullptr, const DecodeOptions& decode = {});

// Teacher-forced logits [tokens.size(), vocab] (fp32, CPU) of a whole sequence.
at::Tensor score(CausalLM& model, const std::vector<int64_t>& tokens);

}  // namespace llmint8::models
