"""Reference `eval`: `qcorr eval --model M --reference F` (issue 12 part 4) — agreement of a
(quantized) model with the float model over every validation position, with the standard errors
of issue 12 part 3: on the synthetic small model (`eval`), on a model qcorr trained on the corpus
(`eval-trained`), and on any two checkpoints and a corpus (`eval-files`). Fixture layout and the
commands: tools/pytorch_reference.py."""
import hashlib
import json
import os
import subprocess

import numpy as np
import torch
import torch.nn.functional as F

import ref_models
from ref_common import clone_gpt, load_gpt, read_safetensors, write_safetensors

EVAL_FILE = "eval_reference.safetensors"
EVAL_WINDOWS = 12
EVAL_SEED = 5151
PERCENTILE = 99


def window_logits(model, ids, T, n_windows, batch=64):
    """Logits (n_windows, T, V) of the windows qcorr evaluates (README: Evaluation and recovery):
    window i reads ids[iT .. iT+T-1] (and predicts ids[iT+1 .. iT+T]); `batch` windows per forward pass, so a
    whole validation split fits in memory."""
    out = []
    for w0 in range(0, n_windows, batch):
        x = torch.stack([ids[i * T:(i + 1) * T] for i in range(w0, min(w0 + batch, n_windows))])
        with torch.no_grad():
            logits, _ = model(x)
        out.append(logits)
    return torch.cat(out)


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


# ---- any qcorr checkpoint pair on a corpus: `eval-files`, and the trained-model fixture ----
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
TRAINED_FLOAT_FILE = "gpt_trained_float.safetensors"
TRAINED_QUANT_FILE = "gpt_trained_quant3.safetensors"
TRAINED_EVAL_FILE = "eval_trained.safetensors"
TRAINED_WINDOWS = 64
# How the two trained checkpoints were made (qcorr at commit 89b3911, `make BUILD=build`, 2 threads):
TRAINED_COMMANDS = (
    "build/qcorr train --d-model 32 --layers 2 --heads 4 --ctx 64 --batch 16 --steps 600 "
    "--data tinyshakespeare.txt --out tests/fixtures/gpt_trained_float.safetensors; "
    "build/qcorr quantize --model tests/fixtures/gpt_trained_float.safetensors --bits 3 --granularity channel "
    "--out tests/fixtures/gpt_trained_quant3.safetensors")
TRAINED_COMMIT = "89b39117f3d146c5115776ad68c8533452dbf846"

# The fields `qcorr eval --model M --reference F --json` prints that this reference computes, and
# issue 12's bounds for the two to agree: (kind, bound), kind "rel" (|diff| <= bound |torch|),
# "abs" (|diff| <= bound) or "loss" (|diff| <= bound (loss_M + loss_F): a difference of two
# losses, each held to `bound` relative).
AGREEMENT_BOUNDS = {
    "loss": ("rel", 1e-4), "loss_se": ("rel", 0.03), "kl_mean": ("rel", 0.02), "kl_se": ("rel", 0.02),
    "kl_p99": ("rel", 0.02), "top1_agree": ("abs", 0.002), "loss_diff": ("loss", 1e-4), "loss_diff_se": ("rel", 0.03),
}


def find_corpus(flag=None):
    """qcorr's search order (README: Data): the flag (which must exist), $QCORR_DATA,
    data/tinyshakespeare.txt, ../shared/data/tinyshakespeare.txt."""
    if flag:
        if not os.path.isfile(flag):
            raise SystemExit(f"{flag}: no such corpus file")
        return flag
    for path in (os.environ.get("QCORR_DATA"), "data/tinyshakespeare.txt", "../shared/data/tinyshakespeare.txt"):
        if path and os.path.isfile(path):
            return path
    raise SystemExit("no corpus: pass --data PATH or set QCORR_DATA (tiny Shakespeare is never committed)")


