"""The transforms of README: Transforms, written from the README and the papers (SmoothQuant,
Xiao et al. 2023; QuaRot, Ashkboos et al. 2024; SliceGPT's LayerNorm handling) with explicit
matrices in float64: the Walsh-Hadamard matrix by Sylvester's construction (no butterflies), the
rotation Q = H D H, the centering M = I - 11^T/C, each fold as a matrix product. The fixture holds
every tensor of the tiny model after each transform and the loss of the transformed model (its
forward applying the online H D at the c_proj inputs), which must equal the float model's."""
import math

import numpy as np
import torch
import torch.nn.functional as F

import ref_common

MASK64 = (1 << 64) - 1


class Rng:
    """qcorr's seeded generator (README: Transforms names it): splitmix64 of the seed, then xorshift64*."""

    def __init__(self, seed):
        z = (seed + 0x9E3779B97F4A7C15) & MASK64
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        z ^= z >> 31
        self.state = z if z else 0x2545F4914F6CDD1D

    def u32(self):
        s = self.state
        s ^= s >> 12
        s ^= (s << 25) & MASK64
        s ^= s >> 27
        self.state = s
        return ((s * 0x2545F4914F6CDD1D) & MASK64) >> 32


def signs(seed, linear, n):
    """The +-1 signs of linear layer `linear`'s online transform (linear -1: the stream rotation's)."""
    rng = Rng(seed ^ ((0x9E3779B97F4A7C15 * (linear + 1)) & MASK64))
    return np.array([-1.0 if rng.u32() & 0x80000000 else 1.0 for _ in range(n)])


def hadamard(n):
    """The normalized Walsh-Hadamard matrix of order n (a power of two), Sylvester's construction."""
    h = np.array([[1.0]])
    while h.shape[0] < n:
        h = np.block([[h, h], [h, -h]])
    return h / math.sqrt(n)


def linear_index(layer, slot):
    return layer * 4 + slot  # slots: c_attn 0, attn.c_proj 1, c_fc 2, mlp.c_proj 3; lm_head 4 L


def state64(model):
    return {n: p.detach().double().numpy().copy() for n, p in model.named_parameters()}


def forward_loss(state, cfg, idx, targets, online_seed=None, capture=None):
    """The GPT's loss from a name -> array state (float64); online_seed: the c_proj inputs read H D x.
    capture: a dict that gets, per linear index, the rows each matrix reads."""
    L, C, NH = cfg["n_layer"], cfg["d_model"], cfg["n_head"]
    t = {n: torch.from_numpy(a) for n, a in state.items()}
    B, T = idx.shape
    hs = C // NH

    def lin(x, prefix, index):
        if online_seed is not None and index % 4 in (1, 3) and index < 4 * L:
            n = x.shape[-1]
            rot = torch.from_numpy(np.diag(signs(online_seed, index, n)) @ hadamard(n))  # row x^T D H = (H D x)^T
            x = x @ rot
        if capture is not None:
            capture.setdefault(index, []).append(x.reshape(-1, x.shape[-1]).clone())
        return x @ t[prefix + ".weight"].T + t[prefix + ".bias"]

    def ln(x, prefix):
        return F.layer_norm(x, (C,), t[prefix + ".weight"], t[prefix + ".bias"], eps=1e-5)

    x = t["transformer.wte.weight"][idx] + t["transformer.wpe.weight"][:T]
    mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
    for l in range(L):
        p = f"transformer.h.{l}."
        qkv = lin(ln(x, p + "ln_1"), p + "attn.c_attn", linear_index(l, 0))
        q, k, v = [u.view(B, T, NH, hs).transpose(1, 2) for u in qkv.split(C, dim=2)]
        att = (q @ k.transpose(-2, -1)) / math.sqrt(hs)
        att = F.softmax(att.masked_fill(~mask, float("-inf")), dim=-1)
        y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)
        x = x + lin(y, p + "attn.c_proj", linear_index(l, 1))
        h = F.gelu(lin(ln(x, p + "ln_2"), p + "mlp.c_fc", linear_index(l, 2)), approximate="tanh")
        x = x + lin(h, p + "mlp.c_proj", linear_index(l, 3))
    logits = lin(ln(x, "transformer.ln_f"), "lm_head", 4 * L)
    return float(F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1)))


def rotate_stream(state, cfg, seed):
    """x -> Q x on the stream, Q = H D H (so Q 1 = d_0 1: a centered stream stays centered), after
    centering every writer."""
    L, C = cfg["n_layer"], cfg["d_model"]
    d = signs(seed, -1, C)
    H = hadamard(C)
    Q = H @ np.diag(d) @ H
    M = np.eye(C) - np.ones((C, C)) / C
    QM = Q @ M
    s = dict(state)
    for name in ("transformer.wte.weight", "transformer.wpe.weight"):
        s[name] = state[name] @ QM.T

    def reader(w, ln):
        g, b = state[ln + ".weight"], state[ln + ".bias"]
        s[w + ".bias"] = state[w + ".bias"] + state[w + ".weight"] @ b
        s[w + ".weight"] = state[w + ".weight"] @ np.diag(g) @ Q
        s[ln + ".weight"] = np.ones(C)
        s[ln + ".bias"] = np.zeros(C)

    def writer(w):
        s[w + ".weight"] = QM @ state[w + ".weight"]
        s[w + ".bias"] = QM @ state[w + ".bias"]

    for l in range(L):
        p = f"transformer.h.{l}."
        reader(p + "attn.c_attn", p + "ln_1")
        writer(p + "attn.c_proj")
        reader(p + "mlp.c_fc", p + "ln_2")
        writer(p + "mlp.c_proj")
    reader("lm_head", "transformer.ln_f")
    return s


