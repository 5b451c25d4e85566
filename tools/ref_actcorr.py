"""Reference `actcorr`: corrections under activation quantization (README: Correction layers under
activation quantization; issue 21 item 2). Two things, written from the README:

- what a stream correction reads when the stream point is on: `quantized` (the default), the
  stream as the block stored it, y = Q(x) + f(Q(x)); or `float`, the block's float output with the
  stream quantized after the correction, y = Q(x + f(x));
- a correction stored at integer codes (here 4 bits: every matrix's values are already codes times
  an f16 scale a row, so storing them changes nothing) runs its own products on inputs at the
  activation bits, a grid per token, symmetric or not as the model's matrix inputs: an MLP stream
  correction's input (unless it reads the stored stream, which is on the grid already) and its
  hidden activation after the GELU; a low-rank term's k-wide middle (its input is the matrix's own
  quantized input). Float-stored corrections keep float products.

The model and its activation points are ref_act's (torch float32, straight-through quantizers);
the losses over the eval windows (those clear of rounding boundaries: ref_act's mask rule, the
corrections' quantizers included) and the gradients of the corrections' parameters.
Fixture layout: tools/pytorch_reference.py."""
import os

import numpy as np
import torch
import torch.nn.functional as F

import ref_act
import ref_models
from ref_common import load_gpt, write_safetensors

ACTCORR_FILE = "actcorr_expected.safetensors"
EVAL_WINDOWS, EVAL_SEED = 12, 2131
GRAD_WINDOWS = 4
HIDDEN, RANK, CODE_BITS = 8, 4, 4
WEIGHT_SEED = 2132

SCHEMES = {
    "tok4": "bits=4 kv=0 points=inputs,stream gran=token asym=0 calib=minmax",
    "tok4a": "bits=4 kv=0 points=inputs,stream gran=token asym=1 calib=minmax",
}
# name -> (scheme, what a stream correction reads, the correction kind, stored bits)
CASES = {
    "q32": ("tok4", "quantized", "mlp", 32),
    "f32": ("tok4", "float", "mlp", 32),
    "q4": ("tok4", "quantized", "mlp", CODE_BITS),
    "f4": ("tok4", "float", "mlp", CODE_BITS),
    "q4a": ("tok4a", "quantized", "mlp", CODE_BITS),
    "f4a": ("tok4a", "float", "mlp", CODE_BITS),
    "lr32": ("tok4", "quantized", "lowrank", 32),
    "lr4": ("tok4", "quantized", "lowrank", CODE_BITS),
}
GRAD_CASES = ("f32", "q4", "f4", "lr4")


def on_grid(rng, rows, cols, scale):
    """(rows, cols) float32 values k * s_r with integer codes |k| <= qmax, each row reaching qmax, s_r
    an f16 number: what a 4-bit per-row store with f16 scales gives back unchanged."""
    qmax = (1 << (CODE_BITS - 1)) - 1
    k = rng.integers(-qmax, qmax + 1, size=(rows, cols))
    k[np.arange(rows), rng.integers(0, cols, size=rows)] = qmax * rng.choice([-1, 1], size=rows)
    s = (scale * (0.5 + rng.random(rows))).astype(np.float16).astype(np.float32)
    return (k.astype(np.float32) * s[:, None]).astype(np.float32)


def make_weights(model):
    """The corrections' tensors, by checkpoint name: an MLP of width HIDDEN after every block and a
    rank-RANK term on each block's four matrices."""
    rng = np.random.default_rng(WEIGHT_SEED)
    C, L = model.transformer.wte.weight.shape[1], model.n_layer
    w = {}
    for j in range(L):
        w[f"corrections.{j}.fc.weight"] = on_grid(rng, HIDDEN, C, 0.15)
        w[f"corrections.{j}.fc.bias"] = (0.05 * rng.standard_normal(HIDDEN)).astype(np.float32)
        w[f"corrections.{j}.proj.weight"] = on_grid(rng, C, HIDDEN, 0.1)
        w[f"corrections.{j}.proj.bias"] = (0.02 * rng.standard_normal(C)).astype(np.float32)
        for name, out_dim, in_dim in (("attn.c_attn", 3 * C, C), ("attn.c_proj", C, C), ("mlp.c_fc", 4 * C, C), ("mlp.c_proj", C, 4 * C)):
            w[f"transformer.h.{j}.{name}.lora_A.weight"] = on_grid(rng, RANK, in_dim, 0.15)
            w[f"transformer.h.{j}.{name}.lora_B.weight"] = on_grid(rng, out_dim, RANK, 0.05)
    return w


