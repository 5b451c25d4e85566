"""Reference `tune` (issue 22): the methods that train the quantized model's own parameters at 0
extra bits, written from the issue and the README (never from src/): `normtweak` (only the
LayerNorm weights and biases train), `qat` (every quantized weight through the
straight-through estimator, on grids refitted from the float weights and kept) and `scales`
(the integer codes fixed, each row's scale trained as s0 * exp(theta), theta = 0 at the start),
`lwc` (the same log-scale, the codes following it: the float weights rounded onto the row's grid
with the rounding passed straight through and autograd's own clamp);
and `adaround`'s per-matrix objective and gradient (learned rounding on a matrix's reconstruction). On the tiny
model of `gpt` and its int3 copy of `corrections` (gpt_tiny_quant3), the batch of `gpt`. Fixture
layout: tools/pytorch_reference.py."""
import os

import numpy as np
import torch
import torch.nn.functional as F

import ref_gpt
import ref_models
import ref_quant
from ref_common import clone_gpt, is_default_quantized, write_safetensors

TUNE_FILE = "tune_expected.safetensors"
NORMTWEAK_LR = 1e-2
QAT_LR = 0.03        # under the half-step of most int3 grids: about half the codes move in one step (45%)
SCALES_LR = 1e-2     # a step moves each log-scale by about lr: 1% of its scale
LWC_LR = 1e-2
ADAROUND_BITS, ADAROUND_BETA, ADAROUND_LAMBDA = 3, 4.0, 2.0  # the regulariser as large as the reconstruction
ZETA, GAMMA = 1.1, -0.1  # AdaRound's rectified sigmoid stretch
GRAD_CLIP = 1.0
BETAS, EPS = (0.9, 0.95), 1e-8


def objective(name, model, float_model, idx, targets):
    logits, _ = model(idx)
    if name == "ce":
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))
    with torch.no_grad():
        target, _ = float_model(idx)
    log_p, log_q = F.log_softmax(target, -1), F.log_softmax(logits, -1)
    return (log_p.exp() * (log_p - log_q)).sum(-1).mean()


def norm_names(model):
    return [n for n, _ in model.named_parameters() if ".ln_" in n]


class QatGrid:
    """Per quantized matrix and row (channel), the grid the float row refits to (absmax, exact
    scale: the fixture's scheme), kept; Q(x) = clamp(x to [-qmax s, qmax s]) then round."""

    def __init__(self, float_model, quant_model):
        self.scales = {}
        fstate = dict(float_model.named_parameters())
        top = ref_quant.levels(ref_models.QUANT_BITS, 0)
        for n, p in quant_model.named_parameters():
            if not is_default_quantized(n):
                continue
            w = fstate[n].detach().double().numpy()
            s = np.array([ref_quant.fit_span(w[r], ref_models.QUANT_BITS, 0, ref_models.QUANT_DTYPE)[0] for r in range(w.shape[0])])
            self.scales[n] = s
            q = p.detach().numpy()
            back = np.stack([ref_quant.apply_span(q[r].astype(np.float64), s[r], None, ref_models.QUANT_BITS, 0) for r in range(q.shape[0])])
            assert np.array_equal(back, q), f"{n}: the quantized weights are not on the refitted grid"
        self.top = top

    def project(self, name, latent):
        """(the latent clamped to the grid's range, its grid value): what qat's forward stores."""
        s = torch.from_numpy(self.scales[name]).to(torch.float64)[:, None]
        x = latent.detach().double()
        clamped = torch.minimum(torch.maximum(x, -self.top * s), self.top * s)
        q = torch.clamp(torch.round(clamped / s), -self.top, self.top) * s
        return clamped.float(), q.float()


def substituted_forward(quant_model, make_weights):
    """A forward of a copy of the quantized model with its quantized matrices replaced by the
    tensors make_weights() returns (name -> weight, each carrying its own gradient path)."""
    model = clone_gpt(quant_model)
    for p in model.parameters():
        p.requires_grad_(False)

    def forward(idx, targets=None):
        saved = {}
        for n, w in make_weights().items():
            mod, attr = n.rsplit(".", 1)
            owner = model.get_submodule(mod)
            saved[n] = getattr(owner, attr)
            del owner._parameters[attr]
            setattr(owner, attr, w)
        try:
            return model(idx, targets)
        finally:
            for n, p in saved.items():
                mod, attr = n.rsplit(".", 1)
                owner = model.get_submodule(mod)
                delattr(owner, attr)
                owner._parameters[attr] = p
    return type("M", (), {"__call__": lambda self, idx, t=None: forward(idx, t)})()


def qat_forward_model(quant_model, latents, grid):
    """The quantized model whose quantized weights are w = Q(latent) with the straight-through
    gradient: w = latent + (Q(latent) - latent).detach()."""
    return substituted_forward(quant_model, lambda: {n: lat + (grid.project(n, lat)[1] - lat).detach() for n, lat in latents.items()})


