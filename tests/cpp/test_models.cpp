// The model families behind one CausalLM interface: config.json read per model_type (registry),
// rope variants, sliding windows, tied embeddings as one tensor, and Linear8bitLt's one way in
// for quantized state, decode_step against forward, and (on a GPU) the CUDA graph decode against
// the eager one. Logits against transformers: tests/python/test_models_hf.py.
#include "catch_compat.h"
#include "reference.h"

#include <llmint8/llmint8.h>
#include <llmint8/models/causal_lm.h>
#include <llmint8/models/generate.h>
#include <llmint8/models/hf.h>
#include <llmint8/models/llama.h>

#include "io/readers.h"
#ifdef LLMINT8_WITH_CUDA
#include "cuda/model_steps.h"
#endif

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <nlohmann/json.hpp>
#include <torch/nn/modules/linear.h>
#include <torch/types.h>

#include <algorithm>
#include <set>

using llmint8::testing::contains_all;
using llmint8::testing::error_message;
namespace m = llmint8::models;

namespace {

const nlohmann::json kSizes = {{"hidden_size", 16},          {"intermediate_size", 32}, {"num_hidden_layers", 3},
                               {"num_attention_heads", 4},   {"num_key_value_heads", 2}, {"vocab_size", 20},
                               {"max_position_embeddings", 32}};

// config.json of kSizes plus `extra`, read as the loader reads it.
m::HfConfig parse(const nlohmann::json& extra) {
  auto j = kSizes;
  j.update(extra);
  return m::parse_hf_config(j.dump(), "config.json");
}

// The LlamaConfig a family made of the config.
m::LlamaConfig llama_config(const nlohmann::json& extra) {
  const auto model = parse(extra).model.build();
  const auto* llama = dynamic_cast<const m::LlamaForCausalLMImpl*>(model.get());
  REQUIRE(llama != nullptr);
  return llama->config;
}

std::string parse_error(const nlohmann::json& extra) {
  return error_message([&] { parse(extra); });
}

m::LlamaConfig tiny(int64_t window = 0) {
  m::LlamaConfig c;
  c.dim = 16;
  c.hidden_dim = 32;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.vocab_size = 20;
  c.max_seq_len = 32;
  if (window > 0) {
    c.sliding_window = window;
    c.sliding_layers = {true, true};
  }
  return c;
}

}  // namespace

TEST_CASE("the registry: config.json's model_type picks the family; an unknown one names those it knows", "[models]") {
  CHECK(m::hf_model_types() == std::vector<std::string>{"gemma", "llama", "mistral", "qwen2"});
  CHECK(parse({{"model_type", "qwen2"}}).model_type == "qwen2");
  CHECK(parse(nlohmann::json::object()).model_type == "llama");  // files without one: llmint8's older converter
  CHECK(contains_all(parse_error({{"model_type", "gpt2"}}),
                     {"'config.json': field 'model_type' must be one of \"gemma\", \"llama\", \"mistral\", \"qwen2\"",
                      "got \"gpt2\""}));
}

TEST_CASE("config.json: rope as transformers 5 writes it and as older versions did", "[models]") {
  CHECK(llama_config(nlohmann::json::object()).rope.theta == 10000.0);
  CHECK(llama_config({{"rope_theta", 5e5}}).rope.theta == 5e5);
  CHECK(llama_config({{"rope_parameters", {{"rope_type", "default"}, {"rope_theta", 1e5}}}}).rope.theta == 1e5);
  // Inside rope_parameters wins over the top level; a legacy rope_scaling is the parameters when given.
  CHECK(llama_config({{"rope_theta", 7.0}, {"rope_parameters", {{"rope_theta", 1e5}}}}).rope.theta == 1e5);
  const auto legacy = llama_config({{"rope_theta", 3e4}, {"rope_scaling", {{"type", "linear"}, {"factor", 2.0}}}});
  CHECK((legacy.rope.type == "linear" && legacy.rope.factor == 2.0 && legacy.rope.theta == 3e4));
  const auto llama3 = llama_config({{"rope_parameters", {{"rope_type", "llama3"}, {"rope_theta", 5e5}, {"factor", 8.0},
                                                         {"low_freq_factor", 1.0}, {"high_freq_factor", 4.0}}}});
  CHECK((llama3.rope.type == "llama3" && llama3.rope.factor == 8.0 && llama3.rope.high_freq_factor == 4.0));
  CHECK(llama3.rope.original_max_position_embeddings == 32);  // transformers' default: max_position_embeddings
  // What is not implemented is refused, naming the field.
  CHECK(contains_all(parse_error({{"rope_parameters", {{"rope_type", "yarn"}, {"factor", 4.0}}}}),
                     {"field 'rope_parameters.rope_type' must be \"default\", \"linear\" or \"llama3\"", "got \"yarn\""}));
  CHECK(contains_all(parse_error({{"rope_scaling", {{"type", "dynamic"}, {"factor", 2.0}}}}),
                     {"field 'rope_scaling.type' must be"}));
  CHECK(contains_all(parse_error({{"rope_parameters", {{"rope_type", "linear"}, {"factor", 2.0}, {"beta_fast", 32}}}}),
                     {"field 'rope_parameters.beta_fast' must be absent for rope type \"linear\"", "got 32"}));
  CHECK(contains_all(parse_error({{"rope_parameters", {{"rope_type", "linear"}}}}),
                     {"field 'rope_parameters.factor' must be a number", "nothing (missing)"}));
  CHECK(contains_all(parse_error({{"rope_parameters", {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 4.0},
                                                       {"high_freq_factor", 1.0}}}}),
                     {"rope.high_freq_factor must be above rope.low_freq_factor"}));
  CHECK(contains_all(parse_error({{"partial_rotary_factor", 0.5}}), {"field 'partial_rotary_factor' must be 1"}));
  CHECK(contains_all(parse_error({{"hidden_act", "relu"}}),
                     {"field 'hidden_act' must be \"silu\", \"gelu\" or \"gelu_pytorch_tanh\"", "got \"relu\""}));
}

