"""llama2.c checkpoints and tokenizers from Python (format: ../shared/models/README.md), and their
conversion to a Hugging Face Llama folder that transformers and llmint8-generate both load."""

import json
import shutil
import struct
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch
from safetensors.torch import save_file

BOS, EOS = 1, 2


def _permute_rotary(w: torch.Tensor, heads: int) -> torch.Tensor:
    """Interleaved rotary pairs (llama2.c) -> Hugging Face's rotate-half rows, per head."""
    rows, cols = w.shape
    return w.view(heads, rows // heads // 2, 2, cols).transpose(1, 2).reshape(rows, cols)


def read_llama2c(path: str) -> Dict:
    """The header and float32 tensors of a llama2.c version-0 checkpoint, checked against the file size."""
    raw = Path(path).read_bytes()
    if len(raw) < 28:
        raise ValueError(f"llama2.c checkpoint '{path}' is {len(raw)} bytes, shorter than its 28-byte header")
    dim, hidden, layers, heads, kv_heads, vocab, seq = struct.unpack("7i", raw[:28])
    for name, value in zip(("dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len"),
                           (dim, hidden, layers, heads, kv_heads, abs(vocab), seq)):
        if not 0 < value <= 1 << 20:
            raise ValueError(f"llama2.c checkpoint '{path}': header field {name} = {value} is out of range")
    shared, vocab = vocab > 0, abs(vocab)
    head = dim // heads
    kv = kv_heads * head
    shapes = [("token_embedding", (vocab, dim)), ("rms_att", (layers, dim)), ("wq", (layers, dim, dim)),
              ("wk", (layers, kv, dim)), ("wv", (layers, kv, dim)), ("wo", (layers, dim, dim)),
              ("rms_ffn", (layers, dim)), ("w1", (layers, hidden, dim)), ("w2", (layers, dim, hidden)),
              ("w3", (layers, hidden, dim)), ("rms_final", (dim,)), ("freq_cis_real", (seq, head // 2)),
              ("freq_cis_imag", (seq, head // 2))] + ([] if shared else [("wcls", (vocab, dim))])
    expected = 28 + 4 * sum(int(np.prod(s)) for _, s in shapes)
    if len(raw) != expected:
        raise ValueError(f"llama2.c checkpoint '{path}': the header needs {expected} bytes, the file has {len(raw)}")
    data = torch.from_numpy(np.frombuffer(raw, dtype=np.float32, offset=28).copy())
    tensors, offset = {}, 0
    for name, shape in shapes:
        n = int(np.prod(shape))
        tensors[name] = data[offset:offset + n].reshape(shape)
        offset += n
    return {"shared_classifier": shared, "dim": dim, "hidden_dim": hidden, "n_layers": layers, "n_heads": heads, "n_kv_heads": kv_heads,
            "vocab_size": vocab, "seq_len": seq, "tensors": tensors}


def hf_state_dict(ckpt: Dict) -> Dict[str, torch.Tensor]:
    """The checkpoint's tensors under Hugging Face Llama names, q/k permuted to rotate-half. A shared
    classifier is left to tie_word_embeddings (no lm_head.weight entry)."""
    t = ckpt["tensors"]
    sd = {"model.embed_tokens.weight": t["token_embedding"], "model.norm.weight": t["rms_final"]}
    if not ckpt["shared_classifier"]:
        sd["lm_head.weight"] = t["wcls"]
    for l in range(ckpt["n_layers"]):
        p = f"model.layers.{l}."
        sd.update({
            p + "input_layernorm.weight": t["rms_att"][l], p + "post_attention_layernorm.weight": t["rms_ffn"][l],
            p + "self_attn.q_proj.weight": _permute_rotary(t["wq"][l], ckpt["n_heads"]),
            p + "self_attn.k_proj.weight": _permute_rotary(t["wk"][l], ckpt["n_kv_heads"]),
            p + "self_attn.v_proj.weight": t["wv"][l], p + "self_attn.o_proj.weight": t["wo"][l],
            p + "mlp.gate_proj.weight": t["w1"][l], p + "mlp.up_proj.weight": t["w3"][l],
            p + "mlp.down_proj.weight": t["w2"][l],
        })
    return {k: v.contiguous() for k, v in sd.items()}


def hf_config(ckpt: Dict) -> Dict:
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": ckpt["dim"],
            "intermediate_size": ckpt["hidden_dim"], "num_hidden_layers": ckpt["n_layers"],
            "num_attention_heads": ckpt["n_heads"], "num_key_value_heads": ckpt["n_kv_heads"],
            "vocab_size": ckpt["vocab_size"], "max_position_embeddings": ckpt["seq_len"], "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0, "tie_word_embeddings": ckpt["shared_classifier"], "hidden_act": "silu", "bos_token_id": BOS,
            "eos_token_id": EOS, "torch_dtype": "float32"}


def convert_llama2c(model_path: str, out_dir: str, tokenizer_path: Optional[str] = None) -> Path:
    """Writes config.json and model.safetensors (float32) of a Hugging Face Llama folder, and the
    llama2.c tokenizer as tokenizer.bin when given."""
    ckpt = read_llama2c(model_path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(hf_config(ckpt), indent=2))
    save_file(hf_state_dict(ckpt), str(out / "model.safetensors"), metadata={"format": "pt"})
    if tokenizer_path is not None:
        tok = Llama2cTokenizer(tokenizer_path)
        if tok.vocab_size != ckpt["vocab_size"]:
            raise ValueError(f"tokenizer '{tokenizer_path}' has {tok.vocab_size} tokens, "
                             f"the model's vocabulary has {ckpt['vocab_size']}")
        shutil.copyfile(tokenizer_path, out / "tokenizer.bin")
    return out


class Llama2cTokenizer:
    """A llama2.c tokenizer file: byte-level pieces merged greedily by score (as llama2.c's encode)."""

    def __init__(self, path: str):
        raw = Path(path).read_bytes()
        if len(raw) < 4:
            raise ValueError(f"tokenizer '{path}' is shorter than its 4-byte header")
        (max_len,) = struct.unpack("i", raw[:4])
        self.pieces: List[bytes] = []
        self.scores: List[float] = []
        offset = 4
        while offset < len(raw):
            if offset + 8 > len(raw):
                raise ValueError(f"tokenizer '{path}': entry {len(self.pieces)} at offset {offset} is truncated")
            score, length = struct.unpack("fi", raw[offset:offset + 8])
            if not 0 <= length <= max_len or offset + 8 + length > len(raw):
                raise ValueError(f"tokenizer '{path}': entry {len(self.pieces)} at offset {offset} has length {length}")
            self.pieces.append(raw[offset + 8:offset + 8 + length])
            self.scores.append(score)
            offset += 8 + length
        self.ids = {p: i for i, p in enumerate(self.pieces)}
        self.bos_token_id, self.eos_token_id = BOS, EOS

    @property
    def vocab_size(self) -> int:
        return len(self.pieces)

    def encode(self, text: str, bos: bool = True, eos: bool = False) -> List[int]:
        tokens = [BOS] if bos else []
        if text and b" " in self.ids:
            tokens.append(self.ids[b" "])
        for ch in text:
            b = ch.encode("utf-8")
            tokens.extend([self.ids[b]] if b in self.ids else [x + 3 for x in b])
        while True:
            best = None
            for i in range(len(tokens) - 1):
                merged = self.pieces[tokens[i]] + self.pieces[tokens[i + 1]]
                j = self.ids.get(merged)
                if j is not None and (best is None or self.scores[j] > best[0]):
                    best = (self.scores[j], j, i)
            if best is None:
                break
            _, j, i = best
            tokens[i:i + 2] = [j]
        return tokens + ([EOS] if eos else [])

    def decode(self, tokens: List[int], previous: int = BOS) -> str:
        out = b""
        for t in tokens:
            piece = self.pieces[t]
            if previous == BOS and piece.startswith(b" "):
                piece = piece[1:]
            if len(piece) == 6 and piece.startswith(b"<0x") and piece.endswith(b">"):
                piece = bytes([int(piece[3:5], 16)])
            out += piece
            previous = t
        return out.decode("utf-8", errors="replace")
