"""Reference `act`: activation fake quantization (README: Activation quantization; issue 21 item 1)
— per-token and per-window (tensor) dynamic grids, static ranges calibrated on calibration windows
(minmax, percentile, mse), symmetric and asymmetric (integer zero point), at the inputs of every
matrix, the residual stream at each block's output, the attention's keys and values and its
probabilities; the loss of each scheme and, for some, every parameter gradient through the
straight-through estimator. Written from the README: the grid arithmetic in float32 numpy (as an
int kernel and qcorr compute it), the model in torch float32 with q + (x - x.detach()) at each
point (the forward value is exactly the quantized one, the gradient passes straight through).
Fixture layout: tools/pytorch_reference.py."""
import math
import os

import numpy as np
import torch
import torch.nn.functional as F

import ref_models
from ref_common import checkpoint_order, load_gpt, write_safetensors

ACT_FILE = "act_expected.safetensors"
CALIB_WINDOWS, CALIB_SEED = 10, 2121
EVAL_WINDOWS, EVAL_SEED = 12, 2122
GRAD_WINDOWS = 4        # the gradient batch: the first eval windows
# A float32 difference between C and PyTorch (~1e-7 of a row's largest value, up to ~1e-6) moves
# a value that lies that close to a rounding boundary to the other code, and each such flip moves
# the loss by 1e-5..1e-2 relative. Where a quantized value feeds a later point, some boundaries
# are hit exactly (at position 0 the attention output is the quantized value row itself, which the
# next grid can split in half steps), and then the two implementations' last bits decide. So every
# window where some value came within TIE_MARGIN of the range (2^bits TIE_MARGIN steps) of a
# boundary is left out of the comparison (mask.<scheme>, 1 = compared); at least MIN_COMPARED
# windows must remain. Schemes that quantize several points run on SHORT_WINDOWS windows of their
# first SHORT_T positions (~1e4 values each instead of ~3e5).
TIE_MARGIN = 5e-7
MIN_COMPARED = 3
SHORT_WINDOWS, SHORT_T = 12, 12
CALIB_VALUES = 1 << 20  # quant/actcalib.h ACT_CALIB_VALUES
MSE_CANDIDATES, MSE_LOWEST = 100, 0.5
SITES_PER_BLOCK = 8     # 4 matrix inputs, stream, key, value, probs; then the head's input

# name -> the scheme, in the C test's spec syntax (bits kv points granularity asym calib)
SCHEMES = {
    "tok4": "bits=4 kv=0 points=inputs gran=token asym=0 calib=minmax",
    "tok3a": "bits=3 kv=0 points=inputs gran=token asym=1 calib=minmax",
    "ten4": "bits=4 kv=0 points=inputs gran=tensor asym=0 calib=minmax",
    "ten4a": "bits=4 kv=0 points=inputs gran=tensor asym=1 calib=minmax",
    "st4minmax": "bits=4 kv=0 points=inputs gran=static asym=0 calib=minmax",
    "st4minmaxa": "bits=4 kv=0 points=inputs gran=static asym=1 calib=minmax",
    "st4pct": "bits=4 kv=0 points=inputs gran=static asym=0 calib=percentile:99.9",
    "st4pcta": "bits=4 kv=0 points=inputs gran=static asym=1 calib=percentile:99",
    "st4mse": "bits=4 kv=0 points=inputs gran=static asym=0 calib=mse",
    "st4msea": "bits=4 kv=0 points=inputs gran=static asym=1 calib=mse",
    "kv4": "bits=0 kv=4 points=kv gran=token asym=0 calib=minmax",
    "kv3tena": "bits=0 kv=3 points=kv gran=tensor asym=1 calib=minmax",
    "kv4st": "bits=0 kv=4 points=kv gran=static asym=0 calib=mse",
    "stream4": "bits=4 kv=0 points=stream gran=token asym=0 calib=minmax",
    "stream4st": "bits=4 kv=0 points=stream gran=static asym=1 calib=percentile:99.9",
    "probs4": "bits=4 kv=0 points=probs gran=token asym=0 calib=minmax",
    "probs3a": "bits=3 kv=0 points=probs gran=tensor asym=1 calib=minmax",
    "probs4st": "bits=4 kv=0 points=probs gran=static asym=1 calib=minmax",
    "all6": "bits=6 kv=8 points=inputs,stream,kv,probs gran=token asym=0 calib=minmax",
    "all4a": "bits=4 kv=3 points=inputs,stream,kv,probs gran=token asym=1 calib=minmax",
    "all4ten": "bits=4 kv=4 points=inputs,stream,kv,probs gran=tensor asym=1 calib=minmax",
    "all4st": "bits=4 kv=4 points=inputs,stream,kv,probs gran=static asym=1 calib=mse",
}
GRAD_SCHEMES = ("tok3a", "all4a", "all4ten", "all4st")