TEST_CASE("config.json: the families' own fields", "[models]") {
  // Llama: attention_bias (q, k, v, o), mlp_bias, a head_dim of its own, tied embeddings.
  const auto llama = llama_config({{"attention_bias", true}, {"mlp_bias", true}, {"head_dim", 6},
                                   {"tie_word_embeddings", true}});
  CHECK((llama.qkv_bias && llama.o_bias && llama.mlp_bias && llama.head_dim() == 6 && llama.tie_embeddings));
  CHECK(llama.sliding_layers.empty());
  CHECK(parse({{"tie_word_embeddings", true}}).model.tied ==
        std::vector<std::pair<std::string, std::string>>{{"lm_head.weight", "model.embed_tokens.weight"}});
  // Qwen2: q/k/v biases; windows only with use_sliding_window, in the layers layer_types marks (or from
  // max_window_layers up in older files).
  const auto qwen2 = llama_config({{"model_type", "qwen2"}, {"sliding_window", 8}});
  CHECK((qwen2.qkv_bias && !qwen2.o_bias && qwen2.sliding_layers.empty()));
  const auto typed = llama_config({{"model_type", "qwen2"}, {"use_sliding_window", true}, {"sliding_window", 8},
                                   {"layer_types", {"sliding_attention", "full_attention", "sliding_attention"}}});
  CHECK((typed.sliding_window == 8 && typed.sliding_layers == std::vector<bool>{true, false, true}));
  const auto older = llama_config({{"model_type", "qwen2"}, {"use_sliding_window", true}, {"max_window_layers", 1}});
  CHECK((older.sliding_window == 4096 && older.sliding_layers == std::vector<bool>{false, true, true}));
  CHECK(llama_config({{"model_type", "qwen2"}, {"use_sliding_window", true}, {"sliding_window", nullptr}})
            .sliding_layers.empty());
  CHECK(contains_all(parse_error({{"model_type", "qwen2"}, {"use_sliding_window", true},
                                  {"layer_types", {"full_attention", "chunked_attention", "full_attention"}}}),
                     {"field 'layer_types' must be a list of \"full_attention\" and \"sliding_attention\""}));
  CHECK(contains_all(parse_error({{"model_type", "qwen2"}, {"use_sliding_window", true}, {"layer_types", {"full_attention"}}}),
                     {"field 'layer_types' must be one entry per layer (num_hidden_layers = 3)"}));
  // Mistral: every layer slides; null means full attention, absent transformers' 4096.
  const auto mistral = llama_config({{"model_type", "mistral"}, {"sliding_window", 5}});
  CHECK((mistral.sliding_window == 5 && mistral.sliding_layers == std::vector<bool>{true, true, true}));
  CHECK(llama_config({{"model_type", "mistral"}}).sliding_window == 4096);
  CHECK(llama_config({{"model_type", "mistral"}, {"sliding_window", nullptr}}).sliding_layers.empty());
  CHECK(contains_all(parse_error({{"model_type", "mistral"}, {"layer_types", {"full_attention"}}}),
                     {"field 'layer_types' must be absent"}));
  // Gemma: transformers' defaults (GELU with tanh, tied embeddings, heads of 256), 1 + weight norms,
  // scaled embeddings; bidirectional attention refused.
  const auto gemma = llama_config({{"model_type", "gemma"}});
  CHECK((gemma.hidden_act == "gelu_pytorch_tanh" && gemma.tie_embeddings && gemma.head_dim() == 256));
  CHECK((gemma.norm_plus_one && gemma.scale_embeddings && !gemma.qkv_bias));
  CHECK(llama_config({{"model_type", "gemma"}, {"hidden_act", "gelu"}, {"head_dim", 8}}).hidden_act == "gelu");
  CHECK(contains_all(parse_error({{"model_type", "gemma"}, {"use_bidirectional_attention", true}}),
                     {"field 'use_bidirectional_attention' must be false"}));
}

TEST_CASE("a tied embedding is one tensor, before and after moves", "[models]") {
  auto c = tiny();
  c.tie_embeddings = true;
  std::shared_ptr<m::CausalLM> model = std::make_shared<m::LlamaForCausalLMImpl>(c);
  CHECK(model->named_parameters().find("lm_head.weight") == nullptr);
  int64_t count = 0;
  for (const auto& p : model->parameters()) count += p.numel();
  CHECK(count == c.parameter_count());
  // A dtype cast converts the one tensor once: the logits still come from the embedding.
  model->to(torch::kDouble);
  const auto* llama = dynamic_cast<m::LlamaForCausalLMImpl*>(model.get());
  CHECK(llama->model->embed_tokens->weight.scalar_type() == torch::kDouble);
  torch::NoGradGuard no_grad;
  auto cache = model->new_cache(1);
  const auto logits = model->forward(torch::tensor({{1, 2, 3}}, torch::kLong), cache);
  CHECK(logits.sizes() == std::vector<int64_t>{1, 3, c.vocab_size});
  CHECK(logits.scalar_type() == torch::kFloat);
}

