// Linear8bitLt, replace_linear and checkpoints from LibTorch C++.
#include "catch_compat.h"
#include "devices.h"
#include "reference.h"

#include <llmint8/llmint8.h>
#include <llmint8/models/safetensors.h>

#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/optim/sgd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

using llmint8::testing::activations;
using llmint8::testing::contains_all;
using llmint8::testing::error_message;
using llmint8::testing::matches_reference;

namespace {

llmint8::Linear8bitLt frozen_layer(int64_t in, int64_t out, double threshold, uint64_t seed = 0) {
  torch::manual_seed(seed);
  return llmint8::Linear8bitLt(
      llmint8::Linear8bitLtOptions(in, out).has_fp16_weights(false).threshold(threshold));
}

// A model whose layers replace_linear can swap: it calls them through AnyModule
// handles fetched with linear_child, and fetches them again after the swap.
struct Block : torch::nn::Module {
  Block() {
    register_module("attn", torch::nn::Linear(16, 16));
    mlp = register_module("mlp", torch::nn::Sequential(torch::nn::Linear(16, 32), torch::nn::ReLU(),
                                                        torch::nn::Linear(32, 16)));
    bind();
  }
  void bind() { attn = llmint8::linear_child(*this, "attn"); }
  torch::Tensor forward(const torch::Tensor& x) { return x + mlp->forward(attn.forward<torch::Tensor>(x)); }
  torch::nn::AnyModule attn;
  torch::nn::Sequential mlp{nullptr};
};

struct Tiny : torch::nn::Module {
  Tiny() {
    blocks = register_module("blocks", torch::nn::ModuleList(std::make_shared<Block>(), std::make_shared<Block>()));
    lm_head = register_module("lm_head", torch::nn::Linear(torch::nn::LinearOptions(16, 10).bias(false)));
  }
  void bind() {
    for (const auto& block : *blocks) block->as<Block>()->bind();
  }
  torch::Tensor forward(torch::Tensor x) {
    for (const auto& block : *blocks) x = block->as<Block>()->forward(x);
    return lm_head->forward(x);
  }
  torch::nn::ModuleList blocks{nullptr};
  torch::nn::Linear lm_head{nullptr};
};

double rel(const torch::Tensor& a, const torch::Tensor& b) { return llmint8::testing::rel_err(a.cpu(), b.cpu()); }

std::string temp_path(const std::string& name) { return (std::filesystem::temp_directory_path() / name).string(); }

}  // namespace

TEST_CASE("Linear8bitLt keeps bitsandbytes' defaults and names", "[module]") {
  llmint8::Linear8bitLt layer(8, 4);
  CHECK(layer->options.has_fp16_weights());
  CHECK(layer->state.threshold == 0.0);
  const auto params = layer->named_parameters();
  CHECK(params.contains("weight"));
  CHECK(params.contains("bias"));
  CHECK(layer->named_buffers().contains("SCB"));
  CHECK(llmint8::Int8Config().skip_modules() == std::vector<std::string>{"lm_head"});
  std::ostringstream printed;
  printed << *layer;
  CHECK(printed.str().find("llmint8::Linear8bitLt(in_features=8, out_features=4") != std::string::npos);
}

TEST_CASE("moving to a device quantizes once; dtype casts keep codes and scales", "[module]") {
  const double threshold = GENERATE(0.0, 6.0);
  for (const auto& device : llmint8::testing::devices()) {
    auto layer = frozen_layer(64, 32, threshold);
    const auto W = layer->weight.detach().clone();
    layer->to(device);
    REQUIRE(layer->is_quantized());
    const auto ref = llmint8::testing::quantize_rows(W, 0.0);
    REQUIRE(torch::equal(layer->weight.cpu(), ref.codes));
    REQUIRE(torch::equal(layer->SCB.cpu(), ref.stats));
    layer->to(torch::kHalf);
    layer->to(device);
    REQUIRE(torch::equal(layer->weight.cpu(), ref.codes));
    REQUIRE(layer->SCB.scalar_type() == torch::kFloat);
    REQUIRE(layer->bias.scalar_type() == torch::kHalf);

    const auto x = activations(5, 64, torch::kHalf, {3, 40}).to(device);
    const auto y = layer->forward(x);
    REQUIRE(y.scalar_type() == torch::kHalf);
    REQUIRE(matches_reference(y.cpu(), llmint8::testing::int8_linear(x.cpu(), ref.codes, ref.stats,
                                                                     layer->bias.cpu(), threshold)));
  }
}

