"""An independent float64 reference of a llama2.c checkpoint, in pure PyTorch.

Written from ../shared/models/README.md and llama2.c's run.c semantics: interleaved
rotary pairs (not Hugging Face's halves), full causal attention over the whole
sequence (no KV cache). Used to check the C++ model's logits and greedy ids, and (int8=True)
what LLM.int8() itself does to a model's likelihood.
"""

import struct

import numpy as np
import torch


def _int8_rows(x):
    """Row-wise absmax int8 quantization, dequantized again (float64): what LLM.int8() at threshold 0
    does to each side of a product."""
    scale = x.abs().amax(-1, keepdim=True).clamp_min(1e-30) / 127.0
    return torch.round(x / scale) * scale


class Llama2cReference:
    """int8=True: every layer Linear (not the classifier) computes LLM.int8() in float64: weights and
    activations quantized per row; with threshold > 0 the activation columns that reach it in any
    row are left out of the int8 product and multiplied in float by the dequantized weight columns."""

    def __init__(self, path: str, int8: bool = False, threshold: float = 0.0):
        self.int8, self.threshold = int8, threshold
        raw = open(path, "rb").read()
        dim, hidden, layers, heads, kv_heads, vocab, seq = struct.unpack("7i", raw[:28])
        self.shared = vocab > 0
        vocab = abs(vocab)
        self.dim, self.hidden, self.layers, self.heads, self.kv_heads = dim, hidden, layers, heads, kv_heads
        self.vocab, self.seq = vocab, seq
        self.head = dim // heads
        kv = kv_heads * self.head
        data = torch.from_numpy(np.frombuffer(raw, dtype=np.float32, offset=28).copy()).double()
        offset = 0

        def take(*shape):
            nonlocal offset
            n = int(np.prod(shape))
            t = data[offset:offset + n].reshape(shape)
            offset += n
            return t

        self.emb = take(vocab, dim)
        self.rms_att = take(layers, dim)
        self.wq, self.wk, self.wv = take(layers, dim, dim), take(layers, kv, dim), take(layers, kv, dim)
        self.wo = take(layers, dim, dim)
        self.rms_ffn = take(layers, dim)
        self.w1, self.w2, self.w3 = take(layers, hidden, dim), take(layers, dim, hidden), take(layers, hidden, dim)
        self.rms_final = take(dim)
        take(seq, self.head // 2)
        take(seq, self.head // 2)
        self.wcls = self.emb if self.shared else take(vocab, dim)

    def _linear(self, x, w):
        if not self.int8:
            return x @ w.T
        w8 = _int8_rows(w)
        outliers = (x.abs() >= self.threshold).any(0) if self.threshold > 0 else torch.zeros(x.shape[-1], dtype=torch.bool)
        return _int8_rows(x.masked_fill(outliers, 0)) @ w8.T + x[:, outliers] @ w8[:, outliers].T

    @staticmethod
    def _rmsnorm(x, w):
        return x / torch.sqrt((x * x).mean(-1, keepdim=True) + 1e-5) * w

    def _rope(self, x, positions):
        # x [..., T, n, head]: rotate each (even, odd) pair by pos / 10000^(i / head)
        i = torch.arange(0, self.head, 2, dtype=torch.float64)
        angle = positions[:, None].double() / (10000.0 ** (i / self.head))  # [T, head/2]
        cos, sin = torch.cos(angle)[:, None, :], torch.sin(angle)[:, None, :]
        even, odd = x[..., 0::2], x[..., 1::2]
        out = torch.empty_like(x)
        out[..., 0::2] = even * cos - odd * sin
        out[..., 1::2] = even * sin + odd * cos
        return out

    def logits(self, tokens) -> torch.Tensor:
        """float64 logits [T, vocab] of a token sequence."""
        T = len(tokens)
        pos = torch.arange(T)
        x = self.emb[torch.tensor(tokens)]
        group = self.heads // self.kv_heads
        mask = torch.full((T, T), float("-inf"), dtype=torch.float64).triu(1)
        for l in range(self.layers):
            h = self._rmsnorm(x, self.rms_att[l])
            q = self._linear(h, self.wq[l]).view(T, self.heads, self.head)
            k = self._linear(h, self.wk[l]).view(T, self.kv_heads, self.head)
            v = self._linear(h, self.wv[l]).view(T, self.kv_heads, self.head)
            q, k = self._rope(q, pos), self._rope(k, pos)
            k = k.repeat_interleave(group, dim=1)
            v = v.repeat_interleave(group, dim=1)
            att = torch.einsum("thd,shd->hts", q, k) / self.head ** 0.5 + mask
            out = torch.einsum("hts,shd->thd", att.softmax(-1), v).reshape(T, self.dim)
            x = x + self._linear(out, self.wo[l])
            h = self._rmsnorm(x, self.rms_ffn[l])
            x = x + self._linear(torch.nn.functional.silu(self._linear(h, self.w1[l])) * self._linear(h, self.w3[l]),
                                 self.w2[l])
        return self._rmsnorm(x, self.rms_final) @ self.wcls.T

    def greedy(self, prompt, steps):
        tokens = list(prompt)
        for _ in range(steps):
            tokens.append(int(self.logits(tokens)[-1].argmax()))
        return tokens[len(prompt):]
