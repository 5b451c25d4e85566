#!/usr/bin/python3
"""PyTorch/numpy reference for everything numeric in qcorr: fixtures for the C parity suites.

As llm.c's train_gpt2.py is for test_gpt2.c, each reference below is written from SPEC.md, the README and the papers (never
from src/), and writes fixtures that a C suite compares against tensor by tensor, printing the
max abs / rel difference of each.

Run from the repository root with Debian's Python (python3-torch, python3-numpy):

    /usr/bin/python3 tools/pytorch_reference.py [REFERENCE ...] [--out tests/fixtures]

With no REFERENCE it writes every fixture except `gpt`'s: the committed gpt_tiny_* files were
written on another machine, and a rerun here moves gpt_tiny_expected by float32 rounding only
(<= 7e-7 abs), so they are left as they are unless asked for. Each reference is a function plus
its fixture writer (tools/ref_*.py); each writer checks itself (assertions, and a float64 rerun
that prints how far float32 alone is from exact: the noise the C tolerances must allow).

Conventions of every fixture: safetensors with F32 tensors only (what src/checkpoint.c reads);
token ids and byte values stored as float32 (exact below 2^24); scalars as 1-element tensors;
__metadata__ holds the settings as strings. Model checkpoints are plain float qcorr checkpoints
(gpt_save's keys and tensor names; quantized weights are stored dequantized, with no
quantization metadata, so a C test loads them whatever the C quantizer does).

References and fixtures (tests/fixtures/...):

gpt -> gpt_tiny_init.safetensors, gpt_tiny_expected.safetensors   [tests/test_parity.c]
    The float GPT of SPEC section 2 (nanoGPT layout, untied head with a bias), V=13 (VOCAB),
    ctx 16, d_model 32, 2 layers, 4 heads, init N(0, 0.02)*5 with LayerNorm/bias noise 0.1,
    seed 1337. init: the weights as a qcorr checkpoint. expected:
      inputs, targets     (3,16) token ids
      logits              (3,16,13) forward pass
      loss                (1) mean cross-entropy
      grad.<param>        d loss / d param, every parameter, its shape
      step_losses         (10) loss before each of 10 torch.optim.AdamW steps on the batch
      step_grad_norms     (10) global gradient norm before clipping at each step
    metadata: seed, batch, seq, steps, lr (constant 1e-2), weight_decay 0.1 (dim >= 2, as
    nanoGPT), grad_clip 1.0, beta1/beta2 0.9/0.95, eps 1e-8. In C: gpt_optimizer_step(m, lr,
    0.1f, 1.0f, s). The script also shows each optimizer detail moves the 10 losses by > 1e-4.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import ref_common  # noqa: E402
import ref_gpt  # noqa: E402

# name -> (fixture writer, what it covers); each writer returns the paths it wrote
REFERENCES = {
    "gpt": (ref_gpt.write_gpt, "the float GPT: logits, loss, every gradient, 10 AdamW steps"),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="references:\n" + "\n".join(f"  {k:12s} {v[1]}" for k, v in REFERENCES.items()))
    parser.add_argument("references", nargs="*", metavar="REFERENCE",
                        help="which fixtures to write (default: all but gpt, whose committed files came from "
                             "another machine and differ from a rerun by float32 rounding only)")
    parser.add_argument("--out", default="tests/fixtures", help="fixture directory (default tests/fixtures)")
    args = parser.parse_args()
    unknown = [r for r in args.references if r not in REFERENCES]
    if unknown:
        parser.error(f"unknown reference {', '.join(unknown)} (choose from {', '.join(REFERENCES)})")
    chosen = args.references or [r for r in REFERENCES if r != "gpt"]
    ref_common.set_deterministic()
    ref_common.check_round_to_dtype()
    os.makedirs(args.out, exist_ok=True)
    for name in chosen:
        t0 = time.time()
        print(f"== {name}: {REFERENCES[name][1]}")
        paths = REFERENCES[name][0](args.out)
        for path in paths:
            print(f"wrote {path} ({os.path.getsize(path)} bytes)")
        print(f"== {name}: {time.time() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
