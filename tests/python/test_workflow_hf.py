"""The C++ workflow on Hugging Face Llama folders (float, sharded, 8-bit in bitsandbytes' layout) and
sentencepiece tokenizers. The folders are written here from the shared llama2.c model."""

import copy
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import llmint8
import llmint8.reference as ref
from llmint8.llama2c import hf_config, hf_state_dict, read_llama2c

from test_workflow import CLI, MODELS, cli_json, ids, reference, run

NAME = "aidreams260K"
TOKENS = [1, 5, 100, 37, 300, 12, 77, 9, 450, 3, 211]


def write_folder(folder, dtype=torch.float32, shards=1, int8=False):
    """The shared model as a Hugging Face folder (llmint8's converter), cast, sharded or 8-bit as asked."""
    ckpt = read_llama2c(str(MODELS[NAME][0]))
    sd = {k: v.to(dtype).contiguous() for k, v in hf_state_dict(ckpt).items()}
    config = hf_config(ckpt)
    config["torch_dtype"] = str(dtype).replace("torch.", "")
    if int8:  # bitsandbytes' 8-bit layout for every Linear but lm_head
        for key in [k for k in sd if k.endswith("_proj.weight")]:
            CB, SCB, _ = ref.int8_vectorwise_quant(sd[key].float(), 0.0)
            prefix = key[: -len("weight")]
            sd[key], sd[prefix + "SCB"] = CB, SCB
            sd[prefix + "weight_format"] = torch.tensor(0, dtype=torch.uint8)
        config["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_8bit": True,
                                         "llm_int8_threshold": 6.0, "llm_int8_skip_modules": None}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    keys = sorted(sd)
    if shards == 1:
        save_file(sd, str(folder / "model.safetensors"))
    else:
        weight_map = {}
        for i in range(shards):
            name = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
            part = keys[i::shards]
            save_file({k: sd[k] for k in part}, str(folder / name))
            weight_map.update({k: name for k in part})
        (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))


def rounded_reference(dtype):
    """The float64 reference with its weights rounded through dtype, as the folder stores them."""
    r = copy.copy(reference(NAME))
    for attr in ("emb", "rms_att", "wq", "wk", "wv", "wo", "rms_ffn", "w1", "w2", "w3", "rms_final", "wcls"):
        setattr(r, attr, getattr(r, attr).to(dtype).double())
    return r


def cpp_logits(model, tmp_path, *extra):
    out = cli_json("-m", model, "--tokens", ids(TOKENS), "--score", "--logits-out", tmp_path / "l.safetensors", *extra)
    return out, load_file(str(tmp_path / "l.safetensors"))["logits"].double()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shards", [1, 3])
def test_hf_folder_logits_match_reference(dtype, shards, tmp_path):
    write_folder(tmp_path / "hf", dtype, shards)
    out, logits = cpp_logits(tmp_path / "hf", tmp_path, "--no-int8")
    expected = rounded_reference(dtype).logits(TOKENS)
    err = ((logits - expected).norm() / expected.norm()).item()
    assert err < 1e-4, err
    assert out["layers_quantized"] == 0


def test_hf_8bit_checkpoint_loads_without_requantizing(tmp_path):
    write_folder(tmp_path / "hf8", int8=True)
    write_folder(tmp_path / "hf", torch.float32)
    out8, logits8 = cpp_logits(tmp_path / "hf8", tmp_path, "--no-int8")  # the checkpoint decides: 8-bit
    quantized_here = cli_json("-m", tmp_path / "hf", "--tokens", ids(TOKENS), "--score", "--int8", "--threshold", 6)
    assert out8["layers_quantized"] == 28
    assert abs(out8["mean_nll"] - quantized_here["mean_nll"]) < 1e-9  # the same codes, loaded or made here
    float_nll = cli_json("-m", tmp_path / "hf", "--tokens", ids(TOKENS), "--score", "--no-int8")["mean_nll"]
    assert abs(out8["mean_nll"] - float_nll) <= 0.02 * float_nll


@pytest.mark.parametrize("case", ["missing_field", "bad_json", "missing_shard_key", "model_type"])
def test_bad_hf_folder_names_the_problem(case, tmp_path):
    folder = tmp_path / "hf"
    write_folder(folder, shards=2 if case == "missing_shard_key" else 1)
    config = json.loads((folder / "config.json").read_text())
    if case == "missing_field":
        del config["num_hidden_layers"]
        (folder / "config.json").write_text(json.dumps(config))
        expect = "field 'num_hidden_layers' must be an integer"
    elif case == "bad_json":
        (folder / "config.json").write_text("{not json")
        expect = "is not valid JSON"
    elif case == "model_type":
        config["model_type"] = "gpt2"
        (folder / "config.json").write_text(json.dumps(config))
        expect = "field 'model_type' must be one of \"gemma\", \"llama\", \"mistral\", \"qwen2\" (the model types"
    else:
        index = json.loads((folder / "model.safetensors.index.json").read_text())
        index["weight_map"]["model.extra.weight"] = next(iter(index["weight_map"].values()))
        (folder / "model.safetensors.index.json").write_text(json.dumps(index))
        expect = "maps 'model.extra.weight'"
    result = run("-m", folder, "--tokens", "1", "-n", 1)
    assert result.returncode in (1, 2)
    assert expect in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.skipif(not llmint8.build_info()["sentencepiece"], reason="built without libsentencepiece")
def test_sentencepiece_tokenizer_matches_python(tmp_path):
    spm = pytest.importorskip("sentencepiece")
    # A 512-piece sentencepiece model, so that it fits the shared model's vocabulary.
    g = torch.Generator().manual_seed(0)
    syllables = [c + v for c in "bdfklmnprstw" for v in "aeiou"]
    words = ["".join(syllables[i] for i in torch.randint(0, len(syllables), (n,), generator=g).tolist())
             for n in torch.randint(1, 4, (400,), generator=g).tolist()] + "once upon a time the moon".split()
    lines = [" ".join(words[i] for i in torch.randint(0, len(words), (12,), generator=g).tolist()) for _ in range(4000)]
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(lines))
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(tmp_path / "sp"), vocab_size=512,
                                   model_type="bpe", byte_fallback=True, hard_vocab_limit=True,
                                   bos_id=1, eos_id=2, unk_id=0, minloglevel=2)
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "sp.model"))
    prompt = "once upon a time the moon"
    out = cli_json("-m", MODELS[NAME][0], "-z", tmp_path / "sp.model", "-p", prompt, "-n", 10, "-t", 0)
    assert out["prompt_tokens"] == [1] + sp.encode(prompt)
    visible = [t for t in out["generated_tokens"] if t not in (1, 2)]
    assert prompt + out["text"] == sp.decode(sp.encode(prompt) + visible)
