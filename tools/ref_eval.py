"""Reference `eval`: `qcorr eval --model M --reference F` (issue 12 part 4) — agreement of a
(quantized) model with the float model over every validation position, with the standard errors
of issue 12 part 3. Fixture layout: tools/pytorch_reference.py."""
import os

import numpy as np
import torch
import torch.nn.functional as F

import ref_models
from ref_common import clone_gpt, write_safetensors

EVAL_FILE = "eval_reference.safetensors"
EVAL_WINDOWS = 12
EVAL_SEED = 5151
PERCENTILE = 99


def window_logits(model, ids, T, n_windows):
    """Logits (n_windows, T, V) of the windows SPEC section 5 evaluates: window i reads
    ids[iT .. iT+T-1] (and predicts ids[iT+1 .. iT+T])."""
    x = torch.stack([ids[i * T:(i + 1) * T] for i in range(n_windows)])
    with torch.no_grad():
        logits, _ = model(x)
    return logits


def standard_error(values):
    """Standard error of the mean: std with n-1 over sqrt(n)."""
    values = np.asarray(values, dtype=np.float64)
    return float(np.std(values, ddof=1) / np.sqrt(len(values)))


def reference_eval(model, reference, ids, T):
    """Every statistic of `eval --reference`, from the two models' logits (float64 from there on):
      per position: kl = KL(p_F || p_M) = sum_v p_F (log p_F - log p_M); loss_M, loss_F the
        next-token cross-entropies; agree = argmax p_F == argmax p_M (first index on ties);
      kl_mean: the mean of kl over all n*T positions; kl_se: the standard error over windows
        (std with n-1 of the n per-window means, over sqrt(n)); kl_p99: np.percentile(kl, 99)
        over positions, numpy's default 'linear' method (h = (N-1)*0.99, x[floor h] + (h - floor
        h)(x[floor h + 1] - x[floor h]) of the sorted values); top1_agree: the mean of agree;
      loss_diff = loss_M - loss_F (means over positions); loss_diff_se: the standard error of the
        per-window differences of mean losses; loss_se of each model the same over its own.
    n = floor((len(ids) - 1) / T) windows."""
    n = (len(ids) - 1) // T
    lm, lf = window_logits(model, ids, T, n).double(), window_logits(reference, ids, T, n).double()
    targets = torch.stack([ids[i * T + 1:(i + 1) * T + 1] for i in range(n)])
    log_q, log_p = F.log_softmax(lm, dim=-1), F.log_softmax(lf, dim=-1)
    kl = (log_p.exp() * (log_p - log_q)).sum(-1).numpy()                       # (n, T)
    loss_m = -log_q.gather(-1, targets[..., None])[..., 0].numpy()
    loss_f = -log_p.gather(-1, targets[..., None])[..., 0].numpy()
    agree = (np.argmax(lm.numpy(), axis=-1) == np.argmax(lf.numpy(), axis=-1)).astype(np.float64)
    window_m, window_f, window_kl = loss_m.mean(1), loss_f.mean(1), kl.mean(1)
    return {
        "position.kl": kl, "position.loss_model": loss_m, "position.loss_reference": loss_f, "position.agree": agree,
        "window.loss_model": window_m, "window.loss_reference": window_f, "window.kl": window_kl,
        "kl_mean": kl.mean(), "kl_se": standard_error(window_kl), "kl_p99": np.percentile(kl.ravel(), PERCENTILE),
        "top1_agree": agree.mean(), "loss_model": loss_m.mean(), "loss_reference": loss_f.mean(),
        "loss_model_se": standard_error(window_m), "loss_reference_se": standard_error(window_f),
        "loss_diff": loss_m.mean() - loss_f.mean(), "loss_diff_se": standard_error(window_m - window_f),
    }


def top2_gap(logits):
    top = torch.topk(logits, 2, dim=-1).values
    return float((top[..., 0] - top[..., 1]).min())


def write_eval(out):
    paths = ref_models.write_small(out)
    reference, model = ref_models.small_models()
    T = ref_models.SMALL_CONFIG["ctx"]
    ids = ref_models.encode(ref_models.synthetic_text(EVAL_WINDOWS * T + 1, EVAL_SEED))
    stats = reference_eval(model, reference, ids, T)
    stats64 = reference_eval(clone_gpt(model, torch.float64), clone_gpt(reference, torch.float64), ids, T)
    # the statistics by a second route: numpy's percentile against the formula it is said to use
    kl_sorted = np.sort(stats["position.kl"].ravel())
    h = (kl_sorted.size - 1) * PERCENTILE / 100
    lo = int(np.floor(h))
    assert abs(kl_sorted[lo] + (h - lo) * (kl_sorted[lo + 1] - kl_sorted[lo]) - stats["kl_p99"]) <= 1e-15
    n = EVAL_WINDOWS
    assert stats["position.kl"].shape == (n, T)
    scalars = [k for k, v in stats.items() if np.ndim(v) == 0]
    for key in scalars:
        rel = abs(stats[key] - stats64[key]) / abs(stats64[key])
        print(f"eval {key} = {stats[key]:.6g}; float32 models vs float64: rel {rel:.1e}")
    gaps = [top2_gap(window_logits(m, ids, T, n)) for m in (model, reference)]
    flips = int(np.sum(stats["position.agree"] != stats64["position.agree"]))
    print(f"eval: smallest top-2 logit gap {min(gaps):.1e} (model {gaps[0]:.1e}, reference {gaps[1]:.1e}); "
          f"agreement flips float32 vs float64: {flips}")
    tensors = [("ids", ids.float().numpy())]
    tensors += [(k, np.asarray(v, dtype=np.float32).reshape(np.shape(v) or (1,))) for k, v in stats.items()]
    path = os.path.join(out, EVAL_FILE)
    meta = {
        "generator": "tools/pytorch_reference.py eval",
        "model": ref_models.SMALL_QUANT_FILE, "reference": ref_models.SMALL_FLOAT_FILE,
        "windows": n, "T": T,
        "kl": "KL(p_reference || p_model) per position, nats",
        "percentile": f"kl_p{PERCENTILE}: numpy.percentile default (linear): h = (N-1)*0.99 over the sorted N values",
        "se": "standard error over windows: std (n-1) of the per-window means / sqrt(n)",
        "top1": "argmax agreement (first index on ties)",
    }
    write_safetensors(path, tensors, meta)
    return paths + [path]