TEST_CASE("sliding windows: the prefill's mask and the decode's narrowed cache agree", "[models]") {
  torch::NoGradGuard no_grad;
  const auto tokens = torch::tensor({{1, 5, 7, 2, 9, 11, 3, 4, 8, 13, 6, 17}}, torch::kLong);
  at::Tensor full_attention;
  for (const int64_t window : {0, 3}) {
    torch::manual_seed(0);
    std::shared_ptr<m::CausalLM> model = std::make_shared<m::LlamaForCausalLMImpl>(tiny(window));
    for (auto& p : model->parameters()) p.normal_(0, 0.3);
    auto cache = model->new_cache(1);
    const auto prefill = model->forward(tokens, cache)[0];
    auto step_cache = model->new_cache(1);
    for (int64_t i = 0; i < tokens.size(1); ++i) {
      const auto step = model->forward(tokens.narrow(1, i, 1), step_cache)[0][0];
      INFO("window " << window << ", position " << i);
      CHECK(at::allclose(step, prefill[i], 1e-4, 1e-5));
    }
    if (window == 0) {
      full_attention = prefill;
    } else {  // the window hides keys: positions past it differ from full attention, earlier ones do not
      CHECK(at::allclose(prefill.narrow(0, 0, window), full_attention.narrow(0, 0, window), 1e-5, 1e-6));
      CHECK((prefill[window] - full_attention[window]).abs().max().item<double>() > 1e-3);
    }
  }
}

TEST_CASE("generation and scoring go through the CausalLM interface", "[models]") {
  torch::manual_seed(0);
  std::shared_ptr<m::CausalLM> model = std::make_shared<m::LlamaForCausalLMImpl>(tiny(4));
  CHECK(model->sizes().vocab_size == 20);
  CHECK(model->sizes().max_seq_len == 32);
  CHECK(model->sizes().n_layers == 2);
  llmint8::replace_linear(*model, llmint8::Int8Config());
  model->bind();
  const auto out = m::generate(*model, {1, 2, 3}, 8, {/*temperature=*/0.0}, {});
  REQUIRE(out.tokens.size() == 8);
  // Greedy tokens are the argmax of the teacher-forced logits of the sequence they make.
  std::vector<int64_t> sequence{1, 2, 3};
  sequence.insert(sequence.end(), out.tokens.begin(), out.tokens.end());
  const auto logits = m::score(*model, sequence);
  for (size_t i = 0; i < out.tokens.size(); ++i) CHECK(logits[2 + i].argmax().item<int64_t>() == out.tokens[i]);
  CHECK(contains_all(error_message([&] { m::generate(*model, {1, 20}, 1, {0.0}, {}); }),
                     {"token 1 is id 20, outside the vocabulary [0, 20)"}));
}

namespace {

// Greedy decode of `steps` tokens after `prompt` two ways: per step the logits [vocab] of the
// host-position path (forward) and of the device-position path (decode_step), each path fed its
// own greedy ids.
struct TwoDecodes {
  std::vector<at::Tensor> host, device;
  std::vector<int64_t> host_ids, device_ids;
};

TwoDecodes decode_both_ways(m::CausalLM& model, const std::vector<int64_t>& prompt, int64_t steps) {
  torch::NoGradGuard no_grad;
  const int64_t P = static_cast<int64_t>(prompt.size()), positions = P + steps;
  const auto prompt_tensor = torch::tensor(prompt, torch::kLong).view({1, -1});
  auto host_cache = model.new_cache(1, positions), device_cache = model.new_cache(1, positions);
  auto host_logits = model.forward(prompt_tensor, host_cache)[0][-1];
  auto device_logits = model.forward(prompt_tensor, device_cache)[0][-1];
  // Finite garbage past the prompt: decode_step attends over every position, and only its mask
  // keeps these out (an eager cache holds zeros there, which a missing mask would not show).
  for (auto* layers : {&device_cache.keys, &device_cache.values}) {
    for (auto& t : *layers) t.narrow(2, P, steps).fill_(1e3);
  }
  TwoDecodes out;
  for (int64_t i = 0; i < steps; ++i) {
    out.host.push_back(host_logits);
    out.device.push_back(device_logits);
    out.host_ids.push_back(host_logits.argmax().item<int64_t>());
    out.device_ids.push_back(device_logits.argmax().item<int64_t>());
    host_logits = model.forward(torch::tensor({{out.host_ids.back()}}, torch::kLong), host_cache)[0][-1];
    const auto position = torch::tensor({device_cache.length}, torch::kLong);
    device_logits = model.decode_step(torch::tensor({{out.device_ids.back()}}, torch::kLong), position, device_cache)[0][-1];
    ++device_cache.length;
  }
  return out;
}

}  // namespace

