// Hugging Face folders: config.json (its model_type picks the family, models/registry.cpp), then
// model.safetensors or model.safetensors.index.json and its shards; every file checked before the
// model exists. Also the config.json fields that the Llama architecture's families share.
#include <llmint8/checks.h>
#include <llmint8/models/hf.h>
#include <llmint8/models/llama2c.h>
#include <llmint8/models/safetensors.h>

#include "io/json.h"
#include "io/mapped_file.h"
#include "io/readers.h"
#include "models/registry.h"
#include "untrusted.h"

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>
#include <torch/types.h>

#include <functional>
#include <memory>
#include <set>

namespace llmint8::models {

namespace u = llmint8::untrusted;

namespace {

constexpr size_t kMaxFileName = 255;  // NAME_MAX
constexpr double kMaxRopeNumber = 1e15;

// The keys a rope type reads; any other key of the rope parameters is refused.
bool rope_key_known(const std::string& type, const std::string& key) {
  static const std::set<std::string> common{"rope_type", "type", "rope_theta", "partial_rotary_factor"};
  if (common.count(key)) return true;
  if (type == "linear") return key == "factor";
  if (type == "llama3") {
    return key == "factor" || key == "low_freq_factor" || key == "high_freq_factor" ||
           key == "original_max_position_embeddings";
  }
  return false;
}

// transformers 5 writes rope_parameters {rope_type, rope_theta, ...}; older files wrote rope_theta
// at the top level and rope_scaling {type or rope_type, factor, ...}. As in transformers, a
// rope_scaling object is the parameters when present, and their rope_theta wins over the
// top-level one; without either, theta is 10000.
RopeConfig read_rope(const io::JsonObject& j, int64_t max_position_embeddings) {
  RopeConfig rope;
  rope.theta = j.optional_number("rope_theta", 1e-6, kMaxRopeNumber).value_or(rope.theta);
  if (const auto partial = j.optional_number("partial_rotary_factor", 0.0, 1.0); partial && *partial != 1.0) {
    j.fail("partial_rotary_factor", "1 (rotary embeddings over whole heads)");
  }
  const std::string key = j.find("rope_scaling") ? "rope_scaling" : "rope_parameters";
  const auto* value = j.find(key);
  if (value == nullptr) return rope;
  const io::JsonObject p(*value, j.file(), key + ".");
  rope.type = p.optional_string("rope_type").value_or(p.optional_string("type").value_or("default"));
  if (rope.type != "default" && rope.type != "linear" && rope.type != "llama3") {
    p.fail(p.find("rope_type") ? "rope_type" : "type",
           "\"default\", \"linear\" or \"llama3\" (the rope types llmint8 implements)");
  }
  for (const auto& item : value->items()) {
    if (!rope_key_known(rope.type, item.key())) {
      p.fail(item.key(), "absent for rope type \"" + rope.type + "\" (a parameter llmint8 does not implement)");
    }
  }
  rope.theta = p.optional_number("rope_theta", 1e-6, kMaxRopeNumber).value_or(rope.theta);
  if (const auto partial = p.optional_number("partial_rotary_factor", 0.0, 1.0); partial && *partial != 1.0) {
    p.fail("partial_rotary_factor", "1 (rotary embeddings over whole heads)");
  }
  if (rope.type == "default") return rope;
  const auto factor = p.optional_number("factor", 1e-6, kMaxRopeNumber);
  if (!factor) p.fail("factor", "a number in [1e-06, 1e+15] for rope type \"" + rope.type + "\"");
  rope.factor = *factor;
  if (rope.type == "llama3") {
    for (const auto* name : {"low_freq_factor", "high_freq_factor"}) {
      const auto v = p.optional_number(name, 1e-6, kMaxRopeNumber);
      if (!v) p.fail(name, "a number in [1e-06, 1e+15] for rope type \"llama3\"");
      (std::string(name) == "low_freq_factor" ? rope.low_freq_factor : rope.high_freq_factor) = *v;
    }
    rope.original_max_position_embeddings =
        p.optional_integer("original_max_position_embeddings", 1, LlamaConfig::kMaxSeqLen)
            .value_or(max_position_embeddings);
  }
  return rope;
}

}  // namespace

LlamaConfig read_llama_architecture(const io::JsonObject& j, const ArchitectureDefaults& defaults) {
  LlamaConfig c;
  c.hidden_act = j.optional_string("hidden_act").value_or(defaults.hidden_act);
  if (c.hidden_act != "silu" && c.hidden_act != "gelu" && c.hidden_act != "gelu_pytorch_tanh") {
    j.fail("hidden_act", "\"silu\", \"gelu\" or \"gelu_pytorch_tanh\" (the activations llmint8 implements)");
  }
  c.dim = j.integer("hidden_size", 1, LlamaConfig::kMaxDim);
  c.hidden_dim = j.integer("intermediate_size", 1, LlamaConfig::kMaxHiddenDim);
  c.n_layers = j.integer("num_hidden_layers", 1, LlamaConfig::kMaxLayers);
  c.n_heads = j.integer("num_attention_heads", 1, c.dim);
  c.n_kv_heads = j.optional_integer("num_key_value_heads", 1, c.n_heads).value_or(c.n_heads);
  c.vocab_size = j.integer("vocab_size", 1, LlamaConfig::kMaxVocab);
  c.max_seq_len = j.integer("max_position_embeddings", 1, LlamaConfig::kMaxSeqLen);
  c.head_size = j.optional_integer("head_dim", 1, LlamaConfig::kMaxDim).value_or(defaults.head_dim);
  c.norm_eps = j.optional_number("rms_norm_eps", 0.0, 1.0).value_or(1e-6);  // transformers' default
  c.tie_embeddings = j.optional_bool("tie_word_embeddings").value_or(defaults.tie_word_embeddings);
  c.rope = read_rope(j, c.max_seq_len);
  return c;
}

ModelSpec llama_architecture_spec(const LlamaConfig& c, const std::string& file) {
  try {
    c.validate();
  } catch (const c10::Error& e) {
    u::fail(file, e.what_without_backtrace());
  }
  ModelSpec spec;
  spec.parameter_count = c.parameter_count();
  spec.build = [c] { return std::make_shared<LlamaForCausalLMImpl>(c); };
  spec.build_uninitialized = [c](const ParameterInit& init) { return std::make_shared<LlamaForCausalLMImpl>(c, init); };
  if (c.tie_embeddings) spec.tied = {{"lm_head.weight", "model.embed_tokens.weight"}};
  return spec;
}

HfConfig parse_hf_config(const std::string& text, const std::string& file) {
  const auto json = io::parse_json(text, file);
  const io::JsonObject j(json, file);
  // Without a model_type: a Llama (llmint8's converter wrote none before it named the type).
  const auto model_type = j.optional_string("model_type").value_or("llama");
  const auto* family = find_hf_model_type(model_type);
  if (family == nullptr) {
    std::string names;
    for (const auto& name : hf_model_types()) names += (names.empty() ? "\"" : ", \"") + name + "\"";
    j.fail("model_type", "one of " + names + " (the model types llmint8 reads)");
  }
  HfConfig out{model_type, family->read(j), std::nullopt};
  if (const auto* quantization = j.find("quantization_config")) {
    const io::JsonObject q(*quantization, file, "quantization_config.");
    const auto method = q.optional_string("quant_method");
    if (method && *method != "bitsandbytes" && *method != "llmint8") {
      q.fail("quant_method", "\"bitsandbytes\" or \"llmint8\"");
    }
    if (q.optional_bool("load_in_4bit").value_or(false)) {
      q.fail("load_in_4bit", "false (4-bit checkpoints are not supported)");
    }
    // llmint8's own checkpoints say quant_method "llmint8"; bitsandbytes' say load_in_8bit.
    if (q.optional_bool("load_in_8bit").value_or(false) || method == "llmint8") {
      Int8Config cfg;
      const auto threshold = q.find("llm_int8_threshold");
      if (threshold != nullptr && !(threshold->is_number() && threshold->get<double>() >= 0.0)) {
        q.fail("llm_int8_threshold", checks::kThresholdRule);
      }
      cfg.llm_int8_threshold = threshold != nullptr ? threshold->get<double>() : 6.0;
      cfg.llm_int8_skip_modules = q.optional_strings("llm_int8_skip_modules").value_or(std::vector<std::string>{});
      out.int8 = cfg;
    }
  }
  return out;
}

std::map<std::string, std::string> parse_shard_index(const std::string& text, const std::string& file) {
  const auto json = io::parse_json(text, file);
  const io::JsonObject index(json, file);
  const auto* weight_map = index.find("weight_map");
  if (weight_map == nullptr) index.fail("weight_map", "an object of tensor name: shard file");
  const io::JsonObject map(*weight_map, file, "weight_map.");
  std::map<std::string, std::string> shards;
  for (const auto& [key, shard] : weight_map->items()) {
    const std::string name = shard.is_string() ? shard.get<std::string>() : "";
    // A plain name in the folder: nothing that climbs out of it, no NUL that would cut the path short.
    if (name.empty() || name.size() > kMaxFileName || name == "." || name == ".." ||
        name.find_first_of(std::string("/\0", 2)) != std::string::npos) {
      map.fail(key, "a file name in the folder");
    }
    shards.emplace(key, name);
  }
  if (shards.empty()) u::fail(file, index.field("weight_map"), "at least one tensor", "an empty object");
  return shards;
}

namespace {

using ReadSafetensors = std::function<TensorMap(const std::string& path)>;

// The folder's config.json.
HfConfig read_hf_config(const std::string& folder) {
  if (!io::is_directory(folder)) {
    u::fail(folder, "the path", "a Hugging Face model folder (config.json, model.safetensors)", "not a directory");
  }
  const auto config_path = folder + "/config.json";
  return parse_hf_config(io::read_file(config_path, io::kMaxJsonBytes), config_path);
}

// The checkpoint's tensors, checked against config.json before the model exists: one file, or
// shards listed in the index's weight_map; a tied alias dropped once found equal to its source;
// at least as many values as the model has. `released` gets what was read on the way.
TensorMap read_hf_tensors(const std::string& folder, const HfConfig& config, const ReadSafetensors& read,
                          const TensorReleased& released) {
  TensorMap tensors;
  const auto index_path = folder + "/model.safetensors.index.json";
  if (io::exists(index_path)) {
    std::map<std::string, std::vector<std::string>> keys_by_shard;
    for (const auto& [key, shard] : parse_shard_index(io::read_file(index_path, io::kMaxJsonBytes), index_path)) {
      keys_by_shard[shard].push_back(key);
    }
    for (const auto& [shard, keys] : keys_by_shard) {
      const auto shard_path = folder + "/" + shard;
      const auto shard_tensors = read(shard_path);
      for (const auto& key : keys) {
        if (!shard_tensors.count(key)) u::fail(index_path, "maps '" + key + "' to '" + shard + "', which does not hold it");
      }
      for (const auto& [key, t] : shard_tensors) {
        if (!tensors.emplace(key, t).second) u::fail(shard_path, "tensor '" + key + "' is in another shard too");
      }
    }
  } else {
    tensors = read(folder + "/model.safetensors");
  }

  // A tied parameter is one tensor of the model: a checkpoint that also holds the alias must
  // hold the same values there (transformers would silently use one of them).
  for (const auto& [alias, source] : config.model.tied) {
    const auto a = tensors.find(alias);
    if (a == tensors.end()) continue;
    const auto s = tensors.find(source);
    const bool same = s != tensors.end() && a->second.sizes() == s->second.sizes() &&
                      at::equal(a->second.to(at::kDouble), s->second.to(at::kDouble));
    if (released) {
      released(a->second);
      if (s != tensors.end()) released(s->second);
    }
    if (!same) {
      u::fail(folder, "tensor '" + alias + "'",
              "absent or equal to '" + source + "' (config.json ties them: tie_word_embeddings)", "other values");
    }
    tensors.erase(a);
  }

  // The model is allocated only once the files hold a value for each of its parameters:
  // config.json cannot ask for more memory than the checkpoint brings.
  int64_t held = 0;  // below the files' total size: no overflow
  for (const auto& item : tensors) held += item.second.numel();
  if (held < config.model.parameter_count) {
    u::fail(folder, "the checkpoint's tensors",
            "at least the " + std::to_string(config.model.parameter_count) + " values that config.json's sizes need",
            std::to_string(held) + " values");
  }
  return tensors;
}

// The safetensors files of one load, mapped until it ends; their tensors are views of them.
class MappedCheckpoint {
 public:
  TensorMap read(const std::string& path) {
    files_.push_back(std::make_unique<io::MappedFile>(path));
    return view_safetensors(files_.back()->data(), files_.back()->size(), path);
  }
  void release(const at::Tensor& t) const {
    for (const auto& file : files_) file->release(t.const_data_ptr(), t.nbytes());
  }

