#!/usr/bin/python3
"""PyTorch reference for qcorr's float engine (SPEC section 2), as llm.c's train_gpt2.py is for
test_gpt2.c: writes the fixtures that tests/test_parity.c compares the C engine against.

Run from the repository root with Debian's Python (python3-torch, python3-numpy):

    /usr/bin/python3 tools/pytorch_reference.py [--out tests/fixtures]

It writes two safetensors files:
  gpt_tiny_init.safetensors      the initial weights as a qcorr checkpoint (the metadata keys
                                 and tensor names that src/checkpoint.c gpt_save writes), so
                                 gpt_load reads it like any checkpoint;
  gpt_tiny_expected.safetensors  what PyTorch computes from it, all F32:
      inputs, targets     (B,T) token ids stored as float32 (exact: ids < 2^24)
      logits              (B,T,V) of the forward pass
      loss                (1)   mean cross-entropy over the B*T positions
      grad.<param name>   d loss / d param, for every parameter, same shape as the parameter
      step_losses         (10)  the loss before each of 10 AdamW steps on the same batch
      step_grad_norms     (10)  the global gradient norm (before clipping) at each of them
    and, in __metadata__, the optimizer settings the C side must reproduce.

The optimizer is torch.optim.AdamW at a constant learning rate (no schedule), betas (0.9, 0.95),
eps 1e-8, weight decay 0.1 on every parameter with dim >= 2 (the matrices and both embeddings,
as nanoGPT's configure_optimizers does) and 0 on the rest, after
torch.nn.utils.clip_grad_norm_(params, 1.0) each step. Step s (1-based) is: zero grads, forward,
loss -> step_losses[s-1], backward, clip (norm -> step_grad_norms[s-1]), AdamW update with step
count s. In C: gpt_optimizer_step(m, LR, 0.1f, 1.0f, s).

The model below is written from the spec (nanoGPT layout), not from the C code. The script checks
itself: the checkpoint it wrote is read back, loaded with load_state_dict(strict=True) into a
fresh module and must give bit-identical logits; it also reruns everything in float64 to print
how far float32 itself is from exact (the noise the C test's tolerances must allow), and how
much the 10-step losses move when weight decay, decay on embeddings or clipping is switched off
(so a C optimizer that gets any of them wrong cannot pass the 1e-4 check).
"""
import argparse
import json
import math
import os
import struct
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# ---- the fixture's configuration (small: the two files together stay well under 1 MB) ----
VOCAB = "\n !',.:?ABCab"  # V distinct ASCII characters, sorted ascending by byte value
CONFIG = dict(vocab_size=len(VOCAB), ctx=16, d_model=32, n_layer=2, n_head=4)
BATCH, SEQ = 3, 16
SEED = 1337
LR = 1e-2            # constant: large enough that 10 steps move the loss well past the tolerance
WEIGHT_DECAY = 0.1
GRAD_CLIP = 1.0
BETAS = (0.9, 0.95)
ADAM_EPS = 1e-8
STEPS = 10
WEIGHT_SCALE = 5.0   # nanoGPT init (std 0.02) times this: activations away from 0, GELU non-linear
NORM_BIAS_NOISE = 0.1  # added to LayerNorm weights/biases and linear biases, so their grads matter

INIT_FILE = "gpt_tiny_init.safetensors"
EXPECTED_FILE = "gpt_tiny_expected.safetensors"


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
        self.ctx = ctx
        self.n_layer = n_layer
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(vocab_size, d_model),
            wpe=nn.Embedding(ctx, d_model),
            h=nn.ModuleList([Block(d_model, n_head, ctx) for _ in range(n_layer)]),
            ln_f=nn.LayerNorm(d_model, eps=1e-5),
        ))
        self.lm_head = nn.Linear(d_model, vocab_size, bias=True)  # untied from wte

    def init_weights(self, generator):
        """nanoGPT's init (N(0, 0.02), residual projections N(0, 0.02/sqrt(2L)), biases 0,
        LayerNorm 1/0), then scaled and perturbed so every gradient is exercised."""
        with torch.no_grad():
            for name, p in self.named_parameters():
                if p.dim() >= 2:
                    std = 0.02 / math.sqrt(2 * self.n_layer) if name.endswith("c_proj.weight") else 0.02
                    p.copy_(torch.randn(p.shape, generator=generator) * std * WEIGHT_SCALE)
                else:
                    base = 1.0 if (".ln_" in name or "ln_f" in name) and name.endswith(".weight") else 0.0
                    p.copy_(base + NORM_BIAS_NOISE * torch.randn(p.shape, generator=generator))

    def forward(self, idx, targets=None):
        B, T = idx.shape
        assert T <= self.ctx
        pos = torch.arange(T, dtype=torch.long)
        x = self.transformer.wte(idx) + self.transformer.wpe(pos)
        for block in self.transformer.h:
            x = block(x)
        logits = self.lm_head(self.transformer.ln_f(x))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))
        return logits, loss