TEST_CASE("decode_step (position on the device, whole cache under a mask) gives forward's logits and ids", "[models]") {
  // Each family's model as the loader builds it from config.json, random weights; the windows (3)
  // are shorter than the 4 + 12 positions decoded.
  const auto family = GENERATE(
      nlohmann::json{{"model_type", "llama"}},
      nlohmann::json{{"model_type", "qwen2"}, {"use_sliding_window", true}, {"sliding_window", 3},
                     {"layer_types", {"sliding_attention", "full_attention", "sliding_attention"}}},
      nlohmann::json{{"model_type", "mistral"}, {"sliding_window", 3}},
      nlohmann::json{{"model_type", "gemma"}, {"head_dim", 8}});
  INFO(family.dump());
  torch::manual_seed(0);
  const auto model = parse(family).model.build();
  for (auto& p : model->parameters()) p.detach().normal_(0, 0.3);
  const auto run = decode_both_ways(*model, {1, 5, 7, 2}, 12);
  CHECK(run.device_ids == run.host_ids);
  for (size_t i = 0; i < run.host.size(); ++i) {
    INFO("step " << i);
    CHECK(at::allclose(run.device[i], run.host[i], 1e-5, 1e-5));
  }
}

TEST_CASE("decode_step checks its arguments' shapes, dtype and device on the host", "[models]") {
  std::shared_ptr<m::CausalLM> model = std::make_shared<m::LlamaForCausalLMImpl>(tiny());
  torch::NoGradGuard no_grad;
  auto cache = model->new_cache(1, 8);
  const auto token = torch::tensor({{1}}, torch::kLong);
  CHECK(contains_all(error_message([&] { model->decode_step(token, torch::tensor({0}, torch::kInt), cache); }),
                     {"decode_step: position must be [1] int64 on cpu, got [1] Int on cpu"}));
  CHECK(contains_all(error_message([&] { model->decode_step(torch::tensor({{1, 2}}, torch::kLong), torch::tensor({0}, torch::kLong), cache); }),
                     {"decode_step: tokens must be [batch, 1], got [1, 2]"}));
  m::KVCache empty;
  CHECK(contains_all(error_message([&] { model->decode_step(token, torch::tensor({0}, torch::kLong), empty); }),
                     {"decode_step: the cache holds 0 of 2 layers"}));
  // A position past the cache: the CPU's index_copy_ refuses it.
  CHECK(!error_message([&] { model->decode_step(token, torch::tensor({8}, torch::kLong), cache); }).empty());
}

TEST_CASE("CUDA graph decode: greedy ids equal the eager decode's, fp32 and fp16, int8 at thresholds 0 and 6", "[cuda]") {
  if (!at::globalContext().hasCUDA()) {
    SUCCEED("no GPU");
    return;
  }
  const auto dtype = GENERATE(torch::kFloat, torch::kHalf);
  const double threshold = GENERATE(0.0, 6.0);
  INFO("dtype " << c10::toString(dtype) << ", threshold " << threshold);
  // Wide enough for the int8 kernels' real paths; a window (layer 0) shorter than the sequence,
  // biases on q/k/v as Qwen2's, grouped-query attention.
  m::LlamaConfig c;
  c.dim = 256;
  c.hidden_dim = 512;
  c.n_layers = 2;
  c.n_heads = 8;
  c.n_kv_heads = 2;
  c.vocab_size = 96;
  c.max_seq_len = 64;
  c.qkv_bias = true;
  c.sliding_window = 6;
  c.sliding_layers = {true, false};
  torch::manual_seed(0);
  auto model = std::make_shared<m::LlamaForCausalLMImpl>(c);
  {
    torch::NoGradGuard no_grad;
    for (auto& p : model->parameters()) p.normal_(0, 0.05);
    // Outlier features (as LLM.int8() sees in real models): columns past 6 take the float path at threshold 6.
    for (const auto& layer : *model->model->layers) {
      auto* decoder = layer->as<m::LlamaDecoderLayerImpl>();
      for (auto* norm : {&decoder->input_layernorm, &decoder->post_attention_layernorm}) {
        (*norm)->weight.fill_(1.0);
        (*norm)->weight.index_fill_(0, torch::tensor({3, 100, 200}, torch::kLong), 25.0);
      }
    }
    model->model->norm->weight.fill_(1.0);
    // Logits spread wide (std ~5): no near-ties for the last bits of fp16 rounding to flip.
    model->named_parameters()["lm_head.weight"].normal_(0, 0.3);
  }
  llmint8::Int8Config cfg;
  cfg.llm_int8_threshold = threshold;
  REQUIRE(llmint8::replace_linear(*model, cfg).size() == 2 * 7);
  model->bind();
  model->to(torch::kCUDA);
  model->to(dtype);
  const std::vector<int64_t> prompt{1, 17, 40, 3, 25};
  const auto eager = m::generate(*model, prompt, 24, {/*temperature=*/0.0}, {}, nullptr, m::DecodeOptions{false});
  const auto graphed = m::generate(*model, prompt, 24, {/*temperature=*/0.0}, {}, nullptr, m::DecodeOptions{true});
  CHECK(!eager.cuda_graph);
  REQUIRE(graphed.cuda_graph);
  CHECK(graphed.graph_capture_seconds > 0);
  REQUIRE(eager.tokens.size() == 24);
  CHECK(graphed.tokens == eager.tokens);
  // Not one repeated token (this model on the CPU gives 15 to 20 distinct ids): varied keys and positions.
  CHECK(std::set<int64_t>(eager.tokens.begin(), eager.tokens.end()).size() > 4);
  // A second generation captures its own graph (its own cache) and decodes the same.
  CHECK(m::generate(*model, prompt, 24, {0.0}, {}).tokens == eager.tokens);
  // Greedy replays chain on the device, a step ahead of the tokens read: a stop token ends the
  // generation where the eager one ends, and short limits take no step too many.
  const int64_t stop = eager.tokens[10];
  const auto until_stop = std::vector<int64_t>(
      eager.tokens.begin(), std::find(eager.tokens.begin(), eager.tokens.end(), stop) + 1);
  const auto stopped = m::generate(*model, prompt, 24, {0.0}, {stop});
  CHECK((stopped.stopped && stopped.cuda_graph && stopped.tokens == until_stop));
  for (const int64_t n : {1, 2, 3}) {
    CHECK(m::generate(*model, prompt, n, {0.0}, {}).tokens == std::vector<int64_t>(eager.tokens.begin(), eager.tokens.begin() + n));
  }
  // Sampling draws from each replay's logits on the host, which sets the next token and position
  // itself: at a temperature so low that the distribution is one-hot, the greedy ids again.
  const auto sampled = m::generate(*model, prompt, 24, {/*temperature=*/1e-6, /*top_p=*/1.0, /*seed=*/7}, {});
  CHECK((sampled.cuda_graph && sampled.tokens == eager.tokens));
}

