#!/bin/sh
# sweep_flops.sh DIR [CTX] [CORR_BATCH] [TRAIN_BATCH] [TRAIN_STEPS_BY_SIZE]: the matrix-product
# FLOPs a finished stream-correction sweep (method train, the seed243 kind) needed, from its
# summary.csv (steps_run of each run) — the count behind the closing notes' "share of the peak".
# Per token an L-block model of width d costs (L - b)(12 d^2 + 2 T d) multiply-adds in blocks
# [b, L) (the four matrices, and QK^T and PV over a window of T) and 65 d in the head; a
# correction site d^2 (linear) or 2 d h (MLP h). Counted, as the sweep runs them: each float
# model's training (forward + both backward products: 3x) and its evaluation of the validation
# split; each quantized model's evaluation and its prefix caches (validation, calibration and
# held-out windows through the blocks up to the first site's, which the corrections never
# change); each run's steps (batch x T tokens through the blocks above the first site's block and
# the head: forward, the input-gradient product and the corrections' weight
# gradients), under --steps auto its held-out measurements (one before the first step and one
# every 25), and its evaluation. A FLOP is half a multiply-add. Prints GFLOP per part and in all.
set -eu
dir=$1
ctx=${2:-128}
cb=${3:-8}
tb=${4:-16}
steps=${5:-64x2:1500,128x4:800,256x6:400}
# the commas inside quoted fields (the scheme's "scope=linear,head") become ';' first
awk '{ out = ""; q = 0; for (i = 1; i <= length($0); i++) { c = substr($0, i, 1); if (c == "\"") q = !q; else if (c == "," && q) c = ";"; out = out c } print out }' "$dir/summary.csv" |
awk -F, -v ctx="$ctx" -v cb="$cb" -v tb="$tb" -v steps="$steps" -v val=111540 -v calib=65536 -v held_share=0.125 '
function sites(L, e,   i, n) { n = 0; for (i = 0; i < L; i++) if ((i + 1) % e == 0 || i == L - 1) n++; return n }
function first_site(L, e,   i) { for (i = 0; i < L; i++) if ((i + 1) % e == 0 || i == L - 1) return i; return L - 1 }
function blocks(L, b, d) { return (L - b) * (12 * d * d + 2 * ctx * d) }
BEGIN {
    n = split(steps, s, ",")
    for (i = 1; i <= n; i++) { split(s[i], kv, ":"); train_steps[kv[1]] = kv[2] }
    val_tokens = int((val - 1) / ctx) * ctx
    calib_tokens = int((calib + ctx - 1) / ctx) * ctx
    n_held = int(calib_tokens / ctx * held_share + 0.5)
}
NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
{
    size = $col["size"]; d = $col["d_model"]; L = $col["n_layer"]; seed = $col["seed"]; bits = $col["bits"]
    e = $col["every"]; h = $col["hidden"]
    auto = ("stopped_by" in col) && ($col["stopped_by"] == "plateau" || $col["stopped_by"] == "cap")
    sr = ("steps_run" in col) && $col["steps_run"] != "" ? $col["steps_run"] : $col["steps"] # older sweeps: fixed steps
    full = blocks(L, 0, d) + 65 * d
    group = seed "_" size
    if (!(group in seen_group)) {
        seen_group[group] = 1
        float_train += 3 * full * train_steps[size] * tb * ctx
        float_eval += full * val_tokens
    }
    model = group "_" bits
    if (!(model in seen_model)) { seen_model[model] = 1; if (bits != 32) quant_eval += full * val_tokens }
    b = first_site(L, e) # the first site is after block b: blocks 0..b are frozen, their output cached
    cache = model "_" b
    if (!(cache in seen_cache)) { seen_cache[cache] = 1; prefix += blocks(L, 0, d) * (b + 1) / L * (val_tokens + calib_tokens + n_held * ctx) }
    corr = sites(L, e) * (h > 0 ? 2 * d * h : d * d)
    above = blocks(L, b + 1, d) + 65 * d
    train += sr * cb * ctx * (2 * above + 3 * corr)
    if (auto) heldout += (int(sr / 25) + 1) * n_held * ctx * (above + corr)
    run_eval += val_tokens * (above + corr)
    runs++
}
END {
    total = float_train + float_eval + quant_eval + prefix + train + heldout + run_eval
    printf "runs %d\n", runs
    printf "float training %.0f GFLOP\nfloat evaluations %.0f GFLOP\nquantized evaluations %.0f GFLOP\n", 2 * float_train / 1e9, 2 * float_eval / 1e9, 2 * quant_eval / 1e9
    printf "prefix caches %.0f GFLOP\ncorrection steps %.0f GFLOP\nheld-out measurements %.0f GFLOP\nrun evaluations %.0f GFLOP\n", 2 * prefix / 1e9, 2 * train / 1e9, 2 * heldout / 1e9, 2 * run_eval / 1e9
    printf "total %.0f GFLOP\n", 2 * total / 1e9
}'