def scales_forward_model(quant_model, thetas, grid):
    """The quantized model whose quantized weights are codes * (s0 * exp(theta)) per row: the
    codes read off the quantized weights on the refitted grid, fixed."""
    qstate = dict(quant_model.named_parameters())
    codes = {n: torch.round(qstate[n].detach().double() / torch.from_numpy(grid.scales[n])[:, None]) for n in thetas}

    def weights():
        return {n: (codes[n] * (torch.from_numpy(grid.scales[n]) * torch.exp(th.double()))[:, None]).float()
                for n, th in thetas.items()}
    return substituted_forward(quant_model, weights)


def lwc_forward_model(float_model, quant_model, thetas, grid):
    """The quantized model whose quantized weights are s * clamp(round(w_float / s)), s = s0 *
    exp(theta) per row, the rounding straight through (u + (round(u) - u).detach()) and the clamp
    autograd's (no gradient through a clamped code): the codes follow the scale."""
    fstate = dict(float_model.named_parameters())
    top = grid.top

    def weights():
        out = {}
        for n, th in thetas.items():
            s = (torch.from_numpy(grid.scales[n]) * torch.exp(th.double()))[:, None]
            u = fstate[n].detach().double() / s
            code = torch.clamp(u + (torch.round(u) - u).detach(), -top, top)
            out[n] = (code * s).float()
        return out
    return substituted_forward(quant_model, weights)


def adamw_step(params, lr):
    torch.nn.utils.clip_grad_norm_(params, GRAD_CLIP)
    opt = torch.optim.AdamW(params, lr=lr, betas=BETAS, eps=EPS, weight_decay=0.0)
    opt.step()


