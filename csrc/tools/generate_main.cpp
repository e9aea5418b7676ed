// llmint8-generate: load a model (llama2.c checkpoint or Hugging Face folder of any family the
// registry reads), swap its Linear layers for Linear8bitLt, tokenize the prompt and generate,
// with llama2.c/llama.cpp-style flags.
#include <llmint8/checks.h>
#include <llmint8/llmint8.h>
#include <llmint8/models/causal_lm.h>
#include <llmint8/models/generate.h>
#include <llmint8/models/hf.h>
#include <llmint8/models/llama2c.h>
#include <llmint8/models/safetensors.h>
#include <llmint8/models/tokenizer.h>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>
#include <torch/csrc/autograd/profiler_kineto.h>
#include <torch/types.h>
#ifdef LLMINT8_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#endif

#include <malloc.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <type_traits>

namespace {

const char* kUsage = R"(usage: llmint8-generate -m MODEL [options]
  -m, --model PATH        llama2.c checkpoint (.bin), or a Hugging Face folder of model_type MODEL_TYPES
                          (config.json + model.safetensors or sharded; fp32/fp16/bf16, or 8-bit in
                          bitsandbytes' layout)
  -z, --tokenizer PATH    llama2.c tokenizer (tok512.bin) or sentencepiece model (.model);
                          without it the prompt must be --tokens
  -p, --prompt TEXT       prompt (default: empty, i.e. BOS only)
      --tokens IDS        prompt as comma-separated token ids instead of text
  -n, --steps N           tokens to generate (default 256, cut to the context length)
  -t, --temperature T     0 = greedy (default 1.0)
      --top-p P           nucleus sampling mass (default 0.9)
  -s, --seed N            sampling seed (default 0)
      --device DEV        cpu, cuda, cuda:N (default cpu)
      --dtype D           fp32, fp16, bf16 activations (default fp32)
      --int8 / --no-int8  swap Linear layers for Linear8bitLt (default --int8)
      --threshold T       LLM.int8() outlier threshold (default 6.0)
      --skip A,B          module names kept in floating point (lm_head always is)
      --no-cuda-graph     on CUDA, decode with eager forwards instead of replaying the decode
                          step captured in a CUDA graph (the default)
      --json              print one JSON object instead of text and figures
      --profile           time the generation's CUDA kernels (on the CPU: its operators) with
                          PyTorch's profiler and report them, most time first (the run's tokens/s
                          then include the profiler's own cost)
      --score             do not generate: print the log-likelihood of the prompt tokens
      --logits-out PATH   with --score: also write the logits [tokens, vocab] to a .safetensors file
  -h, --help              this text
)";

struct Args {
  std::string model, tokenizer, prompt, tokens, device = "cpu", dtype = "fp32", skip, logits_out;
  int64_t steps = 256;
  double temperature = 1.0, top_p = 0.9, threshold = 6.0;
  uint64_t seed = 0;
  bool int8 = true, json = false, score = false, cuda_graph = true, profile = false;
};

[[noreturn]] void fail(const std::string& message) {
  std::cerr << "llmint8-generate: " << message << "\n";
  std::exit(2);
}

template <typename T>
T number(const std::string& flag, const std::string& text) {
  std::istringstream in(text);
  T value{};
  if (!(in >> value) || !in.eof()) fail("flag " + flag + " needs a number, got '" + text + "'");
  if constexpr (std::is_floating_point_v<T>) {
    if (!std::isfinite(value)) fail("flag " + flag + " needs a finite number, got '" + text + "'");
  }
  return value;
}

// The --json object as text: a prompt or generated text that is not valid UTF-8 (byte pieces
// split characters) gets U+FFFD in place of the bad bytes rather than failing the dump.
std::string json_text(const nlohmann::json& j) { return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace); }

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string f = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) fail("flag " + f + " needs a value");
      return argv[++i];
    };
    if (f == "-h" || f == "--help") {
      std::string usage = kUsage, types;
      for (const auto& type : llmint8::models::hf_model_types()) types += (types.empty() ? "" : ", ") + type;
      usage.replace(usage.find("MODEL_TYPES"), std::string("MODEL_TYPES").size(), types);
      std::cout << usage;
      std::exit(0);
    } else if (f == "-m" || f == "--model") a.model = value();
    else if (f == "-z" || f == "--tokenizer") a.tokenizer = value();
    else if (f == "-p" || f == "--prompt") a.prompt = value();
    else if (f == "--tokens") a.tokens = value();
    else if (f == "-n" || f == "--steps") a.steps = number<int64_t>(f, value());
    else if (f == "-t" || f == "--temperature") a.temperature = number<double>(f, value());
    else if (f == "--top-p") a.top_p = number<double>(f, value());
    else if (f == "-s" || f == "--seed") a.seed = number<uint64_t>(f, value());
    else if (f == "--device") a.device = value();
    else if (f == "--dtype") a.dtype = value();
    else if (f == "--int8") a.int8 = true;
    else if (f == "--no-int8") a.int8 = false;
    else if (f == "--threshold") a.threshold = number<double>(f, value());
    else if (f == "--skip") a.skip = value();
    else if (f == "--no-cuda-graph") a.cuda_graph = false;
    else if (f == "--json") a.json = true;
    else if (f == "--profile") a.profile = true;
    else if (f == "--score") a.score = true;
    else if (f == "--logits-out") a.logits_out = value();
    else fail("unknown flag '" + f + "' (see --help)");
  }
  if (a.model.empty()) fail("no model: give -m MODEL.bin (see --help)");
  if (a.steps < 0) fail("-n/--steps must be >= 0, got " + std::to_string(a.steps));
  if (a.temperature < 0) fail("-t/--temperature must be >= 0");
  if (a.top_p <= 0) fail("--top-p must be > 0");
  if (a.threshold < 0) fail(std::string("flag --threshold needs ") + llmint8::checks::kThresholdRule + ", got " + std::to_string(a.threshold));
  if (a.dtype != "fp32" && a.dtype != "fp16" && a.dtype != "bf16") fail("--dtype must be fp32, fp16 or bf16");
  if (a.tokenizer.empty() && !a.prompt.empty()) fail("a text prompt needs -z/--tokenizer (or give --tokens)");
  return a;
}

