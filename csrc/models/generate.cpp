#include <llmint8/models/generate.h>

#include <ATen/ATen.h>
#include <c10/core/DeviceGuard.h>
#include <torch/types.h>
#ifdef LLMINT8_WITH_CUDA
#include <ATen/cuda/CUDAEvent.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

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

#ifdef LLMINT8_WITH_CUDA
// The decode step captured once in a CUDA graph and replayed for every later token: one launch
// per token instead of one per op, whose host overhead dominates an eager decode. The token and
// its position go in through device buffers the graph reads; the logits come out in the tensor
// the capture allocated, overwritten by each replay. For greedy decoding the graph ends by writing
// the logits' argmax into the token buffer and advancing the position, so that replays chain on
// the device: the host launches the next step before it reads a token, and the GPU never waits.
class DecodeGraph {
 public:
  // Captures at the cache's next position: what the warm-up writes there, the first replay
  // overwrites before any query reads it. Waits for the device (a one-time setup).
  DecodeGraph(CausalLM& model, KVCache& cache, const at::Device& device, bool greedy) {
    const c10::cuda::CUDAGuard device_guard(device);
    const auto options = at::TensorOptions().dtype(at::kLong).device(device);
    token_ = at::zeros({1, 1}, options);
    position_ = at::full({1}, cache.length, options);
    read_back_ = at::empty({kChained}, at::TensorOptions().dtype(at::kLong).pinned_memory(true));
    // As PyTorch requires: capture on a side stream, after warm-up steps on that stream (lazy
    // initialization, such as cuBLAS's workspace for the stream, must not happen in the capture).
    c10::cuda::getCurrentCUDAStream().synchronize();  // the prefill's cache writes come first
    const auto side = c10::cuda::getStreamFromPool(/*isHighPriority=*/false, device.index());
    {
      const c10::cuda::CUDAStreamGuard stream_guard(side);
      for (int i = 0; i < kWarmupSteps; ++i) model.decode_step(token_, position_, cache);
      try {
        graph_.capture_begin();
        logits_ = model.decode_step(token_, position_, cache);
        if (greedy) {  // (sampling sets token and position from the host before each replay)
          token_.copy_(logits_.argmax(-1));  // (the first maximum, as the host's argmax)
          position_.add_(1);
        }
        graph_.capture_end();
      } catch (const c10::Error& e) {
        TORCH_CHECK(false, "generate: the decode step cannot be captured in a CUDA graph (DecodeOptions::cuda_graph = ",
                    "false, the CLI's --no-cuda-graph, decodes without one): ", e.what_without_backtrace());
      }
    }
    side.synchronize();  // the warm-up's cache writes land before the replays' (on the current stream)
  }

  // Logits [1, 1, vocab] of `token` at the cache's next position; the cache grows by one.
  at::Tensor step(int64_t token, KVCache& cache) {
    token_.fill_(token);  // (fills are kernels on the current stream: no wait for the device)
    position_.fill_(cache.length);
    graph_.replay();
    ++cache.length;
    return logits_;
  }

  // Greedy decoding (a graph captured with greedy = true): start(token) once, then launch() steps
  // (at most kChained ahead of the tokens read) and next() to read their argmax tokens in order.
  void start(int64_t token, const KVCache& cache) {
    token_.fill_(token);
    position_.fill_(cache.length);
  }
  void launch(KVCache& cache) {
    graph_.replay();
    ++cache.length;
    const int slot = static_cast<int>(launched_++ % kChained);
    read_back_.narrow(0, slot, 1).copy_(token_.view(-1), /*non_blocking=*/true);
    ready_[slot].record();
  }
  int64_t next() {
    TORCH_INTERNAL_ASSERT(read_ < launched_, "DecodeGraph::next: no step launched");
    const int slot = static_cast<int>(read_++ % kChained);
    ready_[slot].synchronize();
    return read_back_.const_data_ptr<int64_t>()[slot];
  }
  int64_t launched() const { return launched_; }
  int64_t in_flight() const { return launched_ - read_; }
  static constexpr int64_t kChained = 2;  // steps queued: one runs while the host reads the other's token

  ~DecodeGraph() {  // a step launched past a stop token may still run: let it end before the graph goes
    try {
      if (read_ < launched_) ready_[(launched_ - 1) % kChained].synchronize();
    } catch (const c10::Error&) {  // (a destructor must not throw; the device's error shows at its next use)
    }
  }

 private:
  static constexpr int kWarmupSteps = 3;  // PyTorch's documented recipe
  at::Tensor token_;     // [1, 1] int64
  at::Tensor position_;  // [1] int64
  at::Tensor logits_;    // [1, 1, vocab] fp32
  at::Tensor read_back_;  // [kChained] int64, pinned: the tokens of the greedy steps in flight
  at::cuda::CUDAEvent ready_[kChained];
  int64_t launched_ = 0, read_ = 0;
  at::cuda::CUDAGraph graph_;
};
#endif

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
                          const std::function<void(int64_t)>& on_token, const DecodeOptions& decode) {
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
  // Takes a new token; true when the generation ends with it (a stop token, or the limit).
  const auto take = [&](int64_t token) {
    result.tokens.push_back(token);
    if (on_token) on_token(token);
    result.stopped = std::find(stop_tokens.begin(), stop_tokens.end(), token) != stop_tokens.end();
    return result.stopped || static_cast<int64_t>(result.tokens.size()) >= max_new_tokens;
  };
  if (max_new_tokens == 0) return result;
  bool done = take(sample_token(logits[0][-1], options, rng));  // reads the logits: waits for the device
  result.prefill_seconds = seconds_since(start);
  start = std::chrono::steady_clock::now();
#ifdef LLMINT8_WITH_CUDA
  if (!done && decode.cuda_graph && logits.is_cuda()) {  // before the first decode step; timed apart
    const auto capture_start = std::chrono::steady_clock::now();
    const bool greedy = options.temperature <= 0.0;
    DecodeGraph graph(model, cache, logits.device(), greedy);
    result.cuda_graph = true;
    result.graph_capture_seconds = seconds_since(capture_start);
    start = std::chrono::steady_clock::now();
    if (greedy) {  // the steps chain on the device, the host reads behind
      graph.start(result.tokens.back(), cache);
      const int64_t steps = max_new_tokens - 1;  // one step per token after the prefill's
      while (!done) {
        while (graph.launched() < steps && graph.in_flight() < DecodeGraph::kChained) graph.launch(cache);
        done = take(graph.next());
      }
    } else {
      while (!done) done = take(sample_token(graph.step(result.tokens.back(), cache)[0][-1], options, rng));
    }
    result.decode_seconds = seconds_since(start);
    return result;
  }
#endif
  while (!done) {
    logits = model.forward(token_tensor({result.tokens.back()}, model), cache);
    done = take(sample_token(logits[0][-1], options, rng));
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
