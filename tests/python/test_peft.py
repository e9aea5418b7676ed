"""LoRA with PEFT on a model loaded through the "llmint8" transformers quantizer (issue 14): training
lowers the loss and changes only the adapters, adapters save and reload, merging quantizes the
merged weights into Linear8bitLt again and unmerging goes back. Runs on every device of
conftest.DEVICES: the CPU in CI, CUDA where a GPU is present."""

import pytest
import torch

import llmint8
from llmint8 import reference as ref
from llmint8.nn import Linear8bitLt

from conftest import rel_err

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")
import llmint8.peft  # noqa: E402  (needs peft)

TARGETS = ("q_proj", "v_proj")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A small random Llama saved as a transformers folder."""
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    path = tmp_path_factory.mktemp("tiny-llama")
    transformers.LlamaForCausalLM(config).save_pretrained(str(path))
    return path


def _load(folder, device, quantize=True):
    config = llmint8.Int8Config(llm_int8_threshold=6.0) if quantize else None
    return transformers.AutoModelForCausalLM.from_pretrained(str(folder), device_map=device,
                                                             quantization_config=config)


def _batch(device):
    return torch.randint(0, 128, (2, 24), generator=torch.Generator().manual_seed(1)).to(device)


def _peft_model(folder, device):
    model = peft.prepare_model_for_kbit_training(_load(folder, device),
                                                 gradient_checkpointing_kwargs={"use_reentrant": False})
    config = llmint8.peft.register(peft.LoraConfig(r=8, lora_alpha=16, target_modules=list(TARGETS),
                                                   lora_dropout=0.0, task_type="CAUSAL_LM"))
    return peft.get_peft_model(model, config)


def _train(model, ids, steps=6):
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(steps):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return model.eval(), losses


def _int8_rounding(folder, device, ids):
    """What int8 rounding does to this model: its 8-bit logits against its float ones."""
    with torch.no_grad():
        return rel_err(_load(folder, device)(input_ids=ids).logits,
                       _load(folder, device, quantize=False)(input_ids=ids).logits)


def _lora_layers(model):
    return {name: m for name, m in model.named_modules() if isinstance(m, llmint8.peft.Linear8bitLtLora)}


@pytest.fixture
def trained(folder, device):
    torch.manual_seed(0)
    model = _peft_model(folder, device)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model, losses = _train(model, _batch(device))
    return model, before, losses


def test_lora_training_lowers_the_loss_and_changes_only_the_adapters(trained):
    model, before, losses = trained
    assert losses[-1] < losses[0], losses
    layers = _lora_layers(model)
    assert sorted({name.rsplit(".", 1)[1] for name in layers}) == list(TARGETS) and len(layers) == 4
    for layer in layers.values():
        base = layer.get_base_layer()
        assert type(base) is Linear8bitLt and base.weight.dtype == torch.int8 and not base.weight.requires_grad
    after = model.state_dict()
    adapters = [k for k in after if "lora_" in k]
    assert len(adapters) == 2 * len(layers)
    assert all(not torch.equal(after[k], before[k]) for k in adapters if "lora_B" in k)  # B starts at zero
    frozen = [k for k in after if "lora_" not in k]
    assert any(k.endswith("SCB") for k in frozen) and all(torch.equal(after[k], before[k]) for k in frozen)


def test_adapters_save_and_reload(trained, folder, device, tmp_path):
    model, _, _ = trained
    ids = _batch(device)
    model.save_pretrained(str(tmp_path / "adapter"))
    assert (tmp_path / "adapter" / "adapter_model.safetensors").exists()
    with torch.no_grad():
        expected = model(input_ids=ids).logits
        plain = peft.PeftModel.from_pretrained(_load(folder, device), str(tmp_path / "adapter")).eval()
        assert torch.equal(plain(input_ids=ids).logits, expected)
        # with the mapping registered again (it is not saved), the reloaded adapters merge
        config = llmint8.peft.register(peft.LoraConfig.from_pretrained(str(tmp_path / "adapter")))
        reloaded = peft.PeftModel.from_pretrained(_load(folder, device), str(tmp_path / "adapter"), config=config)
        assert len(_lora_layers(reloaded)) == 4 and torch.equal(reloaded.eval()(input_ids=ids).logits, expected)
        with plain.disable_adapter():
            without_adapters = plain(input_ids=ids).logits
        merged = reloaded.merge_and_unload()(input_ids=ids).logits
        assert rel_err(without_adapters, expected) > 0.1  # the adapters matter ...
        assert rel_err(merged, expected) < _int8_rounding(folder, device, ids)  # ... and the merge kept them


def _expected(layer, sign=1):
    """Reference of a merge (sign 1) or unmerge (sign -1): the float64 dequantized weight plus or
    minus the adapter's delta, quantized."""
    base = layer.get_base_layer()
    delta = layer.get_delta_weight("default").cpu().double()
    CB, SCB, _ = ref.int8_vectorwise_quant((_dequantized(base.weight) + sign * delta).float())
    return CB, SCB


