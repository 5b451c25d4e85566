"""Shared pieces of the PyTorch reference (tools/pytorch_reference.py documents the fixtures):
safetensors I/O by hand, the nanoGPT-style GPT written from the README (Float model and
training), qcorr checkpoints, storage-format rounding and the comparison helpers every self-check prints with."""
import json
import math
import os
import struct

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# The fixtures' vocabulary: V distinct ASCII characters, sorted ascending by byte value.
VOCAB = "\n !',.:?ABCab"


# ---- the model: nanoGPT's GPT with bias=True and an untied lm_head that has a bias ----
class CausalSelfAttention(nn.Module):
    def __init__(self, d_model, n_head, ctx):
        super().__init__()
        assert d_model % n_head == 0
        self.n_head = n_head
        self.c_attn = nn.Linear(d_model, 3 * d_model, bias=True)  # q | k | v stacked by rows
        self.c_proj = nn.Linear(d_model, d_model, bias=True)
        mask = torch.tril(torch.ones(ctx, ctx, dtype=torch.bool)).view(1, 1, ctx, ctx)
        self.register_buffer("causal_mask", mask, persistent=False)

    def forward(self, x):
        B, T, C = x.shape
        hs = C // self.n_head
        q, k, v = self.c_attn(x).split(C, dim=2)
        q = q.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, hs).transpose(1, 2)
        v = v.view(B, T, self.n_head, hs).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))
        att = att.masked_fill(~self.causal_mask[:, :, :T, :T], float("-inf"))
        att = F.softmax(att, dim=-1)
        y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)
        return self.c_proj(y)


class MLP(nn.Module):
    def __init__(self, d_model):
        super().__init__()
        self.c_fc = nn.Linear(d_model, 4 * d_model, bias=True)
        self.gelu = nn.GELU(approximate="tanh")
        self.c_proj = nn.Linear(4 * d_model, d_model, bias=True)

    def forward(self, x):
        return self.c_proj(self.gelu(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, d_model, n_head, ctx):
        super().__init__()
        self.ln_1 = nn.LayerNorm(d_model, eps=1e-5)
        self.attn = CausalSelfAttention(d_model, n_head, ctx)
        self.ln_2 = nn.LayerNorm(d_model, eps=1e-5)
        self.mlp = MLP(d_model)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        x = x + self.mlp(self.ln_2(x))
        return x


class GPT(nn.Module):
    def __init__(self, vocab_size, ctx, d_model, n_layer, n_head):
        super().__init__()
        self.config = dict(vocab_size=vocab_size, ctx=ctx, d_model=d_model, n_layer=n_layer, n_head=n_head)
        self.ctx = ctx
        self.n_layer = n_layer
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(vocab_size, d_model),
            wpe=nn.Embedding(ctx, d_model),
            h=nn.ModuleList([Block(d_model, n_head, ctx) for _ in range(n_layer)]),
            ln_f=nn.LayerNorm(d_model, eps=1e-5),
        ))
        self.lm_head = nn.Linear(d_model, vocab_size, bias=True)  # untied from wte

    def init_weights(self, generator, weight_scale, norm_bias_noise):
        """nanoGPT's init (N(0, 0.02), residual projections N(0, 0.02/sqrt(2L)), biases 0,
        LayerNorm 1/0), then scaled and perturbed so every gradient is exercised."""
        with torch.no_grad():
            for name, p in self.named_parameters():
                if p.dim() >= 2:
                    std = 0.02 / math.sqrt(2 * self.n_layer) if name.endswith("c_proj.weight") else 0.02
                    p.copy_(torch.randn(p.shape, generator=generator) * std * weight_scale)
                else:
                    base = 1.0 if (".ln_" in name or "ln_f" in name) and name.endswith(".weight") else 0.0
                    p.copy_(base + norm_bias_noise * torch.randn(p.shape, generator=generator))

    def embed(self, idx):
        B, T = idx.shape
        assert T <= self.ctx
        pos = torch.arange(T, dtype=torch.long)
        return self.transformer.wte(idx) + self.transformer.wpe(pos)

    def head(self, x):
        return self.lm_head(self.transformer.ln_f(x))

    def forward(self, idx, targets=None):
        x = self.embed(idx)
        for block in self.transformer.h:
            x = block(x)
        logits = self.head(x)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))
        return logits, loss


# The matrices the default scheme quantizes (README: Quantization; scope linear,head); everything
# else stays float.
QUANTIZED_SUFFIXES = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def is_default_quantized(name):
    return name == "lm_head.weight" or (name.startswith("transformer.h.") and name.endswith(QUANTIZED_SUFFIXES))


# ---- safetensors, by hand: 8-byte little-endian header length, JSON header, raw F32 data ----
def write_safetensors(path, tensors, metadata):
    """tensors: list of (name, float32 numpy array), written in this order."""
    header = {"__metadata__": {k: str(v) for k, v in metadata.items()}}
    offset, blobs = 0, []
    for name, array in tensors:
        data = np.ascontiguousarray(array, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(np.shape(array)), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # tensor data starts 8-byte aligned, as gpt_save pads it
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)
    os.replace(tmp, path)