def is_short(name):
    return len(parse_spec(SCHEMES[name])["points"]) > 1


def parse_spec(spec):
    s = dict(kv.split("=", 1) for kv in spec.split())
    calib, p = s["calib"], None
    if calib.startswith("percentile:"):
        calib, p = "percentile", float(calib.split(":")[1])
    return dict(bits=int(s["bits"]), kv=int(s["kv"]), points=set(s["points"].split(",")), gran=s["gran"],
                asym=s["asym"] == "1", calib=calib, percentile=p)


# ---- the grid (float32 throughout) ----
def grid(lo, hi, bits, asym):
    """(scale, zero, qmin, qmax) as float32 from the range [lo, hi]."""
    lo, hi = np.float32(lo), np.float32(hi)
    if not asym:
        qmax = np.float32((1 << (bits - 1)) - 1)
        a = max(abs(lo), abs(hi))
        return np.float32(a / qmax), np.float32(0), -qmax, qmax
    lo, hi = min(lo, np.float32(0)), max(hi, np.float32(0))
    qmax = np.float32((1 << bits) - 1)
    scale = np.float32((hi - lo) / qmax)
    zero = np.float32(0)
    if scale > 0:
        zero = np.float32(np.clip(np.rint(np.float32(-lo / scale)), 0, qmax))
    return scale, zero, np.float32(0), qmax


def margin(x, g):
    """The nearest any of x comes to a rounding boundary of g, in steps (inf when none can flip)."""
    scale, zero, qmin, qmax = g
    if not scale > 0:
        return math.inf
    u = np.asarray(x, dtype=np.float32) / scale
    inside = (u > qmin - zero - 0.5 - 1e-3) & (u < qmax - zero + 0.5 + 1e-3)  # clamped values cannot flip
    return float(np.abs(np.abs(u[inside] - np.floor(u[inside])) - 0.5).min()) if inside.any() else math.inf


def apply(x, g):
    scale, zero, qmin, qmax = g
    x = np.asarray(x, dtype=np.float32)
    if not scale > 0:
        return np.zeros_like(x)
    q = np.rint(x / scale)
    if qmin < 0:
        return (np.clip(q, qmin, qmax) * scale).astype(np.float32)
    q = np.clip(q + zero, qmin, qmax)
    return ((q - zero) * scale).astype(np.float32)


# ---- static ranges ----
def splitmix64(x):
    x = (x + np.uint64(0x9E3779B97F4A7C15)) & np.uint64(0xFFFFFFFFFFFFFFFF)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def kept(values):
    """The values percentile and mse read: all, or those whose flat index v has splitmix64(v) mod N below CALIB_VALUES."""
    n = values.size
    if n <= CALIB_VALUES:
        return values
    with np.errstate(over="ignore"):
        h = splitmix64(np.arange(n, dtype=np.uint64))
    return values[h % np.uint64(n) < np.uint64(CALIB_VALUES)]


