"""References for issue 14's methods, written from the papers and the issue in float64 numpy:
`mse` (scales from a grid of clip ratios), `gptq` (Frantar et al. 2022), `lowrank` (LoRC /
LQER / L2QER error terms from a truncated SVD) and `bias` correction (Nagel et al. 2019).
Fixture layout: tools/pytorch_reference.py."""
import os

import numpy as np

import ref_quant
from ref_common import write_safetensors
from ref_quant import apply_span, fit_span, levels, span_slices

# ---- mse: the clip ratio of each span chosen from a fixed grid ----
MSE_GRID = 100        # ratios r_i = 1 - (0.5*i)/99, i = 0..99: 1.0 down to 0.5, linear
MSE_LOWEST = 0.5


def clip_ratios():
    return [1.0 - (MSE_LOWEST * i) / (MSE_GRID - 1) for i in range(MSE_GRID)]


def span_errors(x, bits, asymmetric, dtype, weight):
    """For each ratio of the grid: (error, scale, minimum), error = sum_j weight_j (x_j - Q(x_j))^2
    over the float32 dequantized values, summed in float64."""
    out = []
    for ratio in clip_ratios():
        scale, minimum = fit_span(x, bits, asymmetric, dtype, ratio)
        out.append((float(np.sum(weight * (x - apply_span(x, scale, minimum, bits, asymmetric)) ** 2)), scale, minimum))
    return out


def mse_fit_span(x, bits, asymmetric, dtype, weight=None):
    """(scale, minimum, ratio index) of least error; the first minimum wins, so ties go to the
    larger ratio and i = 0 (plain RTN) is kept unless another is strictly better."""
    x = np.asarray(x, dtype=np.float64)
    weight = np.ones_like(x) if weight is None else np.broadcast_to(np.asarray(weight, dtype=np.float64), x.shape)
    errors = span_errors(x, bits, asymmetric, dtype, weight)
    best = min(range(len(errors)), key=lambda i: (errors[i][0], i))
    return errors[best][1], errors[best][2], best


def mse_margin(x, bits, asymmetric, dtype, weight=None):
    """Relative gap between the least error and the least *different* one: how close another
    summation order comes to choosing otherwise."""
    x = np.asarray(x, dtype=np.float64)
    weight = np.ones_like(x) if weight is None else np.broadcast_to(np.asarray(weight, dtype=np.float64), x.shape)
    errs = sorted({e for e, _, _ in span_errors(x, bits, asymmetric, dtype, weight)})
    return (errs[1] - errs[0]) / max(errs[1], 1e-300) if len(errs) > 1 else float("inf")


