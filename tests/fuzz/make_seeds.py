"""Seed corpora for the fuzz targets, made at fuzz time from the shared llama2.c models.

    python3 tests/fuzz/make_seeds.py MODELS_DIR OUT_DIR

writes OUT_DIR/<target>/ for each target in tests/fuzz: the shared checkpoints and tokenizer
themselves, small checkpoints cut from them (a few KB, so that mutations run fast), and the
safetensors files, shard indexes and config.json files a conversion of them gives. Nothing here
is committed; only the Python standard library is used.
"""

import json
import struct
import sys
from array import array
from pathlib import Path

NAMES = ("dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len")


def read_llama2c(path: Path):
    raw = path.read_bytes()
    header = dict(zip(NAMES, struct.unpack("<7i", raw[:28])))
    floats = array("f")
    floats.frombytes(raw[28:])
    return header, floats


def tensor_layout(h):
    """(name, shape) of the file's tensors in order (README of the shared models)."""
    dim, hidden, layers, heads = h["dim"], h["hidden_dim"], h["n_layers"], h["n_heads"]
    vocab, seq = abs(h["vocab_size"]), h["seq_len"]
    kv = h["n_kv_heads"] * dim // heads
    layout = [("token_embedding", (vocab, dim)), ("rms_att", (layers, dim)), ("wq", (layers, dim, dim)),
              ("wk", (layers, kv, dim)), ("wv", (layers, kv, dim)), ("wo", (layers, dim, dim)),
              ("rms_ffn", (layers, dim)), ("w1", (layers, hidden, dim)), ("w2", (layers, dim, hidden)),
              ("w3", (layers, hidden, dim)), ("rms_final", (dim,)), ("freq_cis_real", (seq, dim // heads // 2)),
              ("freq_cis_imag", (seq, dim // heads // 2))]
    return layout + ([] if h["vocab_size"] > 0 else [("wcls", (vocab, dim))])


def numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def tensors_of(h, floats):
    out, offset = {}, 0
    for name, shape in tensor_layout(h):
        out[name] = (shape, floats[offset:offset + numel(shape)])
        offset += numel(shape)
    return out


def cut(shape, values, new_shape):
    """The leading block of new_shape from a row-major tensor of shape."""
    if not new_shape:
        return array("f", values[:1])
    stride = numel(shape[1:])
    out = array("f")
    for i in range(new_shape[0]):
        out += cut(shape[1:], values[i * stride:(i + 1) * stride], new_shape[1:])
    return out


def small_checkpoint(h, floats, tied=True):
    """A llama2.c checkpoint of 8-wide layers whose values are the shared model's first ones:
    its bytes and its header."""
    small = {"dim": 8, "hidden_dim": 12, "n_layers": 1, "n_heads": 2, "n_kv_heads": 2,
             "vocab_size": 16 if tied else -16, "seq_len": 8}
    source = tensors_of(h, floats)
    body = array("f")
    for name, shape in tensor_layout(small):
        src_shape, values = source.get(name, source["token_embedding"])  # a tied source has no wcls
        body += cut(src_shape, values, shape)
    return struct.pack("<7i", *(small[n] for n in NAMES)) + body.tobytes(), small


def hf_tensors(h, floats):
    """Hugging Face names and shapes of the checkpoint (no rotary permutation: a seed needs none)."""
    t = tensors_of(h, floats)
    out = {"model.embed_tokens.weight": t["token_embedding"], "model.norm.weight": t["rms_final"]}
    for layer in range(h["n_layers"]):
        p = f"model.layers.{layer}."
        for hf, ll in (("input_layernorm", "rms_att"), ("post_attention_layernorm", "rms_ffn"),
                       ("self_attn.q_proj", "wq"), ("self_attn.k_proj", "wk"), ("self_attn.v_proj", "wv"),
                       ("self_attn.o_proj", "wo"), ("mlp.gate_proj", "w1"), ("mlp.down_proj", "w2"),
                       ("mlp.up_proj", "w3")):
            shape, values = t[ll]
            n = numel(shape[1:])
            out[p + hf + ".weight"] = (shape[1:], values[layer * n:(layer + 1) * n])
    if "wcls" in t:
        out["lm_head.weight"] = t["wcls"]
    return out


def safetensors(tensors, dtype="F32"):
    """A safetensors file of (shape, values) float32 tensors, or of raw (dtype, shape, bytes)."""
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name, entry in tensors.items():
        kind, shape, data = entry if len(entry) == 3 else (dtype, entry[0], entry[1].tobytes())
        header[name] = {"dtype": kind, "shape": list(shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def hf_config(h, **extra):
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": h["dim"],
              "intermediate_size": h["hidden_dim"], "num_hidden_layers": h["n_layers"],
              "num_attention_heads": h["n_heads"], "num_key_value_heads": h["n_kv_heads"],
              "vocab_size": abs(h["vocab_size"]), "max_position_embeddings": h["seq_len"], "rms_norm_eps": 1e-5,
              "rope_theta": 10000.0, "tie_word_embeddings": h["vocab_size"] > 0, "hidden_act": "silu",
              "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float32"}
    config.update(extra)
    return json.dumps(config, indent=2).encode()


def main(models_dir: Path, out: Path) -> None:
    checkpoints = sorted(models_dir.glob("*/*.bin"))
    models = [p for p in checkpoints if not p.name.startswith("tok")]
    tokenizers = [p for p in checkpoints if p.name.startswith("tok")]
    if not models or not tokenizers:
        sys.exit(f"make_seeds.py: no llama2.c models and tokenizers under {models_dir}")
    corpus = {name: out / name for name in ("fuzz_llama2c_checkpoint", "fuzz_llama2c_tokenizer", "fuzz_safetensors",
                                              "fuzz_shard_index", "fuzz_hf_config")}
    for folder in corpus.values():
        folder.mkdir(parents=True, exist_ok=True)

    def seed(target, name, data):
        (corpus[target] / name).write_bytes(data)

    for path in models:
        h, floats = read_llama2c(path)
        stem = path.stem
        seed("fuzz_llama2c_checkpoint", f"{stem}.bin", path.read_bytes())
        for tied in (False, True):
            data, small_h = small_checkpoint(h, floats, tied)
            seed("fuzz_llama2c_checkpoint", f"{stem}-small-{'tied' if tied else 'untied'}.bin", data)
        small_floats = array("f")
        small_floats.frombytes(data[28:])
        tensors = hf_tensors(small_h, small_floats)
        seed("fuzz_safetensors", f"{stem}-small.safetensors", safetensors(tensors))
        seed("fuzz_safetensors", f"{stem}-small-fp16.safetensors",
             safetensors({k: ("F16", v[0], array("H", [0x3C00] * numel(v[0])).tobytes()) for k, v in tensors.items()}))
        names = sorted(tensors)
        shards = {k: f"model-{i % 2 + 1:05d}-of-00002.safetensors" for i, k in enumerate(names)}
        seed("fuzz_shard_index", f"{stem}.index.json",
             json.dumps({"metadata": {"total_size": 4 * sum(numel(t[0]) for t in tensors.values())},
                         "weight_map": shards}, indent=2).encode())
        seed("fuzz_hf_config", f"{stem}.json", hf_config(h))
        seed("fuzz_hf_config", f"{stem}-small.json", hf_config(small_h))
        seed("fuzz_hf_config", f"{stem}-8bit.json", hf_config(h, quantization_config={
            "quant_method": "bitsandbytes", "load_in_8bit": True, "llm_int8_threshold": 6.0,
            "llm_int8_skip_modules": ["lm_head"]}))
        seed("fuzz_hf_config", f"{stem}-llmint8.json", hf_config(h, rope_scaling=None, head_dim=h["dim"] // h["n_heads"],
                                                                 quantization_config={"quant_method": "llmint8"}))
        # The other families and the config shapes transformers 5 writes (rope_parameters, layer_types).
        rope3 = {"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0, "low_freq_factor": 1.0,
                 "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
        seed("fuzz_hf_config", f"{stem}-llama3.json", hf_config(h, rope_theta=None, rope_parameters=rope3,
                                                                attention_bias=True, mlp_bias=True))
        seed("fuzz_hf_config", f"{stem}-qwen2.json", hf_config(
            h, model_type="qwen2", use_sliding_window=True, sliding_window=16, max_window_layers=1,
            layer_types=["full_attention"] + ["sliding_attention"] * (h["n_layers"] - 1)))
        seed("fuzz_hf_config", f"{stem}-mistral.json", hf_config(
            h, model_type="mistral", sliding_window=None, rope_scaling={"type": "linear", "factor": 2.0}))
    # An 8-bit Linear8bitLt checkpoint of the fuzz target's layer (in 4, out 3), bitsandbytes' layout.
    codes = bytes([1, 127, 129, 0, 5, 7, 250, 64, 3, 2, 1, 0])  # int8 codes as bytes
    seed("fuzz_safetensors", "linear8bitlt.safetensors", safetensors({
        "weight": ("I8", (3, 4), codes), "SCB": ("F32", (3,), array("f", [0.5, 1.0, 2.0]).tobytes()),
        "weight_format": ("U8", (), b"\0"), "bias": ("F32", (3,), array("f", [0.1, -0.2, 0.3]).tobytes()),
        "mask": ("BOOL", (4,), b"\x00\x01\x01\x00")}))
    for path in tokenizers:
        raw = path.read_bytes()
        seed("fuzz_llama2c_tokenizer", path.name, raw)
        offset, entries = 4, 0
        while offset < len(raw) and entries < 40:  # its first 40 pieces: no byte pieces past id 42
            offset += 8 + struct.unpack("<i", raw[offset + 4:offset + 8])[0]
            entries += 1
        seed("fuzz_llama2c_tokenizer", f"{path.stem}-first40.bin", raw[:offset])


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(Path(sys.argv[1]), Path(sys.argv[2]))