def rank_index(p, n):
    return min(max(math.ceil(p / 100.0 * n) - 1, 0), n - 1)


def calibrate_range(values, scheme, bits):
    """[lo, hi] of one site from every value it took (float32, forward order)."""
    values = np.asarray(values, dtype=np.float32)
    all_lo, all_hi, asym = values.min(), values.max(), scheme["asym"]
    absmax = max(abs(all_lo), abs(all_hi))
    if scheme["calib"] == "minmax":
        return (all_lo, all_hi) if asym else (-absmax, absmax)
    v = kept(values)
    if scheme["calib"] == "percentile":
        p = scheme["percentile"]
        if not asym:
            a = np.sort(np.abs(v))[rank_index(p, v.size)]
            return -a, a
        s = np.sort(v)
        return s[rank_index(100.0 - p, v.size)], s[rank_index(p, v.size)]
    best, out = math.inf, None
    for k in range(MSE_CANDIDATES):
        ratio = 1.0 - (MSE_LOWEST * k) / (MSE_CANDIDATES - 1)
        if asym:
            lo, hi = np.float32(ratio * float(all_lo)), np.float32(ratio * float(all_hi))
        else:
            hi = np.float32(ratio * float(absmax))
            lo = -hi
        d = v.astype(np.float64) - apply(v, grid(lo, hi, bits, asym)).astype(np.float64)
        e = np.cumsum(d * d)[-1]  # summed in order, as C does
        if e < best:
            best, out = e, (lo, hi)
    return out


# ---- the forward with its quantization points ----
class Points:
    """What each point does: observe (calibration: record the float values, quantize nothing) or
    quantize by the scheme (ranges: (sites, 2) for static)."""

    def __init__(self, scheme, n_layer, ranges=None, observe=False):
        self.s, self.L, self.ranges, self.observe = scheme, n_layer, ranges, observe
        self.values = {}
        self.window_margin = None  # per window: the nearest boundary any value came to, as a share of the range (steps / 2^bits)

    def note(self, b, x, g, bits):
        if self.window_margin is not None:
            self.window_margin[b] = min(self.window_margin[b], margin(x, g) / (1 << bits))

    def bits(self, point):
        if point not in self.s["points"]:
            return 0
        return self.s["kv"] if point == "kv" else self.s["bits"]

    def __call__(self, site, point, x, windows):
        """x: torch (B, ..., cols) for rows; windows: B (tensor granularity's unit is x[b])."""
        bits = self.bits(point)
        if not bits:
            return x
        xn = x.detach().numpy()
        if self.observe:
            self.values.setdefault(site, []).append(xn.ravel().copy())
            return x
        g, asym = self.s["gran"], self.s["asym"]
        q = np.empty_like(xn)
        for b in range(windows):
            if g == "token":
                rows = xn[b].reshape(-1, xn.shape[-1])
                out = q[b].reshape(-1, xn.shape[-1])
                for r in range(rows.shape[0]):
                    gr = grid(rows[r].min(), rows[r].max(), bits, asym)
                    out[r] = apply(rows[r], gr)
                    self.note(b, rows[r], gr, bits)
                continue
            gb = grid(xn[b].min(), xn[b].max(), bits, asym) if g == "tensor" else grid(self.ranges[site][0], self.ranges[site][1], bits, asym)
            q[b] = apply(xn[b], gb)
            self.note(b, xn[b], gb, bits)
        return torch.from_numpy(q) + (x - x.detach())

    def probs(self, site, att):
        """att (B, NH, T, T): the causal part of each row quantized (the rest stays 0)."""
        bits = self.bits("probs")
        if not bits:
            return att
        B, NH, T, _ = att.shape
        a = att.detach().numpy()
        causal = np.tril(np.ones((T, T), dtype=bool))
        if self.observe:
            self.values.setdefault(site, []).append(np.concatenate([a[b, h, t, :t + 1] for b in range(B) for h in range(NH)
                                                                    for t in range(T)]))
            return att
        g, asym = self.s["gran"], self.s["asym"]
        q = np.zeros_like(a)
        for b in range(B):
            if g == "tensor":
                vals = a[b][:, causal]
                gb = grid(vals.min(), vals.max(), bits, asym)
            elif g == "static":
                gb = grid(self.ranges[site][0], self.ranges[site][1], bits, asym)
            for h in range(NH):
                for t in range(T):
                    row = a[b, h, t, :t + 1]
                    gr = grid(row.min(), row.max(), bits, asym) if g == "token" else gb
                    q[b, h, t, :t + 1] = apply(row, gr)
                    self.note(b, row, gr, bits)
        return torch.from_numpy(q) + (att - att.detach())