#ifdef LLMINT8_WITH_CUDA
TEST_CASE("rotary_into_cache: the rotary embedding and cache write of the ATen ops, in one kernel", "[cuda]") {
  if (!at::globalContext().hasCUDA()) {
    SUCCEED("no GPU");
    return;
  }
  const auto dtype = GENERATE(at::kHalf, at::kBFloat16, at::kFloat);
  INFO("dtype " << c10::toString(dtype));
  const int64_t B = 2, T = 3, H = 8, KV = 2, hd = 16, S = 10, half = hd / 2;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(3);
  const auto q = (at::randn({B, T, H * hd}, gen) * 4).to(dtype), k = (at::randn({B, T, KV * hd}, gen) * 4).to(dtype);
  const auto v = at::randn({B, T, KV * hd}, gen).to(dtype);
  const auto angles = at::rand({T, half}, gen) * 40;
  const auto cos = at::cat({angles, angles}, -1).cos().to(dtype);
  const auto sin = at::cat({angles, angles}, -1).sin().to(dtype);
  const auto signed_sin = at::cat({-sin.narrow(-1, 0, half), sin.narrow(-1, half, half)}, -1);
  const auto positions = torch::tensor({7, 2, 5}, torch::kLong);
  const auto k_start = at::randn({B, KV, S, hd}, gen).to(dtype), v_start = at::randn({B, KV, S, hd}, gen).to(dtype);
  auto k_cache = k_start.cuda(), v_cache = v_start.cuda();
  const auto q_out = llmint8::cuda::rotary_into_cache(q.cuda(), k.cuda(), v.cuda(), cos.cuda(), signed_sin.cuda(),
                                                      positions.cuda(), k_cache, v_cache);
  REQUIRE(q_out.sizes() == at::IntArrayRef({B, H, T, hd}));
  // The float64 reference: x * cos + rotate_half(x) * sin, within a few roundings to the dtype of
  // the products (|cos|, |sin| <= 1: each at most max |x|).
  const auto rotate64 = [&](const at::Tensor& x, int64_t heads) {  // [B, T, heads * hd] -> [B, heads, T, hd]
    const auto x64 = x.to(at::kDouble).view({B, T, heads, hd}).transpose(1, 2);
    const auto turned = at::cat({-x64.narrow(-1, half, half), x64.narrow(-1, 0, half)}, -1);
    return x64 * cos.to(at::kDouble) + turned * sin.to(at::kDouble);
  };
  const double eps = dtype == at::kFloat ? 1.2e-7 : (dtype == at::kHalf ? 9.8e-4 : 7.9e-3);
  const auto close = [&](const at::Tensor& got, const at::Tensor& reference, const at::Tensor& x) {
    const double error = (got.cpu().to(at::kDouble) - reference).abs().max().item<double>();
    return error <= 2 * eps * x.abs().max().item<double>();
  };
  CHECK(close(q_out, rotate64(q, H), q.to(at::kFloat)));
  // Bit for bit the values of the ATen ops the model runs without the kernel.
  const auto aten = [&](const at::Tensor& x, int64_t heads) {
    const auto xh = x.cuda().view({B, T, heads, hd}).transpose(1, 2);
    const auto swapped = at::cat({xh.narrow(-1, half, half), xh.narrow(-1, 0, half)}, -1);
    return (xh * cos.cuda() + swapped * signed_sin.cuda()).cpu();
  };
  CHECK(at::equal(q_out.cpu(), aten(q, H)));
  // The caches: the rotated keys and the values at the positions, everything else as it was.
  auto k_expected = k_start.clone(), v_expected = v_start.clone();
  k_expected.index_copy_(2, positions, aten(k, KV));
  v_expected.index_copy_(2, positions, v.view({B, T, KV, hd}).transpose(1, 2));
  CHECK(at::equal(k_cache.cpu(), k_expected));
  CHECK(at::equal(v_cache.cpu(), v_expected));
  CHECK(close(k_cache.cpu().index_select(2, positions), rotate64(k, KV), k.to(at::kFloat)));
  // Bad input: named, and nothing written.
  const auto k_before = k_cache.clone();
  const auto call = [&](const at::Tensor& q_, const at::Tensor& k_, const at::Tensor& cos_, const at::Tensor& pos_) {
    return error_message([&] {
      llmint8::cuda::rotary_into_cache(q_, k_, v.cuda(), cos_, signed_sin.cuda(), pos_, k_cache, v_cache);
    });
  };
  CHECK(contains_all(call(q.cuda(), k.cuda(), cos.cuda().to(at::kDouble), positions.cuda()),
                     {"rotary_into_cache: cos must be", "as q, got Double"}));
  CHECK(contains_all(call(q.cuda(), k.cuda(), cos.cuda(), positions.cuda().to(at::kInt)),
                     {"rotary_into_cache: positions must be [3] int64, got [3] Int"}));
  CHECK(contains_all(call(q.cuda(), k.cuda().narrow(2, 0, hd).contiguous(), cos.cuda(), positions.cuda()),
                     {"rotary_into_cache: k must be [2, 3, 32], got [2, 3, 16]"}));
  CHECK(contains_all(call(q, k.cuda(), cos.cuda(), positions.cuda()),
                     {"rotary_into_cache: q must be a contiguous CUDA tensor"}));
  CHECK(contains_all(call(q.cuda().narrow(2, 0, 3 * hd + 1), k.cuda(), cos.cuda(), positions.cuda()),
                     {"rotary_into_cache: q must be a contiguous CUDA tensor"}));
  CHECK(at::equal(k_cache, k_before));
}