def make_optimizer(model, weight_decay, decay_embeddings=True):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        is_embedding = name.startswith("transformer.wte") or name.startswith("transformer.wpe")
        (decay if p.dim() >= 2 and (decay_embeddings or not is_embedding) else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=LR, betas=BETAS, eps=ADAM_EPS)


def train_steps(model, inputs, targets, weight_decay=WEIGHT_DECAY, decay_embeddings=True, clip=GRAD_CLIP):
    opt = make_optimizer(model, weight_decay, decay_embeddings)
    losses, norms = [], []
    for _ in range(STEPS):
        opt.zero_grad(set_to_none=True)
        _, loss = model(inputs, targets)
        losses.append(loss.item())
        loss.backward()
        if clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        else:
            norm = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in model.parameters()))
        norms.append(float(norm))
        opt.step()
    return losses, norms


# ---- safetensors, by hand: 8-byte little-endian header length, JSON header, raw F32 data ----
def write_safetensors(path, tensors, metadata):
    """tensors: list of (name, float32 numpy array), written in this order."""
    header = {"__metadata__": {k: str(v) for k, v in metadata.items()}}
    offset, blobs = 0, []
    for name, array in tensors:
        data = np.ascontiguousarray(array, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(array.shape), "data_offsets": [offset, offset + len(data)]}
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


def checkpoint_metadata():
    # exactly the keys src/checkpoint.c gpt_save writes, in its order
    return {
        "format": "pt",
        "qcorr_format": "1",
        "d_model": CONFIG["d_model"],
        "n_layer": CONFIG["n_layer"],
        "n_head": CONFIG["n_head"],
        "ctx": CONFIG["ctx"],
        "vocab_size": CONFIG["vocab_size"],
        "vocab": VOCAB,
    }


def checkpoint_order(model):
    """gpt_save's order: embeddings, the blocks, then ln_f and the head."""
    names = [n for n, _ in model.named_parameters()]
    head = [n for n in names if n.startswith("transformer.ln_f") or n.startswith("lm_head")]
    return [n for n in names if n not in head] + head