def forward(model, idx, pts):
    """Logits of model on idx (B, T) with activation quantization by pts, in qcorr's order."""
    B, T = idx.shape
    L, C = model.n_layer, model.transformer.wte.weight.shape[1]
    x = model.embed(idx)
    for l, block in enumerate(model.transformer.h):
        site = l * SITES_PER_BLOCK
        a = block.attn
        NH, hs = a.n_head, C // a.n_head
        h = pts(site + 0, "inputs", block.ln_1(x), B)
        qkv = a.c_attn(h)
        q, k, v = qkv.split(C, dim=2)
        k = pts(site + 5, "kv", k, B)
        v = pts(site + 6, "kv", v, B)
        q, k, v = (t.view(B, T, NH, hs).transpose(1, 2) for t in (q, k, v))
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))
        att = att.masked_fill(~a.causal_mask[:, :, :T, :T], float("-inf"))
        att = pts.probs(site + 7, F.softmax(att, dim=-1))
        y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)
        x = x + a.c_proj(pts(site + 1, "inputs", y, B))
        f = block.mlp.gelu(block.mlp.c_fc(pts(site + 2, "inputs", block.ln_2(x), B)))
        x = x + block.mlp.c_proj(pts(site + 3, "inputs", f, B))
        x = pts(site + 4, "stream", x, B)
    h = pts(L * SITES_PER_BLOCK, "inputs", model.transformer.ln_f(x), B)
    return model.lm_head(h)


def calibrate(model, scheme, calib):
    """(sites, 2) static ranges from the calibration windows (zeros at sites that are off)."""
    L = model.n_layer
    pts = Points(scheme, L, observe=True)
    with torch.no_grad():
        forward(model, calib, pts)
    ranges = np.zeros((L * SITES_PER_BLOCK + 1, 2), dtype=np.float32)
    for site, chunks in pts.values.items():
        point = "inputs" if site == L * SITES_PER_BLOCK else (["inputs"] * 4 + ["stream", "kv", "kv", "probs"])[site % SITES_PER_BLOCK]
        ranges[site] = calibrate_range(np.concatenate(chunks), scheme, pts.bits(point))
    return ranges


def windows(ids, T, n):
    x = torch.stack([ids[i * T:(i + 1) * T] for i in range(n)])
    y = torch.stack([ids[i * T + 1:(i + 1) * T + 1] for i in range(n)])
    return x, y