TEST_CASE("a layer never moved is quantized at its first forward", "[module]") {
  auto layer = frozen_layer(16, 8, 6.0);
  REQUIRE_FALSE(layer->is_quantized());
  layer->forward(torch::randn({2, 16}));
  REQUIRE(layer->is_quantized());
  CHECK(contains_all(error_message([&] { layer->forward(torch::randn({2, 7})); }),
                     {"7 features", "in_features = 16"}));
  auto bad = frozen_layer(4, 4, 0.0);
  {
    torch::NoGradGuard g;
    bad->weight[1][2] = std::numeric_limits<float>::infinity();
  }
  CHECK(contains_all(error_message([&] { bad->quantize(); }), {"non-finite", "[1, 2]"}));
}

TEST_CASE("replace_linear swaps nested, Sequential and ModuleList layers, skipping lm_head", "[module]") {
  torch::manual_seed(0);
  auto model = std::make_shared<Tiny>();
  const auto x = torch::randn({3, 16});
  const auto expected = model->forward(x);
  const auto names = llmint8::replace_linear(*model);
  CHECK(names == std::vector<std::string>{"blocks.0.attn", "blocks.0.mlp.0", "blocks.0.mlp.2", "blocks.1.attn",
                                           "blocks.1.mlp.0", "blocks.1.mlp.2"});
  CHECK(std::dynamic_pointer_cast<torch::nn::LinearImpl>(model->named_children()["lm_head"]) != nullptr);
  model->bind();  // the model fetches its AnyModule handles again
  model->to(torch::kCPU);
  for (const auto& name : names) {
    auto layer = std::dynamic_pointer_cast<llmint8::Linear8bitLtImpl>(model->named_modules()[name]);
    REQUIRE(layer);
    REQUIRE(layer->is_quantized());
  }
  // Sequential and ModuleList call the swapped layers themselves: the int8 error shows.
  const auto y = model->forward(x);
  CHECK(rel(y, expected) > 0.0);
  CHECK(rel(y, expected) < 0.03);

  auto skipping = std::make_shared<Tiny>();
  llmint8::Int8Config cfg;
  cfg.llm_int8_skip_modules = {"mlp"};
  CHECK(llmint8::replace_linear(*skipping, cfg) == std::vector<std::string>{"blocks.0.attn", "blocks.1.attn"});
}

TEST_CASE("has_fp16_weights: training reduces the loss and re-quantizes the changed weight", "[module]") {
  torch::manual_seed(0);
  llmint8::Linear8bitLt layer(llmint8::Linear8bitLtOptions(32, 8).threshold(6.0));
  const auto x = torch::randn({64, 32}), target = torch::randn({64, 8});
  torch::optim::SGD opt(layer->parameters(), 0.5);
  std::vector<double> losses;
  torch::Tensor first_codes;
  for (int step = 0; step < 5; ++step) {
    opt.zero_grad();
    auto loss = (layer->forward(x) - target).pow(2).mean();
    loss.backward();
    if (step == 0) first_codes = layer->state.CB.clone();
    opt.step();
    losses.push_back(loss.item<double>());
  }
  CHECK(losses.back() < losses.front());
  layer->forward(x);
  CHECK_FALSE(torch::equal(layer->state.CB, first_codes));
  CHECK(torch::equal(layer->state.CB, llmint8::testing::quantize_rows(layer->weight.detach(), 0.0).codes));
}