def _dequantized(weight):
    return ref.dequantize_weight(weight.cpu(), weight.SCB.cpu())


def _assert_codes(layer_weight, CB, SCB):
    # One code may differ where the fp32 sum lands within rounding of a half-way point.
    assert (layer_weight.cpu().int() - CB.int()).abs().max() <= 1
    torch.testing.assert_close(layer_weight.SCB.cpu(), SCB, rtol=1e-6, atol=0)


def test_merge_and_unload_quantizes_the_merged_weights_into_linear8bitlt(trained, folder, device):
    model, _, _ = trained
    ids = _batch(device)
    expected = {name: _expected(layer) for name, layer in _lora_layers(model).items()}
    with torch.no_grad():
        unmerged = model(input_ids=ids).logits
        merged_model = model.merge_and_unload()
        merged = merged_model(input_ids=ids).logits
        int8_rounding = _int8_rounding(folder, device, ids)
    for name, (CB, SCB) in expected.items():
        layer = merged_model.get_submodule(name.removeprefix("base_model.model."))
        assert type(layer) is Linear8bitLt and layer.weight.dtype == torch.int8
        _assert_codes(layer.weight, CB, SCB)
    assert not _lora_layers(merged_model)
    assert rel_err(merged, unmerged) < int8_rounding


def test_unmerge_restores_the_base_weights(trained, device):
    model, before, _ = trained
    ids = _batch(device)
    layers = _lora_layers(model)
    with torch.no_grad():
        unmerged = model(input_ids=ids).logits
        model.merge_adapter()
        assert all(layer.merged for layer in layers.values())
        merged = model(input_ids=ids).logits
        merged_weights = {name: layer.get_base_layer().weight for name, layer in layers.items()}
        expected = {name: _expected(layer, sign=-1) for name, layer in layers.items()}
        model.unmerge_adapter()
        again = model(input_ids=ids).logits
    for name, layer in layers.items():
        base = layer.get_base_layer()
        assert not layer.merged and type(base) is Linear8bitLt and base.weight.dtype == torch.int8
        _assert_codes(base.weight, *expected[name])
        # Back to the original weights within the two roundings (half a step of the merged codes and
        # of the unmerged ones).
        original = before[f"{name}.base_layer.weight"]
        original.SCB = before[f"{name}.base_layer.SCB"]
        bound = (merged_weights[name].SCB.cpu().double() + base.weight.SCB.cpu().double()) / 254 * (1 + 1e-6)
        assert ((_dequantized(base.weight) - _dequantized(original)).abs() <= bound[:, None]).all()
    # Merging and unmerging each round the weights to int8 once more: the output moves by about that much.
    assert rel_err(again, unmerged) <= 2 * rel_err(merged, unmerged)


def test_failed_safe_merge_leaves_the_int8_base_as_it_was(trained):
    model, _, _ = trained
    name, layer = next(iter(_lora_layers(model).items()))
    base = layer.get_base_layer()
    weight, codes = base.weight, base.weight.detach().clone()
    with torch.no_grad():
        layer.lora_B["default"].weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaNs detected"):
        layer.merge(safe_merge=True)
    assert base.weight is weight and torch.equal(base.weight, codes) and not layer.merged


def test_register_names_a_bad_argument():
    with pytest.raises(TypeError, match="argument 'config' must be a peft.LoraConfig, got dict"):
        llmint8.peft.register({"r": 8})
