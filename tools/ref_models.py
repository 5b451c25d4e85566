"""The models the correction, lstsq and eval references run on: the tiny fixture model of
`gpt` with its default-scope matrices quantized by the `quant` reference, and a small model
(ctx 48 > d_model 16, so one window gives a well-posed least-squares problem) trained briefly on
a synthetic language so its next-character distributions are peaked, plus its quantized copy."""
import functools
import os

import numpy as np
import torch

import ref_gpt
import ref_quant
from ref_common import GPT, VOCAB, clone_gpt, is_default_quantized, load_gpt, save_gpt

TINY_FLOAT_FILE = ref_gpt.INIT_FILE
TINY_QUANT_FILE = "gpt_tiny_quant3.safetensors"
SMALL_FLOAT_FILE = "gpt_small_float.safetensors"
SMALL_QUANT_FILE = "gpt_small_quant3.safetensors"
# the quantized copies: the default scheme (README: Quantization; symmetric absmax, per output
# channel, scope linear,head) at 3 bits with the exact double scale (what the C quantizer does today)
QUANT_BITS, QUANT_ASYMMETRIC, QUANT_GRANULARITY, QUANT_DTYPE = 3, 0, "channel", "f64"
QUANT_DESCRIPTION = "int3 sym-absmax channel rtn scope=linear,head, exact (f64) scales"

SMALL_CONFIG = dict(vocab_size=len(VOCAB), ctx=48, d_model=16, n_layer=3, n_head=2)
SMALL_SEED = 4242
SMALL_TRAIN_STEPS = 300
SMALL_TRAIN_BATCH = 16
SMALL_LR = 1e-2


def quantized_state(model):
    """model's parameters with the default-scope matrices fake-quantized (ref_quant.quantize_matrix)."""
    state = {}
    for name, p in model.named_parameters():
        w = p.detach().float().numpy()
        if is_default_quantized(name):
            w = ref_quant.quantize_matrix(w, QUANT_BITS, QUANT_ASYMMETRIC, QUANT_GRANULARITY, QUANT_DTYPE)
        state[name] = torch.from_numpy(np.ascontiguousarray(w))
    return state


def quantized_copy(model):
    q = clone_gpt(model)
    q.load_state_dict(quantized_state(model), strict=True)
    return q


def synthetic_text(n, seed):
    """A toy language over VOCAB: words of a fixed lexicon, a few punctuation marks and line breaks,
    chosen by a seeded first-order chain, so a small model learns peaked predictions."""
    rng = np.random.default_rng(seed)
    lexicon = ["ab", "Bab", "Cba", "aab", "bAC", "Ab", "ba", "CCa", "bb", "Aa", "BaC", "abba"]
    follow = rng.dirichlet(np.full(len(lexicon), 0.3), size=len(lexicon))
    out, word = [], int(rng.integers(len(lexicon)))
    while sum(map(len, out)) < n:
        out.append(lexicon[word])
        r = rng.random()
        out.append(",  " if r < 0.1 else ". " if r < 0.15 else "!\n" if r < 0.18 else "'" if r < 0.2 else ":" if r < 0.21
                   else "?\n" if r < 0.23 else " ")
        word = int(rng.choice(len(lexicon), p=follow[word]))
    text = "".join(out)[:n]
    assert set(text) <= set(VOCAB)
    return text


def encode(text):
    return torch.tensor([VOCAB.index(ch) for ch in text], dtype=torch.long)


@functools.lru_cache(maxsize=None)
def tiny_models():
    """(float, quantized) tiny models: the float one from the committed gpt_tiny_init checkpoint's
    seed (bit-identical to the file), the quantized one by the quant reference."""
    model, _, _ = ref_gpt.tiny_model_and_batch()
    return model, quantized_copy(model)


@functools.lru_cache(maxsize=None)
def small_models():
    """(float, quantized) small models; the float one trained SMALL_TRAIN_STEPS AdamW steps on a
    synthetic text (deterministic: one thread, seeded windows)."""
    generator = torch.Generator().manual_seed(SMALL_SEED)
    model = GPT(**SMALL_CONFIG)
    model.init_weights(generator, ref_gpt.WEIGHT_SCALE, ref_gpt.NORM_BIAS_NOISE)
    ids = encode(synthetic_text(20000, SMALL_SEED))
    T, B = SMALL_CONFIG["ctx"], SMALL_TRAIN_BATCH
    opt = torch.optim.AdamW(model.parameters(), lr=SMALL_LR, betas=(0.9, 0.95), weight_decay=0.0)
    for _ in range(SMALL_TRAIN_STEPS):
        starts = torch.randint(0, len(ids) - T - 1, (B,), generator=generator)
        x = torch.stack([ids[s:s + T] for s in starts])
        y = torch.stack([ids[s + 1:s + T + 1] for s in starts])
        opt.zero_grad(set_to_none=True)
        _, loss = model(x, y)
        loss.backward()
        opt.step()
    print(f"small model: train loss after {SMALL_TRAIN_STEPS} steps {loss.item():.4f} (uniform: {np.log(len(VOCAB)):.4f})")
    model.zero_grad(set_to_none=True)
    return model, quantized_copy(model)


def write_tiny_quant(out):
    """gpt_tiny_quant3.safetensors; checks that the tiny float model still matches the committed file."""
    model, quant = tiny_models()
    committed = os.path.join(out, TINY_FLOAT_FILE)
    if os.path.exists(committed):
        on_disk, _ = load_gpt(committed)
        for (n, a), b in zip(model.state_dict().items(), on_disk.state_dict().values()):
            assert torch.equal(a, b), f"{committed}: {n} differs from the seeded tiny model"
    path = os.path.join(out, TINY_QUANT_FILE)
    save_gpt(path, quant)
    return path


def write_small(out):
    model, quant = small_models()
    paths = [os.path.join(out, SMALL_FLOAT_FILE), os.path.join(out, SMALL_QUANT_FILE)]
    save_gpt(paths[0], model)
    save_gpt(paths[1], quant)
    return paths
