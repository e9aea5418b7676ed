// state_dict / load_state_dict in bitsandbytes' checkpoint layout.
#include <llmint8/checkpoint.h>
#include <llmint8/linear8bitlt.h>
#include <llmint8/ops.h>

#include "untrusted.h"

#include <torch/types.h>

#include <set>

namespace llmint8 {

namespace {

const char* const kWeightFormatNames[] = {"row", "col32", "col_turing", "col_ampere"};

std::string shape_text(at::IntArrayRef shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// Every Linear8bitLt of the tree by its dotted prefix ("" for the root itself).
std::map<std::string, Linear8bitLtImpl*> int8_layers(torch::nn::Module& module) {
  std::map<std::string, Linear8bitLtImpl*> layers;
  if (auto* self = dynamic_cast<Linear8bitLtImpl*>(&module)) layers[""] = self;
  for (const auto& item : module.named_modules("", /*include_self=*/false)) {
    if (auto* layer = dynamic_cast<Linear8bitLtImpl*>(item.value().get())) layers[item.key() + "."] = layer;
  }
  return layers;
}

// What loading does to one Linear8bitLt, decided before anything changes.
struct LayerPlan {
  Linear8bitLtImpl* layer;
  at::Tensor codes, scales;  // int8 weight and its SCB, or
  at::Tensor float_weight;   // a float weight (quantized on load when the layer already is)
};

}  // namespace

TensorMap state_dict(const torch::nn::Module& module) {
  TensorMap out;
  for (const auto& p : module.named_parameters(true)) out[p.key()] = p.value().detach();
  for (const auto& b : module.named_buffers(true)) out[b.key()] = b.value().detach();
  auto& mutable_module = const_cast<torch::nn::Module&>(module);  // named_modules is not const
  for (const auto& [prefix, layer] : int8_layers(mutable_module)) {
    if (layer->is_quantized()) {
      out[prefix + "weight_format"] = torch::tensor(0, torch::kUInt8).reshape({});
    } else {
      out.erase(prefix + "SCB");  // no scales before quantization
    }
  }
  return out;
}

void load_state_dict(torch::nn::Module& module, const TensorMap& tensors, bool strict) {
  for (const auto& p : module.parameters(true)) {
    TORCH_CHECK_VALUE(p.device().type() != c10::kMeta, "llmint8::load_state_dict: the module has parameters on the ",
                      "meta device; LibTorch cannot load into those: build it on the CPU");
  }
  std::vector<std::string> errors;
  std::set<std::string> used;
  std::vector<LayerPlan> plans;
  std::set<std::string> layer_keys;  // weight/SCB of Linear8bitLt layers: handled by their plans

  for (const auto& [prefix, layer] : int8_layers(module)) {
    const std::string wkey = prefix + "weight", skey = prefix + "SCB", fkey = prefix + "weight_format";
    layer_keys.insert({wkey, skey});
    const auto w = tensors.find(wkey), s = tensors.find(skey), f = tensors.find(fkey);
    if (f != tensors.end()) {
      used.insert(fkey);
      // An integer scalar; a float one is not converted (NaN to integer is undefined).
      const auto& t = f->second;
      const bool integer = !t.is_floating_point() && !t.is_complex() && t.scalar_type() != at::kBool;
      const int64_t fmt = integer && t.numel() == 1 ? t.to(at::kLong).item<int64_t>() : -1;
      if (fmt != 0) {
        const std::string name = fmt >= 1 && fmt <= 3 ? kWeightFormatNames[fmt] : "unknown";
        errors.push_back(fkey + ": weight_format " + std::to_string(fmt) + " (" + name +
                         ") is a legacy tiled layout; only 0 (row) is supported: re-save the checkpoint with "
                         "bitsandbytes >= 0.45");
        continue;
      }
    }
    if (w == tensors.end()) {
      if (strict) errors.push_back(wkey + ": missing");
      if (s != tensors.end()) errors.push_back(skey + " given without " + wkey);
      continue;
    }
    used.insert(wkey);
    const auto& weight = w->second;
    const std::vector<int64_t> expected{layer->options.out_features(), layer->options.in_features()};
    if (weight.sizes().vec() != expected) {
      errors.push_back(wkey + ": expected shape " + shape_text(expected) + ", got " + shape_text(weight.sizes()));
      continue;
    }
    LayerPlan plan{layer, {}, {}, {}};
    if (weight.scalar_type() == at::kChar) {
      if (s == tensors.end()) {
        errors.push_back(skey + ": missing; an int8 " + wkey + " needs its fp32 row scales");
        continue;
      }
      used.insert(skey);
      if (s->second.sizes().vec() != std::vector<int64_t>{expected[0]}) {
        errors.push_back(skey + ": expected shape [" + std::to_string(expected[0]) + "], got " +
                         shape_text(s->second.sizes()));
        continue;
      }
      if (!s->second.is_floating_point()) {
        errors.push_back(skey + ": expected a float tensor, got " + std::string(c10::toString(s->second.scalar_type())));
        continue;
      }
      const auto bad = untrusted::non_finite(s->second);
      if (!bad.empty()) {
        errors.push_back(skey + ": expected finite values, got " + bad);
        continue;
      }
      if ((weight == -128).any().item<bool>()) {  // codes are [-127, 127]: the int32 K limit relies on it
        errors.push_back(wkey + ": expected int8 codes in [-127, 127], got -128");
        continue;
      }
      plan.codes = weight;
      plan.scales = s->second;
    } else if (weight.is_floating_point()) {
      if (s != tensors.end()) {
        errors.push_back(skey + " given with a float " + wkey);
        continue;
      }
      const auto bad = untrusted::non_finite(weight);
      if (!bad.empty()) {
        errors.push_back(wkey + ": expected finite values, got " + bad);
        continue;
      }
      plan.float_weight = weight;
    } else {
      errors.push_back(wkey + ": expected int8 codes or a float weight, got " +
                       std::string(c10::toString(weight.scalar_type())));
      continue;
    }
    plans.push_back(plan);
  }

  // Every other parameter and buffer: same shape, copied (with dtype conversion). Parameters
  // must be finite; buffers are not checked (a mask may hold -inf on purpose).
  std::vector<std::pair<at::Tensor, at::Tensor>> copies;
  auto plan_copy = [&](const std::string& key, const at::Tensor& target, bool parameter) {
    if (layer_keys.count(key)) return;
    const auto it = tensors.find(key);
    if (it == tensors.end()) {
      if (strict) errors.push_back(key + ": missing");
      return;
    }
    used.insert(key);
    if (it->second.sizes() != target.sizes()) {
      errors.push_back(key + ": expected shape " + shape_text(target.sizes()) + ", got " + shape_text(it->second.sizes()));
      return;
    }
    if (target.is_floating_point() && !it->second.is_floating_point()) {  // int8 codes are no float weight
      errors.push_back(key + ": expected a floating-point tensor, got " + std::string(c10::toString(it->second.scalar_type())));
      return;
    }
    const auto bad = parameter ? untrusted::non_finite(it->second) : std::string();
    if (!bad.empty()) {
      errors.push_back(key + ": expected finite values, got " + bad);
      return;
    }
    copies.emplace_back(target, it->second);
  };
  for (const auto& p : module.named_parameters(true)) plan_copy(p.key(), p.value(), true);
  for (const auto& b : module.named_buffers(true)) plan_copy(b.key(), b.value(), false);
  if (strict) {
    for (const auto& item : tensors) {
      if (!used.count(item.first)) errors.push_back(item.first + ": unexpected key");
    }
  }
  if (!errors.empty()) {
    // One line, the first problems first: a model of many layers can have hundreds.
    constexpr size_t kShown = 8;
    std::string message = "llmint8::load_state_dict: the module was left unchanged: ";
    for (size_t i = 0; i < errors.size() && i < kShown; ++i) message += (i ? "; " : "") + errors[i];
    if (errors.size() > kShown) message += "; and " + std::to_string(errors.size() - kShown) + " more";
    TORCH_CHECK_VALUE(false, message);
  }

  // Everything that can fail (conversions, device copies, quantization: allocations) happens
  // before the first change, so that a failure leaves the module as it was.
  torch::NoGradGuard no_grad;
  std::vector<at::Tensor> converted;
  for (const auto& [target, source] : copies) converted.push_back(source.to(target.options()));
  struct Installed {
    Linear8bitLtImpl* layer;
    at::Tensor weight, scales;  // scales undefined: a float weight copied into an unquantized layer
  };
  std::vector<Installed> installs;
  for (const auto& plan : plans) {
    auto* layer = plan.layer;
    const auto device = layer->weight.device();
    if (plan.codes.defined()) {
      installs.push_back({layer, plan.codes.to(device), plan.scales.to(device, at::kFloat)});
    } else if (layer->is_quantized()) {  // a quantized layer takes a float checkpoint by quantizing it
      auto [codes, scales, cols] = int8_vectorwise_quant(plan.float_weight.to(device, at::kFloat));
      installs.push_back({layer, codes, scales});
    } else {
      installs.push_back({layer, plan.float_weight.to(layer->weight.options()), {}});
    }
  }

  for (size_t i = 0; i < copies.size(); ++i) copies[i].first.copy_(converted[i]);
  for (const auto& install : installs) {
    auto* layer = install.layer;
    if (!install.scales.defined()) {
      layer->weight.copy_(install.weight);
      continue;
    }
    layer->weight.set_requires_grad(false);
    layer->weight.set_data(install.weight);
    layer->SCB.set_data(install.scales);
    layer->options.has_fp16_weights(false);
    layer->state.has_fp16_weights = false;
    layer->state.CB = layer->weight;
    layer->state.SCB = layer->SCB;
  }
}

}  // namespace llmint8