TEST_CASE("rms_norm (with a residual added or not) and silu_mul: the models' norm and gate in one kernel each", "[cuda]") {
  if (!at::globalContext().hasCUDA()) {
    SUCCEED("no GPU");
    return;
  }
  const auto dtype = GENERATE(at::kHalf, at::kBFloat16, at::kFloat);
  // 4096: the 16-byte path in every dtype; 100: element by element except fp32; 8200: past the
  // rows the 16-byte path holds in registers, element by element.
  const int64_t D = GENERATE(4096, 100, 8200);
  INFO("dtype " << c10::toString(dtype) << ", D " << D);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(5);
  // Within `relative` of |expected| plus 1e-6 (half's subnormals near 0).
  const auto near = [](const at::Tensor& got, const at::Tensor& expected, double relative) {
    const auto e = expected.to(at::kDouble);
    return ((got.to(at::kDouble) - e).abs() <= e.abs() * relative + 1e-6).all().item<bool>();
  };
  const double eps = 1e-5, ulp = dtype == at::kFloat ? 1.2e-7 : (dtype == at::kHalf ? 9.8e-4 : 7.9e-3);
  const double fp32_work = 4e-6;  // the fp32 sums, rsqrtf and expf, relative
  const auto x = (at::randn({3, 2, D}, gen) * 3).to(dtype), weight = (at::rand({D}, gen) + 0.5).to(dtype);
  const auto y = llmint8::cuda::rms_norm(x.cuda(), weight.cuda(), eps).cpu();
  REQUIRE((y.scalar_type() == dtype && y.sizes() == x.sizes()));
  // Float64: weight * x / sqrt(mean(x^2) + eps), within the output's rounding.
  const auto x64 = x.to(at::kDouble);
  const auto expected = weight.to(at::kDouble) * x64 * (x64.pow(2).mean(-1, true) + eps).rsqrt();
  CHECK(near(y, expected, ulp / 2 + fp32_work));
  // Rows that start off 16-byte alignment take the element-wise path, with the same values.
  const auto shifted = at::empty({x.numel() + 1}, x.options().device(at::kCUDA));
  const auto x_off = shifted.narrow(0, 1, x.numel()).view(x.sizes());
  x_off.copy_(x);
  CHECK(near(llmint8::cuda::rms_norm(x_off, weight.cuda(), eps).cpu(), expected, ulp / 2 + fp32_work));
  // ATen's kernel differs in the order of its sum only: one unit in the last place at most.
  CHECK(near(y, at::rms_norm(x.cuda(), {D}, weight.cuda(), eps).cpu(), ulp * 1.01 + fp32_work));

  // With a residual: ATen's sum bit for bit, and our norm of it bit for bit.
  const auto r = (at::randn({3, 2, D}, gen) * 2).to(dtype);
  const auto [sum, normed] = llmint8::cuda::add_rms_norm(x.cuda(), r.cuda(), weight.cuda(), eps);
  CHECK(at::equal(sum.cpu(), (x.cuda() + r.cuda()).cpu()));
  CHECK(at::equal(normed.cpu(), llmint8::cuda::rms_norm((x.cuda() + r.cuda()), weight.cuda(), eps).cpu()));
  const auto s64 = x.to(at::kDouble) + r.to(at::kDouble);
  CHECK(near(sum.cpu(), s64, ulp / 2));
  CHECK(near(normed.cpu(), weight.to(at::kDouble) * s64 * (s64.pow(2).mean(-1, true) + eps).rsqrt(), ulp * 1.6 + fp32_work));

  const auto gate = (at::randn({3, D}, gen) * 4).to(dtype), up = at::randn({3, D}, gen).to(dtype);
  const auto gated = llmint8::cuda::silu_mul(gate.cuda(), up.cuda()).cpu();
  CHECK(at::equal(gated, (at::silu(gate.cuda()) * up.cuda()).cpu()));  // bit for bit
  const auto gate_off = at::empty({gate.numel() + 1}, gate.options().device(at::kCUDA)).narrow(0, 1, gate.numel());
  gate_off.copy_(gate.reshape(-1));  // off 16-byte alignment: element by element, the same bits
  CHECK(at::equal(llmint8::cuda::silu_mul(gate_off.view(gate.sizes()), up.cuda()).cpu(), gated));
  const auto g64 = gate.to(at::kDouble);
  CHECK(near(gated, g64 / (1 + (-g64).exp()) * up.to(at::kDouble), ulp * 1.01 + fp32_work));
  // Bad input: named.
  CHECK(contains_all(error_message([&] { llmint8::cuda::rms_norm(x.cuda(), weight.cuda().narrow(0, 0, D - 1), eps); }),
                     {"rms_norm: weight must be [" + std::to_string(D) + "]"}));
  CHECK(contains_all(error_message([&] { llmint8::cuda::rms_norm(x.cuda(), weight.cuda().to(at::kDouble), eps); }),
                     {"rms_norm: weight must be", "as x, got Double"}));
  CHECK(contains_all(error_message([&] { llmint8::cuda::rms_norm(x.cuda(), weight.cuda(), -1.0); }),
                     {"rms_norm: eps must be a finite number >= 0"}));
  CHECK(contains_all(error_message([&] { llmint8::cuda::add_rms_norm(x.cuda(), r.cuda().narrow(2, 0, D - 1).contiguous(), weight.cuda(), eps); }),
                     {"add_rms_norm: residual must be of x's shape"}));
  CHECK(contains_all(error_message([&] { llmint8::cuda::add_rms_norm(x.cuda(), r.cuda().to(at::kDouble), weight.cuda(), eps); }),
                     {"add_rms_norm: residual must be", "as x, got Double"}));
  CHECK(contains_all(error_message([&] { llmint8::cuda::silu_mul(gate.cuda(), up.cuda().narrow(1, 0, D - 1).contiguous()); }),
                     {"silu_mul: up must be of gate's shape"}));
  CHECK(contains_all(error_message([&] { llmint8::cuda::silu_mul(gate.cuda(), up); }),
                     {"silu_mul: up must be a contiguous CUDA tensor on gate's device"}));
}
#endif

