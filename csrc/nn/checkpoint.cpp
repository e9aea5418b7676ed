// state_dict / load_state_dict in bitsandbytes' checkpoint layout.
#include <llmint8/checkpoint.h>
#include <llmint8/linear8bitlt.h>
#include <llmint8/ops.h>

#include "untrusted.h"

#include <torch/types.h>

#include <algorithm>
#include <set>
#include <utility>

namespace llmint8 {

namespace {

namespace u = llmint8::untrusted;

std::string shape_of(at::IntArrayRef shape) { return "shape " + u::shape_text(shape); }

std::string dtype_name(const at::Tensor& t) { return c10::toString(t.scalar_type()); }

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

// What check_state_dict found to do: one plan per Linear8bitLt, (target, source) for the rest.
struct CheckedStateDict {
  std::vector<LayerPlan> plans;
  std::vector<std::pair<at::Tensor, at::Tensor>> copies;
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

namespace {

// A new tensor of dtype on device from source (often a view of a mapped file): moved in its own
// dtype and converted where it lands, since a CPU-to-GPU copy that converts does so on the CPU.
at::Tensor copy_to(const at::Tensor& source, torch::Device device, at::ScalarType dtype) {
  if (source.device() == device || source.scalar_type() == dtype) return source.to(device, dtype, false, /*copy=*/true);
  return source.to(device, source.scalar_type(), false, /*copy=*/true).to(dtype);
}

// The codes and scales of a float checkpoint weight, quantized on `device` from fp32 whatever the
// file's dtype: the codes and scales of quantizing the fp32 weight.
std::pair<at::Tensor, at::Tensor> quantize_on(const at::Tensor& float_weight, torch::Device device) {
  auto [codes, scales, cols] = int8_vectorwise_quant(copy_to(float_weight, device, at::kFloat));
  return {codes, scales};
}

// destination.copy_(source), some rows at a time, each slice of source handed to `done` once
// copied: a big tensor (an embedding) then keeps few of a mapped file's pages resident at once.
void copy_in_slices(at::Tensor& destination, const at::Tensor& source, const TensorReleased& done) {
  constexpr int64_t kSliceBytes = int64_t{16} << 20;
  const int64_t rows = source.dim() > 0 ? source.size(0) : 0;
  const int64_t row_bytes = rows > 0 ? static_cast<int64_t>(source.nbytes()) / rows : 0;
  if (rows == 0 || row_bytes == 0 || !source.is_contiguous()) {
    destination.copy_(source);
    done(source);
    return;
  }
  const int64_t step = std::max<int64_t>(1, kSliceBytes / row_bytes);
  for (int64_t row = 0; row < rows; row += step) {
    const int64_t count = std::min(step, rows - row);
    const auto slice = source.narrow(0, row, count);
    destination.narrow(0, row, count).copy_(slice);
    done(slice);
  }
}

// Every check of load_state_dict, before anything changes; `read(source)` is called once each
// tensor's values have been checked.
CheckedStateDict check_state_dict(torch::nn::Module& module, const TensorMap& tensors, bool strict,
                                  const TensorReleased& read) {
  for (const auto& p : module.parameters(true)) {
    TORCH_CHECK_VALUE(p.device().type() != c10::kMeta, "llmint8::load_state_dict: the module has parameters on the ",
                      "meta device; LibTorch cannot load into those: build it on the CPU");
  }
  std::vector<std::string> errors;
  std::set<std::string> used;
  CheckedStateDict checked;
  auto& plans = checked.plans;
  std::set<std::string> layer_keys;  // weight/SCB of Linear8bitLt layers: handled by their plans

  for (const auto& [prefix, layer] : int8_layers(module)) {
    const std::string wkey = prefix + "weight", skey = prefix + "SCB", fkey = prefix + "weight_format";
    layer_keys.insert({wkey, skey});
    const auto w = tensors.find(wkey), s = tensors.find(skey), f = tensors.find(fkey);
    if (f != tensors.end()) {
      used.insert(fkey);
      const auto problem = u::entry_weight_format(fkey, f->second);
      if (!problem.empty()) {
        errors.push_back(problem);
        continue;
      }
    }
    if (w == tensors.end()) {
      if (strict) errors.push_back(u::entry_missing(wkey));
      if (s != tensors.end()) errors.push_back(u::entry_scales_without_weight(skey, wkey));
      continue;
    }
    used.insert(wkey);
    const auto& weight = w->second;
    const std::vector<int64_t> expected{layer->options.out_features(), layer->options.in_features()};
    if (weight.sizes().vec() != expected) {
      errors.push_back(u::entry_problem(wkey, shape_of(expected), u::shape_text(weight.sizes())));
      continue;
    }
    LayerPlan plan{layer, {}, {}, {}};
    if (weight.scalar_type() == at::kChar) {
      if (s == tensors.end()) {
        errors.push_back(u::entry_scales_missing(skey, wkey));
        continue;
      }
      used.insert(skey);
      const auto& scales = s->second;
      std::string problem;
      if (scales.sizes().vec() != std::vector<int64_t>{expected[0]}) {
        problem = u::entry_problem(skey, shape_of({expected[0]}), u::shape_text(scales.sizes()));
      } else if (!scales.is_floating_point()) {
        problem = u::entry_problem(skey, "a float tensor", dtype_name(scales));
      } else if (const auto bad = u::non_finite(scales); !bad.empty()) {
        problem = u::entry_problem(skey, u::kFiniteValues, bad);
      } else if ((weight == -128).any().item<bool>()) {  // codes are [-127, 127]: the int32 K limit relies on it
        problem = u::entry_problem(wkey, u::kInt8Codes, "-128");
      }
      if (read) {
        read(weight);
        read(scales);
      }
      if (!problem.empty()) {
        errors.push_back(problem);
        continue;
      }
      plan.codes = weight;
      plan.scales = scales;
    } else if (weight.is_floating_point()) {
      if (s != tensors.end()) {
        errors.push_back(u::entry_scales_with_float_weight(skey, wkey, fkey));
        continue;
      }
      const auto bad = u::non_finite(weight);
      if (read) read(weight);
      if (!bad.empty()) {
        errors.push_back(u::entry_problem(wkey, u::kFiniteValues, bad));
        continue;
      }
      plan.float_weight = weight;
    } else {
      errors.push_back(u::entry_problem(wkey, "int8 codes or a float weight", dtype_name(weight)));
      continue;
    }
    plans.push_back(plan);
  }

  // Every other parameter and buffer: same shape, copied (with dtype conversion). Parameters
  // must be finite; buffers are not checked (a mask may hold -inf on purpose).
  auto& copies = checked.copies;
  auto plan_copy = [&](const std::string& key, const at::Tensor& target, bool parameter) {
    if (layer_keys.count(key)) return;
    const auto it = tensors.find(key);
    if (it == tensors.end()) {
      if (strict) errors.push_back(u::entry_missing(key));
      return;
    }
    used.insert(key);
    if (it->second.sizes() != target.sizes()) {
      errors.push_back(u::entry_problem(key, shape_of(target.sizes()), u::shape_text(it->second.sizes())));
      return;
    }
    if (target.is_floating_point() && !it->second.is_floating_point()) {  // int8 codes are no float weight
      errors.push_back(u::entry_problem(key, "a floating-point tensor", dtype_name(it->second)));
      return;
    }
    const auto bad = parameter ? u::non_finite(it->second) : std::string();
    if (read && parameter) read(it->second);
    if (!bad.empty()) {
      errors.push_back(u::entry_problem(key, u::kFiniteValues, bad));
      return;
    }
    copies.emplace_back(target, it->second);
  };
  for (const auto& p : module.named_parameters(true)) plan_copy(p.key(), p.value(), true);
  for (const auto& b : module.named_buffers(true)) plan_copy(b.key(), b.value(), false);
  if (strict) {
    for (const auto& item : tensors) {
      if (!used.count(item.first)) errors.push_back(u::entry_unexpected(item.first));
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
  return checked;
}

}  // namespace

void load_state_dict(torch::nn::Module& module, const TensorMap& tensors, bool strict) {
  const auto checked = check_state_dict(module, tensors, strict, {});
  const auto& copies = checked.copies;
  const auto& plans = checked.plans;

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
      auto [codes, scales] = quantize_on(plan.float_weight, device);
      installs.push_back({layer, codes, scales});
    } else {
      installs.push_back({layer, plan.float_weight.to(layer->weight.options()), {}});
    }
  }