def validation_ids(path, vocab):
    """The corpus's validation split (README: Data: bytes from floor(0.9 N) on, N its size, the
    split computed as C's (size_t)(0.9 * (double)N)) as token ids of `vocab` (the checkpoint's
    string, byte b stored as code point b); also its offset in the corpus and the file's sha256."""
    with open(path, "rb") as f:
        raw = f.read()
    id_of = np.full(256, -1, dtype=np.int64)
    for i, ch in enumerate(vocab):
        id_of[ord(ch)] = i
    n_train = int(0.9 * float(len(raw)))
    ids = id_of[np.frombuffer(raw[n_train:], dtype=np.uint8)]
    if (ids < 0).any():
        offset = n_train + int(np.argmax(ids < 0))
        byte = raw[offset]
        what = f"character {chr(byte)!r} (byte {byte}" if 32 <= byte < 127 else f"byte {byte} ("
        raise SystemExit(f"{path}: {what}, offset {offset}) is not in the checkpoint's vocabulary")
    return torch.from_numpy(ids), n_train, hashlib.sha256(raw).hexdigest()


def load_for_eval(path):
    """A float or quantized qcorr checkpoint as a float GPT (a quantized one holds its weights
    dequantized, so it loads as a float one) and its vocabulary; refuses what this reference
    does not model: correction layers and activation quantization."""
    tensors, meta = read_safetensors(path)
    if any(k.startswith("correction") for k in meta) or any(n.startswith("corrections.") for n in tensors):
        raise SystemExit(f"{path}: a corrected checkpoint; this reference evaluates float and quantized ones only")
    if int(meta.get("quant_act_bits", "0")) != 0:
        raise SystemExit(f"{path}: activation quantization (quant_act_bits {meta['quant_act_bits']}) is not modelled here")
    return load_gpt(path)


def load_pair(model_path, reference_path):
    (model, vocab), (reference, ref_vocab) = load_for_eval(model_path), load_for_eval(reference_path)
    if vocab != ref_vocab or model.ctx != reference.ctx:
        raise SystemExit(f"--reference {reference_path} has another context length or vocabulary than --model {model_path}")
    return model, reference, vocab


def reported_fields(stats):
    """stats (reference_eval) under the names `qcorr eval --json` gives them."""
    return {
        "loss": stats["loss_model"], "loss_se": stats["loss_model_se"], "kl_mean": stats["kl_mean"],
        "kl_se": stats["kl_se"], "kl_p99": stats["kl_p99"], "top1_agree": stats["top1_agree"],
        "loss_diff": stats["loss_diff"], "loss_diff_se": stats["loss_diff_se"],
        "loss_reference": stats["loss_reference"], "loss_reference_se": stats["loss_reference_se"],
    }


def agreement_table(torch_fields, qcorr_fields):
    """Lines comparing the two field by field at AGREEMENT_BOUNDS, and whether all are within."""
    lines = [f"{'field':13s} {'pytorch':>14s} {'qcorr':>14s} {'abs diff':>10s} {'rel diff':>10s}  bound"]
    all_ok = True
    for name, (kind, bound) in AGREEMENT_BOUNDS.items():
        want, got = float(torch_fields[name]), float(qcorr_fields[name])
        diff = abs(got - want)
        limit = {"rel": bound * abs(want), "abs": bound,
                 "loss": bound * (abs(torch_fields["loss"]) + abs(torch_fields["loss_reference"]))}[kind]
        ok = diff <= limit
        all_ok &= ok
        rel = diff / abs(want) if want else 0.0 if diff == 0 else float("inf")
        label = {"rel": f"{bound:g} rel", "abs": f"{bound:g} abs", "loss": f"{bound:g} (loss_M + loss_F)"}[kind]
        lines.append(f"{name:13s} {want:14.8g} {got:14.8g} {diff:10.2e} {rel:10.2e}  {label} {'ok' if ok else 'NOT OK'}")
    return lines, all_ok