std::vector<std::string> split(const std::string& text) {
  std::vector<std::string> parts;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    if (!item.empty()) parts.push_back(item);
  }
  return parts;
}

// Each tensor once: a tied weight registered under two names is one tensor.
int64_t tensor_bytes(const torch::nn::Module& m) {
  std::set<const c10::TensorImpl*> seen;
  int64_t bytes = 0;
  auto count = [&](const at::Tensor& t) {
    if (t.defined() && seen.insert(t.unsafeGetTensorImpl()).second) bytes += t.numel() * t.element_size();
  };
  for (const auto& p : m.parameters()) count(p);
  for (const auto& b : m.buffers()) count(b);
  return bytes;
}

// The model's weights had no layer been quantized: float parameters in dtype, each 8-bit weight
// [out, in] as a float one (its int8 codes and fp32 scales counted instead by tensor_bytes).
int64_t float_bytes(torch::nn::Module& model, at::ScalarType dtype) {
  int64_t bytes = tensor_bytes(model);
  const int64_t item = static_cast<int64_t>(c10::elementSize(dtype));
  for (const auto& module : model.modules()) {
    const auto* layer = dynamic_cast<const llmint8::Linear8bitLtImpl*>(module.get());
    if (layer == nullptr || !layer->is_quantized()) continue;
    bytes += layer->weight.numel() * (item - 1) - layer->SCB.numel() * 4;
  }
  return bytes;
}

// Peak bytes of the device's caching allocator (0 off CUDA).
int64_t peak_device_bytes(const torch::Device& device) {
#ifdef LLMINT8_WITH_CUDA
  if (device.is_cuda()) {
    // "cuda" names no index: the allocator's statistics need the one in use.
    const auto index = device.has_index() ? device.index() : c10::cuda::current_device();
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(index);
    return stats.allocated_bytes[0].peak;  // aggregate over pools
  }
#endif
  (void)device;
  return 0;
}

// The process's resident set, from /proc/self/status (VmHWM: its peak; VmRSS: now). Not
// getrusage's ru_maxrss: Linux carries that across exec, so a child of a big process (pytest)
// starts with its parent's peak.
int64_t status_bytes(const std::string& field) {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind(field + ":", 0) == 0) return std::stoll(line.substr(field.size() + 1)) * 1024;  // "  123 kB"
  }
  return 0;
}

int64_t peak_rss_bytes() { return status_bytes("VmHWM"); }
int64_t current_rss_bytes() { return status_bytes("VmRSS"); }

// The peak starts again from the current resident set (Linux's clear_refs; else it stays).
void reset_peak_rss() { std::ofstream("/proc/self/clear_refs") << "5"; }

// Waits for the device's queued work, so that a timer stopped next measures it.
void synchronize(const torch::Device& device) {
#ifdef LLMINT8_WITH_CUDA
  if (device.is_cuda()) c10::cuda::device_synchronize();
#endif
  (void)device;
}

