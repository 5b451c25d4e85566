"""Reference `quant`: round-to-nearest fake quantization (README: Quantization) with the scale's
storage dtype (issue 12 part 1). Written from the README in float64 numpy; every dequantized value is
rounded once to float32. Fixture layout: tools/pytorch_reference.py."""
import os

import numpy as np

from ref_common import SCALE_DTYPES, round_to_dtype, write_safetensors

# ---- one span: a scale (and, asymmetric, a minimum) fitted, rounded to its dtype, then applied ----


def levels(bits, asymmetric):
    """Symmetric: codes -qmax..qmax with qmax = 2^(b-1)-1; asymmetric: codes 0..2^b-1."""
    return (1 << bits) - 1 if asymmetric else (1 << (bits - 1)) - 1


def fit_span(x, bits, asymmetric, dtype, ratio=1.0):
    """(scale, minimum) of the float64 values x, both rounded to dtype before any use (minimum is
    None when symmetric). ratio < 1 clips the range: symmetric scale = (ratio*absmax)/qmax;
    asymmetric range [ratio*min, ratio*max], scale = (ratio*max - ratio*min)/(2^b-1)."""
    top = levels(bits, asymmetric)
    if not asymmetric:
        return float(round_to_dtype((ratio * np.abs(x).max()) / top, dtype)), None
    lo, hi = ratio * x.min(), ratio * x.max()
    return float(round_to_dtype((hi - lo) / top, dtype)), float(round_to_dtype(lo, dtype))


def apply_span(x, scale, minimum, bits, asymmetric):
    """Round to nearest (ties to even: np.rint), clamp to the codes, dequantize in float64 and
    round once to float32. A zero scale gives code 0 everywhere: 0 (symmetric) or the stored
    minimum (asymmetric; a constant span stays exact when its minimum is stored exactly)."""
    top = levels(bits, asymmetric)
    if not asymmetric:
        if scale == 0.0:
            return np.zeros(x.shape, dtype=np.float32)
        q = np.clip(np.rint(x / scale), -top, top)
        return (q * scale).astype(np.float32)
    if scale == 0.0:
        return np.full(x.shape, minimum, dtype=np.float64).astype(np.float32)
    q = np.clip(np.rint((x - minimum) / scale), 0, top)
    return (minimum + q * scale).astype(np.float32)


def quantize_span(x, bits, asymmetric, dtype):
    x = np.asarray(x, dtype=np.float32).astype(np.float64)
    scale, minimum = fit_span(x, bits, asymmetric, dtype)
    return apply_span(x, scale, minimum, bits, asymmetric)


def span_slices(rows, cols, granularity):
    """The spans of a (rows, cols) matrix: granularity 'tensor', 'channel' (one row) or an int G
    (G consecutive weights of a row; G divides cols), as lists of (row slice, column slice)."""
    if granularity == "tensor":
        return [(slice(0, rows), slice(0, cols))]
    span = cols if granularity == "channel" else int(granularity)
    assert cols % span == 0, f"group {span} does not divide {cols}"
    return [(slice(r, r + 1), slice(c, c + span)) for r in range(rows) for c in range(0, cols, span)]


def quantize_matrix(w, bits, asymmetric, granularity, dtype):
    w = np.asarray(w, dtype=np.float32)
    out = np.empty_like(w)
    for rs, cs in span_slices(*w.shape, granularity):
        out[rs, cs] = quantize_span(w[rs, cs], bits, asymmetric, dtype)
    return out


# ---- fixtures ----
RTN_FILE = "quant_rtn.safetensors"
RTN_GROUP = 8
RTN_GRANULARITIES = {"tensor": "tensor", "channel": "channel", f"group{RTN_GROUP}": RTN_GROUP}


def rtn_inputs(seed=2024):
    rng = np.random.default_rng(seed)
    normal = (0.1 * rng.standard_t(4, size=(6, 32))).astype(np.float32)
    edge = np.zeros((8, 32), dtype=np.float64)
    edge[0] = 0.05 * rng.standard_normal(32)
    edge[0, 5] = 0.8                                           # an outlier
    edge[1] = 0.0                                              # all zero: stays zero
    edge[2] = 0.3                                              # constant
    edge[3] = np.tile([7, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 3.5], 4)    # 4-bit sym: scale 1, ties
    edge[4] = np.tile([0, 15, 0.5, 1.5, 2.5, 13.5, 14.5, 7.5], 4)      # 4-bit asym: scale 1, ties
    edge[5] = 3e5 * rng.standard_normal(32)                    # scale overflows f16 (saturates)
    edge[6] = 1e-8 * rng.standard_normal(32)                   # scale underflows f16 (some to zero)
    edge[7] = 1e-39 * rng.standard_normal(32)                  # float32 subnormals: bf16/f32 underflow
    return {"normal": normal, "edge": edge.astype(np.float32)}