def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    metadata = header.pop("__metadata__", {})
    base = 8 + n
    tensors = {}
    for name, entry in header.items():
        assert entry["dtype"] == "F32", name
        begin, end = entry["data_offsets"]
        tensors[name] = np.frombuffer(raw[base + begin:base + end], dtype="<f4").reshape(entry["shape"]).copy()
    return tensors, metadata


def checkpoint_metadata(config, vocab=VOCAB):
    # exactly the keys src/io/checkpoint.c gpt_save writes, in its order
    return {
        "format": "pt",
        "qcorr_format": "1",
        "d_model": config["d_model"],
        "n_layer": config["n_layer"],
        "n_head": config["n_head"],
        "ctx": config["ctx"],
        "vocab_size": config["vocab_size"],
        "vocab": vocab,
    }


def checkpoint_order(model):
    """gpt_save's order: embeddings, the blocks, then ln_f and the head."""
    names = [n for n, _ in model.named_parameters()]
    head = [n for n in names if n.startswith("transformer.ln_f") or n.startswith("lm_head")]
    return [n for n in names if n not in head] + head


def save_gpt(path, model, vocab=VOCAB, state=None):
    """A qcorr float checkpoint of model (or of `state`, a name -> tensor dict in its layout)."""
    state = state if state is not None else {n: p.detach() for n, p in model.named_parameters()}
    write_safetensors(path, [(n, state[n].float().numpy()) for n in checkpoint_order(model)],
                      checkpoint_metadata(model.config, vocab))


def load_gpt(path, dtype=torch.float32):
    """A GPT from a qcorr float checkpoint, loaded with strict=True."""
    tensors, meta = read_safetensors(path)
    model = GPT(**{k: int(meta[k]) for k in ("vocab_size", "ctx", "d_model", "n_layer", "n_head")})
    model.load_state_dict({n: torch.from_numpy(a) for n, a in tensors.items()}, strict=True)
    return model.to(dtype), meta["vocab"]


def clone_gpt(model, dtype=None):
    other = GPT(**model.config)
    other.load_state_dict({n: p.detach().clone() for n, p in model.state_dict().items()}, strict=True)
    return other.to(dtype) if dtype is not None else other


# ---- storage formats: rounding a float64 value to f32 / f16 / bf16 ----
# (mantissa bits, smallest normal exponent, largest finite value); "f64" keeps the double as is.
FORMATS = {
    "f32": (23, -126, float(np.finfo(np.float32).max)),
    "f16": (10, -14, 65504.0),
    "bf16": (7, -126, float.fromhex("0x1.fep127")),
}
SCALE_DTYPES = ("f64", "f32", "f16", "bf16")


def round_to_dtype(x, dtype):
    """Rounds float64 values to the nearest value of `dtype`, ties to even, subnormals included;
    a value beyond the largest finite one saturates to it (never inf). Exact: the quantum is a
    power of two, so x / quantum is exact and np.rint (ties to even) is the only rounding."""
    x = np.asarray(x, dtype=np.float64)
    if dtype == "f64":
        return x.copy()
    mantissa, emin, largest = FORMATS[dtype]
    _, e = np.frexp(x)                          # x = m 2^e, 0.5 <= |m| < 1: leading bit 2^(e-1)
    lead = np.maximum(e - 1, emin)              # subnormals share the smallest exponent's quantum
    quantum = np.ldexp(1.0, lead - mantissa)
    r = np.rint(x / quantum) * quantum
    r = np.where(x == 0, 0.0, r)
    return np.clip(r, -largest, largest)


def check_round_to_dtype():
    """round_to_dtype against numpy's and torch's own conversions where those round once."""
    rng = np.random.default_rng(7)
    x = np.concatenate([rng.standard_normal(20000) * 10.0 ** rng.integers(-12, 6, 20000),
                        np.ldexp(rng.integers(1, 1 << 12, 2000).astype(np.float64) + 0.5, -34)])  # f16 ties
    finite16 = np.abs(x) <= 65504
    assert np.array_equal(round_to_dtype(x[finite16], "f16"), x[finite16].astype(np.float16).astype(np.float64))
    assert np.array_equal(round_to_dtype(x, "f32"), x.astype(np.float32).astype(np.float64))
    x32 = x.astype(np.float32).astype(np.float64)  # torch rounds to bf16 from float32: exact inputs only
    want = torch.from_numpy(x32).float().to(torch.bfloat16).double().numpy()
    assert np.array_equal(round_to_dtype(x32, "bf16"), want)
    assert round_to_dtype(1e6, "f16") == 65504.0 and round_to_dtype(65519.9, "f16") == 65504.0
    assert round_to_dtype(2.0 ** -25, "f16") == 0.0 and round_to_dtype(2.0 ** -24, "f16") == 2.0 ** -24


# ---- comparisons for the self-checks ----
def max_rel(a, b, floor):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float((np.abs(a - b) / np.maximum(np.abs(b), floor)).max())


def tensor_rel(a, b, floor_fraction=1e-2):
    """The C tests' measure: max |a-b| / max(|b|, floor_fraction * max|b|)."""
    b = np.asarray(b, dtype=np.float64)
    return max_rel(a, b, max(floor_fraction * float(np.abs(b).max()), 1e-30))


def set_deterministic():
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
