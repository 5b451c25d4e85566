"""torch_step: the PyTorch baseline for `make bench` — the same GPT (nanoGPT layout, pre-LN, GELU
tanh, biases everywhere, untied head with bias), the same training step and the same
correction-training step (base frozen, a correction after every block) as bench/bench.c.

Run with Debian's /usr/bin/python3 (python3-torch). Same timing protocol as bench.c: --warmup
untimed steps, then the median of --steps timed steps; eval is forward + loss under no_grad, the
median of --eval-steps batches of 32 contiguous validation windows.
Output: one human-readable line, or with --json one JSON object with bench.c's keys.
"""
import argparse
import json
import math
import os
import resource
import statistics
import sys
import time

import torch
import torch.nn as nn

BATCH, CONTEXT, HEADS, VOCAB = 32, 128, 4, 65


# The model is the PyTorch reference of the parity test (tools/ref_common.py, which
# tools/pytorch_reference.py's fixtures use), so the benchmark times exactly the module whose
# outputs the C engine is checked against.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
from ref_common import GPT as ReferenceGPT  # noqa: E402


class GPT(ReferenceGPT):
    """The reference GPT with nanoGPT's plain init and a forward that returns the loss only."""

    def __init__(self, vocab, ctx, d_model, n_layer, n_head):
        super().__init__(vocab, ctx, d_model, n_layer, n_head)
        for name, p in self.named_parameters():
            if p.dim() == 2:
                std = 0.02 / math.sqrt(2 * n_layer) if name.endswith("c_proj.weight") else 0.02
                nn.init.normal_(p, mean=0.0, std=std)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def forward(self, idx, targets):
        return super().forward(idx, targets)[1]


class Correction(nn.Module):
    """src/correct/correct.c's site: x + x W^T + b (hidden 0, W = 0 at the start) or
    x + gelu_tanh(x W1^T + b1) W2^T + b2 (W1 ~ N(0, 0.02), W2 = 0)."""

    def __init__(self, d_model, hidden):
        super().__init__()
        self.hidden = hidden
        if hidden == 0:
            self.lin = nn.Linear(d_model, d_model)
            nn.init.zeros_(self.lin.weight)
            nn.init.zeros_(self.lin.bias)
        else:
            self.fc = nn.Linear(d_model, hidden)
            self.proj = nn.Linear(hidden, d_model)
            nn.init.normal_(self.fc.weight, std=0.02)
            nn.init.zeros_(self.fc.bias)
            nn.init.zeros_(self.proj.weight)
            nn.init.zeros_(self.proj.bias)

    def forward(self, x):
        if self.hidden == 0:
            return x + self.lin(x)
        return x + self.proj(torch.nn.functional.gelu(self.fc(x), approximate="tanh"))


def corrected_loss(model, corrections, idx, targets):
    """The frozen model's forward with corrections[i] after block i, and the cross-entropy."""
    B, T = idx.shape
    x = model.transformer.wte(idx) + model.transformer.wpe(torch.arange(T, dtype=torch.long))
    for block, corr in zip(model.transformer.h, corrections):
        x = corr(block(x))
    logits = model.lm_head(model.transformer.ln_f(x))
    return torch.nn.functional.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


def time_correction(model, train_ids, hidden, args, g):
    """Median ms of a correction-training step: every 1, base frozen, AdamW on the corrections."""
    d_model = model.transformer.wte.weight.shape[1]
    corrections = nn.ModuleList([Correction(d_model, hidden) for _ in model.transformer.h])
    opt = torch.optim.AdamW(corrections.parameters(), lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0)
    times = []
    for step in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        x, y = sample_windows(train_ids, g)
        loss = corrected_loss(model, corrections, x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(corrections.parameters(), 1.0)
        opt.step()
        loss.item()
        if step >= args.warmup:
            times.append(1e3 * (time.perf_counter() - t0))
    return statistics.median(times)


def load_tokens(path, seed):
    """The corpus as byte ids (vocabulary = sorted distinct bytes, split 90/10) or random ids."""
    if path and os.path.exists(path):
        with open(path, "rb") as f:
            data = f.read()
        vocab = sorted(set(data))
        table = torch.zeros(256, dtype=torch.long)
        table[torch.tensor(vocab, dtype=torch.long)] = torch.arange(len(vocab))
        ids = table[torch.frombuffer(bytearray(data), dtype=torch.uint8).long()]
        n_train = int(len(ids) * 0.9)
        return ids[:n_train], ids[n_train:], len(vocab), "corpus"
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (1 << 20,), generator=g)
    return ids, ids, VOCAB, "random"