def eval_files(argv):
    """`pytorch_reference.py eval-files --model M --reference F [--data CORPUS] [--qcorr BIN]`: the
    numbers of `qcorr eval --model M --reference F --data CORPUS --json` over the whole validation
    split, computed here, as one JSON object; with --qcorr, runs that command too and prints both
    side by side with issue 12's bounds (exit 1 if any field is outside its bound)."""
    import argparse
    parser = argparse.ArgumentParser(prog="pytorch_reference.py eval-files", description=eval_files.__doc__.split(":")[0])
    parser.add_argument("--model", required=True, help="float or quantized qcorr checkpoint")
    parser.add_argument("--reference", required=True, help="the float checkpoint it is compared with")
    parser.add_argument("--data", help="corpus (default: $QCORR_DATA, data/tinyshakespeare.txt, ../shared/data/tinyshakespeare.txt)")
    parser.add_argument("--qcorr", metavar="BIN", help="also run BIN eval on the same files and compare")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    model, reference, vocab = load_pair(args.model, args.reference)
    data = find_corpus(args.data)
    ids, _, _ = validation_ids(data, vocab)
    T = model.ctx
    n = (len(ids) - 1) // T
    if n < 2:
        raise SystemExit(f"{data}: the validation split holds {n} windows of {T}; a standard error needs 2")
    fields = reported_fields(reference_eval(model, reference, ids, T))
    out = {"model": args.model, "reference": args.reference, "data": data, "windows": n, "tokens": n * T}
    out.update({k: float(v) for k, v in fields.items()})
    if not args.qcorr:
        print(json.dumps(out))
        return 0
    cmd = [args.qcorr, "eval", "--model", args.model, "--reference", args.reference, "--data", data, "--json"]
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({run.returncode}): {run.stderr.strip()}")
    theirs = json.loads(run.stdout)
    if theirs["windows"] != n:
        raise SystemExit(f"qcorr evaluated {theirs['windows']} windows, this reference {n}")
    print(f"{args.model} vs {args.reference} on {data}: {n} windows of {T}")
    lines, ok = agreement_table(out, theirs)
    print("\n".join(lines))
    return 0 if ok else 1


def write_eval_trained(out):
    """The trained-model fixture: `eval`'s numbers for qcorr's own model trained on the corpus
    (TRAINED_FLOAT_FILE) and its int3 copy (TRAINED_QUANT_FILE), both committed, over the first
    TRAINED_WINDOWS windows of the corpus's validation split (stored as `ids`: the corpus is not)."""
    paths = [os.path.join(out, f) for f in (TRAINED_QUANT_FILE, TRAINED_FLOAT_FILE)]
    for path in paths:
        if not os.path.isfile(path):
            raise SystemExit(f"{path} is missing: qcorr writes it ({TRAINED_COMMANDS})")
    model, reference, vocab = load_pair(*paths)
    data = find_corpus()
    all_ids, n_train, sha = validation_ids(data, vocab)
    if sha != SHAKESPEARE_SHA256:
        raise SystemExit(f"{data}: sha256 {sha} is not tiny Shakespeare's {SHAKESPEARE_SHA256}")
    T, n = model.ctx, TRAINED_WINDOWS
    ids = all_ids[:n * T + 1]
    stats = reference_eval(model, reference, ids, T)
    stats64 = reference_eval(clone_gpt(model, torch.float64), clone_gpt(reference, torch.float64), ids, T)
    scalars = [k for k, v in stats.items() if np.ndim(v) == 0]
    for key in scalars:
        rel = abs(stats[key] - stats64[key]) / abs(stats64[key])
        print(f"eval-trained {key} = {stats[key]:.6g}; float32 models vs float64: rel {rel:.1e}")
    gaps = [top2_gap(window_logits(m, ids, T, n)) for m in (model, reference)]
    flips = int(np.sum(stats["position.agree"] != stats64["position.agree"]))
    print(f"eval-trained: smallest top-2 logit gap {min(gaps):.1e} (model {gaps[0]:.1e}, reference {gaps[1]:.1e}); "
          f"agreement flips float32 vs float64: {flips}")
    tensors = [("ids", ids.float().numpy())]
    tensors += [(k, np.asarray(stats[k], dtype=np.float32)) for k in ("window.kl", "window.loss_model", "window.loss_reference")]
    tensors += [(k, np.asarray(stats[k], dtype=np.float32).reshape(1)) for k in scalars]
    meta = {
        "generator": "tools/pytorch_reference.py eval-trained",
        "model": TRAINED_QUANT_FILE, "reference": TRAINED_FLOAT_FILE, "windows": n, "T": T,
        "ids": f"the corpus's validation split, bytes [{n_train}, {n_train + n * T + 1}) of tinyshakespeare.txt "
               f"(sha256 {sha}), as the checkpoints' token ids",
        "checkpoints": f"{TRAINED_COMMANDS} (qcorr {TRAINED_COMMIT})",
        "kl": "KL(p_reference || p_model) per position, nats", "se": "std (n-1) of the per-window means / sqrt(n)",
        "top1": "argmax agreement (first index on ties)",
    }
    path = os.path.join(out, TRAINED_EVAL_FILE)
    write_safetensors(path, tensors, meta)
    return [path]