double since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

// What --profile reports: the generate() call's events grouped by name, most total time first (the
// prefill and, with a CUDA graph, the decode step's eager warm-up are in it). On CUDA the device's
// kernels, copies and fills (their times add up to the device's busy time); on the CPU the
// operators, whose times overlap (an operator's time includes the ones it calls).
nlohmann::json profile_table(const torch::autograd::profiler::ProfilerResult& result, bool cuda, int64_t tokens) {
  std::map<std::string, std::pair<int64_t, double>> by_name;  // calls, total microseconds
  for (const auto& event : result.events()) {
    if ((event.deviceType() == c10::DeviceType::CUDA) != cuda) continue;
    auto& entry = by_name[event.name().substr(0, 160)];  // CUTLASS kernels have names of kilobytes
    entry.first += 1;
    entry.second += static_cast<double>(event.durationNs()) / 1e3;
  }
  std::vector<std::pair<std::string, std::pair<int64_t, double>>> rows(by_name.begin(), by_name.end());
  std::sort(rows.begin(), rows.end(), [](const auto& x, const auto& y) { return x.second.second > y.second.second; });
  nlohmann::json table = nlohmann::json::array();
  double total_us = 0;
  for (const auto& [name, entry] : rows) {
    table.push_back({{"name", name}, {"calls", entry.first}, {"total_us", entry.second}});
    total_us += entry.second;
  }
  return {{"events", cuda ? "CUDA kernels, copies and fills" : "CPU operators (nested: their times overlap)"},
          {"generated_tokens", tokens},
          {"total_us", total_us},
          {"table", table}};
}

// --profile's table as text: the 25 names with most time.
void print_profile(const nlohmann::json& profile) {
  const auto tokens = std::max<int64_t>(profile["generated_tokens"].get<int64_t>(), 1);
  std::printf("profile: %s, %.1f us in all, %.1f us a generated token (the prefill and a CUDA graph's warm-up "
              "included)\n",
              profile["events"].get<std::string>().c_str(), profile["total_us"].get<double>(),
              profile["total_us"].get<double>() / static_cast<double>(tokens));
  std::printf("%12s %8s %12s  %s\n", "total us", "calls", "us a token", "name");
  int shown = 0;
  for (const auto& row : profile["table"]) {
    if (++shown > 25) break;
    const double total = row["total_us"].get<double>();
    std::printf("%12.1f %8lld %12.2f  %s\n", total, static_cast<long long>(row["calls"].get<int64_t>()),
                total / static_cast<double>(tokens), row["name"].get<std::string>().c_str());
  }
}

// One forward of the prompt's shape and one of a single token, into a cache of their own with
// the positions generate() will ask for (the keys' strides follow them, and attention libraries
// set up a kernel per layout: a smaller cache left that to the first token, 80 ms on an H200);
// returns its seconds.
double warm_up(llmint8::models::CausalLM& model, const std::vector<int64_t>& prompt, int64_t steps,
               const torch::Device& device) {
  const auto start = std::chrono::steady_clock::now();
  torch::NoGradGuard no_grad;
  const auto length = static_cast<int64_t>(prompt.size());
  const int64_t positions = std::min(length + std::max<int64_t>(steps, 1), model.sizes().max_seq_len);
  auto cache = model.new_cache(1, positions);
  const auto tokens = torch::tensor(prompt, torch::kLong).view({1, length});
  model.forward(tokens, cache);
  model.forward(tokens.narrow(1, 0, 1), cache);
  synchronize(device);
  return since(start);
}

}  // namespace