def sample_windows(ids, g):
    starts = torch.randint(0, len(ids) - CONTEXT - 1, (BATCH,), generator=g)
    offsets = starts[:, None] + torch.arange(CONTEXT + 1)[None, :]
    windows = ids[offsets]
    return windows[:, :-1].contiguous(), windows[:, 1:].contiguous()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="128x4", help="D_MODELxLAYERS, e.g. 64x2, 128x4, 256x6")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--eval-steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data", default=None, help="corpus path; absent: random tokens")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    d_model, n_layer = (int(s) for s in args.size.lower().split("x"))

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    train_ids, eval_ids, vocab, source = load_tokens(args.data, args.seed)
    model = GPT(vocab, CONTEXT, d_model, n_layer, HEADS)
    params = sum(p.numel() for p in model.parameters())
    # nanoGPT's groups: decay on every 2-D tensor (matrices and embeddings), none on vectors
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.95), eps=1e-8)
    g = torch.Generator().manual_seed(args.seed)

    step_t, fwd_t, bwd_t, opt_t = [], [], [], []
    first_loss = last_loss = float("nan")
    for step in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        x, y = sample_windows(train_ids, g)
        loss = model(x, y)
        t1 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t2 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        t3 = time.perf_counter()
        last_loss = loss.item()
        if step == 0:
            first_loss = last_loss
        if step >= args.warmup:
            step_t.append(1e3 * (t3 - t0))
            fwd_t.append(1e3 * (t1 - t0))
            bwd_t.append(1e3 * (t2 - t1))
            opt_t.append(1e3 * (t3 - t2))

    span = BATCH * CONTEXT
    batches = (len(eval_ids) - 1) // span
    eval_t = []
    with torch.no_grad():
        # after the training steps, as in bench.c: no untimed batch first
        for k in range(args.eval_steps):
            chunk = eval_ids[(k % batches) * span:][: span + 1]
            t0 = time.perf_counter()
            model(chunk[:-1].view(BATCH, CONTEXT), chunk[1:].view(BATCH, CONTEXT)).item()
            eval_t.append(1e3 * (time.perf_counter() - t0))

    # correction training: the base frozen (no parameter gradients; autograd then stops at the
    # first correction by itself, since nothing below it needs a gradient)
    for p in model.parameters():
        p.requires_grad_(False)
    corr_ms = {h: time_correction(model, train_ids, h, args, g) for h in (0, 64)}

    step_ms = statistics.median(step_t)
    eval_ms = statistics.median(eval_t)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    out = {
        "engine": "torch", "torch": torch.__version__, "size": args.size, "d_model": d_model, "n_layer": n_layer,
        "n_head": HEADS, "vocab": vocab, "batch": BATCH, "ctx": CONTEXT, "params": params,
        "threads": torch.get_num_threads(), "tokens": source, "steps": args.steps, "warmup": args.warmup,
        "step_ms": step_ms, "best_step_ms": min(step_t), "forward_ms": statistics.median(fwd_t), "backward_ms": statistics.median(bwd_t),
        "optimizer_ms": statistics.median(opt_t), "train_tokens_per_s": span / (step_ms / 1e3),
        "eval_ms": eval_ms, "eval_tokens_per_s": span / (eval_ms / 1e3), "peak_rss_mb": rss_mb,
        "first_loss": first_loss, "last_loss": last_loss,
    }
    for h, ms in corr_ms.items():
        out["corr_h%d_ms" % h] = ms
        out["corr_h%d_tokens_per_s" % h] = span / (ms / 1e3)
    if args.json:
        print(json.dumps(out))
    else:
        print("torch %-6s train %7.1f ms/step %9.0f tok/s (fwd %.1f bwd %.1f opt %.1f ms) | eval %9.0f tok/s | "
              "peak RSS %.0f MB" % (args.size, step_ms, out["train_tokens_per_s"], out["forward_ms"],
                                    out["backward_ms"], out["optimizer_ms"], out["eval_tokens_per_s"], rss_mb))
        print("torch %-6s correction step h0 %.1f ms, h64 %.1f ms" % (args.size, corr_ms[0], corr_ms[64]))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