def forward(model, idx, pts, params, reads, kind, narrow):
    """Logits with activation quantization by pts (ref_act.Points) and the corrections in params
    (torch tensors by checkpoint name)."""
    B, T = idx.shape
    L, C = model.n_layer, model.transformer.wte.weight.shape[1]
    own = lambda v: pts(-1, "inputs", v, B) if narrow else v  # a product input the correction quantizes itself

    def matrix(l, slot, name, mod, inp):
        xq = pts(l * ref_act.SITES_PER_BLOCK + slot, "inputs", inp, B)
        y = mod(xq)
        if kind == "lowrank":  # x is the matrix's quantized input already
            p = f"transformer.h.{l}.{name}"
            y = y + own(xq @ params[p + ".lora_A.weight"].T) @ params[p + ".lora_B.weight"].T
        return y

    def mlp_site(j, v, input_on_grid):
        p = f"corrections.{j}"
        xin = v if input_on_grid else own(v)
        h = F.gelu(xin @ params[p + ".fc.weight"].T + params[p + ".fc.bias"], approximate="tanh")
        return v + own(h) @ params[p + ".proj.weight"].T + params[p + ".proj.bias"]

    x = model.embed(idx)
    for l, block in enumerate(model.transformer.h):
        site = l * ref_act.SITES_PER_BLOCK
        a = block.attn
        NH, hs = a.n_head, C // a.n_head
        qkv = matrix(l, 0, "attn.c_attn", a.c_attn, block.ln_1(x))
        q, k, v = (t.view(B, T, NH, hs).transpose(1, 2) for t in qkv.split(C, dim=2))
        att = (q @ k.transpose(-2, -1)) * (1.0 / np.sqrt(hs))
        att = F.softmax(att.masked_fill(~a.causal_mask[:, :, :T, :T], float("-inf")), dim=-1)
        y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)
        x = x + matrix(l, 1, "attn.c_proj", a.c_proj, y)
        f = block.mlp.gelu(matrix(l, 2, "mlp.c_fc", block.mlp.c_fc, block.ln_2(x)))
        x = x + matrix(l, 3, "mlp.c_proj", block.mlp.c_proj, f)
        if kind != "mlp":
            x = pts(site + 4, "stream", x, B)
        elif reads == "quantized":  # the stored stream, read by a separate kernel: on the grid
            x = mlp_site(l, pts(site + 4, "stream", x, B), True)
        else:  # fused into the last product's epilogue: the float output, the stream quantized after
            x = pts(site + 4, "stream", mlp_site(l, x, False), B)
    h = pts(L * ref_act.SITES_PER_BLOCK, "inputs", model.transformer.ln_f(x), B)
    return model.lm_head(h)


def write_actcorr(out):
    model, _ = load_gpt(os.path.join(out, ref_models.SMALL_QUANT_FILE))
    for p in model.parameters():
        p.requires_grad_(False)
    T = model.ctx
    eval_ids = ref_models.encode(ref_models.synthetic_text(EVAL_WINDOWS * T + 1, EVAL_SEED))
    x, y = ref_act.windows(eval_ids, T, EVAL_WINDOWS)
    weights = make_weights(model)
    tensors = [("eval_ids", eval_ids.float().numpy())] + [(f"weight.{n}", a) for n, a in weights.items()]
    for name, (scheme_name, reads, kind, bits) in CASES.items():
        scheme = ref_act.parse_spec(SCHEMES[scheme_name])
        pts = ref_act.Points(scheme, model.n_layer)
        pts.window_margin = np.full(EVAL_WINDOWS, np.inf)
        params = {n: torch.from_numpy(a.copy()) for n, a in weights.items()}
        with torch.no_grad():
            logits = forward(model, x, pts, params, reads, kind, bits < 32)
        mask = pts.window_margin >= ref_act.TIE_MARGIN
        pts.window_margin = None
        assert mask.sum() >= ref_act.MIN_COMPARED, f"{name}: only {mask.sum()} windows clear of rounding boundaries"
        per_position = F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1), reduction="none").view(y.shape)
        loss = per_position[torch.from_numpy(mask)].mean().item()
        print(f"actcorr {name:5s} loss {loss:.6f} over {mask.sum()} of {mask.size} windows ({SCHEMES[scheme_name]}; reads {reads}; "
              f"{kind} stored at {bits} bits)")
        tensors += [(f"loss.{name}", np.array([loss], dtype=np.float32)), (f"mask.{name}", mask.astype(np.float32))]
        if name in GRAD_CASES:
            keep = torch.from_numpy(np.flatnonzero(mask)[:GRAD_WINDOWS])
            mine = {n: t for n, t in params.items() if (kind == "mlp") == n.startswith("corrections.")}
            for t in mine.values():
                t.requires_grad_(True)
            gl = forward(model, x[keep].contiguous(), pts, params, reads, kind, bits < 32)
            F.cross_entropy(gl.view(-1, gl.size(-1)), y[keep].reshape(-1)).backward()
            tensors += [(f"grad.{name}.{n}", t.grad.detach().numpy().copy()) for n, t in mine.items()]
    meta = {
        "generator": "tools/pytorch_reference.py actcorr", "model": ref_models.SMALL_QUANT_FILE, "eval_windows": EVAL_WINDOWS,
        "grad_windows": GRAD_WINDOWS, "T": T, "hidden": HIDDEN, "rank": RANK, "code_bits": CODE_BITS,
        "cases": ",".join(CASES), "grad_cases": ",".join(GRAD_CASES),
        "weight": "the corrections' tensors by checkpoint name (an MLP after every block; a low-rank term on every block matrix), "
                  "each matrix already codes times an f16 scale a row at code_bits",
        "loss": "mean cross-entropy over the compared eval windows (mask)",
        "grad": "d loss / d the case's correction tensors over the first grad_windows compared windows",
    }
    meta.update({f"scheme.{k}": v for k, v in SCHEMES.items()})
    meta.update({f"case.{k}": f"{s} {r} {kind} {b}" for k, (s, r, kind, b) in CASES.items()})
    path = os.path.join(out, ACTCORR_FILE)
    write_safetensors(path, tensors, meta)
    return [path]