def rotate_online(state, cfg, seed):
    """W x = (W D H)(H D x) at the inputs of attn.c_proj and mlp.c_proj."""
    s = dict(state)
    for l in range(cfg["n_layer"]):
        for slot, name in ((1, "attn.c_proj"), (3, "mlp.c_proj")):
            w = f"transformer.h.{l}.{name}.weight"
            n = state[w].shape[1]
            s[w] = state[w] @ np.diag(signs(seed, linear_index(l, slot), n)) @ hadamard(n)
    return s


def smooth(state, cfg, calib, alpha, online_seed):
    """SmoothQuant: s_j = max|x_j|^alpha / max_i |W_ij|^(1-alpha) over the calibration windows;
    x / s folded into the LayerNorm before (c_attn, c_fc, lm_head) or into V's rows (attn.c_proj,
    unless it reads the online transform); W diag(s). The scales of a block's c_attn come from its
    weight before V is divided."""
    L, C = cfg["n_layer"], cfg["d_model"]
    capture = {}
    forward_loss(state, cfg, calib, calib, online_seed, capture)
    absmax = {i: torch.cat(rows).abs().amax(dim=0).numpy() for i, rows in capture.items()}
    s = {n: a.copy() for n, a in state.items()}

    def scales(i, w):
        wmax = np.abs(w).max(axis=0)
        out = absmax[i] ** alpha / wmax ** (1.0 - alpha)
        return np.where((absmax[i] > 0) & (wmax > 0), out, 1.0)

    def norm(i, w, ln):
        sc = scales(i, s[w])
        s[ln + ".weight"] = s[ln + ".weight"] / sc
        s[ln + ".bias"] = s[ln + ".bias"] / sc
        s[w] = s[w] * sc[None, :]

    for l in range(L):
        p = f"transformer.h.{l}."
        norm(linear_index(l, 0), p + "attn.c_attn.weight", p + "ln_1")
        if online_seed is None:
            sc = scales(linear_index(l, 1), s[p + "attn.c_proj.weight"])
            s[p + "attn.c_attn.weight"][2 * C:] /= sc[:, None]
            s[p + "attn.c_attn.bias"][2 * C:] /= sc
            s[p + "attn.c_proj.weight"] = s[p + "attn.c_proj.weight"] * sc[None, :]
        norm(linear_index(l, 2), p + "mlp.c_fc.weight", p + "ln_2")
    norm(4 * L, "lm_head.weight", "transformer.ln_f")
    return s


TRANSFORMS = ("online", "rotate", "smooth", "rotate+smooth")


def write_transform(out):
    model, _ = ref_common.load_gpt("tests/fixtures/gpt_tiny_init.safetensors", torch.float64)
    cfg = model.config
    seed, alpha, T = 13, 0.6, cfg["ctx"]  # 13: its first stream sign is -1 (Q 1 = -1: still centered)
    g = torch.Generator().manual_seed(2121)
    calib = torch.randint(0, cfg["vocab_size"], (4, T), generator=g)
    inputs = torch.randint(0, cfg["vocab_size"], (3, T), generator=g)
    targets = torch.randint(0, cfg["vocab_size"], (3, T), generator=g)
    base = state64(model)
    loss_float = forward_loss(base, cfg, inputs, targets)
    tensors = [("calib", calib.float().numpy()), ("inputs", inputs.float().numpy()), ("targets", targets.float().numpy()),
               ("loss_float", np.array([loss_float], dtype=np.float32))]
    # self-checks: H orthogonal and symmetric, Q fixes the all-ones direction
    H = hadamard(32)
    assert np.abs(H @ H - np.eye(32)).max() < 1e-12 and np.abs(H - H.T).max() == 0
    d = signs(seed, -1, 32)
    Q = H @ np.diag(d) @ H
    assert d[0] == -1 and np.abs(Q @ np.ones(32) + np.ones(32)).max() < 1e-12
    for name in TRANSFORMS:
        online = seed if name != "smooth" else None
        s = base
        if name.startswith("rotate"):
            s = rotate_stream(s, cfg, seed)
        if online is not None:
            s = rotate_online(s, cfg, seed)
        if "smooth" in name:
            s = smooth(s, cfg, calib, alpha, online)
        loss = forward_loss(s, cfg, inputs, targets, online)
        changed = max(float(np.abs(s[n] - base[n]).max()) for n in base)
        print(f"  {name:14s} loss {loss:.12f} (float {loss_float:.12f}, diff {loss - loss_float:.2e}); "
              f"largest weight change {changed:.3f}")
        assert abs(loss - loss_float) < 1e-10 and changed > 1e-2
        tensors.append((f"{name}/loss", np.array([loss], dtype=np.float32)))
        for n in ref_common.checkpoint_order(model):
            tensors.append((f"{name}/{n}", s[n].astype(np.float32)))
    path = f"{out}/transform_expected.safetensors"
    ref_common.write_safetensors(path, tensors, {"seed": str(seed), "alpha": str(alpha), "transforms": ",".join(TRANSFORMS)})
    return [path]
