// load_model(path, LoadOptions): Hugging Face folders read straight into the asked-for dtype and
// 8-bit layers must give what the old sequence gives (load fp32, then replace_linear, move and
// cast), parameter for parameter and logit for logit, and refuse bad files with the same errors.
// Peak memory: tests/python/test_load_memory.py.
#include "catch_compat.h"
#include "reference.h"
#include "temp_dir.h"

#include <llmint8/llmint8.h>
#include <llmint8/models/causal_lm.h>
#include <llmint8/models/hf.h>
#include <llmint8/models/llama.h>
#include <llmint8/models/safetensors.h>

#include <ATen/ATen.h>
#include <torch/types.h>

#include <ftw.h>
#include <stdlib.h>

#include <fstream>
#include <functional>
#include <limits>
#include <string>

using llmint8::testing::error_message;
using llmint8::testing::TempDir;
namespace m = llmint8::models;

namespace {

// Biases on q/k/v (Qwen2) so that every kind of parameter is loaded.
const std::string kConfig =
    R"({"model_type": "qwen2", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 40, "max_position_embeddings": 16,
        "tie_word_embeddings": false})";

m::LlamaConfig tiny_config() {
  m::LlamaConfig c;
  c.dim = 32;
  c.hidden_dim = 64;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.vocab_size = 40;
  c.max_seq_len = 16;
  c.norm_eps = 1e-6;
  c.rope.theta = 10000.0;
  c.qkv_bias = true;
  return c;
}

// A random model saved as a folder, its tensors as `file_dtype`; with `edit`, the state dict is
// changed before it is written.
void write_folder(const TempDir& dir, at::ScalarType file_dtype,
                  const std::function<void(llmint8::TensorMap&)>& edit = {}) {
  torch::manual_seed(0);
  m::LlamaForCausalLM model(tiny_config());
  torch::NoGradGuard no_grad;
  for (auto& p : model->parameters()) p.normal_(0, 0.5);
  auto tensors = llmint8::state_dict(*model);
  for (auto& [key, t] : tensors) t = t.to(file_dtype);
  if (edit) edit(tensors);
  llmint8::save_safetensors(dir / "model.safetensors", tensors);
  std::ofstream(dir / "config.json") << kConfig;
}

at::Tensor logits(m::CausalLM& model) {
  torch::NoGradGuard no_grad;
  auto cache = model.new_cache(1);
  return model.forward(torch::tensor({{3, 1, 4, 1, 5, 9, 2, 6}}, torch::kLong), cache);
}

// The old sequence: a float32 model, then 8-bit layers quantized on the move, then the dtype.
m::LoadedModel load_then_convert(const std::string& path, const m::LoadOptions& options) {
  auto loaded = m::load_model(path);
  if (options.int8) {
    loaded.int8_layers = llmint8::replace_linear(*loaded.model, *options.int8);
    loaded.model->bind();
  }
  loaded.model->to(options.device);
  loaded.model->to(options.dtype);
  return loaded;
}

// Every parameter and buffer of a and b: same names, dtypes, shapes and values.
void check_same_tensors(torch::nn::Module& a, torch::nn::Module& b) {
  const auto ta = llmint8::state_dict(a), tb = llmint8::state_dict(b);
  REQUIRE(ta.size() == tb.size());
  for (const auto& [key, t] : ta) {
    INFO(key);
    REQUIRE(tb.count(key));
    CHECK(t.scalar_type() == tb.at(key).scalar_type());
    CHECK(at::equal(t, tb.at(key)));
  }
}

m::LoadOptions options(at::ScalarType dtype, std::optional<double> threshold = std::nullopt) {
  m::LoadOptions o;
  o.dtype = dtype;
  if (threshold) {
    llmint8::Int8Config cfg;
    cfg.llm_int8_threshold = *threshold;
    o.int8 = cfg;
  }
  return o;
}

}  // namespace

TEST_CASE("direct load: float dtypes equal loading fp32 and converting", "[models][load]") {
  for (const auto file_dtype : {at::kFloat, at::kHalf, at::kBFloat16}) {
    TempDir dir;
    write_folder(dir, file_dtype);
    for (const auto dtype : {at::kFloat, at::kHalf, at::kBFloat16}) {
      INFO("file " << c10::toString(file_dtype) << ", loaded as " << c10::toString(dtype));
      const auto direct = m::load_model(dir.path, options(dtype));
      const auto reference = load_then_convert(dir.path, options(dtype));
      CHECK(direct.int8_layers.empty());
      check_same_tensors(*direct.model, *reference.model);
      for (const auto& p : direct.model->parameters()) CHECK(p.scalar_type() == dtype);
      // The same parameters through the same forward: the same logits, bit for bit.
      CHECK(at::equal(logits(*direct.model), logits(*reference.model)));
    }
  }
}