def rtn_name(which, bits, asymmetric, gran, dtype):
    return f"q.{which}.b{bits}.{'asym' if asymmetric else 'sym'}.{gran}.{dtype}"


def rtn_configs():
    for which in ("normal", "edge"):
        for bits in range(2, 9):
            for asymmetric in (0, 1):
                for gran in RTN_GRANULARITIES:
                    if which == "edge" and gran == "tensor":
                        continue  # the 3e5 row would own the tensor's scale and zero the rest
                    for dtype in SCALE_DTYPES:
                        yield which, bits, asymmetric, gran, dtype


def self_check_rtn(inputs, results):
    # exact levels: every dequantized value is code * scale (+ minimum) of its span
    w = inputs["normal"].astype(np.float64)
    for bits in range(2, 9):
        for dtype in SCALE_DTYPES:
            for asym in (0, 1):
                q = results[rtn_name("normal", bits, asym, "channel", dtype)].astype(np.float64)
                for r in range(w.shape[0]):
                    scale, minimum = fit_span(w[r], bits, asym, dtype)
                    codes = (q[r] - (minimum or 0.0)) / scale
                    assert np.all(np.abs(codes - np.rint(codes)) < 1e-3), (bits, dtype, asym)
                    assert codes.min() >= (0 if asym else -levels(bits, 0)) - 1e-3 and codes.max() <= levels(bits, asym) + 1e-3
                # idempotent where the extremes are stored exactly (f64 scales)
                if dtype == "f64":
                    again = quantize_matrix(q.astype(np.float32), bits, asym, "channel", dtype)
                    assert np.array_equal(again, q.astype(np.float32)), ("not idempotent", bits, asym)
    # the tie rows: 4-bit scale exactly 1 in every dtype, so x/scale lands on .5 and goes to even
    for dtype in SCALE_DTYPES:
        sym = results[rtn_name("edge", 4, 0, "channel", dtype)]
        assert list(sym[3, :8]) == [7, 0, 2, 2, 0, -2, -2, 4], sym[3, :8]
        asym = results[rtn_name("edge", 4, 1, "channel", dtype)]
        assert list(asym[4, :8]) == [0, 15, 0, 2, 2, 14, 14, 8], asym[4, :8]
    assert not np.any(results[rtn_name("edge", 2, 0, "channel", "f64")][1]), "zero row"
    assert np.all(results[rtn_name("edge", 3, 1, "channel", "f64")][2] == np.float32(0.3)), "constant row (asym)"
    # f16 saturation: the 2-bit symmetric scale of the 3e5 row would be its absmax, > 65504
    row = inputs["edge"][5].astype(np.float64)
    assert np.abs(row).max() > 65504
    assert np.abs(results[rtn_name("edge", 2, 0, "channel", "f16")][5]).max() == 65504.0
    # scales that round to zero: f16 at 1e-8 (some spans), bf16 on float32 subnormals at 8 bits
    assert not np.any(results[rtn_name("edge", 8, 0, "channel", "bf16")][7])
    assert np.any(results[rtn_name("edge", 8, 0, "channel", "f64")][7])
    assert not np.any(results[rtn_name("edge", 8, 0, "channel", "f16")][6])
    # the dtypes differ somewhere (else the f16/bf16 tensors would test nothing new)
    for dtype in ("f32", "f16", "bf16"):
        n = sum(int(np.sum(results[k] != results[k.rsplit(".", 1)[0] + ".f64"])) for k in results if k.endswith("." + dtype))
        print(f"quant: {dtype} scales change {n} of the dequantized values against the exact (f64) scales")
        assert n > 0


def write_rtn(out):
    inputs = rtn_inputs()
    results = {rtn_name(*c): quantize_matrix(inputs[c[0]], c[1], c[2], RTN_GRANULARITIES[c[3]], c[4]) for c in rtn_configs()}
    self_check_rtn(inputs, results)
    path = os.path.join(out, RTN_FILE)
    meta = {
        "generator": "tools/pytorch_reference.py quant",
        "names": "q.{input}.b{bits}.{sym|asym}.{tensor|channel|group8}.{f64|f32|f16|bf16}",
        "group": RTN_GROUP,
        "scale_dtypes": "f64: the scale (and minimum) as computed in double, not rounded; f32/f16/bf16: rounded "
                        "to that type, to nearest even, saturating at its largest finite value, before use",
        "edge_rows": "0 normal with an outlier, 1 zeros, 2 constant 0.3, 3 4-bit sym ties, 4 4-bit asym ties, "
                     "5 N(0,3e5): f16 scale overflow, 6 N(0,1e-8): f16 scale underflow, 7 N(0,1e-39): subnormals",
    }
    write_safetensors(path, [("input.normal", inputs["normal"]), ("input.edge", inputs["edge"])] +
                      sorted(results.items()), meta)
    print(f"quant: {len(results)} quantized matrices")
    return [path]
