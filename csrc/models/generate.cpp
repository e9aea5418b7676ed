#include <llmint8/models/generate.h>

#include <ATen/ATen.h>
#include <c10/core/DeviceGuard.h>
#include <torch/types.h>

#include <algorithm>
#include <chrono>

namespace llmint8::models {

namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Ids are checked here, on the host: out of range, the embedding would fail with a bare indexing error.
// The forward moves them to the model's device.
at::Tensor token_tensor(const std::vector<int64_t>& tokens, const CausalLM& model) {
  const int64_t vocab = model.sizes().vocab_size;
  for (size_t i = 0; i < tokens.size(); ++i) {
    TORCH_CHECK_INDEX(tokens[i] >= 0 && tokens[i] < vocab, "generate: token ", std::to_string(i), " is id ",
                      std::to_string(tokens[i]), ", outside the vocabulary [0, ", std::to_string(vocab), ")");
  }
  return torch::tensor(tokens, torch::kLong).view({1, -1});
}

}  // namespace

int64_t sample_token(const at::Tensor& logits, const SamplingOptions& options, std::mt19937_64& rng) {
  const auto l = logits.to(at::kCPU, at::kFloat).contiguous();
  if (options.temperature <= 0.0) return l.argmax().item<int64_t>();
  const auto probs = at::softmax(l / options.temperature, -1);
  auto [sorted, order] = probs.sort(/*dim=*/-1, /*descending=*/true);
  const float* p = sorted.const_data_ptr<float>();
  const int64_t n = sorted.numel();
  // The smallest head of the sorted distribution whose mass reaches top_p.
  int64_t keep = n;
  if (options.top_p < 1.0) {
    double mass = 0;
    for (int64_t i = 0; i < n; ++i) {
      mass += p[i];
      if (mass >= options.top_p) {
        keep = i + 1;
        break;
      }
    }
  }
  double total = 0;
  for (int64_t i = 0; i < keep; ++i) total += p[i];
  const double r = std::uniform_real_distribution<double>(0.0, total)(rng);
  double acc = 0;
  for (int64_t i = 0; i < keep; ++i) {
    acc += p[i];
    if (r < acc) return order[i].item<int64_t>();
  }
  return order[keep - 1].item<int64_t>();
}

GenerationResult generate(CausalLM& model, const std::vector<int64_t>& prompt, int64_t max_new_tokens,
                          const SamplingOptions& options, const std::vector<int64_t>& stop_tokens,
                          const std::function<void(int64_t)>& on_token) {
  const int64_t context = model.sizes().max_seq_len;
  TORCH_CHECK_VALUE(!prompt.empty(), "generate: the prompt has no tokens");
  TORCH_CHECK_VALUE(static_cast<int64_t>(prompt.size()) < context, "generate: the prompt has ",
                    std::to_string(prompt.size()), " tokens, the model's context holds ", std::to_string(context));
  max_new_tokens = std::clamp<int64_t>(max_new_tokens, 0, context - static_cast<int64_t>(prompt.size()));
  torch::NoGradGuard no_grad;
  std::mt19937_64 rng(options.seed);
  GenerationResult result;
  auto cache = model.new_cache(1, static_cast<int64_t>(prompt.size()) + max_new_tokens);  // what this run needs
  auto start = std::chrono::steady_clock::now();
  auto logits = model.forward(token_tensor(prompt, model), cache);
  for (int64_t step = 0; step < max_new_tokens; ++step) {
    const int64_t next = sample_token(logits[0][-1], options, rng);  // reads the logits: waits for the device
    if (step == 0) {
      result.prefill_seconds = seconds_since(start);
      start = std::chrono::steady_clock::now();
    }
    result.tokens.push_back(next);
    if (on_token) on_token(next);
    if (std::find(stop_tokens.begin(), stop_tokens.end(), next) != stop_tokens.end()) {
      result.stopped = true;
      break;
    }
    if (step + 1 < max_new_tokens) logits = model.forward(token_tensor({next}, model), cache);
  }
  if (!result.tokens.empty()) result.decode_seconds = seconds_since(start);
  return result;
}

at::Tensor score(CausalLM& model, const std::vector<int64_t>& tokens) {
  const int64_t context = model.sizes().max_seq_len;
  TORCH_CHECK_VALUE(!tokens.empty() && static_cast<int64_t>(tokens.size()) <= context, "score: ",
                    std::to_string(tokens.size()), " tokens, the model's context holds 1 to ", std::to_string(context));
  torch::NoGradGuard no_grad;
  auto cache = model.new_cache(1, static_cast<int64_t>(tokens.size()));
  return model.forward(token_tensor(tokens, model), cache)[0].to(at::kCPU);
}

}  // namespace llmint8::models