TEST_CASE("direct load: 8-bit layers get the codes and scales of their fp32 weights", "[models][load]") {
  TempDir dir;
  write_folder(dir, at::kHalf);
  const auto fp32 = m::load_model(dir.path);
  const auto fp32_tensors = llmint8::state_dict(*fp32.model);
  for (const double threshold : {0.0, 6.0}) {
    for (const auto dtype : {at::kFloat, at::kHalf, at::kBFloat16}) {
      INFO("threshold " << threshold << ", dtype " << c10::toString(dtype));
      const auto direct = m::load_model(dir.path, options(dtype, threshold));
      const auto reference = load_then_convert(dir.path, options(dtype, threshold));
      CHECK(direct.int8_layers == reference.int8_layers);
      CHECK(direct.int8_layers.size() == 2 * 7);  // lm_head stays float
      check_same_tensors(*direct.model, *reference.model);
      // Independently: the pure-torch reference quantization of the fp32 weight.
      const auto modules = direct.model->named_modules();
      for (const auto& name : direct.int8_layers) {
        INFO(name);
        const auto* layer = modules[name]->as<llmint8::Linear8bitLtImpl>();
        REQUIRE(layer != nullptr);
        CHECK(layer->state.threshold == threshold);
        const auto expected = llmint8::testing::quantize_rows(fp32_tensors.at(name + ".weight"), 0.0);
        CHECK(at::equal(layer->weight, expected.codes));
        CHECK(at::equal(layer->SCB, expected.stats));
      }
      CHECK(at::equal(logits(*direct.model), logits(*reference.model)));
    }
  }
}

TEST_CASE("direct load: an 8-bit checkpoint loads its codes and scales as they are", "[models][load]") {
  TempDir dir;
  write_folder(dir, at::kFloat);
  auto quantized = load_then_convert(dir.path, options(at::kFloat, 0.0));
  auto tensors = llmint8::state_dict(*quantized.model);
  TempDir int8_dir;
  llmint8::save_safetensors(int8_dir / "model.safetensors", tensors);
  auto config = std::string(kConfig);
  config.insert(config.rfind('}'), R"(, "quantization_config": {"quant_method": "llmint8", "llm_int8_threshold": 0.0})");
  std::ofstream(int8_dir / "config.json") << config;
  // --no-int8 asks for nothing: the checkpoint's layers are 8-bit all the same.
  const auto direct = m::load_model(int8_dir.path, options(at::kHalf));
  const auto reference = load_then_convert(int8_dir.path, options(at::kHalf));
  CHECK(direct.int8_layers.size() == 2 * 7);
  check_same_tensors(*direct.model, *reference.model);
  CHECK(at::equal(logits(*direct.model), logits(*reference.model)));
}

TEST_CASE("direct load: bad checkpoints give the errors of load_model(path)", "[models][load][untrusted]") {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<std::pair<std::string, std::function<void(llmint8::TensorMap&)>>> cases{
      {"a NaN in a Linear weight", [&](auto& t) { t["model.layers.1.mlp.up_proj.weight"][3][5] = nan; }},
      {"a NaN in a norm", [&](auto& t) { t["model.norm.weight"][7] = nan; }},
      {"a NaN in a bias", [&](auto& t) { t["model.layers.0.self_attn.k_proj.bias"][0] = nan; }},
      {"a missing tensor", [](auto& t) { t.erase("model.layers.0.mlp.down_proj.weight"); }},
      {"an unexpected tensor", [](auto& t) { t["model.extra"] = at::ones({2}); }},
      {"a wrong shape", [](auto& t) { t["model.layers.0.self_attn.q_proj.weight"] = at::ones({32, 31}); }},
      {"int8 codes for a norm", [](auto& t) { t["model.norm.weight"] = at::ones({32}, at::kChar); }},
  };
  for (const auto& [what, edit] : cases) {
    INFO(what);
    TempDir dir;
    write_folder(dir, at::kHalf, edit);
    const auto expected = error_message([&] { m::load_model(dir.path); });
    REQUIRE(!expected.empty());
    CHECK(error_message([&] { m::load_model(dir.path, options(at::kHalf)); }) == expected);
    CHECK(error_message([&] { m::load_model(dir.path, options(at::kBFloat16, 6.0)); }) == expected);
  }
  // Scales beside a float weight: a plain Linear has no SCB; a Linear8bitLt says why it refuses them.
  TempDir scales;
  write_folder(scales, at::kHalf, [](auto& t) { t["model.layers.0.self_attn.q_proj.SCB"] = at::ones({32}); });
  CHECK(error_message([&] { m::load_model(scales.path, options(at::kHalf)); }) ==
        error_message([&] { m::load_model(scales.path); }));
  CHECK(llmint8::testing::contains_all(error_message([&] { m::load_model(scales.path, options(at::kHalf, 6.0)); }),
                                       {scales.path, "model.layers.0.self_attn.q_proj.SCB given with a float"}));
  TempDir dir;
  write_folder(dir, at::kHalf);
  CHECK(llmint8::testing::contains_all(error_message([&] { m::load_model(dir.path, options(at::kInt)); }),
                                       {"dtype must be floating point"}));
}