TEST_CASE("checkpoints: bitsandbytes layout, safetensors round trip, load before or after the move", "[checkpoint]") {
  auto source = frozen_layer(24, 12, 6.0);
  source->to(torch::kCPU);
  const auto sd = llmint8::state_dict(*source);
  REQUIRE(sd.size() == 4);
  REQUIRE(sd.at("weight").scalar_type() == torch::kChar);
  REQUIRE(sd.at("SCB").scalar_type() == torch::kFloat);
  REQUIRE(sd.at("weight_format").dim() == 0);
  REQUIRE(sd.at("weight_format").scalar_type() == torch::kUInt8);
  const auto path = temp_path("llmint8_cpp_layer.safetensors");
  llmint8::save_safetensors(path, sd);
  const auto loaded = llmint8::load_safetensors(path);
  for (const auto& [key, t] : sd) REQUIRE(torch::equal(loaded.at(key), t));

  const auto x = activations(3, 24, torch::kFloat, {5});
  const auto expected = source->forward(x);
  for (const bool move_first : {false, true}) {
    for (const auto& device : llmint8::testing::devices()) {
      auto target = frozen_layer(24, 12, 6.0, /*seed=*/7);
      if (move_first) target->to(device);
      llmint8::load_state_dict(*target, loaded);
      target->to(device);
      REQUIRE(torch::equal(target->weight.cpu(), source->weight));
      REQUIRE(matches_reference(target->forward(x.to(device)).cpu(), expected.to(torch::kDouble)));
    }
  }
  // A float checkpoint loads into an unquantized layer, which quantizes on the move.
  torch::nn::Linear plain(24, 12);
  auto fresh = frozen_layer(24, 12, 0.0, 3);
  llmint8::load_state_dict(*fresh, llmint8::state_dict(*plain));
  REQUIRE(torch::equal(fresh->weight, plain->weight));
  fresh->to(torch::kCPU);
  REQUIRE(torch::equal(fresh->weight, llmint8::testing::quantize_rows(plain->weight.detach(), 0.0).codes));
  std::remove(path.c_str());
}

TEST_CASE("bad checkpoints name the key and leave the module unchanged", "[checkpoint]") {
  auto source = frozen_layer(24, 12, 6.0);
  source->to(torch::kCPU);
  auto target = frozen_layer(24, 12, 6.0, 5);
  target->to(torch::kCPU);
  const auto before = llmint8::state_dict(*target);
  auto unchanged = [&] {
    const auto after = llmint8::state_dict(*target);
    for (const auto& [key, t] : before) {
      if (!torch::equal(after.at(key), t)) return false;
    }
    return true;
  };
  auto sd = llmint8::state_dict(*source);
  sd["weight_format"] = torch::tensor(2, torch::kUInt8).reshape({});
  CHECK(contains_all(error_message([&] { llmint8::load_state_dict(*target, sd); }),
                     {"weight_format: weight_format 2 (col_turing)", "legacy", "unchanged"}));
  sd = llmint8::state_dict(*source);
  sd["weight"] = sd["weight"].narrow(1, 0, 20).contiguous();
  CHECK(contains_all(error_message([&] { llmint8::load_state_dict(*target, sd); }),
                     {"weight: expected shape [12, 24], got [12, 20]"}));
  sd = llmint8::state_dict(*source);
  sd.erase("SCB");
  CHECK(contains_all(error_message([&] { llmint8::load_state_dict(*target, sd); }), {"SCB: missing"}));
  sd = llmint8::state_dict(*source);
  sd["extra"] = torch::zeros({1});
  sd["bias"] = torch::zeros({13});
  CHECK(contains_all(error_message([&] { llmint8::load_state_dict(*target, sd); }),
                     {"extra: unexpected key", "bias: expected shape [12], got [13]"}));
  CHECK(unchanged());
}