int main(int argc, char** argv) {
  // Blocks of 1 MiB and more come from mmap and go back when freed. glibc otherwise raises that
  // threshold after each free of a big block, up to 32 MiB, and then keeps the layer-sized
  // temporaries of the load (a weight's fp32 copy while it is quantized) in a heap it cannot
  // shrink: resident memory above the model's weights.
  mallopt(M_MMAP_THRESHOLD, 1 << 20);
  const Args args = parse(argc, argv);
  try {
    namespace m = llmint8::models;
    const bool tty = isatty(STDERR_FILENO) && !args.json;
    torch::Device device(args.device);
    if (device.is_cuda() && !at::hasCUDA()) fail("--device " + args.device + ": no CUDA device here");
    const auto dtype = args.dtype == "fp16" ? torch::kHalf : args.dtype == "bf16" ? torch::kBFloat16 : torch::kFloat;

    // Straight into the asked-for form: dtype, device and 8-bit layers (load_model's LoadOptions).
    m::LoadOptions load_options;
    load_options.device = device;
    load_options.dtype = dtype;
    if (args.int8) {
      llmint8::Int8Config cfg;
      cfg.llm_int8_threshold = args.threshold;
      cfg.llm_int8_skip_modules = split(args.skip);
      load_options.int8 = cfg;
    }
    // The device's context (CUDA: driver and allocator start-up) is made before the load and
    // timed apart: it is paid once per process, whatever is loaded.
    const auto t_device = std::chrono::steady_clock::now();
    at::empty({1}, at::TensorOptions().device(device));
    synchronize(device);
    const double device_init_seconds = since(t_device);
    if (tty) std::cerr << "loading " << args.model << "..." << std::flush;
    reset_peak_rss();
    const int64_t rss_before_load = current_rss_bytes();
    const auto t_load = std::chrono::steady_clock::now();
    const auto loaded = m::load_model(args.model, load_options);
    synchronize(device);
    const double load_seconds = since(t_load);
    const int64_t load_peak_rss = peak_rss_bytes();
    const int64_t load_peak_device = peak_device_bytes(device);
    if (tty) std::cerr << " " << load_seconds << " s\n";
    const auto model = loaded.model;
    const bool hf = loaded.format == "hf";
    // An 8-bit checkpoint is 8-bit whatever --no-int8 says.
    const std::vector<std::string>& replaced = loaded.int8_layers;
    const auto sizes = model->sizes();
    const int64_t bytes_after = tensor_bytes(*model);
    const int64_t bytes_before = float_bytes(*model, dtype);
    std::unique_ptr<m::Tokenizer> tokenizer;
    if (!args.tokenizer.empty()) {
      tokenizer = m::load_tokenizer(args.tokenizer);
      if (tokenizer->vocab_size() != sizes.vocab_size) {
        fail("tokenizer '" + args.tokenizer + "' has " + std::to_string(tokenizer->vocab_size()) +
             " tokens, the model's vocabulary has " + std::to_string(sizes.vocab_size));
      }
    }

    std::vector<int64_t> prompt;
    if (!args.tokens.empty()) {
      for (const auto& id : split(args.tokens)) prompt.push_back(number<int64_t>("--tokens", id));
      for (int64_t id : prompt) {
        if (id < 0 || id >= sizes.vocab_size) fail("--tokens: id " + std::to_string(id) + " is outside the vocabulary");
      }
    } else {
      prompt = tokenizer ? tokenizer->encode(args.prompt, /*bos=*/true) : std::vector<int64_t>{m::Llama2cTokenizer::kBos};
      if (prompt.empty()) fail("the prompt has no tokens and the tokenizer has no BOS: give a prompt");
    }
    if (static_cast<int64_t>(prompt.size()) >= sizes.max_seq_len) {
      fail("the prompt has " + std::to_string(prompt.size()) + " tokens, the model's context holds " +
           std::to_string(sizes.max_seq_len));
    }

    nlohmann::json out;
    out["prompt"] = args.prompt;
    out["prompt_tokens"] = prompt;
    out["int8"] = args.int8;
    out["layers_quantized"] = replaced.size();
    out["weight_bytes_before"] = bytes_before;
    out["weight_bytes_after"] = bytes_after;
    out["device_init_s"] = device_init_seconds;
    out["load_seconds"] = load_seconds;
    out["load_gb_per_s"] = load_seconds > 0 ? static_cast<double>(bytes_before) / load_seconds / 1e9 : 0.0;
    out["host_rss_before_load_bytes"] = rss_before_load;
    out["load_peak_host_rss_bytes"] = load_peak_rss;
    if (device.is_cuda()) out["load_peak_cuda_bytes"] = load_peak_device;
    if (args.score) {
      const auto logits = m::score(*model, prompt);
      const auto logp = at::log_softmax(logits.to(at::kDouble), -1);
      double total = 0;
      for (size_t i = 1; i < prompt.size(); ++i) total += logp[i - 1][prompt[i]].item<double>();
      out["log_likelihood"] = total;
      out["mean_nll"] = prompt.size() > 1 ? -total / static_cast<double>(prompt.size() - 1) : 0.0;
      if (!args.logits_out.empty()) llmint8::save_safetensors(args.logits_out, {{"logits", logits}});
      std::cout << (args.json ? json_text(out) : "mean negative log-likelihood: " + std::to_string(out["mean_nll"].get<double>())) << "\n";
      return 0;
    }

    // The first forward's one-time costs (kernel and GEMM-library set-up, allocator growth) are
    // paid by a warm-up of the prompt's shape, timed apart, so that time to first token is the
    // steady-state cost of a prompt.
    out["first_call_setup_s"] = warm_up(*model, prompt, args.steps, device);

    m::SamplingOptions sampling{args.temperature, args.top_p, args.seed};
    // llama2.c models end a text with BOS; Llama ones with EOS.
    const int64_t eos = tokenizer ? tokenizer->eos_id() : m::Llama2cTokenizer::kEos;
    const int64_t bos = tokenizer ? tokenizer->bos_id() : m::Llama2cTokenizer::kBos;
    const std::vector<int64_t> stops = hf ? std::vector<int64_t>{eos} : std::vector<int64_t>{eos, bos};
    int64_t previous = prompt.back();
    if (!args.json && tokenizer) std::cout << args.prompt << std::flush;
    namespace prof = torch::autograd::profiler;
    if (args.profile) {
      const prof::ProfilerConfig config(prof::ProfilerState::KINETO);
      // Only the device's activity on CUDA: recording every operator would slow the host side.
      const std::set<prof::ActivityType> activities{device.is_cuda() ? prof::ActivityType::CUDA
                                                                      : prof::ActivityType::CPU};
      prof::prepareProfiler(config, activities);
      prof::enableProfiler(config, activities);
    }
    const auto result = m::generate(*model, prompt, args.steps, sampling, stops, [&](int64_t token) {
      if (!args.json && tokenizer && token != bos && token != eos) {
        std::cout << tokenizer->decode(previous, token) << std::flush;
      }
      previous = token;
    }, m::DecodeOptions{args.cuda_graph});
    const int64_t n = static_cast<int64_t>(result.tokens.size());
    if (args.profile) {
      synchronize(device);
      out["profile"] = profile_table(*prof::disableProfiler(), device.is_cuda(), n);
    }
    out["generated_tokens"] = result.tokens;
    std::vector<int64_t> visible;
    for (int64_t t : result.tokens) {
      if (t != bos && t != eos) visible.push_back(t);
    }
    out["text"] = tokenizer ? tokenizer->decode(visible, prompt.back()) : "";
    out["stopped_at_eos"] = result.stopped;
    out["time_to_first_token_s"] = result.prefill_seconds;
    out["prompt_tokens_per_s"] = result.prefill_seconds > 0 ? static_cast<double>(prompt.size()) / result.prefill_seconds : 0.0;
    out["decode_tokens_per_s"] = n > 1 && result.decode_seconds > 0 ? static_cast<double>(n - 1) / result.decode_seconds : 0.0;
    out["cuda_graph"] = result.cuda_graph;
    out["cuda_graph_capture_s"] = result.graph_capture_seconds;  // one-time, counted in neither of the above
    out["peak_memory_bytes"] = device.is_cuda() ? peak_device_bytes(device) : peak_rss_bytes();
    out["peak_host_rss_bytes"] = peak_rss_bytes();
    if (device.is_cuda()) out["peak_cuda_bytes"] = peak_device_bytes(device);
    out["device"] = device.str();
    out["dtype"] = args.dtype;
    if (args.json) {
      std::cout << json_text(out) << "\n";
    } else {
      std::cout << "\n\nload " << out["load_seconds"].dump() << " s, layers quantized "
                << std::to_string(replaced.size()) << ", weight bytes " << std::to_string(bytes_before) << " -> "
                << std::to_string(bytes_after) << " (" << out["load_gb_per_s"].dump() << " GB/s), first-call setup "
                << out["first_call_setup_s"].dump() << " s, time to first token " << out["time_to_first_token_s"].dump()
                << " s, prompt " << out["prompt_tokens_per_s"].dump() << " tok/s, decode "
                << out["decode_tokens_per_s"].dump() << " tok/s"
                << (result.cuda_graph ? " (CUDA graph, captured in " + out["cuda_graph_capture_s"].dump() + " s)" : "")
                << ", peak memory "
                << std::to_string(out["peak_memory_bytes"].get<int64_t>()) << " bytes\n";
      if (args.profile) print_profile(out["profile"]);
    }
    return 0;
  } catch (const c10::Error& e) {
    std::cerr << "llmint8-generate: " << e.what_without_backtrace() << "\n";
  } catch (const std::bad_alloc&) {
    std::cerr << "llmint8-generate: out of memory\n";
  } catch (const std::exception& e) {
    std::cerr << "llmint8-generate: " << e.what() << "\n";
  }
  return 1;
}
