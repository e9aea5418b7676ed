"""llama2.c checkpoints and tokenizers from Python (format: ../shared/models/README.md), and their
conversion to a Hugging Face Llama folder that transformers and llmint8-generate both load."""

import json
import math
import shutil
import struct
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch
from safetensors.torch import save_file

from ._untrusted import check_finite, fail, read_file

BOS, EOS = 1, 2


def _permute_rotary(w: torch.Tensor, heads: int) -> torch.Tensor:
    """Interleaved rotary pairs (llama2.c) -> Hugging Face's rotate-half rows, per head."""
    rows, cols = w.shape
    return w.view(heads, rows // heads // 2, 2, cols).transpose(1, 2).reshape(rows, cols)


# The C++ loader's bounds (LlamaConfig in csrc/include/llmint8/models/llama.h): a file cannot ask for
# absurd loops or allocations.
_MAX_HEADER_FIELD = 1 << 20
_LIMITS = {"dim": 1 << 16, "hidden_dim": 1 << 18, "n_layers": 1 << 10, "vocab_size": 1 << 22, "seq_len": 1 << 24}
_MAX_PIECE_BYTES = 4096


def _check_sizes(path, sizes: Dict[str, int]) -> None:
    """The C++ LlamaConfig rules: every size in range, heads of even size, whole groups of kv heads."""
    limits = dict(_LIMITS, n_heads=sizes["dim"], n_kv_heads=sizes["n_heads"])
    for name in ("dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len"):
        if not 1 <= sizes[name] <= limits[name]:
            fail(path, f"header field {name}", f"in [1, {limits[name]}]", sizes[name])
    dim, heads, kv_heads = sizes["dim"], sizes["n_heads"], sizes["n_kv_heads"]
    if dim % heads or (dim // heads) % 2:
        fail(path, f"dim ({dim})", f"a whole number of heads (n_heads = {heads}) of even size", f"{dim / heads} per head")
    if heads % kv_heads:
        fail(path, f"n_heads ({heads})", f"a multiple of n_kv_heads", kv_heads)


def read_llama2c(path: str) -> Dict:
    """The header and float32 tensors of a llama2.c version-0 checkpoint: every header field checked,
    the file size against the header, every tensor finite."""
    raw = read_file(path)
    if len(raw) < 28:
        fail(path, "its size", "at least the 28-byte header", f"{len(raw)} bytes (truncated)")
    header = struct.unpack("<7i", raw[:28])
    names = ("dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len")
    for i, (name, value) in enumerate(zip(names, header)):
        if not 0 < abs(value) <= _MAX_HEADER_FIELD or (value < 0 and name != "vocab_size"):
            fail(path, f"header field {name} (offset {4 * i})",
                 f"in [1, {_MAX_HEADER_FIELD}] (is this a llama2.c version-0 checkpoint?)", value)
    sizes = dict(zip(names, header))
    shared, sizes["vocab_size"] = sizes["vocab_size"] > 0, abs(sizes["vocab_size"])
    _check_sizes(path, sizes)
    dim, hidden, layers, heads, kv_heads, vocab, seq = (sizes[n] for n in names)
    head = dim // heads
    kv = kv_heads * head
    shapes = [("token_embedding", (vocab, dim)), ("rms_att", (layers, dim)), ("wq", (layers, dim, dim)),
              ("wk", (layers, kv, dim)), ("wv", (layers, kv, dim)), ("wo", (layers, dim, dim)),
              ("rms_ffn", (layers, dim)), ("w1", (layers, hidden, dim)), ("w2", (layers, dim, hidden)),
              ("w3", (layers, hidden, dim)), ("rms_final", (dim,)), ("freq_cis_real", (seq, head // 2)),
              ("freq_cis_imag", (seq, head // 2))] + ([] if shared else [("wcls", (vocab, dim))])
    expected = 28 + 4 * sum(math.prod(s) for _, s in shapes)
    if len(raw) != expected:
        fail(path, "its size", f"{expected} bytes for the header's sizes {header}",
             f"{len(raw)} bytes ({'truncated' if len(raw) < expected else 'trailing bytes'})")
    data = torch.from_numpy(np.frombuffer(raw, dtype="<f4", offset=28).copy())
    tensors, offset = {}, 0
    for name, shape in shapes:
        n = math.prod(shape)
        tensors[name] = data[offset:offset + n].reshape(shape)
        offset += n
        if not name.startswith("freq_cis"):  # the legacy rotary tables are not used
            check_finite(path, name, tensors[name])
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
    llama2.c tokenizer as tokenizer.bin when given. Both inputs are read and checked before anything
    is written."""
    ckpt = read_llama2c(model_path)
    if tokenizer_path is not None:
        tok = Llama2cTokenizer(tokenizer_path)
        if tok.vocab_size != ckpt["vocab_size"]:
            raise ValueError(f"tokenizer '{tokenizer_path}' has {tok.vocab_size} tokens, "
                             f"the model's vocabulary has {ckpt['vocab_size']}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(hf_config(ckpt), indent=2))
    save_file(hf_state_dict(ckpt), str(out / "model.safetensors"), metadata={"format": "pt"})
    if tokenizer_path is not None:
        shutil.copyfile(tokenizer_path, out / "tokenizer.bin")
    return out


def _byte_of(piece: bytes) -> Optional[int]:
    """The byte a "<0xNN>" piece stands for (exactly two hex digits), else None."""
    if len(piece) == 6 and piece[:3] == b"<0x" and piece[5:] == b">" and all(c in b"0123456789abcdefABCDEF" for c in piece[3:5]):
        return int(piece[3:5], 16)
    return None


class Llama2cTokenizer:
    """A llama2.c tokenizer file: byte-level pieces merged greedily by score (as llama2.c's encode).
    Characters missing from the vocabulary are spelled with the byte pieces <0x00>..<0xFF> (ids 3 to
    258); a file without them cannot encode such a character, and says so."""

    def __init__(self, path: str):
        raw = read_file(path)
        if len(raw) < 4:
            fail(path, "its size", "at least the 4-byte header", f"{len(raw)} bytes")
        (max_len,) = struct.unpack("<i", raw[:4])
        if not 1 <= max_len <= _MAX_PIECE_BYTES:
            fail(path, "max_token_length (offset 0)", f"in [1, {_MAX_PIECE_BYTES}] (is this a llama2.c tokenizer file?)",
                 max_len)
        self.path = path
        self.pieces: List[bytes] = []
        self.scores: List[float] = []
        offset = 4
        while offset < len(raw):
            entry = f"entry {len(self.pieces)} (offset {offset})"
            if len(self.pieces) >= _LIMITS["vocab_size"]:
                fail(path, "the number of entries", f"at most {_LIMITS['vocab_size']}", "more")
            left = len(raw) - offset
            if left < 8:
                fail(path, entry, "8 bytes of score and length", f"{left} bytes (truncated)")
            score, length = struct.unpack("<fi", raw[offset:offset + 8])
            if not 0 <= length <= min(max_len, left - 8):
                fail(path, f"{entry} length", f"in [0, max_token_length = {max_len}] and at most the {left - 8} bytes left",
                     length)
            if not math.isfinite(score):
                fail(path, f"{entry} score", "finite", score)
            self.pieces.append(raw[offset + 8:offset + 8 + length])
            self.scores.append(score)
            offset += 8 + length
        if len(self.pieces) < 3:
            fail(path, "the number of entries", "at least 3 (<unk>, BOS, EOS)", len(self.pieces))
        self.ids = {}
        for i, p in enumerate(self.pieces):
            self.ids.setdefault(p, i)  # the first of duplicate pieces, as the C++ tokenizer
        self.byte_pieces = len(self.pieces) >= 259 and all(_byte_of(self.pieces[3 + b]) == b for b in range(256))
        self.bos_token_id, self.eos_token_id = BOS, EOS

    @property
    def vocab_size(self) -> int:
        return len(self.pieces)

    def encode(self, text: str, bos: bool = True, eos: bool = False) -> List[int]:
        tokens = [BOS] if bos else []
        if text and b" " in self.ids:
            tokens.append(self.ids[b" "])
        at = 0
        for ch in text:
            b = ch.encode("utf-8")
            if b not in self.ids and not self.byte_pieces:
                fail(self.path, f"the text's character {ch!r} at byte {at}",
                     "in the vocabulary, or spelled by byte pieces <0x00>..<0xFF> at ids 3 to 258",
                     "neither (the vocabulary has no byte pieces)")
            tokens.extend([self.ids[b]] if b in self.ids else [x + 3 for x in b])
            at += len(b)
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
            if not 0 <= t < len(self.pieces):
                raise IndexError(f"tokenizer '{self.path}': token id {t} is outside the vocabulary of {len(self.pieces)}")
            piece = self.pieces[t]
            if previous == BOS and piece.startswith(b" "):
                piece = piece[1:]
            byte = _byte_of(piece)
            out += piece if byte is None else bytes([byte])
            previous = t
        return out.decode("utf-8", errors="replace")
