"""References `corrections` (README: Correction layers: linear and MLP stream corrections inside a
frozen GPT, the ce / kl / mse objectives and their gradients) and `lstsq` (the closed-form QwT
baseline). Written from the README, not from src/. Fixture layout: tools/pytorch_reference.py."""
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import ref_gpt
import ref_models
from ref_common import clone_gpt, tensor_rel, write_safetensors


def site_blocks(n_layer, every):
    """A site after block i when (i+1) % every == 0, and always after the last block."""
    return [i for i in range(n_layer) if (i + 1) % every == 0 or i == n_layer - 1]


class StreamCorrection(nn.Module):
    """hidden 0: x + x W^T + b (nn.Linear(d, d)); hidden h: x + gelu_tanh(x W1^T + b1) W2^T + b2."""

    def __init__(self, d, hidden):
        super().__init__()
        self.hidden = hidden
        if hidden == 0:
            self.linear = nn.Linear(d, d)
        else:
            self.fc = nn.Linear(d, hidden)
            self.proj = nn.Linear(hidden, d)

    def forward(self, x):
        if self.hidden == 0:
            return x + self.linear(x)
        return x + self.proj(F.gelu(self.fc(x), approximate="tanh"))

    def checkpoint_tensors(self, j):
        """(qcorr checkpoint name, parameter) pairs: corrections.{j}.weight|bias or .fc.* / .proj.*"""
        if self.hidden == 0:
            return [(f"corrections.{j}.weight", self.linear.weight), (f"corrections.{j}.bias", self.linear.bias)]
        return [(f"corrections.{j}.fc.weight", self.fc.weight), (f"corrections.{j}.fc.bias", self.fc.bias),
                (f"corrections.{j}.proj.weight", self.proj.weight), (f"corrections.{j}.proj.bias", self.proj.bias)]


class CorrectedGPT(nn.Module):
    """A frozen GPT with a StreamCorrection after each site block."""

    def __init__(self, base, every, hidden):
        super().__init__()
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        self.blocks = site_blocks(base.n_layer, every)
        self.sites = nn.ModuleList([StreamCorrection(base.config["d_model"], hidden) for _ in self.blocks])
        self.sites.to(next(base.parameters()).dtype)

    def checkpoint_tensors(self):
        return [pair for j, site in enumerate(self.sites) for pair in site.checkpoint_tensors(j)]

    def forward(self, idx, n_blocks=None):
        """(logits or None, [stream before site j's correction], [stream after it]); n_blocks stops
        after that many blocks (with their sites), before the head."""
        x = self.base.embed(idx)
        before, after = [], []
        L = self.base.n_layer if n_blocks is None else n_blocks
        for i in range(L):
            x = self.base.transformer.h[i](x)
            if i in self.blocks:
                before.append(x)
                x = self.sites[self.blocks.index(i)](x)
                after.append(x)
        logits = self.base.head(x) if n_blocks is None else None
        return logits, before, after


def block_streams(model, idx):
    """The stream after every block of a plain GPT."""
    x, out = model.embed(idx), []
    for block in model.transformer.h:
        x = block(x)
        out.append(x)
    return out


def objective(name, corrected, float_model, idx, targets):
    """ce: mean next-token cross-entropy; kl: mean over positions of KL(p_float || p_corrected);
    mse: mean over sites of the per-site mean squared error between the stream after the site's
    correction and the float model's stream after the same block."""
    logits, _, after = corrected(idx)
    if name == "ce":
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))
    with torch.no_grad():
        if name == "kl":
            target_logits, _ = float_model(idx)
        else:
            streams = block_streams(float_model, idx)
    if name == "kl":
        log_p = F.log_softmax(target_logits, dim=-1)
        log_q = F.log_softmax(logits, dim=-1)
        return (log_p.exp() * (log_p - log_q)).sum(-1).mean()
    return sum(((a - streams[b]) ** 2).mean() for a, b in zip(after, corrected.blocks)) / len(after)


# ---- fixture: corrections ----
CORRECTIONS_FILE = "corrections_expected.safetensors"
CORRECTION_CONFIGS = [(1, 0), (1, 16), (2, 0), (2, 16)]  # (every, hidden) on the 2-block tiny model
OBJECTIVES = ("ce", "kl", "mse")
CORRECTION_SEED = 777


def config_name(every, hidden):
    return f"every{every}.hidden{hidden}"