def write_act(out):
    model, _ = load_gpt(os.path.join(out, ref_models.SMALL_QUANT_FILE))
    T = model.ctx
    calib_ids = ref_models.encode(ref_models.synthetic_text(CALIB_WINDOWS * T + 1, CALIB_SEED))
    eval_ids = ref_models.encode(ref_models.synthetic_text(EVAL_WINDOWS * T + 1, EVAL_SEED))
    calib, _ = windows(calib_ids, T, CALIB_WINDOWS)
    x, y = windows(eval_ids, T, EVAL_WINDOWS)
    xs, ys = x[:SHORT_WINDOWS, :SHORT_T].contiguous(), y[:SHORT_WINDOWS, :SHORT_T].contiguous()
    with torch.no_grad():
        plain = F.cross_entropy(model(x)[0].view(-1, model.config["vocab_size"]), y.view(-1)).item()
    tensors = [("calib_ids", calib.float().numpy()), ("eval_ids", eval_ids.float().numpy()),
               ("loss.float", np.array([plain], dtype=np.float32))]
    print(f"act: the small int3 model's loss with float activations {plain:.6f}")
    order = checkpoint_order(model)
    for name, spec in SCHEMES.items():
        scheme = parse_spec(spec)
        ranges = calibrate(model, scheme, calib) if scheme["gran"] == "static" else None
        pts = Points(scheme, model.n_layer, ranges)
        ex, ey = (xs, ys) if is_short(name) else (x, y)
        pts.window_margin = np.full(ex.shape[0], math.inf)
        with torch.no_grad():
            logits = forward(model, ex, pts)
        mask = pts.window_margin >= TIE_MARGIN
        pts.window_margin = None
        assert mask.sum() >= MIN_COMPARED, f"{name}: only {mask.sum()} windows clear of rounding boundaries"
        per_position = F.cross_entropy(logits.view(-1, logits.size(-1)), ey.view(-1), reduction="none").view(ey.shape)
        loss = per_position[torch.from_numpy(mask)].mean().item()
        print(f"act {name:10s} loss {loss:.6f} over {mask.sum()} of {mask.size} windows (the others hold a value within "
              f"{TIE_MARGIN:g} of the range of a boundary) ({spec})")
        tensors.append((f"loss.{name}", np.array([loss], dtype=np.float32)))
        tensors.append((f"mask.{name}", mask.astype(np.float32)))
        if ranges is not None:
            tensors.append((f"ranges.{name}", ranges))
        if name in GRAD_SCHEMES:
            model.zero_grad(set_to_none=True)
            keep = torch.from_numpy(np.flatnonzero(mask)[:GRAD_WINDOWS])
            gx, gy = ex[keep].contiguous(), ey[keep].contiguous()
            gl = forward(model, gx, pts)
            F.cross_entropy(gl.view(-1, gl.size(-1)), gy.reshape(-1)).backward()
            params = dict(model.named_parameters())
            tensors += [(f"grad.{name}.{n}", params[n].grad.detach().numpy().copy()) for n in order]
    meta = {
        "generator": "tools/pytorch_reference.py act", "model": ref_models.SMALL_QUANT_FILE,
        "calib_windows": CALIB_WINDOWS, "eval_windows": EVAL_WINDOWS, "grad_windows": GRAD_WINDOWS, "T": T,
        "schemes": ",".join(SCHEMES), "grad_schemes": ",".join(GRAD_SCHEMES),
        "calib_values": CALIB_VALUES, "short_windows": SHORT_WINDOWS, "short_T": SHORT_T,
        "short": "schemes of several points: loss and gradients over the first short_windows eval windows, first short_T positions",
        "loss": "mean cross-entropy over the eval windows (window i: eval_ids[iT..iT+T-1] predicting the next)",
        "ranges": "(sites, 2) [lo, hi] per site: per block the inputs of c_attn, attn.c_proj, c_fc, mlp.c_proj, "
                  "the block's output stream, keys, values, probabilities; then the head's input (0 where off)",
        "grad": "d loss over the first grad_windows compared windows (mask) of the scheme's eval, straight through every point",
        "mask": "per window of the scheme's eval: 1 = compared (no value within tie_margin of the range of a rounding boundary)",
        "tie_margin": TIE_MARGIN,
    }
    meta.update({f"scheme.{k}": v for k, v in SCHEMES.items()})
    meta.update({f"eval.{k}": "short" if is_short(k) else "full" for k in SCHEMES})
    path = os.path.join(out, ACT_FILE)
    write_safetensors(path, tensors, meta)
    return [path]
