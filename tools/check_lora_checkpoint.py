#!/usr/bin/python3
"""Loads a qcorr checkpoint with low-rank corrections (`qcorr correct --method lowrank --out F`)
into a PyTorch module whose linear layers carry PEFT-style `lora_A` / `lora_B` sub-layers, with
`load_state_dict(strict=True)`, and checks that the module computes qcorr's validation loss.

    /usr/bin/python3 tools/check_lora_checkpoint.py CHECKPOINT CORPUS LOSS

LOSS is what `qcorr eval --model CHECKPOINT --data CORPUS --json` reports. The module is written
from the README (Float model and training: nanoGPT's layout) and issue 14's definition of the
term, not from the C code: a linear layer computes y = x W^T + b + (x A^T) B^T, with A = `{layer}.lora_A.weight` (k, in) and
B = `{layer}.lora_B.weight` (out, k), as PEFT's LoRA layer does at scaling 1 (PEFT's own keys add
an adapter name, `lora_A.default.weight`; qcorr stores the single adapter without one). The loss is
the README's (Data): the first floor(0.9 N) bytes are train, the rest validation, read in
non-overlapping windows of ctx. Exit 0 when the state dict loads strictly (no missing or unexpected
key) and the loss agrees within 1e-4 nats; 1 otherwise; 2 for a checkpoint it cannot check
(activation quantization, no low-rank tensor).
"""
import math
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import ref_common

TOLERANCE = 1e-4  # nats: float32 in two engines, summed over ~1e5 positions


def read_safetensors(path):
    """The checkpoint's tensors as torch tensors, and its metadata (ref_common's reader)."""
    arrays, metadata = ref_common.read_safetensors(path)
    return {name: torch.from_numpy(a) for name, a in arrays.items()}, metadata


class LoraLinear(nn.Module):
    """nn.Linear plus, when rank > 0, PEFT's two factors: y = x W^T + b + lora_B(lora_A(x))."""

    def __init__(self, d_in, d_out, rank):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(d_out, d_in))
        self.bias = nn.Parameter(torch.zeros(d_out))
        self.lora_A = nn.Linear(d_in, rank, bias=False) if rank else None
        self.lora_B = nn.Linear(rank, d_out, bias=False) if rank else None

    def forward(self, x):
        y = F.linear(x, self.weight, self.bias)
        if self.lora_A is not None:
            y = y + self.lora_B(self.lora_A(x))
        return y


class Block(nn.Module):
    def __init__(self, d, n_head, ranks, prefix):
        super().__init__()
        self.n_head = n_head
        self.ln_1 = nn.LayerNorm(d, eps=1e-5)
        self.ln_2 = nn.LayerNorm(d, eps=1e-5)
        self.attn = nn.Module()
        self.attn.c_attn = LoraLinear(d, 3 * d, ranks.get(prefix + "attn.c_attn", 0))
        self.attn.c_proj = LoraLinear(d, d, ranks.get(prefix + "attn.c_proj", 0))
        self.mlp = nn.Module()
        self.mlp.c_fc = LoraLinear(d, 4 * d, ranks.get(prefix + "mlp.c_fc", 0))
        self.mlp.c_proj = LoraLinear(4 * d, d, ranks.get(prefix + "mlp.c_proj", 0))

    def forward(self, x):
        B, T, C = x.shape
        hs = C // self.n_head
        q, k, v = self.attn.c_attn(self.ln_1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, hs).transpose(1, 2) for t in (q, k, v))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(hs)
        att = att.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
        y = F.softmax(att, dim=-1) @ v
        x = x + self.attn.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))
        return x + self.mlp.c_proj(F.gelu(self.mlp.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, vocab_size, ctx, d, n_layer, n_head, ranks):
        super().__init__()
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(vocab_size, d),
            wpe=nn.Embedding(ctx, d),
            h=nn.ModuleList([Block(d, n_head, ranks, f"transformer.h.{i}.") for i in range(n_layer)]),
            ln_f=nn.LayerNorm(d, eps=1e-5),
        ))
        self.lm_head = LoraLinear(d, vocab_size, ranks.get("lm_head", 0))

    def forward(self, idx):
        x = self.transformer.wte(idx) + self.transformer.wpe(torch.arange(idx.shape[1]))
        for block in self.transformer.h:
            x = block(x)
        return self.lm_head(self.transformer.ln_f(x))


def main():
    if len(sys.argv) != 4:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    path, corpus, want = sys.argv[1], sys.argv[2], float(sys.argv[3])
    tensors, meta = read_safetensors(path)
    if int(meta.get("quant_act_bits", "0")) != 0:
        print(f"{path}: activation quantization is not modelled here", file=sys.stderr)
        return 2
    ranks = {name[:-len(".lora_A.weight")]: t.shape[0] for name, t in tensors.items() if name.endswith(".lora_A.weight")}
    if not ranks:
        print(f"{path}: no lora_A/lora_B tensors", file=sys.stderr)
        return 2
    cfg = {k: int(meta[k]) for k in ("vocab_size", "ctx", "d_model", "n_layer", "n_head")}
    model = GPT(cfg["vocab_size"], cfg["ctx"], cfg["d_model"], cfg["n_layer"], cfg["n_head"], ranks)
    model.load_state_dict(tensors, strict=True)  # raises on any missing or unexpected key or shape

    vocab = [ord(ch) for ch in meta["vocab"]]
    index = np.full(256, -1, dtype=np.int64)
    index[vocab] = np.arange(len(vocab))
    data = np.frombuffer(open(corpus, "rb").read(), dtype=np.uint8)
    ids = index[data]
    if (ids < 0).any():
        print(f"{corpus}: characters outside the checkpoint's vocabulary", file=sys.stderr)
        return 2
    val = torch.from_numpy(ids[int(0.9 * len(ids)):])
    T = cfg["ctx"]
    n = (len(val) - 1) // T
    inputs = val[:n * T].view(n, T)
    targets = val[1:n * T + 1].view(n, T)
    total = 0.0
    with torch.no_grad():
        for b in range(0, n, 64):
            logits = model(inputs[b:b + 64])
            total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets[b:b + 64].reshape(-1), reduction="sum").item()
    loss = total / (n * T)
    sites = ", ".join(f"{k}: {v}" for k, v in ranks.items())
    ok = math.isfinite(loss) and abs(loss - want) <= TOLERANCE
    print(f"{'ok' if ok else 'MISMATCH'}: load_state_dict(strict=True) with {len(ranks)} low-rank layers ({sites}); "
          f"PyTorch loss {loss:.6f}, qcorr {want:.6f} (|diff| {abs(loss - want):.2e}, tolerance {TOLERANCE})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
