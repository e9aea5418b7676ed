#include <llmint8/checkpoint.h>
#include <llmint8/hf.h>

#include <nlohmann/json.hpp>
#include <torch/types.h>

#include <filesystem>
#include <fstream>
#include <set>

namespace llmint8::models {

namespace {

namespace fs = std::filesystem;

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  TORCH_CHECK_VALUE(in, "cannot open '", path, "'");
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    TORCH_CHECK_VALUE(false, "'", path, "' is not valid JSON: ", e.what());
  }
}

int64_t integer(const nlohmann::json& j, const std::string& path, const char* key) {
  TORCH_CHECK_VALUE(j.contains(key) && j[key].is_number_integer(), "'", path, "': field '", key,
                    "' must be an integer");
  return j[key].get<int64_t>();
}

}  // namespace

LlamaConfig read_hf_llama_config(const std::string& path) {
  const auto j = read_json(path);
  TORCH_CHECK_VALUE(j.is_object(), "'", path, "' must hold a JSON object");
  if (j.contains("model_type")) {
    TORCH_CHECK_VALUE(j["model_type"] == "llama", "'", path, "': model_type ", j["model_type"].dump(),
                      " is not supported (only llama)");
  }
  TORCH_CHECK_VALUE(!j.contains("rope_scaling") || j["rope_scaling"].is_null(), "'", path,
                    "': rope_scaling is not supported yet");
  LlamaConfig c;
  c.dim = integer(j, path, "hidden_size");
  c.hidden_dim = integer(j, path, "intermediate_size");
  c.n_layers = integer(j, path, "num_hidden_layers");
  c.n_heads = integer(j, path, "num_attention_heads");
  c.n_kv_heads = j.contains("num_key_value_heads") ? integer(j, path, "num_key_value_heads") : c.n_heads;
  c.vocab_size = integer(j, path, "vocab_size");
  c.max_seq_len = integer(j, path, "max_position_embeddings");
  if (j.contains("rms_norm_eps")) c.norm_eps = j["rms_norm_eps"].get<double>();
  if (j.contains("rope_theta")) c.rope_theta = j["rope_theta"].get<double>();
  if (j.contains("tie_word_embeddings")) c.tie_embeddings = j["tie_word_embeddings"].get<bool>();
  try {
    c.validate();
  } catch (const c10::Error& e) {
    TORCH_CHECK_VALUE(false, "'", path, "': ", e.what_without_backtrace());
  }
  return c;
}

HfLlama load_hf_llama(const std::string& folder) {
  const fs::path dir(folder);
  TORCH_CHECK_VALUE(fs::is_directory(dir), "'", folder, "' is not a Hugging Face model folder");
  const auto config_path = (dir / "config.json").string();
  const auto config = read_hf_llama_config(config_path);
  const auto raw_config = read_json(config_path);

  // One file, or shards listed in the index's weight_map.
  TensorMap tensors;
  const auto index = dir / "model.safetensors.index.json";
  if (fs::exists(index)) {
    const auto j = read_json(index.string());
    TORCH_CHECK_VALUE(j.contains("weight_map") && j["weight_map"].is_object(), "'", index.string(),
                      "' has no weight_map object");
    std::set<std::string> shards;
    for (const auto& [key, shard] : j["weight_map"].items()) {
      TORCH_CHECK_VALUE(shard.is_string() && shard.get<std::string>().find('/') == std::string::npos, "'",
                        index.string(), "': shard of '", key, "' must be a file name in the folder");
      shards.insert(shard.get<std::string>());
    }
    for (const auto& shard : shards) {
      for (auto& [key, t] : load_safetensors((dir / shard).string())) {
        TORCH_CHECK_VALUE(tensors.emplace(key, t).second, "tensor '", key, "' appears in two shards");
      }
    }
    for (const auto& [key, shard] : j["weight_map"].items()) {
      TORCH_CHECK_VALUE(tensors.count(key), "'", index.string(), "' maps '", key, "' to '", shard.get<std::string>(),
                        "', which does not hold it");
    }
  } else {
    tensors = load_safetensors((dir / "model.safetensors").string());
  }

  HfLlama out;
  out.model = LlamaForCausalLM(config);
  // 8-bit checkpoints (ours or bitsandbytes'): the same layers become Linear8bitLt first.
  if (raw_config.contains("quantization_config") && raw_config["quantization_config"].is_object()) {
    const auto& q = raw_config["quantization_config"];
    // llmint8's own checkpoints say quant_method "llmint8"; bitsandbytes' say load_in_8bit.
    if (q.value("load_in_8bit", false) || q.value("quant_method", std::string()) == "llmint8") {
      Int8Config cfg;
      cfg.llm_int8_threshold = q.value("llm_int8_threshold", 6.0);
      if (q.contains("llm_int8_skip_modules") && q["llm_int8_skip_modules"].is_array()) {
        cfg.llm_int8_skip_modules = q["llm_int8_skip_modules"].get<std::vector<std::string>>();
      }
      out.int8_layers = replace_linear(*out.model, cfg);
      out.model->bind();
    }
  }
  if (config.tie_embeddings && !tensors.count("lm_head.weight") && tensors.count("model.embed_tokens.weight")) {
    tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"];
  }
  load_state_dict(*out.model, tensors);
  return out;
}

}  // namespace llmint8::models