def random_corrections(corrected, generator):
    """Non-zero corrections, so every path (W, b, both MLP layers, a site's effect on the stream the
    next site reads) carries a gradient: linear N(0, 0.1); MLP fc N(0, 0.3), proj N(0, 0.1)."""
    with torch.no_grad():
        for site in corrected.sites:
            for name, p in site.named_parameters():
                p.copy_(torch.randn(p.shape, generator=generator) * (0.3 if name.startswith("fc") else 0.1))


def corrections_case(float_model, quant_model, every, hidden, state, idx, targets):
    """logits and, per objective, (value, {checkpoint name: gradient}) for one configuration."""
    corrected = CorrectedGPT(quant_model, every, hidden)
    with torch.no_grad():
        for name, p in corrected.checkpoint_tensors():
            p.copy_(state[name])
    with torch.no_grad():
        logits, _, _ = corrected(idx)
    results = {}
    for obj in OBJECTIVES:
        corrected.zero_grad(set_to_none=True)
        value = objective(obj, corrected, float_model, idx, targets)
        value.backward()
        results[obj] = (value.item(), {n: p.grad.detach().clone() for n, p in corrected.checkpoint_tensors()})
    return logits, results


def write_corrections(out):
    float_model, quant_model = ref_models.tiny_models()
    quant_path = ref_models.write_tiny_quant(out)
    _, inputs, targets = ref_gpt.tiny_model_and_batch()
    generator = torch.Generator().manual_seed(CORRECTION_SEED)
    float64, quant64 = clone_gpt(float_model, torch.float64), clone_gpt(quant_model, torch.float64)
    tensors = [("inputs", inputs.float().numpy()), ("targets", targets.float().numpy())]
    worst = {}
    for every, hidden in CORRECTION_CONFIGS:
        cfg = config_name(every, hidden)
        corrected = CorrectedGPT(quant_model, every, hidden)
        random_corrections(corrected, generator)
        state = {n: p.detach().clone() for n, p in corrected.checkpoint_tensors()}
        logits, results = corrections_case(float_model, quant_model, every, hidden, state, inputs, targets)
        logits64, results64 = corrections_case(float64, quant64, every, hidden, {n: t.double() for n, t in state.items()},
                                               inputs, targets)
        tensors += [(f"{cfg}.{n}", t.numpy()) for n, t in state.items()]
        tensors.append((f"{cfg}.logits", logits.numpy()))
        worst["logits"] = max(worst.get("logits", 0), tensor_rel(logits.numpy(), logits64.numpy()))
        for obj in OBJECTIVES:
            value, grads = results[obj]
            value64, grads64 = results64[obj]
            tensors.append((f"{cfg}.{obj}.value", np.array([value], dtype=np.float32)))
            worst[obj + " value"] = max(worst.get(obj + " value", 0), abs(value - value64) / abs(value64))
            for n, g in grads.items():
                tensors.append((f"{cfg}.{obj}.grad.{n}", g.numpy()))
                worst[obj + " grads"] = max(worst.get(obj + " grads", 0), tensor_rel(g.numpy(), grads64[n].numpy()))
                assert float(g.abs().max()) > 1e-4, f"{cfg} {obj} {n}: gradient vanishes, the test would be weak"
            print(f"corrections {cfg} {obj}: objective {value:.6f}")
    for key, value in worst.items():
        print(f"corrections: float32 vs float64, {key}: max rel {value:.2e} (tensors: floor 1e-2 x the tensor's max)")
    path = os.path.join(out, CORRECTIONS_FILE)
    meta = {
        "generator": "tools/pytorch_reference.py corrections",
        "float_model": ref_models.TINY_FLOAT_FILE, "quant_model": ref_models.TINY_QUANT_FILE,
        "quantization": ref_models.QUANT_DESCRIPTION,
        "configs": ",".join(config_name(e, h) for e, h in CORRECTION_CONFIGS),
        "objectives": ",".join(OBJECTIVES),
        "ce": "mean next-token cross-entropy over the B*T positions",
        "kl": "mean over positions of KL(p_float || p_corrected), p_float from the float model",
        "mse": "mean over sites of mean((stream after site j's correction - float stream after the same block)^2)",
    }
    write_safetensors(path, tensors, meta)
    return [quant_path, path]


# ---- fixture: lstsq ----
LSTSQ_FILE = "lstsq_expected.safetensors"
LSTSQ_RIDGES = (1e-4, 1e-1)
LSTSQ_WINDOWS = 2          # calibration windows; the corpus admits one window, so both are window 0
LSTSQ_CORPUS_SEED = 99