 private:
  std::vector<std::unique_ptr<io::MappedFile>> files_;
};

}  // namespace

HfModel load_hf_model(const std::string& folder) {
  const auto config = read_hf_config(folder);
  const auto tensors = read_hf_tensors(folder, config, load_safetensors, {});
  HfModel out;
  out.model_type = config.model_type;
  out.model = u::allocating(folder, "the model (" + std::to_string(config.model.parameter_count) + " parameters)",
                            config.model.build);
  // 8-bit checkpoints (ours or bitsandbytes'): the same layers become Linear8bitLt first.
  if (config.int8) {
    out.int8_layers = replace_linear(*out.model, *config.int8);
    out.model->bind();
  }
  try {
    load_state_dict(*out.model, tensors);  // the shared validator: shapes, finite values, all or nothing
  } catch (const c10::Error& e) {
    u::fail(folder, e.what_without_backtrace());
  }
  return out;
}

HfModel load_hf_model(const std::string& folder, const LoadOptions& options) {
  TORCH_CHECK_VALUE(at::isFloatingType(options.dtype), "load_model: dtype must be floating point, got ",
                    c10::toString(options.dtype));
  const auto config = read_hf_config(folder);
  MappedCheckpoint files;
  const auto release = [&files](const at::Tensor& t) { files.release(t); };
  const auto tensors = read_hf_tensors(folder, config, [&files](const std::string& path) { return files.read(path); },
                                       release);
  HfModel out;
  out.model_type = config.model_type;
  // Unwritten CPU storage in the final dtype: it costs no memory until a tensor lands in it, and
  // a tensor for another device replaces it.
  const ParameterInit init{true, options.dtype};
  out.model = u::allocating(folder, "the model (" + std::to_string(config.model.parameter_count) + " parameters)",
                            [&] { return config.model.build_uninitialized(init); });
  const auto int8 = config.int8 ? config.int8 : options.int8;
  if (int8) {
    out.int8_layers = replace_linear(*out.model, *int8);
    out.model->bind();
  }
  try {
    load_state_dict_into_new(*out.model, tensors, options.device, options.dtype, release);
  } catch (const c10::Error& e) {
    u::fail(folder, e.what_without_backtrace());
  }
  return out;
}

LoadedModel load_model(const std::string& path) {
  // A folder is a Hugging Face model; anything else is read as a llama2.c checkpoint, whose reader
  // says what is wrong with it (a missing path included).
  if (io::is_directory(path)) {
    auto hf = load_hf_model(path);
    return {hf.model, "hf", hf.model_type, hf.int8_layers};
  }
  return {load_llama2c(path).ptr(), "llama2c", "llama", {}};
}

LoadedModel load_model(const std::string& path, const LoadOptions& options) {
  LoadedModel loaded;
  if (io::is_directory(path)) {
    auto hf = load_hf_model(path, options);
    loaded = {hf.model, "hf", hf.model_type, hf.int8_layers};
  } else {
    // llama2.c files hold fp32 only: read as before, then converted layer by layer.
    loaded = load_model(path);
    auto& model = *loaded.model;
    if (options.int8) {
      loaded.int8_layers = replace_linear(model, *options.int8);
      model.bind();
      const auto modules = model.named_modules();
      for (const auto& name : loaded.int8_layers) modules[name]->to(options.device);  // quantizes
    }
    model.to(options.device);
    model.to(options.dtype);
  }
  // On a GPU a decode step's small matmuls cost a launch and a ramp each: fewer, larger ones.
  if (options.device.is_cuda()) loaded.model->stack_projections();
  return loaded;
}

}  // namespace llmint8::models