  for (size_t i = 0; i < copies.size(); ++i) copies[i].first.copy_(converted[i]);
  for (const auto& install : installs) {
    if (install.scales.defined()) {
      install.layer->set_quantized(install.weight, install.scales);
    } else {
      install.layer->weight.copy_(install.weight);
    }
  }
}

void load_state_dict_into_new(torch::nn::Module& module, const TensorMap& tensors, torch::Device device,
                              at::ScalarType float_dtype, const TensorReleased& released) {
  const auto checked = check_state_dict(module, tensors, /*strict=*/true, released);
  torch::NoGradGuard no_grad;
  auto done = [&](const at::Tensor& source) {
    if (released) released(source);
  };
  // One tensor at a time, each straight into its final dtype and device: at most one converted
  // tensor (or one layer's fp32 weight, while it is quantized) exists beside the model.
  for (const auto& [target, source] : checked.copies) {
    const auto dtype = target.is_floating_point() ? float_dtype : target.scalar_type();
    auto destination = target;  // the module's own handle: set_data below changes the module
    if (destination.device() == device && destination.scalar_type() == dtype) {
      copy_in_slices(destination, source, done);  // into the storage the module already has; releases as it goes
    } else {
      destination.set_data(copy_to(source, device, dtype));
      done(source);
    }
  }
  for (const auto& plan : checked.plans) {
    auto* layer = plan.layer;
    if (plan.codes.defined()) {
      layer->set_quantized(copy_to(plan.codes, device, at::kChar), copy_to(plan.scales, device, at::kFloat));
      done(plan.codes);
      done(plan.scales);
    } else if (!layer->options.has_fp16_weights()) {  // an inference layer: quantized where it will run
      auto [codes, scales] = quantize_on(plan.float_weight, device);
      layer->set_quantized(codes, scales);
      done(plan.float_weight);
    } else {
      layer->weight.set_data(copy_to(plan.float_weight, device, float_dtype));
      done(plan.float_weight);
    }
  }
}

}  // namespace llmint8