def mse_quantize_matrix(w, bits, asymmetric, granularity, dtype, column_weight=None):
    """(Q, the chosen ratio index of every span: (rows, spans per row), or (1, 1) for tensor)."""
    w = np.asarray(w, dtype=np.float32)
    rows, cols = w.shape
    out = np.empty_like(w)
    cw = np.ones(cols) if column_weight is None else np.asarray(column_weight, dtype=np.float64)
    chosen = []
    for rs, cs in span_slices(rows, cols, granularity):
        x = w[rs, cs].astype(np.float64)
        scale, minimum, index = mse_fit_span(x, bits, asymmetric, dtype, np.broadcast_to(cw[cs], x.shape))
        out[rs, cs] = apply_span(x, scale, minimum, bits, asymmetric)
        chosen.append(index)
    shape = (1, 1) if granularity == "tensor" else (rows, len(chosen) // rows)
    return out, np.array(chosen, dtype=np.float32).reshape(shape)


def weighted_error(w, q, column_weight=None):
    w64, q64 = np.asarray(w, dtype=np.float64), np.asarray(q, dtype=np.float64)
    cw = np.ones(w64.shape[1]) if column_weight is None else np.asarray(column_weight, dtype=np.float64)
    return float(np.sum(cw * (w64 - q64) ** 2))


# ---- gptq ----
def fit_rows(values, bits, asymmetric, dtype, fit, column_weight):
    """One (scale, minimum) per row of `values` (rows, span), by rtn or mse."""
    params = []
    for row in np.asarray(values, dtype=np.float64):
        if fit == "rtn":
            params.append(fit_span(row, bits, asymmetric, dtype))
        else:
            scale, minimum, _ = mse_fit_span(row, bits, asymmetric, dtype, column_weight)
            params.append((scale, minimum))
    return params


def gptq(w, x, bits, asymmetric=0, granularity="channel", dtype="f16", damp=0.01, act_order=False, block=128,
         fit="rtn", fit_weight=None, groups="static", real=np.float64, trace=None):
    """GPTQ of w (rows, cols) on calibration inputs x (n, cols); returns the dequantized float32 Q.

    H = 2 X^T X. Dead inputs (H_jj = 0): H_jj = 1 and W[:, j] = 0. Act-order: columns processed
    by descending diag(H) (stable: ties keep column order). H += damp * mean(diag H) * I.
    U = the upper Cholesky factor of H^-1 (H^-1 = U^T U). Columns in processing order c:
    q_c = Q(w_c) with its row's current scale; err = (w_c - q_c) / U_cc; every later column j
    gets w_j -= err * U_cj: within a block of `block` columns at once, to the columns after the
    block once per block (lazy batch updates; the same arithmetic as block = cols, reordered).
    Scales (fit: rtn or mse, rounded to dtype) are fitted after the dead columns are zeroed:
      groups "static" (the default, and the fixture's): every scale up front from W, before
        any update -- per tensor, per row, or per G consecutive columns of a row in the
        original order (what group:G storage needs, with or without act-order). GPTQ then only
        chooses the codes on RTN's grid;
      groups "current" (group:G without act-order only): when column c = kG starts a group,
        from the current, fully updated weights of columns c..c+G-1 -- inside the block, W1;
        beyond it, with the block's pending updates applied -- so lazy batching stays a pure
        reordering. The feedback inflates later groups' ranges: at 2 bits, group:32 this is
        worse than RTN (measured in write_gptq), which is why static is the default.
    real: np.float64 (the reference) or np.float32 (a rerun that shows float32's noise).
    trace: a dict that receives 'position' (rows, cols): each value just before rounding, in
    steps of its scale from the grid's origin (original column order)."""
    W = np.array(w, dtype=real)
    X = np.asarray(x, dtype=np.float32).astype(real)
    rows, cols = W.shape
    H = 2 * (X.T @ X)
    dead = np.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    group = None if granularity in ("tensor", "channel") else int(granularity)
    cw = np.ones(cols) if fit_weight is None else np.asarray(fit_weight, dtype=np.float64)
    if granularity == "tensor":
        if fit == "rtn":
            shared = fit_span(W.astype(np.float64), bits, asymmetric, dtype)
        else:
            s, m, _ = mse_fit_span(W.astype(np.float64), bits, asymmetric, dtype, np.broadcast_to(cw, W.shape))
            shared = (s, m)
        static = {None: [shared] * rows}
    elif granularity == "channel":
        static = {None: fit_rows(W, bits, asymmetric, dtype, fit, cw)}
    elif groups == "static":
        static = {g: fit_rows(W[:, g * group:(g + 1) * group], bits, asymmetric, dtype, fit, cw[g * group:(g + 1) * group])
                  for g in range(cols // group)}
    else:
        assert groups == "current" and not act_order, "current group scales need the original column order"
        static = {}
    perm = np.argsort(-np.diag(H), kind="stable") if act_order else np.arange(cols)
    W = W[:, perm]
    H = H[np.ix_(perm, perm)]
    H[np.diag_indices(cols)] += damp * np.mean(np.diag(H))
    L_inv = np.linalg.inv(np.linalg.cholesky(H))
    U = np.linalg.cholesky(L_inv.T @ L_inv).T.astype(real)
    Q = np.zeros((rows, cols), dtype=np.float32)
    dynamic = None
    for i1 in range(0, cols, block):
        i2 = min(i1 + block, cols)
        W1 = W[:, i1:i2].copy()
        Err1 = np.zeros((rows, i2 - i1), dtype=real)
        for i in range(i2 - i1):
            c = i1 + i
            original = perm[c]
            if group and groups == "current" and c % group == 0:
                inside = W1[:, i:min(i + group, i2 - i1)]
                beyond = W[:, i2:c + group] - Err1[:, :i] @ U[i1:c, i2:c + group]
                dynamic = fit_rows(np.concatenate([inside, beyond], axis=1), bits, asymmetric, dtype, fit, cw[c:c + group])
            params = static[None] if group is None else static[original // group] if groups == "static" else dynamic
            w_c = W1[:, i].astype(np.float64)
            q = np.array([apply_span(w_c[r:r + 1], params[r][0], params[r][1], bits, asymmetric)[0] for r in range(rows)])
            Q[:, c] = q
            if trace is not None:
                trace.setdefault("position", np.zeros((rows, cols)))[:, original] = [
                    (w_c[r] - (params[r][1] or 0.0)) / params[r][0] if params[r][0] else 0.0 for r in range(rows)]
            err = (W1[:, i] - q.astype(real)) / U[c, c]
            W1[:, i:] -= np.outer(err, U[c, c:i2])
            Err1[:, i] = err
        W[:, i2:] -= Err1 @ U[i1:i2, i2:]
    return Q[:, np.argsort(perm)]


def rtn_like(w, bits, asymmetric, granularity, dtype, fit, fit_weight=None):
    """The same scales without GPTQ's error feedback: RTN (fit rtn) or the mse quantizer."""
    if fit == "rtn":
        return ref_quant.quantize_matrix(w, bits, asymmetric, granularity, dtype)
    return mse_quantize_matrix(w, bits, asymmetric, granularity, dtype, fit_weight)[0]


def output_error(x, w, q):
    """||X W^T - X Q^T||_F in float64."""
    x64 = np.asarray(x, dtype=np.float64)
    return float(np.linalg.norm(x64 @ (np.asarray(w, dtype=np.float64) - np.asarray(q, dtype=np.float64)).T))


# ---- lowrank and bias ----
def column_magnitude(x):
    """L2QER's diagonal S: the mean absolute value of each input column over the calibration rows."""
    return np.mean(np.abs(np.asarray(x, dtype=np.float32).astype(np.float64)), axis=0)


def lowrank(w, q, rank, scale=None):
    """Rank-k factors of E = W - Q: SVD(E S) = U diag(sigma) V^T with S = diag(scale) (identity when
    None); A = sqrt(sigma_k) V_k^T S^-1 (k, in) and B = U_k sqrt(sigma_k) (out, k), so E ~ B A and
    y = x Q^T + b + (x A^T) B^T. Columns with scale 0 (dead inputs) get A[:, j] = 0: they never
    reach the output. Sign: each u_i is flipped so that its entry of largest |value| (the first
    such) is positive, v_i with it, so A and B are unique when the singular values are distinct.
    Returns float32 (A, B, sigma_k)."""
    E = np.asarray(w, dtype=np.float32).astype(np.float64) - np.asarray(q, dtype=np.float32).astype(np.float64)
    s = np.ones(E.shape[1]) if scale is None else np.asarray(scale, dtype=np.float64)
    U, sigma, Vt = np.linalg.svd(E * s, full_matrices=False)
    U, sigma, Vt = U[:, :rank], sigma[:rank], Vt[:rank]
    sign = np.sign(U[np.argmax(np.abs(U), axis=0), np.arange(rank)])
    U, Vt = U * sign, Vt * sign[:, None]
    inverse = np.divide(1.0, s, out=np.zeros_like(s), where=s != 0)
    A = np.sqrt(sigma)[:, None] * Vt * inverse
    B = U * np.sqrt(sigma)
    return A.astype(np.float32), B.astype(np.float32), sigma.astype(np.float32)


def bias_correction(b, w, q, x):
    """Nagel et al. 2019: b + (W - Q) E[x], E[x] the mean of the calibration rows, in float64."""
    mean_x = np.mean(np.asarray(x, dtype=np.float32).astype(np.float64), axis=0)
    E = np.asarray(w, dtype=np.float32).astype(np.float64) - np.asarray(q, dtype=np.float32).astype(np.float64)
    return (np.asarray(b, dtype=np.float32).astype(np.float64) + E @ mean_x).astype(np.float32)


# ---- fixtures ----
def calibration_inputs(rng, n, cols, dead=()):
    """Correlated inputs with per-column scales spread over e^-1.5..e^1.5, some columns all zero."""
    mix = np.eye(cols) + 0.5 * rng.standard_normal((cols, cols)) / np.sqrt(cols)
    x = (rng.standard_normal((n, cols)) @ mix) * np.exp(rng.uniform(-1.5, 1.5, cols)) + 0.3 * rng.standard_normal(cols)
    x[:, list(dead)] = 0.0
    return x.astype(np.float32)


MSE_FILE = "quant_mse.safetensors"


def mse_configs():
    for bits in (2, 3, 4):
        for gran in ("channel", 16):
            for weighted in (0, 1):
                yield bits, 0, gran, "f16", weighted
    yield 3, 1, "channel", "f16", 0
    yield 3, 1, 16, "f16", 1
    yield 4, 0, "channel", "f64", 0
    yield 2, 0, "tensor", "f16", 1


def mse_name(bits, asymmetric, gran, dtype, weighted):
    g = gran if isinstance(gran, str) else f"group{gran}"
    return f"b{bits}.{'asym' if asymmetric else 'sym'}.{g}.{dtype}.{'weighted' if weighted else 'plain'}"


def write_mse(out):
    rng = np.random.default_rng(77)
    w = (0.05 * rng.standard_t(3, size=(16, 64))).astype(np.float32)
    x = calibration_inputs(rng, 64, 64)
    column_weight = np.mean(x.astype(np.float64) ** 2, axis=0).astype(np.float32)
    tensors = [("weight", w), ("column_weight", column_weight)]
    worst_margin = float("inf")
    for bits, asym, gran, dtype, weighted in mse_configs():
        name = mse_name(bits, asym, gran, dtype, weighted)
        cw = column_weight if weighted else None
        q, chosen = mse_quantize_matrix(w, bits, asym, gran, dtype, cw)
        rtn = ref_quant.quantize_matrix(w, bits, asym, gran, dtype)
        err, err_rtn = weighted_error(w, q, cw), weighted_error(w, rtn, cw)
        assert err <= err_rtn, (name, err, err_rtn)  # ratio 1 is in the grid: never worse than RTN
        if not weighted:
            assert all(weighted_error(w[r:r + 1], q[r:r + 1]) <= weighted_error(w[r:r + 1], rtn[r:r + 1]) for r in range(16))
        for rs, cs in span_slices(*w.shape, gran):
            span = w[rs, cs].astype(np.float64)
            worst_margin = min(worst_margin, mse_margin(span, bits, asym, dtype, None if cw is None else np.broadcast_to(cw[cs], span.shape)))
        print(f"mse {name}: error {err:.4e} vs RTN {err_rtn:.4e} ({100 * (1 - err / err_rtn):.1f}% lower); "
              f"chosen ratio index median {np.median(chosen):.0f}, {int(np.sum(chosen == 0))} of {chosen.size} spans keep ratio 1")
        tensors += [("q." + name, q), ("clip." + name, chosen)]
    print(f"mse: smallest relative gap between the least and the next candidate error of any span: {worst_margin:.2e} "
          f"(a C search must sum in double: float sums would reorder candidates this close)")
    path = os.path.join(out, MSE_FILE)
    meta = {
        "generator": "tools/pytorch_reference.py mse",
        "names": "q.b{bits}.{sym|asym}.{channel|group16|tensor}.{f16|f64}.{plain|weighted} and clip.<same>",
        "grid": "ratio_i = 1 - (0.5*i)/99, i = 0..99",
        "objective": "sum over the span of column_weight[c] * (w - Q(w))^2, 1 when plain; float32 Q, float64 sum; "
                     "the first (largest) ratio of least error wins",
    }
    write_safetensors(path, tensors, meta)
    return [path]


GPTQ_FILE = "quant_gptq.safetensors"
GPTQ_DAMP = 0.01
GPTQ_BLOCK = 128
# name -> bits, asymmetric, granularity, fit, act_order, groups (all f16 scales)
GPTQ_CONFIGS = {
    "b4.channel": (4, 0, "channel", "rtn", False, "static"),
    "b4.channel.act": (4, 0, "channel", "rtn", True, "static"),
    "b4.group32": (4, 0, 32, "rtn", False, "static"),
    "b4.group32.act": (4, 0, 32, "rtn", True, "static"),
    "b2.channel": (2, 0, "channel", "rtn", False, "static"),
    "b2.group32": (2, 0, 32, "rtn", False, "static"),
    "b3.group32": (3, 0, 32, "rtn", False, "static"),
    "b3.group32.act": (3, 0, 32, "rtn", True, "static"),
    "b8.channel": (8, 0, "channel", "rtn", False, "static"),
    "b4.channel.mse": (4, 0, "channel", "mse", False, "static"),
    "b3.group32.mse": (3, 0, 32, "mse", False, "static"),
    "b4.channel.asym": (4, 1, "channel", "rtn", False, "static"),
    "b3.group32.current": (3, 0, 32, "rtn", False, "current"),
}
GPTQ_DEAD = (7, 100)


def level_steps(w, q_a, q_b, bits, asymmetric, granularity, dtype):
    """|q_a - q_b| in units of the RTN scale of each element's span (for reporting flips)."""
    steps = np.zeros(w.shape)
    for rs, cs in span_slices(*w.shape, granularity):
        scale, _ = fit_span(w[rs, cs].astype(np.float64), bits, asymmetric, dtype)
        steps[rs, cs] = np.abs(q_a[rs, cs].astype(np.float64) - q_b[rs, cs]) / max(scale, 1e-30)
    return steps


def write_gptq(out):
    rng = np.random.default_rng(314)
    rows, cols, n = 16, 160, 192
    x = calibration_inputs(rng, n, cols, GPTQ_DEAD)
    w = (0.05 * rng.standard_t(4, size=(rows, cols))).astype(np.float32)
    h_diag = 2 * np.sum(x.astype(np.float64) ** 2, axis=0)
    w_live = w.copy()
    w_live[:, list(GPTQ_DEAD)] = 0.0
    tensors = [("x", x), ("weight", w), ("act_order_perm", np.argsort(-np.where(h_diag == 0, 1.0, h_diag), kind="stable").astype(np.float32))]
    meta = {"generator": "tools/pytorch_reference.py gptq", "damp": GPTQ_DAMP, "block": GPTQ_BLOCK, "scale_dtype": "f16",
            "dead_columns": ",".join(map(str, GPTQ_DEAD))}
    worst = {"noise": 0.0, "margin": float("inf")}
    for name, (bits, asym, gran, fit, act, groups) in GPTQ_CONFIGS.items():
        trace64, trace32 = {}, {}
        q = gptq(w, x, bits, asym, gran, "f16", GPTQ_DAMP, act, GPTQ_BLOCK, fit, groups=groups, trace=trace64)
        unblocked = gptq(w, x, bits, asym, gran, "f16", GPTQ_DAMP, act, cols, fit, groups=groups)
        q32 = gptq(w, x, bits, asym, gran, "f16", GPTQ_DAMP, act, GPTQ_BLOCK, fit, groups=groups, real=np.float32,
                   trace=trace32)
        # how close any value came to a rounding boundary (inside the code range), against how far
        # float32 arithmetic moves the values: a C port with float32's noise rounds every value alike
        position = trace64["position"]
        top = levels(bits, asym)
        inside = (position > (0 if asym else -top) - 0.5) & (position < top + 0.5)
        margin = float(np.min(np.abs(np.abs(position[inside] - np.floor(position[inside])) - 0.5)))
        noise = float(np.max(np.abs(position - trace32["position"])))
        base = rtn_like(w_live, bits, asym, gran, "f16", fit)  # the same scales, no feedback
        assert asym or not np.any(q[:, list(GPTQ_DEAD)]), "dead columns must quantize to zero"
        e_gptq, e_base, e_unblocked = output_error(x, w, q), output_error(x, w, base), output_error(x, w, unblocked)
        e32 = output_error(x, w, q32)
        lazy_flips = int(np.sum(q != unblocked))
        flips32 = int(np.sum(q != q32))
        steps32 = level_steps(w_live, q, q32, bits, asym, gran, "f16").max()
        print(f"gptq {name}: ||XW^T-XQ^T|| {e_gptq:.4f} vs {fit} without feedback {e_base:.4f} ({e_gptq / e_base:.3f}x); "
              f"lazy blocks vs unblocked: {lazy_flips} values differ; float32 rerun: {flips32} of {q.size} values differ "
              f"(max {steps32:.2f} steps, output error {e32 / e_gptq - 1:+.1e}); values move by up to {noise:.1e} steps "
              f"in float32, the closest to a rounding boundary is {margin:.1e} steps from it")
        worst["noise"], worst["margin"] = max(worst["noise"], noise), min(worst["margin"], margin)
        assert lazy_flips == 0 and abs(e_unblocked - e_gptq) <= 1e-12 * e_gptq
        if groups == "current":
            static_error = output_error(x, w, gptq(w, x, bits, asym, gran, "f16", GPTQ_DAMP, act, GPTQ_BLOCK, fit))
            print(f"gptq {name}: group scales from the current weights {e_gptq:.4f}, up front (static) {static_error:.4f}")
        elif bits < 8:
            assert e_gptq < e_base, f"{name}: GPTQ's output error is not below {fit}'s"
        else:
            # close to RTN, not equal: the error feedback still moves codes by a step or so
            live = np.setdiff1d(np.arange(cols), GPTQ_DEAD)
            steps = level_steps(w_live, q, base, bits, asym, gran, "f16")[:, live]
            print(f"gptq {name}: against RTN on the live columns, {int(np.sum(steps > 1e-9))} of {steps.size} values "
                  f"differ, by at most {steps.max():.2f} steps; output error {e_gptq / e_base:.3f}x RTN's")
            assert steps.max() <= 3.0 + 1e-6 and np.mean(steps > 1e-9) < 0.5
        tensors.append(("q." + name, q))
        meta["config." + name] = (f"bits={bits} asymmetric={asym} granularity={gran if isinstance(gran, str) else f'group:{gran}'} "
                                  f"fit={fit} act_order={int(act)} groups={groups}")
    print(f"gptq: float32 moves a value by at most {worst['noise']:.1e} steps; no value is closer than "
          f"{worst['margin']:.1e} steps to a rounding boundary")
    path = os.path.join(out, GPTQ_FILE)
    write_safetensors(path, tensors, meta)
    return [path]


LOWRANK_FILE = "quant_lowrank.safetensors"
LOWRANK_CONFIGS = {"r4.none": (4, False), "r4.act": (4, True), "r8.act": (8, True), "r24.none": (24, False)}
LOWRANK_DEAD = (11,)


def write_lowrank(out):
    rng = np.random.default_rng(2718)
    rows, cols, n = 24, 64, 128
    x = calibration_inputs(rng, n, cols, LOWRANK_DEAD)
    w = (0.05 * rng.standard_t(4, size=(rows, cols))).astype(np.float32)
    b = (0.1 * rng.standard_normal(rows)).astype(np.float32)
    q = ref_quant.quantize_matrix(w, 2, 0, "channel", "f16")
    s = column_magnitude(x)
    tensors = [("x", x), ("weight", w), ("bias", b), ("quantized", q), ("column_magnitude", s.astype(np.float32))]
    E = w.astype(np.float64) - q
    for name, (rank, act) in LOWRANK_CONFIGS.items():
        A, B, sigma = lowrank(w, q, rank, s if act else None)
        BA = B.astype(np.float64) @ A
        fro, out_err = np.linalg.norm(E - BA) / np.linalg.norm(E), output_error(x, E, BA) / output_error(x, E, 0 * E)
        gap = sigma[-1] / np.linalg.svd(E * (s if act else 1.0), compute_uv=False)[rank] if rank < min(rows, cols) else float("inf")
        print(f"lowrank {name}: ||E - BA||/||E|| {fro:.4f}, ||X(E - BA)^T||/||XE^T|| {out_err:.4f}, "
              f"sigma_k / sigma_k+1 = {gap:.3f}")
        tensors += [(f"lowrank.{name}.A", A), (f"lowrank.{name}.B", B), (f"lowrank.{name}.sigma", sigma)]
    full_A, full_B, _ = lowrank(w, q, min(rows, cols))
    assert np.abs(q + full_B.astype(np.float64) @ full_A - w).max() < 1e-6, "full rank with S = I must give W back"
    plain = lowrank(w, q, 4)
    act = lowrank(w, q, 4, s)
    assert output_error(x, E, act[1].astype(np.float64) @ act[0]) < output_error(x, E, plain[1].astype(np.float64) @ plain[0])
    assert np.linalg.norm(E - plain[1].astype(np.float64) @ plain[0]) < np.linalg.norm(E - act[1].astype(np.float64) @ act[0])
    corrected = bias_correction(b, w, q, x)
    x64 = x.astype(np.float64)
    mean_error = np.mean(x64 @ w.astype(np.float64).T + b - (x64 @ q.astype(np.float64).T + corrected), axis=0)
    before = np.mean(x64 @ E.T, axis=0)
    print(f"bias: mean output error per row {np.abs(before).max():.3e} before, {np.abs(mean_error).max():.3e} after")
    assert np.abs(mean_error).max() < 1e-6 * max(1.0, np.abs(before).max())
    tensors.append(("bias_corrected", corrected))
    path = os.path.join(out, LOWRANK_FILE)
    meta = {"generator": "tools/pytorch_reference.py lowrank",
            "quantized": "int2 sym-absmax channel rtn, f16 scales, of weight",
            "configs": ",".join(f"{k}: rank {r}, scale {'act' if a else 'none'}" for k, (r, a) in LOWRANK_CONFIGS.items()),
            "dead_columns": ",".join(map(str, LOWRANK_DEAD))}
    write_safetensors(path, tensors, meta)
    return [path]