namespace {

at::Tensor weight_of(const torch::nn::AnyModule& layer) {
  if (const auto q = std::dynamic_pointer_cast<llmint8::Linear8bitLtImpl>(layer.ptr())) return q->weight;
  return std::dynamic_pointer_cast<torch::nn::LinearImpl>(layer.ptr())->weight;
}

}  // namespace

TEST_CASE("stack_projections: q, k, v and gate, up as one matmul each give the parts' logits", "[models]") {
  const double threshold = GENERATE(-1.0, 0.0, 6.0);  // -1: float Linear layers
  INFO("threshold " << threshold);
  auto c = tiny();
  c.qkv_bias = true;  // (as Qwen2: the biases stack too)
  torch::manual_seed(0);
  auto stacked = std::make_shared<m::LlamaForCausalLMImpl>(c), parts = std::make_shared<m::LlamaForCausalLMImpl>(c);
  {
    torch::NoGradGuard no_grad;
    auto into = parts->named_parameters();
    for (const auto& p : stacked->named_parameters()) {
      p.value().normal_(0, 0.3);
      // An outlier feature into every projection: threshold 6 takes a float path for it.
      if (p.key().find("layernorm") != std::string::npos) p.value().fill_(1.0).index_fill_(0, torch::tensor({3}), 40.0);
      into[p.key()].copy_(p.value());
    }
  }
  if (threshold >= 0) {
    llmint8::Int8Config cfg;
    cfg.llm_int8_threshold = threshold;
    for (auto* model : {&stacked, &parts}) {
      REQUIRE(llmint8::replace_linear(**model, cfg).size() == 2 * 7);
      (*model)->bind();
      (*model)->to(torch::kCPU);  // quantizes
    }
  }
  const auto names_before = stacked->named_parameters().keys();
  stacked->stack_projections();
  auto& attention = *stacked->model->layers[1]->as<m::LlamaDecoderLayerImpl>()->self_attn;
  auto& mlp = *stacked->model->layers[1]->as<m::LlamaDecoderLayerImpl>()->mlp;
  // The parts now view one stacked copy each: the names and values of the state dict are as before.
  CHECK(weight_of(attention.q_proj).storage().is_alias_of(weight_of(attention.v_proj).storage()));
  CHECK(weight_of(mlp.gate_proj).storage().is_alias_of(weight_of(mlp.up_proj).storage()));
  CHECK(stacked->named_parameters().keys() == names_before);
  const auto reference = parts->named_parameters();
  for (const auto& p : stacked->named_parameters()) CHECK(at::equal(p.value(), reference[p.key()]));

  const auto logits = [](m::CausalLM& model) {
    torch::NoGradGuard no_grad;
    auto cache = model.new_cache(2, 8);
    const auto prefill = model.forward(torch::tensor({{1, 5, 7, 2}, {3, 3, 9, 4}}, torch::kLong), cache);
    const auto decode = model.forward(torch::tensor({{6}, {8}}, torch::kLong), cache);
    return at::cat({prefill, decode}, 1);
  };
  const auto expected = logits(*parts);
  {
    torch::NoGradGuard no_grad;
    REQUIRE(attention.qkv.usable());
    REQUIRE(mlp.gate_up.usable());
  }
  CHECK(at::allclose(logits(*stacked), expected, 1e-5, 1e-5));
  // decode_step's path (position on the device) as well.
  const auto run = decode_both_ways(*stacked, {1, 5, 7, 2}, 4), reference_run = decode_both_ways(*parts, {1, 5, 7, 2}, 4);
  CHECK(run.device_ids == reference_run.device_ids);
  for (size_t i = 0; i < run.device.size(); ++i) CHECK(at::allclose(run.device[i], reference_run.device[i], 1e-5, 1e-5));

  if (threshold < 0) {  // a forward that records gradients goes through the parts, whose weights get them
    CHECK(!attention.qkv.usable());
    auto cache = stacked->new_cache(1, 4);
    stacked->forward(torch::tensor({{1, 2}}, torch::kLong), cache).sum().backward();
    REQUIRE(weight_of(attention.k_proj).grad().defined());
    CHECK(weight_of(attention.k_proj).grad().abs().sum().item<double>() > 0);
  }
  // A part given other weights leaves the stack, which then serves no more: the parts' logits.
  {
    torch::NoGradGuard no_grad;
    for (auto* model : {&stacked, &parts}) {
      auto& layer = *(*model)->model->layers[1]->as<m::LlamaDecoderLayerImpl>();
      if (const auto q = std::dynamic_pointer_cast<llmint8::Linear8bitLtImpl>(layer.self_attn->k_proj.ptr())) {
        q->set_quantized(q->weight.flip(1).contiguous(), q->SCB.clone());
      } else {
        auto& w = std::dynamic_pointer_cast<torch::nn::LinearImpl>(layer.self_attn->k_proj.ptr())->weight;
        w.set_data(w.flip(1).contiguous());
      }
    }
  }
  const auto changed = logits(*parts);
  CHECK(!at::allclose(changed, expected, 1e-3, 1e-3));
  CHECK(at::allclose(logits(*stacked), changed, 1e-5, 1e-5));
  {
    torch::NoGradGuard no_grad;
    CHECK(!attention.qkv.usable());  // (dropped)
    CHECK(mlp.gate_up.usable());
  }
  // to() drops every stack first (their copies must not stay behind on the old device or dtype).
  stacked->to(torch::kCPU);
  torch::NoGradGuard no_grad;
  CHECK(!mlp.gate_up.usable());
  CHECK(at::allclose(logits(*stacked), changed, 1e-5, 1e-5));
}