def max_rel(a, b, floor):
    return float((np.abs(a - b) / np.maximum(np.abs(b), floor)).max())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="tests/fixtures", help="fixture directory (default tests/fixtures)")
    args = parser.parse_args()
    assert len(set(VOCAB)) == len(VOCAB) and list(VOCAB) == sorted(VOCAB) and all(0 < ord(c) < 128 for c in VOCAB)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    os.makedirs(args.out, exist_ok=True)

    generator = torch.Generator().manual_seed(SEED)
    model = GPT(**CONFIG)
    model.init_weights(generator)
    V, B, T = CONFIG["vocab_size"], BATCH, SEQ
    # a window of B*T+1 random tokens, cut into B rows; targets are inputs shifted by one
    stream = torch.randint(0, V, (B, T + 1), generator=generator)
    inputs, targets = stream[:, :-1].contiguous(), stream[:, 1:].contiguous()
    init_state = {n: p.detach().clone() for n, p in model.named_parameters()}

    # forward + backward at the initial weights
    model.zero_grad(set_to_none=True)
    logits, loss = model(inputs, targets)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    logits = logits.detach()
    losses, norms = train_steps(model, inputs, targets)
    assert losses[0] == loss.item()
    print(f"loss {loss.item():.6f}; 10-step losses {' '.join(f'{x:.5f}' for x in losses)}")
    print(f"grad norms {' '.join(f'{x:.4f}' for x in norms)} (clipped at {GRAD_CLIP}: "
          f"{sum(x > GRAD_CLIP for x in norms)} of {STEPS} steps)")

    order = checkpoint_order(model)
    init_path = os.path.join(args.out, INIT_FILE)
    write_safetensors(init_path, [(n, init_state[n].numpy()) for n in order], checkpoint_metadata())
    expected = [("inputs", inputs.float().numpy()), ("targets", targets.float().numpy()),
                ("logits", logits.numpy()), ("loss", np.array([loss.item()], dtype=np.float32))]
    expected += [("grad." + n, grads[n].numpy()) for n in order]
    expected += [("step_losses", np.array(losses, dtype=np.float32)),
                 ("step_grad_norms", np.array(norms, dtype=np.float32))]
    meta = {
        "generator": "tools/pytorch_reference.py", "torch": torch.__version__, "seed": SEED,
        "batch": B, "seq": T, "steps": STEPS, "lr": LR, "lr_schedule": "constant",
        "weight_decay": WEIGHT_DECAY, "decay": "params with dim >= 2 (matrices and embeddings)",
        "grad_clip": GRAD_CLIP, "beta1": BETAS[0], "beta2": BETAS[1], "eps": ADAM_EPS,
        "step_losses": "loss of the forward pass before AdamW step s = 1..steps",
        "step_grad_norms": "global gradient norm before clipping at step s",
    }
    expected_path = os.path.join(args.out, EXPECTED_FILE)
    write_safetensors(expected_path, expected, meta)

    # ---- self-check 1: the checkpoint loads strictly and reproduces the outputs bit for bit ----
    tensors, metadata = read_safetensors(init_path)
    assert metadata == {k: str(v) for k, v in checkpoint_metadata().items()}
    fresh = GPT(**{k: int(metadata[k]) for k in ("vocab_size", "ctx", "d_model", "n_layer", "n_head")})
    fresh.load_state_dict({n: torch.from_numpy(a) for n, a in tensors.items()}, strict=True)
    reread, _ = read_safetensors(expected_path)
    inputs2 = torch.from_numpy(reread["inputs"]).long()
    targets2 = torch.from_numpy(reread["targets"]).long()
    assert torch.equal(inputs2, inputs) and torch.equal(targets2, targets)
    with torch.no_grad():
        logits2, loss2 = fresh(inputs2, targets2)
    assert torch.equal(logits2, logits), "reloaded checkpoint gives different logits"
    assert loss2.item() == loss.item()
    print(f"self-check: {init_path} loads with strict=True and gives identical logits and loss")

    # ---- self-check 2: float32 vs float64, the noise floor the C test's tolerances must allow ----
    model64 = GPT(**CONFIG).double()
    model64.load_state_dict({n: t.double() for n, t in init_state.items()}, strict=True)
    logits64, loss64 = model64(inputs, targets)
    loss64.backward()
    print(f"float32 vs float64: loss {abs(loss.item() - loss64.item()):.2e} abs; logits max rel "
          f"{max_rel(logits.numpy(), logits64.detach().numpy(), 1e-2):.2e} (floor 1e-2)")
    worst = max((max_rel(grads[n].numpy(), p.grad.numpy(), 1e-2 * float(p.grad.abs().max())), n)
                for n, p in model64.named_parameters())
    print(f"float32 vs float64: worst gradient max rel {worst[0]:.2e} ({worst[1]}; floor 1e-2 x the tensor's max)")
    losses64, _ = train_steps(model64, inputs, targets)
    print(f"float32 vs float64: 10-step losses max abs {max(abs(a - b) for a, b in zip(losses, losses64)):.2e}")

    # ---- sensitivity: each optimizer detail moves the 10-step losses by far more than 1e-4 ----
    for label, kwargs in [("no weight decay", dict(weight_decay=0.0)),
                          ("no decay on embeddings", dict(decay_embeddings=False)),
                          ("no clipping", dict(clip=0.0))]:
        other = GPT(**CONFIG)
        other.load_state_dict(init_state, strict=True)
        alt, _ = train_steps(other, inputs, targets, **kwargs)
        print(f"sensitivity: {label}: 10-step losses move by up to {max(abs(a - b) for a, b in zip(losses, alt)):.2e}")

    for path in (init_path, expected_path):
        print(f"wrote {path} ({os.path.getsize(path)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