def lstsq_corpus():
    """A text whose train split (the first floor(0.9 n) bytes) is exactly T+1 bytes, so any
    sampler of (T+1)-byte calibration windows from it must return the window at 0."""
    T = ref_models.SMALL_CONFIG["ctx"]
    n = next(n for n in range(T + 1, 4 * T) if int(0.9 * n) == T + 1)
    return ref_models.synthetic_text(n, LSTSQ_CORPUS_SEED)


def lstsq_reference(float_model, quant_model, windows, every, ridge):
    """Per site in order: X the quantized stream after the site's block (earlier sites corrected),
    Y the float one; Z = [X 1], R = Y - X; solve (Z^T Z + diag(lambda,..,lambda, 0)) W = Z^T R in
    float64 with lambda = ridge * trace(X^T X) / d; weight = W[:d]^T, bias = W[d], stored as
    float32 and applied as such to the later sites' streams. Returns {checkpoint name: tensor}."""
    d = float_model.config["d_model"]
    corrected = CorrectedGPT(quant_model, every, 0)
    with torch.no_grad():
        for p in corrected.parameters():
            if p.requires_grad:
                p.zero_()
        for j, block in enumerate(corrected.blocks):
            _, before, _ = corrected(windows, n_blocks=block + 1)
            x = before[j].reshape(-1, d).double()
            y = block_streams(float_model, windows)[block].reshape(-1, d).double()
            z = torch.cat([x, torch.ones(x.shape[0], 1, dtype=torch.float64)], dim=1)
            gram = z.T @ z
            lam = ridge * torch.trace(gram[:d, :d]) / d
            gram[:d, :d] += lam * torch.eye(d, dtype=torch.float64)
            solution = torch.linalg.solve(gram, z.T @ (y - x))
            site = corrected.sites[j].linear
            site.weight.copy_(solution[:d].T.to(site.weight.dtype))
            site.bias.copy_(solution[d].to(site.bias.dtype))
    return {n: p.detach().clone() for n, p in corrected.checkpoint_tensors()}


def write_lstsq(out):
    paths = ref_models.write_small(out)
    float_model, quant_model = ref_models.small_models()
    T = ref_models.SMALL_CONFIG["ctx"]
    text = lstsq_corpus()
    ids = ref_models.encode(text)
    windows = torch.stack([ids[:T]] * LSTSQ_WINDOWS)
    float64, quant64 = clone_gpt(float_model, torch.float64), clone_gpt(quant_model, torch.float64)
    tensors = [("corpus_bytes", np.frombuffer(text.encode("ascii"), dtype=np.uint8).astype(np.float32))]
    for ridge in LSTSQ_RIDGES:
        for every in (1, 2):
            got = lstsq_reference(float_model, quant_model, windows, every, ridge)
            exact = lstsq_reference(float64, quant64, windows, every, ridge)
            once = lstsq_reference(float_model, quant_model, windows[:1], every, ridge)
            rel = max(tensor_rel(t.numpy(), exact[n].numpy()) for n, t in got.items())
            dup = max(tensor_rel(t.numpy(), once[n].numpy()) for n, t in got.items())
            biggest = max(float(t.abs().max()) for t in got.values())
            print(f"lstsq ridge {ridge:g} every {every}: largest parameter {biggest:.3f}; float32 streams vs float64: "
                  f"max rel {rel:.2e}; {LSTSQ_WINDOWS} copies of the window vs one: max rel {dup:.2e}")
            tensors += [(f"ridge{ridge:g}.every{every}.{n}", t.numpy()) for n, t in got.items()]
    path = os.path.join(out, LSTSQ_FILE)
    meta = {
        "generator": "tools/pytorch_reference.py lstsq",
        "float_model": ref_models.SMALL_FLOAT_FILE, "quant_model": ref_models.SMALL_QUANT_FILE,
        "quantization": ref_models.QUANT_DESCRIPTION,
        "ridges": ",".join(f"{r:g}" for r in LSTSQ_RIDGES), "calib_windows": LSTSQ_WINDOWS,
        "corpus": "corpus_bytes: floor(0.9 n) = T + 1, so every calibration window starts at 0",
        "lambda": "ridge * trace(X^T X) / d over the d weight coordinates; the bias is not shrunk",
    }
    write_safetensors(path, tensors, meta)
    return paths + [path]