TEST_CASE("StackedLinear::stack stacks only layers that can run as one", "[models]") {
  torch::NoGradGuard no_grad;
  const auto usable = [](std::vector<torch::nn::AnyModule> parts) { return m::StackedLinear::stack(parts).usable(); };
  const auto int8 = [](int64_t in, int64_t out, double threshold) {
    llmint8::Linear8bitLt layer(llmint8::Linear8bitLtOptions(in, out).has_fp16_weights(false).threshold(threshold));
    layer->to(torch::kCPU);  // quantizes
    return torch::nn::AnyModule(layer);
  };
  const auto linear = [](int64_t in, int64_t out, bool bias = true) {
    return torch::nn::AnyModule(torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(bias)));
  };
  CHECK(usable({linear(8, 4), linear(8, 6)}));
  CHECK(usable({int8(8, 4, 6.0), int8(8, 6, 6.0), int8(8, 2, 6.0)}));
  CHECK(!usable({linear(8, 4)}));                        // one part
  CHECK(!usable({linear(8, 4), linear(6, 4)}));          // other input sizes
  CHECK(!usable({linear(8, 4), linear(8, 4, false)}));   // a bias and none
  CHECK(!usable({int8(8, 4, 6.0), int8(8, 4, 0.0)}));    // other thresholds
  CHECK(!usable({int8(8, 4, 0.0), linear(8, 4)}));       // other kinds
  auto half = linear(8, 4);
  half.ptr()->to(torch::kHalf);
  CHECK(!usable({linear(8, 4), half}));                  // other dtypes
  llmint8::Linear8bitLt float_weights(llmint8::Linear8bitLtOptions(8, 4));  // has_fp16_weights: not quantized
  CHECK(!usable({int8(8, 4, 0.0), torch::nn::AnyModule(float_weights)}));
  // Refused parts are left as they were: not views of anything.
  auto a = linear(8, 4), b = linear(6, 4);
  const auto a_weight = weight_of(a).clone();
  m::StackedLinear::stack({a, b});
  CHECK(at::equal(weight_of(a), a_weight));
  CHECK(weight_of(a).storage().nbytes() == a_weight.storage().nbytes());
}

TEST_CASE("Linear8bitLt::set_quantized is the one way quantized state is set", "[module]") {
  llmint8::Linear8bitLt layer(llmint8::Linear8bitLtOptions(8, 4).has_fp16_weights(false).bias(false));
  const auto W = at::randn({4, 8});
  const auto quantized = llmint8::int8_vectorwise_quant(W);
  const at::Tensor CB = std::get<0>(quantized), SCB = std::get<1>(quantized);  // lambdas cannot capture bindings (C++17)
  CHECK(contains_all(error_message([&] { layer->set_quantized(CB.to(at::kShort), SCB); }),
                     {"Linear8bitLt::set_quantized: CB must be int8 and SCB floating point, got Short and Float"}));
  CHECK(contains_all(error_message([&] { layer->set_quantized(CB.t().contiguous(), SCB); }),
                     {"CB must be [4, 8] and SCB [4]"}));
  CHECK(!layer->is_quantized());
  layer->set_quantized(CB, SCB.to(at::kHalf));
  CHECK(layer->is_quantized());
  CHECK((layer->SCB.scalar_type() == at::kFloat && !layer->options.has_fp16_weights() && !layer->state.has_fp16_weights));
  CHECK((layer->state.CB.is_same(layer->weight) && layer->state.SCB.is_same(layer->SCB)));
  const auto x = at::randn({3, 8});
  CHECK(at::equal(layer->forward(x), llmint8::int8_linear(x, CB, SCB.to(at::kHalf).to(at::kFloat))));
}
