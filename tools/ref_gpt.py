"""Reference `gpt`: the float engine (README: Float model and training) — forward, loss, every
parameter gradient and 10 AdamW steps of the tiny model. Fixture layout:
tools/pytorch_reference.py's docstring."""
import os

import numpy as np
import torch

from ref_common import (GPT, VOCAB, checkpoint_metadata, checkpoint_order, max_rel, read_safetensors,
                        write_safetensors)

# ---- the fixture's configuration (small: the two files together stay well under 1 MB) ----
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


def tiny_model_and_batch():
    """The tiny model at its initial weights and the batch (inputs, targets), from SEED: the same
    draws, in the same order, that wrote gpt_tiny_init.safetensors."""
    generator = torch.Generator().manual_seed(SEED)
    model = GPT(**CONFIG)
    model.init_weights(generator, WEIGHT_SCALE, NORM_BIAS_NOISE)
    V, B, T = CONFIG["vocab_size"], BATCH, SEQ
    # a window of B*T+1 random tokens, cut into B rows; targets are inputs shifted by one
    stream = torch.randint(0, V, (B, T + 1), generator=generator)
    return model, stream[:, :-1].contiguous(), stream[:, 1:].contiguous()


def make_optimizer(model, weight_decay, decay_embeddings=True):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        is_embedding = name.startswith("transformer.wte") or name.startswith("transformer.wpe")
        (decay if p.dim() >= 2 and (decay_embeddings or not is_embedding) else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=LR, betas=BETAS, eps=ADAM_EPS)


def train_steps(model, inputs, targets, weight_decay=WEIGHT_DECAY, decay_embeddings=True, clip=GRAD_CLIP, steps=STEPS):
    opt = make_optimizer(model, weight_decay, decay_embeddings)
    losses, norms = [], []
    for _ in range(steps):
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


def write_gpt(out):
    model, inputs, targets = tiny_model_and_batch()
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
    init_path = os.path.join(out, INIT_FILE)
    write_safetensors(init_path, [(n, init_state[n].numpy()) for n in order], checkpoint_metadata(CONFIG))
    expected = [("inputs", inputs.float().numpy()), ("targets", targets.float().numpy()),
                ("logits", logits.numpy()), ("loss", np.array([loss.item()], dtype=np.float32))]
    expected += [("grad." + n, grads[n].numpy()) for n in order]
    expected += [("step_losses", np.array(losses, dtype=np.float32)),
                 ("step_grad_norms", np.array(norms, dtype=np.float32))]
    meta = {
        "generator": "tools/pytorch_reference.py", "torch": torch.__version__, "seed": SEED,
        "batch": BATCH, "seq": SEQ, "steps": STEPS, "lr": LR, "lr_schedule": "constant",
        "weight_decay": WEIGHT_DECAY, "decay": "params with dim >= 2 (matrices and embeddings)",
        "grad_clip": GRAD_CLIP, "beta1": BETAS[0], "beta2": BETAS[1], "eps": ADAM_EPS,
        "step_losses": "loss of the forward pass before AdamW step s = 1..steps",
        "step_grad_norms": "global gradient norm before clipping at step s",
    }
    expected_path = os.path.join(out, EXPECTED_FILE)
    write_safetensors(expected_path, expected, meta)

    # ---- self-check 1: the checkpoint loads strictly and reproduces the outputs bit for bit ----
    tensors, metadata = read_safetensors(init_path)
    assert metadata == {k: str(v) for k, v in checkpoint_metadata(CONFIG).items()}
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
    return [init_path, expected_path]