def write_tune(out):
    float_model, quant_model = ref_models.tiny_models()
    _, inputs, targets = ref_gpt.tiny_model_and_batch()
    tensors = [("inputs", inputs.float().numpy()), ("targets", targets.float().numpy())]
    # ---- normtweak: the objectives' gradients in every LayerNorm tensor, one AdamW step (ce) ----
    names = norm_names(quant_model)
    for obj in ("ce", "kl"):
        model = clone_gpt(quant_model)
        for n, p in model.named_parameters():
            p.requires_grad_(n in names)
        value = objective(obj, model, float_model, inputs, targets)
        value.backward()
        params = dict(model.named_parameters())
        tensors.append((f"normtweak.{obj}.value", np.array([value.item()], dtype=np.float32)))
        tensors += [(f"normtweak.{obj}.grad.{n}", params[n].grad.numpy().copy()) for n in names]
        if obj == "ce":
            adamw_step([params[n] for n in names], NORMTWEAK_LR)
            tensors += [(f"normtweak.step.{n}", params[n].detach().numpy().copy()) for n in names]
            with torch.no_grad():
                tensors.append(("normtweak.step.loss", np.array([objective("ce", model, float_model, inputs, targets).item()], dtype=np.float32)))
    # ---- qat: the straight-through gradients of every quantized matrix, one AdamW step (ce) ----
    grid = QatGrid(float_model, quant_model)
    qnames = list(grid.scales)
    for obj in ("ce", "kl"):
        latents = {n: p.detach().clone().requires_grad_(True) for n, p in quant_model.named_parameters() if n in qnames}
        wrapper = qat_forward_model(quant_model, latents, grid)
        value = objective(obj, wrapper, float_model, inputs, targets)
        value.backward()
        tensors.append((f"qat.{obj}.value", np.array([value.item()], dtype=np.float32)))
        tensors += [(f"qat.{obj}.grad.{n}", latents[n].grad.numpy().copy()) for n in qnames]
        if obj == "ce":
            adamw_step([latents[n] for n in qnames], QAT_LR)
            moved, total, nearest = 0, 0, np.inf
            for n in qnames:
                clamped, q = grid.project(n, latents[n])
                tensors += [(f"qat.step.latent.{n}", clamped.numpy()), (f"qat.step.weight.{n}", q.numpy())]
                before = dict(quant_model.named_parameters())[n].detach()
                moved += int((q != before).sum())
                total += q.numel()
                s = torch.from_numpy(grid.scales[n])[:, None]
                frac = (clamped.double() / s) - torch.floor(clamped.double() / s)
                nearest = min(nearest, float((frac - 0.5).abs().min()))
                with torch.no_grad():
                    latents[n].copy_(clamped)
            with torch.no_grad():
                loss = objective("ce", wrapper, float_model, inputs, targets).item()
            tensors.append(("qat.step.loss", np.array([loss], dtype=np.float32)))
            print(f"qat: one step at lr {QAT_LR} moves {moved} of {total} codes; the latent value closest to a "
                  f"rounding boundary is {nearest:.2e} steps from it")
    # ---- scales: the objectives' gradients in every row's log-scale, one AdamW step (ce) ----
    for obj in ("ce", "kl"):
        thetas = {n: torch.zeros(len(grid.scales[n]), dtype=torch.float32, requires_grad=True) for n in qnames}
        wrapper = scales_forward_model(quant_model, thetas, grid)
        value = objective(obj, wrapper, float_model, inputs, targets)
        value.backward()
        tensors.append((f"scales.{obj}.value", np.array([value.item()], dtype=np.float32)))
        tensors += [(f"scales.{obj}.grad.{n}", thetas[n].grad.numpy().copy()) for n in qnames]
        if obj == "ce":
            adamw_step([thetas[n] for n in qnames], SCALES_LR)
            tensors += [(f"scales.step.{n}", thetas[n].detach().numpy().copy()) for n in qnames]
            with torch.no_grad():
                loss = objective("ce", wrapper, float_model, inputs, targets).item()
            tensors.append(("scales.step.loss", np.array([loss], dtype=np.float32)))
    # ---- lwc: the same, with the codes following the scale ----
    for obj in ("ce", "kl"):
        thetas = {n: torch.zeros(len(grid.scales[n]), dtype=torch.float32, requires_grad=True) for n in qnames}
        wrapper = lwc_forward_model(float_model, quant_model, thetas, grid)
        value = objective(obj, wrapper, float_model, inputs, targets)
        value.backward()
        tensors.append((f"lwc.{obj}.value", np.array([value.item()], dtype=np.float32)))
        tensors += [(f"lwc.{obj}.grad.{n}", thetas[n].grad.numpy().copy()) for n in qnames]
        if obj == "ce":
            adamw_step([thetas[n] for n in qnames], LWC_LR)
            tensors += [(f"lwc.step.{n}", thetas[n].detach().numpy().copy()) for n in qnames]
            with torch.no_grad():
                loss = objective("ce", wrapper, float_model, inputs, targets).item()
            tensors.append(("lwc.step.loss", np.array([loss], dtype=np.float32)))
    # the ce gradient at log-scales away from the start, theta_r = -0.6 + 0.15 (r mod 7) over each
    # matrix's rows: narrower grids clamp their extreme weights (the clamped codes' branch), wider
    # ones move codes
    thetas = {n: torch.tensor([-0.6 + 0.15 * (r % 7) for r in range(len(grid.scales[n]))], dtype=torch.float32, requires_grad=True)
              for n in qnames}
    wrapper = lwc_forward_model(float_model, quant_model, thetas, grid)
    value = objective("ce", wrapper, float_model, inputs, targets)
    value.backward()
    tensors.append(("lwc.moved.ce.value", np.array([value.item()], dtype=np.float32)))
    tensors += [(f"lwc.moved.ce.grad.{n}", thetas[n].grad.numpy().copy()) for n in qnames]
    # asymmetric: each row's grid (scale, minimum) refitted from the float row, both trained
    # (mu_r = 0.5 ((r mod 5) - 2) steps of the first scale), the codes 0..2^b-1 following them
    fstate = dict(float_model.named_parameters())
    top = ref_quant.levels(ref_models.QUANT_BITS, 1)
    thetas, mus, fits = {}, {}, {}
    for n in qnames:
        w = fstate[n].detach().double().numpy()
        fits[n] = np.array([ref_quant.fit_span(w[r], ref_models.QUANT_BITS, 1, ref_models.QUANT_DTYPE) for r in range(w.shape[0])])
        rows = range(w.shape[0])
        thetas[n] = torch.tensor([-0.6 + 0.15 * (r % 7) for r in rows], dtype=torch.float32, requires_grad=True)
        mus[n] = torch.tensor([0.5 * ((r % 5) - 2) for r in rows], dtype=torch.float32, requires_grad=True)

    def asym_weights():
        out = {}
        for n in qnames:
            s0, m0 = torch.from_numpy(fits[n][:, 0]), torch.from_numpy(fits[n][:, 1])
            sc = (s0 * torch.exp(thetas[n].double()))[:, None]
            mn = (m0 + mus[n].double() * s0)[:, None]
            u = (fstate[n].detach().double() - mn) / sc
            out[n] = (mn + torch.clamp(u + (torch.round(u) - u).detach(), 0, top) * sc).float()
        return out
    value = objective("ce", substituted_forward(quant_model, asym_weights), float_model, inputs, targets)
    value.backward()
    tensors.append(("lwc.asym.ce.value", np.array([value.item()], dtype=np.float32)))
    for n in qnames:  # per row: dtheta, dmu (C's order)
        tensors.append((f"lwc.asym.ce.grad.{n}", torch.stack([thetas[n].grad, mus[n].grad], 1).reshape(-1).numpy().copy()))
    with torch.no_grad():
        s = torch.from_numpy(grid.scales[qnames[0]]) * torch.exp(thetas[qnames[0]].double())
        u = dict(float_model.named_parameters())[qnames[0]].detach().double() / s[:, None]
        print(f"lwc: at the moved log-scales {int((torch.round(u).abs() > grid.top).sum())} weights of {qnames[0]} are clamped")
    # ---- adaround: one matrix's objective and its gradient in V (per row, symmetric and asymmetric) ----
    rng = np.random.default_rng(2022)
    rows, cols = 6, 16
    x = rng.standard_normal((64, cols))
    x[:, 1:] += 1.5 * x[:, :1]  # a shared factor: G far from diagonal
    G = (x.T @ x / x.shape[0]).astype(np.float32).astype(np.float64)  # as C holds it
    for name, asym in (("sym", 0), ("asym", 1)):
        w = rng.standard_normal((rows, cols)).astype(np.float32)
        # scales (and minima) float32 values, so floor((w - minimum) / scale) is the same number in C
        grids = [ref_quant.fit_span(w[r].astype(np.float64), ADAROUND_BITS, asym, "f32") for r in range(rows)]
        scale = np.array([g[0] for g in grids])
        minimum = np.array([g[1] if asym else 0.0 for g in grids])
        top = ref_quant.levels(ADAROUND_BITS, asym)
        lo, hi = (0, top) if asym else (-top, top)
        below = np.floor((w.astype(np.float64) - minimum[:, None]) / scale[:, None])
        V = (rng.uniform(0.3, 1.8, (rows, cols)) * rng.choice([-1.0, 1.0], (rows, cols))).astype(np.float32)
        Vt = torch.from_numpy(V).double().requires_grad_(True)
        h = torch.clamp(torch.sigmoid(Vt) * (ZETA - GAMMA) + GAMMA, 0, 1)
        code = torch.clamp(torch.from_numpy(below) + h, lo, hi)
        E = torch.from_numpy(minimum)[:, None] + code * torch.from_numpy(scale)[:, None] - torch.from_numpy(w).double()
        rec = (E @ torch.from_numpy(G) * E).sum()
        value = rec + ADAROUND_LAMBDA * (1 - (2 * h - 1).abs().pow(ADAROUND_BETA)).sum()
        value.backward()
        tensors += [(f"adaround.{name}.w", w), (f"adaround.{name}.scale", scale.astype(np.float32)),
                    (f"adaround.{name}.minimum", minimum.astype(np.float32)), (f"adaround.{name}.V", V),
                    (f"adaround.{name}.G", G.astype(np.float32)), (f"adaround.{name}.value", np.array([value.item()], dtype=np.float32)),
                    (f"adaround.{name}.grad", Vt.grad.numpy().astype(np.float32))]
    meta = {"generator": "tools/pytorch_reference.py tune", "torch": torch.__version__,
            "float_model": ref_models.TINY_FLOAT_FILE, "quant_model": ref_models.TINY_QUANT_FILE,
            "quantization": ref_models.QUANT_DESCRIPTION, "normtweak_lr": NORMTWEAK_LR, "qat_lr": QAT_LR, "scales_lr": SCALES_LR, "lwc_lr": LWC_LR,
            "adaround_bits": ADAROUND_BITS, "adaround_beta": ADAROUND_BETA, "adaround_lambda": ADAROUND_LAMBDA,
            "grad_clip": GRAD_CLIP, "beta1": BETAS[0], "beta2": BETAS[1], "eps": EPS, "weight_decay": 0.0,
            "step": "one AdamW step (step 1, bias-corrected) after clipping the trained gradients' norm to grad_clip",
            "qat": "latent = the quantized weights; w = Q(clamp(latent)) per row on the grid refitted from the float row "
                   "(absmax, exact scale), kept; gradient straight through (d/d latent = d/d w)",
            "adaround": "one 6x16 matrix, per-row grids (f32 scales and minima, which C reads), "
                        "G = X^T X / n of a 64-row X with a shared factor; objective tr(E G E^T) + lambda sum(1 - |2h - 1|^beta), "
                        "h = clamp(sigmoid(V) (zeta - gamma) + gamma, 0, 1), E = minimum + clamp(floor((w - minimum)/scale) + h) scale - w",
            "scales": "per row theta (0 at the start); w = code * s0 * exp(theta), codes = the quantized weights / s0, "
                      "s0 the refitted row scale (exact)",
            "lwc": "per row theta (0 at the start); w = s * clamp(round(w_float / s), -qmax, qmax), s = s0 * exp(theta), "
                   "the rounding straight through, the clamp's gradient autograd's"}
    path = os.path.join(out, TUNE_FILE)
    write_safetensors(path, tensors, meta)
    return [path]
