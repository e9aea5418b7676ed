// Hugging Face Llama folders: config.json, then model.safetensors or
// model.safetensors.index.json and its shards; every file checked before the model exists.
#include <llmint8/checkpoint.h>
#include <llmint8/hf.h>

#include "readers.h"
#include "untrusted.h"

#include <nlohmann/json.hpp>
#include <torch/types.h>

#include <cfloat>
#include <set>

namespace llmint8::models {

namespace u = llmint8::untrusted;

namespace {

constexpr size_t kMaxFileName = 255;  // NAME_MAX

}  // namespace

HfConfig parse_hf_config(const std::string& text, const std::string& file) {
  const auto json = u::parse_json(text, file);
  const u::JsonObject j(json, file);
  const auto model_type = j.optional_string("model_type");
  if (model_type && *model_type != "llama") {
    u::fail(file, j.field("model_type"), "\"llama\" (the only model type supported)", u::json_text(*j.find("model_type")));
  }
  if (const auto* scaling = j.find("rope_scaling")) {
    u::fail(file, j.field("rope_scaling"), "null or absent (rope scaling is not supported yet)", u::json_text(*scaling));
  }
  const auto act = j.optional_string("hidden_act");
  if (act && *act != "silu") u::fail(file, j.field("hidden_act"), "\"silu\"", u::json_text(*j.find("hidden_act")));
  HfConfig out;
  auto& c = out.llama;
  c.dim = j.integer("hidden_size", 1, LlamaConfig::kMaxDim);
  c.hidden_dim = j.integer("intermediate_size", 1, LlamaConfig::kMaxHiddenDim);
  c.n_layers = j.integer("num_hidden_layers", 1, LlamaConfig::kMaxLayers);
  c.n_heads = j.integer("num_attention_heads", 1, c.dim);
  c.n_kv_heads = j.optional_integer("num_key_value_heads", 1, c.n_heads).value_or(c.n_heads);
  c.vocab_size = j.integer("vocab_size", 1, LlamaConfig::kMaxVocab);
  c.max_seq_len = j.integer("max_position_embeddings", 1, LlamaConfig::kMaxSeqLen);
  c.norm_eps = j.optional_number("rms_norm_eps", 0.0, 1.0).value_or(c.norm_eps);
  c.rope_theta = j.optional_number("rope_theta", 1e-6, 1e15).value_or(c.rope_theta);
  c.tie_embeddings = j.optional_bool("tie_word_embeddings").value_or(false);
  if (const auto head_dim = j.optional_integer("head_dim", 1, c.dim)) {
    if (*head_dim * c.n_heads != c.dim) {
      u::fail(file, j.field("head_dim"), "hidden_size / num_attention_heads = " + std::to_string(c.dim / c.n_heads),
              std::to_string(*head_dim));
    }
  }
  try {
    c.validate();
  } catch (const c10::Error& e) {
    u::fail(file, e.what_without_backtrace());
  }
  if (const auto* quantization = j.find("quantization_config")) {
    const u::JsonObject q(*quantization, file, "quantization_config.");
    const auto method = q.optional_string("quant_method");
    if (method && *method != "bitsandbytes" && *method != "llmint8") {
      u::fail(file, q.field("quant_method"), "\"bitsandbytes\" or \"llmint8\"", u::json_text(*q.find("quant_method")));
    }
    if (q.optional_bool("load_in_4bit").value_or(false)) {
      u::fail(file, q.field("load_in_4bit"), "false (4-bit checkpoints are not supported)", "true");
    }
    // llmint8's own checkpoints say quant_method "llmint8"; bitsandbytes' say load_in_8bit.
    if (q.optional_bool("load_in_8bit").value_or(false) || method == "llmint8") {
      Int8Config cfg;
      cfg.llm_int8_threshold = q.optional_number("llm_int8_threshold", 0.0, DBL_MAX).value_or(6.0);
      cfg.llm_int8_skip_modules = q.optional_strings("llm_int8_skip_modules").value_or(std::vector<std::string>{});
      out.int8 = cfg;
    }
  }
  return out;
}

std::map<std::string, std::string> parse_shard_index(const std::string& text, const std::string& file) {
  const auto json = u::parse_json(text, file);
  const u::JsonObject index(json, file);
  const auto* weight_map = index.find("weight_map");
  if (weight_map == nullptr) u::fail(file, index.field("weight_map"), "an object of tensor name: shard file", "nothing");
  const u::JsonObject map(*weight_map, file, "weight_map.");
  std::map<std::string, std::string> shards;
  for (const auto& [key, shard] : weight_map->items()) {
    const std::string name = shard.is_string() ? shard.get<std::string>() : "";
    // A plain name in the folder: nothing that climbs out of it, no NUL that would cut the path short.
    if (name.empty() || name.size() > kMaxFileName || name == "." || name == ".." ||
        name.find_first_of(std::string("/\0", 2)) != std::string::npos) {
      u::fail(file, map.field(key), "a file name in the folder", u::json_text(shard));
    }
    shards.emplace(key, name);
  }
  if (shards.empty()) u::fail(file, index.field("weight_map"), "at least one tensor", "an empty object");
  return shards;
}

LlamaConfig read_hf_llama_config(const std::string& path) {
  return parse_hf_config(u::read_file(path, u::kMaxJsonBytes), path).llama;
}

HfLlama load_hf_llama(const std::string& folder) {
  if (!u::is_directory(folder)) {
    u::fail(folder, "the path", "a Hugging Face model folder (config.json, model.safetensors)", "not a directory");
  }
  const auto config_path = folder + "/config.json";
  const auto config = parse_hf_config(u::read_file(config_path, u::kMaxJsonBytes), config_path);

  // One file, or shards listed in the index's weight_map.
  TensorMap tensors;
  const auto index_path = folder + "/model.safetensors.index.json";
  if (u::exists(index_path)) {
    std::map<std::string, std::vector<std::string>> keys_by_shard;
    for (const auto& [key, shard] : parse_shard_index(u::read_file(index_path, u::kMaxJsonBytes), index_path)) {
      keys_by_shard[shard].push_back(key);
    }
    for (const auto& [shard, keys] : keys_by_shard) {
      const auto shard_path = folder + "/" + shard;
      const auto shard_tensors = load_safetensors(shard_path);
      for (const auto& key : keys) {
        if (!shard_tensors.count(key)) u::fail(index_path, "maps '" + key + "' to '" + shard + "', which does not hold it");
      }
      for (const auto& [key, t] : shard_tensors) {
        if (!tensors.emplace(key, t).second) u::fail(shard_path, "tensor '" + key + "' is in another shard too");
      }
    }
  } else {
    tensors = load_safetensors(folder + "/model.safetensors");
  }

  // The model is allocated only once the files hold a value for each of its parameters:
  // config.json cannot ask for more memory than the checkpoint brings.
  const auto& c = config.llama;
  int64_t held = 0;  // below the files' total size: no overflow
  for (const auto& item : tensors) held += item.second.numel();
  const int64_t needed = c.parameter_count() - (c.tie_embeddings ? c.vocab_size * c.dim : 0);
  if (held < needed) {
    u::fail(folder, "the checkpoint's tensors",
            "at least the " + std::to_string(needed) + " values that config.json's sizes need",
            std::to_string(held) + " values");
  }
  HfLlama out;
  out.model = u::allocating(folder, "the model (" + std::to_string(c.parameter_count()) + " parameters)",
                            [&] { return LlamaForCausalLM(c); });
  // 8-bit checkpoints (ours or bitsandbytes'): the same layers become Linear8bitLt first.
  if (config.int8) {
    out.int8_layers = replace_linear(*out.model, *config.int8);
    out.model->bind();
  }
  if (c.tie_embeddings && !tensors.count("lm_head.weight") && tensors.count("model.embed_tokens.weight")) {
    tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"];
  }
  try {
    load_state_dict(*out.model, tensors);  // the shared validator: shapes, finite values, all or nothing
  } catch (const c10::Error& e) {
    u::fail(folder, e.what_without_backtrace());
  }
  return out;
}

}  // namespace llmint8::models