TEST_CASE("load_safetensors rejects truncated and corrupt files with the offset", "[checkpoint]") {
  const auto path = temp_path("llmint8_cpp_bad.safetensors");
  llmint8::save_safetensors(path, {{"a", torch::arange(10, torch::kFloat)}});
  std::string bytes;
  {
    std::ifstream in(path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  auto write = [&](const std::string& content) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << content;
  };
  write(bytes.substr(0, bytes.size() - 4));
  CHECK(contains_all(error_message([&] { llmint8::load_safetensors(path); }), {"tensor 'a'", "data_offsets", "truncated"}));
  write(bytes.substr(0, 5));
  CHECK(contains_all(error_message([&] { llmint8::load_safetensors(path); }), {"at least the 8-byte header length", "got 5 bytes"}));
  std::string corrupt = bytes;
  corrupt[8] = '#';  // the header's opening brace
  write(corrupt);
  CHECK(contains_all(error_message([&] { llmint8::load_safetensors(path); }), {"not valid JSON"}));
  std::string huge = bytes;
  huge[7] = '\x7f';
  write(huge);
  CHECK(contains_all(error_message([&] { llmint8::load_safetensors(path); }), {"header length", "does not fit"}));
  CHECK(contains_all(error_message([&] { llmint8::load_safetensors(path + ".missing"); }), {"cannot open"}));
  std::remove(path.c_str());
}

TEST_CASE("a quantized model weighs about half of its fp16 self", "[module]") {
  auto footprint = [](const torch::nn::Module& m) {
    int64_t bytes = 0;
    for (const auto& p : m.parameters()) bytes += p.numel() * p.element_size();
    for (const auto& b : m.buffers()) bytes += b.numel() * b.element_size();
    return bytes;
  };
  auto fp16 = std::make_shared<Tiny>();
  fp16->to(torch::kHalf);
  auto int8 = std::make_shared<Tiny>();
  llmint8::replace_linear(*int8);
  int8->to(torch::kCPU);
  int8->to(torch::kHalf);
  const double ratio = static_cast<double>(footprint(*int8)) / footprint(*fp16);
  CHECK(ratio > 0.45);
  CHECK(ratio < 0.65);
}

TEST_CASE("a layer quantized at its first forward moves on with its codes", "[module]") {
  for (const auto& device : llmint8::testing::devices()) {
    auto layer = frozen_layer(32, 16, 6.0, 11);
    const auto x = activations(4, 32, torch::kFloat, {2});
    const auto on_cpu = layer->forward(x);
    const auto codes = layer->weight.clone();
    layer->to(device);
    REQUIRE(torch::equal(layer->weight.cpu(), codes));
    REQUIRE(layer->SCB.device() == layer->weight.device());
    REQUIRE(matches_reference(layer->forward(x.to(device)).cpu(), on_cpu.to(torch::kDouble)));
  }
}

TEST_CASE("outlier pooling carries columns across layers of one input size", "[module]") {
  auto first = frozen_layer(64, 16, 6.0, 1), second = frozen_layer(64, 16, 6.0, 2);
  first->state.use_pool = second->state.use_pool = true;
  first->forward(activations(4, 64, torch::kFloat, {9}));
  const auto x = activations(4, 64, torch::kFloat, {33}, 5);
  const auto y = second->forward(x);
  REQUIRE(second->state.idx.sizes() == std::vector<int64_t>{2});
  REQUIRE(second->state.idx[0].item<int64_t>() == 9);
  REQUIRE(second->state.idx[1].item<int64_t>() == 33);
  // The reference: column 9 forced into the floating-point path along with column 33.
  auto probe = x.clone();
  probe.select(1, 9).fill_(std::numeric_limits<float>::infinity());
  const auto q = llmint8::testing::quantize_rows(probe, 6.0);
  auto expected = q.codes.to(torch::kDouble).mm(second->weight.to(torch::kDouble).t()) *
                  q.stats.to(torch::kDouble).unsqueeze(1) * second->SCB.to(torch::kDouble).unsqueeze(0) / (127.0 * 127.0);
  const auto cols = torch::tensor({9, 33}, torch::kLong);
  expected += x.to(torch::kDouble).index_select(1, cols).mm(
      llmint8::testing::dequantize_weight(second->weight, second->SCB).index_select(1, cols).t());
  expected += second->bias.to(torch::kDouble);
  REQUIRE(matches_reference(y, expected));
}
