#!/bin/sh
# cli_test: the real binary against bad input and the happy path. For every bad input: the exit
# status (2 usage, 1 runtime), exactly one line on stderr that starts "qcorr" and names the file or
# value at fault, nothing on stdout, and no file (partial output, *.tmp.*, log) left behind.
# Prints "ok - ..." / "FAIL - ..." per check and ends with "cli: N passed, M failed".
# Run from the repository root: QCORR=build/qcorr sh tests/cli_test.sh
set -u
set -f # no globbing: needles and arguments are used verbatim

QCORR=${QCORR:-build/qcorr}
case $QCORR in /*) ;; *) QCORR=$PWD/$QCORR ;; esac
PY=/usr/bin/python3
unset QCORR_DATA
OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
export OMP_NUM_THREADS

passed=0
failed=0
T=$(mktemp -d "${TMPDIR:-/tmp}/qcorr-cli.XXXXXX") || { echo "FAIL - mktemp"; echo "cli: 0 passed, 1 failed"; exit 1; }
trap 'rm -rf "$T"' EXIT
trap 'exit 1' INT TERM
W=$T/work   # watched: error cases must leave nothing new here
H=$T/happy  # the happy path's outputs, reused as inputs below
mkdir "$W" "$H"

ok() { passed=$((passed + 1)); echo "ok - $1"; }
fail() {
    failed=$((failed + 1))
    echo "FAIL - $1"
    shift
    for line in "$@"; do echo "#   $line"; done
}
show() { sed 's/^/#   | /' "$1" | head -n 5; }

if [ ! -x "$QCORR" ]; then
    fail "binary $QCORR exists (build it with make)"
    echo "cli: $passed passed, $failed failed"
    exit 1
fi

# expect_error DESCRIPTION CODE NEEDLE... -- COMMAND...
# Runs COMMAND; each NEEDLE must appear verbatim in its one stderr line.
expect_error() {
    desc=$1 code=$2
    shift 2
    needles=""
    while [ $# -gt 0 ] && [ "$1" != "--" ]; do
        needles="$needles$1
"
        shift
    done
    [ $# -gt 0 ] && shift
    find "$W" | sort >"$T/before"
    "$@" >"$T/out" 2>"$T/err" </dev/null
    rc=$?
    find "$W" | sort >"$T/after"
    why=""
    [ "$rc" = "$code" ] || why="$why exit status $rc, expected $code;"
    lines=$(wc -l <"$T/err" | tr -d ' ')
    if [ "$lines" != 1 ] || [ -n "$(tail -c 1 "$T/err" | tr -d '\n')" ]; then
        why="$why stderr has $lines newline(s), expected exactly one line;"
    fi
    head -n 1 "$T/err" | grep -q '^qcorr' || why="$why stderr does not start with 'qcorr';"
    [ -s "$T/out" ] && why="$why stdout is not empty;"
    old_ifs=$IFS
    IFS='
'
    for n in $needles; do
        grep -qF -- "$n" "$T/err" || why="$why stderr does not name '$n';"
    done
    IFS=$old_ifs
    left=$(comm -13 "$T/before" "$T/after" | tr '\n' ' ')
    [ -n "$left" ] && why="$why left behind: $left;"
    if [ -z "$why" ]; then
        ok "$desc (exit $rc: $(head -n 1 "$T/err"))"
    else
        fail "$desc" "$why" "stderr:"
        show "$T/err"
        if [ -s "$T/out" ]; then echo "#   stdout:"; show "$T/out"; fi
    fi
}

# ---- inputs: small corpora in a temporary directory ----
$PY - "$T" <<'EOF'
import random, sys
d = sys.argv[1]
r = random.Random(7)
words = ["ab", "ba", "aab", "bab", "abba", "b", "a"]
def text(n):
    out = []
    while sum(len(w) for w in out) < n:
        out.append(r.choice(words) + ("\n" if r.random() < 0.15 else " "))
    return "".join(out)[:n]
open(d + "/ab.txt", "w").write(text(3000))                      # alphabet 'ab \n'
open(d + "/with_z.txt", "w").write(text(1500) + " z " + text(1500))
open(d + "/empty.txt", "w").close()
open(d + "/nul.txt", "wb").write(b"ab ba\n\x00ab\n" * 50)
open(d + "/tiny.txt", "w").write("ab ba ab\n")                  # shorter than one eval window
EOF
AB=$T/ab.txt
TRAIN_FLAGS="--d-model 16 --layers 1 --heads 2 --ctx 16 --batch 4 --steps 3 --quiet"

# ---- happy path ----
M=$H/m.safetensors
# shellcheck disable=SC2086
if "$QCORR" train --data "$AB" --out "$M" $TRAIN_FLAGS --json >"$T/out" 2>"$T/err"; then
    if $PY -c 'import json,sys,math; o=json.loads(open(sys.argv[1]).read()); assert o["steps"]==3 and math.isfinite(o["val_loss"]) and o["out"]==sys.argv[2]' "$T/out" "$M" 2>/dev/null &&
        [ "$(wc -l <"$T/out" | tr -d ' ')" = 1 ] && [ -s "$M" ] && [ -s "$H/m.train.csv" ]; then
        ok "train: 3 steps, --json prints one object, checkpoint and log written"
    else
        fail "train: 3 steps, --json prints one object, checkpoint and log written"; show "$T/out"; show "$T/err"
    fi
else
    fail "train on a small corpus exits 0"; show "$T/err"
fi
leftover=$(find "$H" -name '*.tmp.*')
if [ -z "$leftover" ]; then ok "train leaves no temporary file"; else fail "train leaves no temporary file" "$leftover"; fi

# the checkpoint is plain safetensors: any reader can walk it with the standard library
if $PY - "$M" <<'EOF'
import json, struct, sys
b = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", b[:8])[0]
assert n % 8 == 0 and 8 + n <= len(b)
h = json.loads(b[8:8 + n])
meta = h.pop("__metadata__")
assert meta["vocab"] == "\n ab" and meta["vocab_size"] == "4" and meta["d_model"] == "16"
spans = sorted(tuple(t["data_offsets"]) for t in h.values())
assert all(t["dtype"] == "F32" for t in h.values())
assert spans[0][0] == 0 and spans[-1][1] == len(b) - 8 - n
assert all(a[1] == c[0] for a, c in zip(spans, spans[1:]))
EOF
then ok "checkpoint header parses as safetensors (python json + struct)"; else fail "checkpoint header parses as safetensors (python json + struct)"; fi

if "$QCORR" eval --model "$M" --data "$AB" --json >"$T/out" 2>"$T/err"; then
    if [ "$(wc -l <"$T/out" | tr -d ' ')" = 1 ] &&
        $PY -c 'import json,sys,math; o=json.loads(open(sys.argv[1]).read()); assert isinstance(o,dict); assert math.isfinite(o["loss"]) and o["loss"]>0 and abs(o["ppl"]-math.exp(o["loss"]))<1e-6*o["ppl"]' "$T/out" 2>/dev/null; then
        ok "eval --json prints one JSON object with loss and ppl = exp(loss)"
    else
        fail "eval --json prints one JSON object with loss and ppl = exp(loss)"; show "$T/out"
    fi
else
    fail "eval exits 0"; show "$T/err"
fi

# eval --reference: against itself KL 0 and full agreement; a 2-bit copy pays in KL and agreement
# and stores fewer bits; a reference of another context length is refused
if "$QCORR" eval --model "$M" --reference "$M" --data "$AB" --json >"$T/out" 2>"$T/err" &&
    $PY -c 'import json,sys; o=json.loads(open(sys.argv[1]).read()); assert o["kl_mean"]==0 and o["kl_p99"]==0 and o["top1_agree"]==1 and o["loss_diff"]==0 and o["loss_se"]>0 and o["bits_per_weight"] is None and o["model_bits"]>0' "$T/out" 2>/dev/null; then
    ok "eval --reference itself: KL 0, top-1 agreement 1, loss difference 0"
else
    fail "eval --reference itself: KL 0, top-1 agreement 1, loss difference 0"; show "$T/out"; show "$T/err"
fi
if "$QCORR" quantize --model "$M" --bits 2 --out "$H/q2.safetensors" >/dev/null 2>"$T/err" &&
    "$QCORR" eval --model "$M" --data "$AB" --json >"$T/f.json" 2>"$T/err" &&
    "$QCORR" eval --model "$H/q2.safetensors" --reference "$M" --data "$AB" --json >"$T/out" 2>"$T/err" &&
    $PY -c 'import json,sys; f=json.loads(open(sys.argv[1]).read()); o=json.loads(open(sys.argv[2]).read()); assert o["kl_mean"]>0 and o["kl_se"]>0 and o["kl_p99"]>=o["kl_mean"] and 0<=o["top1_agree"]<1 and abs(o["loss_diff"]-(o["loss"]-f["loss"]))<1e-9 and o["loss_diff_se"]>0 and o["model_bits"]<f["model_bits"] and 2<o["bits_per_weight"]<3' "$T/f.json" "$T/out" 2>/dev/null; then
    ok "eval --reference of a 2-bit copy: KL > 0, agreement < 1, loss difference, fewer model bits, 2-3 bits a weight"
else
    fail "eval --reference of a 2-bit copy: KL > 0, agreement < 1, loss difference, fewer model bits, 2-3 bits a weight"; show "$T/out"; show "$T/err"
fi

if "$QCORR" sample --model "$M" --prompt "ab " --chars 40 --seed 3 >"$T/out" 2>"$T/err" &&
    "$QCORR" sample --model "$M" --prompt "ab " --chars 40 --seed 3 >"$T/out2" 2>/dev/null; then
    if $PY -c 'import sys; s=open(sys.argv[1],"rb").read(); assert s.startswith(b"ab ") and s.endswith(b"\n"); g=s[3:-1]; assert len(g)==40, len(g); assert set(g) <= set(b"ab \n")' "$T/out" 2>/dev/null &&
        cmp -s "$T/out" "$T/out2"; then
        ok "sample prints the prompt then exactly --chars 40 characters of the vocabulary, same for the same seed"
    else
        fail "sample prints the prompt then exactly --chars 40 characters of the vocabulary, same for the same seed"; show "$T/out"
    fi
else
    fail "sample exits 0"; show "$T/err"
fi

for cmd in train eval sample; do
    if "$QCORR" $cmd --help >"$T/out" 2>"$T/err" && grep -q "usage: qcorr $cmd" "$T/out" && [ ! -s "$T/err" ]; then
        ok "$cmd --help exits 0 with usage on stdout"
    else
        fail "$cmd --help exits 0 with usage on stdout"; show "$T/err"
    fi
done
if "$QCORR" --help >"$T/out" 2>"$T/err" && grep -q train "$T/out"; then ok "qcorr --help exits 0"; else fail "qcorr --help exits 0"; fi

# --data outranks $QCORR_DATA
if QCORR_DATA=/nonexistent/env.txt "$QCORR" eval --model "$M" --data "$AB" >/dev/null 2>&1; then
    ok "--data outranks \$QCORR_DATA"
else
    fail "--data outranks \$QCORR_DATA"
fi

# ---- usage errors: exit 2 ----
O=$W/m.safetensors
expect_error "unknown subcommand" 2 "frobnicate" -- "$QCORR" frobnicate
expect_error "no subcommand" 2 -- "$QCORR"
expect_error "unknown kernel path" 2 "QCORR_KERNELS=avx9" "generic" -- env QCORR_KERNELS=avx9 "$QCORR" eval --model "$W/none.safetensors"
expect_error "unknown flag" 2 "--bogus" -- "$QCORR" train --bogus --data "$AB" --out "$O"
expect_error "unknown flag (eval)" 2 "--stepz" -- "$QCORR" eval --stepz 3
expect_error "flag missing its value" 2 "--steps" -- "$QCORR" train --data "$AB" --out "$O" --steps
expect_error "--out missing its value" 2 "--out" -- "$QCORR" train --data "$AB" --out
expect_error "non-numeric --steps abc" 2 "--steps" "abc" -- "$QCORR" train --data "$AB" --out "$O" --steps abc
expect_error "non-numeric --steps=abc (inline)" 2 "--steps" "abc" -- "$QCORR" train --data "$AB" --out "$O" --steps=abc
expect_error "trailing junk --steps 10x" 2 "--steps" "10x" -- "$QCORR" train --data "$AB" --out "$O" --steps 10x
expect_error "overflowing --steps" 2 "--steps" -- "$QCORR" train --data "$AB" --out "$O" --steps 99999999999999999999
expect_error "non-numeric --lr nan" 2 "--lr" "nan" -- "$QCORR" train --data "$AB" --out "$O" --lr nan
expect_error "out of range --steps 0" 2 "--steps" "0" -- "$QCORR" train --data "$AB" --out "$O" --steps 0
expect_error "out of range --d-model 0" 2 "--d-model" -- "$QCORR" train --data "$AB" --out "$O" --d-model 0
expect_error "out of range --ctx 0" 2 "--ctx" -- "$QCORR" train --data "$AB" --out "$O" --ctx 0
expect_error "out of range --lr -1" 2 "--lr" "-1" -- "$QCORR" train --data "$AB" --out "$O" --lr -1
expect_error "--heads 3 does not divide --d-model 64" 2 "--heads 3" "--d-model 64" -- "$QCORR" train --data "$AB" --out "$O" --d-model 64 --heads 3 --steps 1
expect_error "flag given a value it takes none of (--json=1)" 2 "--json" -- "$QCORR" eval --model "$M" --json=1
expect_error "train without --out" 2 "--out" -- "$QCORR" train --data "$AB"
expect_error "eval without --model" 2 "--model" -- "$QCORR" eval --data "$AB"
expect_error "sample without --model" 2 "--model" -- "$QCORR" sample
expect_error "sample --chars -1" 2 "--chars" -- "$QCORR" sample --model "$M" --chars -1

# ---- runtime errors: exit 1 ----
expect_error "missing corpus --data /nonexistent" 1 "/nonexistent" -- "$QCORR" train --data /nonexistent --out "$O" $TRAIN_FLAGS
expect_error "missing corpus from \$QCORR_DATA" 1 "/nonexistent/env.txt" -- env QCORR_DATA=/nonexistent/env.txt "$QCORR" train --out "$O" $TRAIN_FLAGS
expect_error "no corpus anywhere (search order exhausted)" 1 "--data" "QCORR_DATA" -- sh -c 'cd "$1" && shift && exec "$@"' sh "$W" "$QCORR" train --out m.safetensors $TRAIN_FLAGS
expect_error "empty corpus" 1 "$T/empty.txt" -- "$QCORR" train --data "$T/empty.txt" --out "$O" $TRAIN_FLAGS
expect_error "corpus with a NUL byte" 1 "$T/nul.txt" -- "$QCORR" train --data "$T/nul.txt" --out "$O" $TRAIN_FLAGS
expect_error "corpus is a directory" 1 "$T" -- "$QCORR" train --data "$T" --out "$O" $TRAIN_FLAGS
expect_error "eval: corpus character outside the checkpoint's vocabulary" 1 "$T/with_z.txt" "'z'" -- "$QCORR" eval --model "$M" --data "$T/with_z.txt"
expect_error "eval: validation split shorter than one window" 1 "$T/tiny.txt" -- "$QCORR" eval --model "$M" --data "$T/tiny.txt"
expect_error "eval: missing checkpoint" 1 "$W/nope.safetensors" -- "$QCORR" eval --model "$W/nope.safetensors" --data "$AB"
expect_error "eval: a text file as checkpoint" 1 "$AB" -- "$QCORR" eval --model "$AB" --data "$AB"
# a FIFO (or any file that is not a regular one) is refused before it is opened: opening one for
# reading waits for a writer, forever (timeout: so a regression fails instead of hanging)
mkfifo "$T/fifo.safetensors" "$T/fifo.txt"
expect_error "eval: a FIFO as checkpoint is refused, not waited on" 1 "$T/fifo.safetensors" "not a regular file" -- \
    timeout 20 "$QCORR" eval --model "$T/fifo.safetensors" --data "$AB"
expect_error "train: a FIFO as corpus is refused, not waited on" 1 "$T/fifo.txt" "not a regular file" -- \
    timeout 20 "$QCORR" train --data "$T/fifo.txt" --out "$O" $TRAIN_FLAGS

size=$(wc -c <"$M" | tr -d ' ')
hlen=$($PY -c 'import struct,sys; print(struct.unpack("<Q", open(sys.argv[1],"rb").read(8))[0])' "$M")
for cut in 4 $((8 + hlen / 2)) $((8 + hlen + 100)) $((size - 1)); do
    head -c "$cut" "$M" >"$W/cut-$cut.safetensors"
    expect_error "eval: checkpoint truncated to $cut of $size bytes" 1 "$W/cut-$cut.safetensors" -- "$QCORR" eval --model "$W/cut-$cut.safetensors" --data "$AB"
    expect_error "sample: checkpoint truncated to $cut of $size bytes" 1 "$W/cut-$cut.safetensors" -- "$QCORR" sample --model "$W/cut-$cut.safetensors"
done

# a tensor of the wrong shape: transpose the first block's qkv matrix in the header (same byte count)
QKV=transformer.h.0.attn.c_attn.weight
$PY - "$M" "$W/shape.safetensors" "$QKV" <<'EOF'
import json, struct, sys
b = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
h[sys.argv[3]]["shape"] = h[sys.argv[3]]["shape"][::-1]
j = json.dumps(h, separators=(",", ":")).encode()
j += b" " * (-len(j) % 8)
open(sys.argv[2], "wb").write(struct.pack("<Q", len(j)) + j + b[8 + n:])
EOF
expect_error "eval: checkpoint tensor of the wrong shape" 1 "$W/shape.safetensors" "$QKV" "[16, 48]" -- "$QCORR" eval --model "$W/shape.safetensors" --data "$AB"

expect_error "sample: prompt character outside the vocabulary" 1 "--prompt" "'z'" -- "$QCORR" sample --model "$M" --prompt "abz" --chars 5

expect_error "train: --out in a missing directory" 1 "/nonexistent-dir/m.safetensors" -- "$QCORR" train --data "$AB" --out /nonexistent-dir/m.safetensors $TRAIN_FLAGS
expect_error "train: --out under a file (/etc/passwd/x)" 1 "/etc/passwd/x.safetensors" -- "$QCORR" train --data "$AB" --out /etc/passwd/x.safetensors $TRAIN_FLAGS
expect_error "train: --out in a read-only directory (/proc)" 1 "/proc/m.safetensors" -- "$QCORR" train --data "$AB" --out /proc/m.safetensors $TRAIN_FLAGS
mkdir "$W/is-a-dir.safetensors"
expect_error "train: --out is an existing directory" 2 "$W/is-a-dir.safetensors" "a directory" -- "$QCORR" train --data "$AB" --out "$W/is-a-dir.safetensors" $TRAIN_FLAGS
# an output that exists and is not a regular file is refused before any work, never renamed over:
# a FIFO here stands for a device node (/dev/null as --out, run as root, replaced the device)
mkfifo "$W/pipe.safetensors" "$W/logpipe.train.csv"
expect_error "train: --out is a FIFO" 2 "$W/pipe.safetensors" "a FIFO" -- "$QCORR" train --data "$AB" --out "$W/pipe.safetensors" $TRAIN_FLAGS
expect_error "train: the training log beside --out is a FIFO" 2 "$W/logpipe.train.csv" "a FIFO" -- "$QCORR" train --data "$AB" --out "$W/logpipe.safetensors" $TRAIN_FLAGS
expect_error "quantize: --out is a FIFO" 2 "$W/pipe.safetensors" -- "$QCORR" quantize --model "$M" --out "$W/pipe.safetensors"
expect_error "correct: --out is a FIFO" 2 "$W/pipe.safetensors" -- "$QCORR" correct --model "$M" --data "$AB" --out "$W/pipe.safetensors" --quiet
if [ -p "$W/pipe.safetensors" ] && [ -p "$W/logpipe.train.csv" ]; then ok "the FIFOs given as outputs are FIFOs still"
else fail "the FIFOs given as outputs are FIFOs still"; fi
expect_error "train: --min-lr above --lr" 2 "--min-lr 5" "--lr 0.001" -- "$QCORR" train --data "$AB" --out "$O" $TRAIN_FLAGS --lr 0.001 --min-lr 5

# a failed train must not clobber an existing checkpoint
cp "$M" "$W/keep.safetensors"
expect_error "train: failure keeps the existing --out intact (bad corpus)" 1 "$T/empty.txt" -- "$QCORR" train --data "$T/empty.txt" --out "$W/keep.safetensors" $TRAIN_FLAGS
if cmp -s "$M" "$W/keep.safetensors"; then ok "existing checkpoint unchanged after a failed train"; else fail "existing checkpoint unchanged after a failed train"; fi

# ---- quantize and correct (README: Quantization, Correction layers) ----
# The happy path first: its outputs are the inputs of the refusals below.
QF=$H/q.safetensors    # written by quantize
CF=$H/c.safetensors    # written by correct, same scheme
SCHEME="--bits 3 --granularity group:8 --asymmetric"
CORRECT_FLAGS="--data $AB --steps 20 --batch 4 --calib-tokens 2000 --quiet"
SOLVE_FLAGS="--data $AB --batch 4 --calib-tokens 2000 --quiet" # methods that take no steps

# shellcheck disable=SC2086
if "$QCORR" quantize --model "$M" --out "$QF" $SCHEME --json >"$T/out" 2>"$T/err"; then
    if [ "$(wc -l <"$T/out" | tr -d ' ')" = 1 ] &&
        $PY -c 'import json,sys,math; o=json.loads(open(sys.argv[1]).read()); e=o["rel_error"]; assert "int3" in o["scheme"] and "group:8" in o["scheme"]; assert len(e)==5 and all(0<v<1 for v in e.values()), e; assert "lm_head.weight" in e and "transformer.h.0.attn.c_attn.weight" in e' "$T/out" 2>/dev/null; then
        ok "quantize --json: one object, the scheme, a relative error in (0, 1) for each of the 5 quantized matrices"
    else
        fail "quantize --json: one object, the scheme, a relative error in (0, 1) for each of the 5 quantized matrices"; show "$T/out"
    fi
else
    fail "quantize exits 0"; show "$T/err"
fi

# shellcheck disable=SC2086
if "$QCORR" correct --model "$M" $SCHEME $CORRECT_FLAGS --out "$CF" --json >"$T/correct.json" 2>"$T/err"; then
    if [ "$(wc -l <"$T/correct.json" | tr -d ' ')" = 1 ] && [ ! -s "$T/err" ] && $PY - "$T/correct.json" <<'EOF'
import json, math, sys
o = json.loads(open(sys.argv[1]).read())
for k in ("loss_float", "loss_quant", "loss_corrected", "ppl_float", "ppl_quant", "ppl_corrected", "correction_params"):
    assert isinstance(o[k], (int, float)) and math.isfinite(o[k]), k
for k in ("float", "quant", "corrected"):
    assert abs(o["ppl_" + k] - math.exp(o["loss_" + k])) <= 1e-9 * o["ppl_" + k], k
lf, lq, lc = o["loss_float"], o["loss_quant"], o["loss_corrected"]
assert "recovery_loss" in o and "recovery_ppl" in o and "recovery_defined" in o
assert o["recovery_defined"] == (abs(lq - lf) >= 1e-4)
if o["recovery_defined"]:
    assert abs(o["recovery_loss"] - (lq - lc) / (lq - lf)) <= 1e-9 * max(1, abs(o["recovery_loss"]))
    rp = (math.exp(lq) - math.exp(lc)) / (math.exp(lq) - math.exp(lf))
    assert abs(o["recovery_ppl"] - rp) <= 1e-9 * max(1, abs(rp))
else:
    assert o["recovery_loss"] is None and o["recovery_ppl"] is None
assert o["correction_params"] == 16 * 16 + 16  # one linear site (1 block, d_model 16)
assert o["steps"] == 20 and o["bits"] == 3
EOF
    then
        ok "correct --json: loss/ppl float, quant, corrected, recovery_loss/ppl by the formula, correction_params 272"
    else
        fail "correct --json: loss/ppl float, quant, corrected, recovery_loss/ppl by the formula, correction_params 272"; show "$T/correct.json"
    fi
else
    fail "correct exits 0"; show "$T/err"
fi
leftover=$(find "$H" -name '*.tmp.*')
if [ -z "$leftover" ]; then ok "quantize and correct leave no temporary file"; else fail "quantize and correct leave no temporary file" "$leftover"; fi

# the corrected file holds the quantized base byte for byte as quantize writes it, plus corrections
if $PY - "$QF" "$CF" <<'EOF'
import json, struct, sys
def read(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    meta = h.pop("__metadata__")
    data = {k: (v["dtype"], v["shape"], b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]]) for k, v in h.items()}
    return meta, data
qm, q = read(sys.argv[1])
cm, c = read(sys.argv[2])
assert q and set(q) <= set(c), set(q) - set(c)
for k in q:
    assert q[k] == c[k], k
extra = set(c) - set(q)
assert extra == {"corrections.0.weight", "corrections.0.bias"}, extra
for k in qm:
    if k.startswith("quant_"):
        assert cm.get(k) == qm[k], (k, cm.get(k), qm[k])
assert cm["correction_every"] == "1" and cm["correction_hidden"] == "0"
EOF
then ok "correct --out: base tensors byte-identical to quantize's with the same scheme, plus corrections.0.{weight,bias}"
else fail "correct --out: base tensors byte-identical to quantize's with the same scheme, plus corrections.0.{weight,bias}"; fi

# eval of the corrected checkpoint reproduces loss_corrected (same batch, same arithmetic: exactly)
if "$QCORR" eval --model "$CF" --data "$AB" --batch 4 --json >"$T/out" 2>"$T/err" &&
    $PY -c 'import json,sys; o=json.loads(open(sys.argv[1]).read()); c=json.loads(open(sys.argv[2]).read()); assert o["loss"]==c["loss_corrected"], (o["loss"], c["loss_corrected"])' "$T/out" "$T/correct.json" 2>/dev/null; then
    ok "eval of the corrected checkpoint reproduces correct's loss_corrected exactly"
else
    fail "eval of the corrected checkpoint reproduces correct's loss_corrected exactly"; show "$T/out"; show "$T/err"
fi
if "$QCORR" eval --model "$QF" --data "$AB" --batch 4 --json >"$T/out" 2>"$T/err" &&
    $PY -c 'import json,sys; o=json.loads(open(sys.argv[1]).read()); c=json.loads(open(sys.argv[2]).read()); assert o["loss"]==c["loss_quant"], (o["loss"], c["loss_quant"])' "$T/out" "$T/correct.json" 2>/dev/null; then
    ok "eval of the quantized checkpoint reproduces correct's loss_quant exactly"
else
    fail "eval of the quantized checkpoint reproduces correct's loss_quant exactly"; show "$T/out"; show "$T/err"
fi

if "$QCORR" sample --model "$CF" --prompt "ab " --chars 30 --seed 5 >"$T/out" 2>"$T/err" &&
    $PY -c 'import sys; s=open(sys.argv[1],"rb").read(); assert s.startswith(b"ab ") and s.endswith(b"\n"); g=s[3:-1]; assert len(g)==30, len(g); assert set(g) <= set(b"ab \n")' "$T/out" 2>/dev/null; then
    ok "sample from the corrected checkpoint: the prompt then 30 characters of the vocabulary"
else
    fail "sample from the corrected checkpoint: the prompt then 30 characters of the vocabulary"; show "$T/out"; show "$T/err"
fi

# --bits 32 (the control arm): no quantization, so recovery is undefined: null, flagged
# shellcheck disable=SC2086
if "$QCORR" correct --model "$M" --bits 32 $CORRECT_FLAGS --json >"$T/out" 2>"$T/err" &&
    $PY -c 'import json,sys; o=json.loads(open(sys.argv[1]).read()); assert o["loss_quant"]==o["loss_float"]; assert o["recovery_loss"] is None and o["recovery_ppl"] is None and o["recovery_defined"] is False' "$T/out" 2>/dev/null; then
    ok "correct --bits 32: loss_quant == loss_float, recovery_loss null, recovery_defined false"
else
    fail "correct --bits 32: loss_quant == loss_float, recovery_loss null, recovery_defined false"; show "$T/out"; show "$T/err"
fi

# --steps 0: a fresh correction is the identity, so the corrected loss is the quantized one exactly
for h in 0 8; do
    # shellcheck disable=SC2086
    if "$QCORR" correct --model "$M" $SCHEME --data "$AB" --steps 0 --batch 4 --hidden $h --quiet --json >"$T/out" 2>"$T/err" &&
        $PY -c 'import json,sys; o=json.loads(open(sys.argv[1]).read()); assert o["loss_corrected"]==o["loss_quant"], (o["loss_corrected"], o["loss_quant"]); assert o["loss_quant"]!=o["loss_float"]' "$T/out" 2>/dev/null; then
        ok "correct --steps 0 --hidden $h: loss_corrected == loss_quant exactly"
    else
        fail "correct --steps 0 --hidden $h: loss_corrected == loss_quant exactly"; show "$T/out"; show "$T/err"
    fi
done

# --method lstsq: closed form, no steps
# shellcheck disable=SC2086
if "$QCORR" correct --model "$M" $SCHEME $SOLVE_FLAGS --method lstsq --json >"$T/out" 2>"$T/err" &&
    $PY -c 'import json,sys,math; o=json.loads(open(sys.argv[1]).read()); assert o["method"]=="lstsq" and o["steps"]==0 and math.isfinite(o["loss_corrected"])' "$T/out" 2>/dev/null; then
    ok "correct --method lstsq --json: method lstsq, 0 steps, a finite corrected loss"
else
    fail "correct --method lstsq --json: method lstsq, 0 steps, a finite corrected loss"; show "$T/out"; show "$T/err"
fi
# a method that takes no steps refuses --steps N instead of ignoring it
# shellcheck disable=SC2086
expect_error "correct --method lstsq --steps 20" 2 "--steps 20: --method lstsq takes no training steps" -- \
    "$QCORR" correct --model "$M" $SCHEME $CORRECT_FLAGS --method lstsq

for cmd in quantize correct; do
    if "$QCORR" $cmd --help >"$T/out" 2>"$T/err" && grep -q "usage: qcorr $cmd" "$T/out" && [ ! -s "$T/err" ]; then
        ok "$cmd --help exits 0 with usage on stdout"
    else
        fail "$cmd --help exits 0 with usage on stdout"; show "$T/err"
    fi
done

# refusals: exit 2 for usage, 1 for a group size the model's rows refuse; no output file left
OQ=$W/q.safetensors
OC=$W/c.safetensors
for b in 1 9 33; do
    expect_error "quantize --bits $b" 2 "--bits" "$b" -- "$QCORR" quantize --model "$M" --out "$OQ" --bits $b
    expect_error "correct --bits $b" 2 "--bits" "$b" -- "$QCORR" correct --model "$M" --data "$AB" --out "$OC" --bits $b --quiet
done
expect_error "quantize --granularity group:0" 2 "--granularity" "0" -- "$QCORR" quantize --model "$M" --out "$OQ" --granularity group:0
expect_error "correct --granularity group:0" 2 "--granularity" "0" -- "$QCORR" correct --model "$M" --data "$AB" --out "$OC" --granularity group:0 --quiet
expect_error "quantize --granularity row" 2 "--granularity" "row" -- "$QCORR" quantize --model "$M" --out "$OQ" --granularity row
expect_error "quantize --scale-dtype fp8" 2 "--scale-dtype" "fp8" -- "$QCORR" quantize --model "$M" --out "$OQ" --scale-dtype fp8
expect_error "correct --scale-dtype f64 (no storage format)" 2 "--scale-dtype" "f64" -- "$QCORR" correct --model "$M" --scale-dtype f64
expect_error "sweep --scale-dtype half" 2 "--scale-dtype" "half" -- "$QCORR" sweep --out "$T/sd" --scale-dtype half
expect_error "quantize --granularity group:7 on d_model 16" 1 "group:7" "16" -- "$QCORR" quantize --model "$M" --out "$OQ" --granularity group:7
expect_error "correct --granularity group:7 on d_model 16" 1 "group:7" "16" -- "$QCORR" correct --model "$M" --data "$AB" --out "$OC" --granularity group:7 --quiet
expect_error "correct --every 0" 2 "--every" -- "$QCORR" correct --model "$M" --data "$AB" --out "$OC" --every 0 --quiet
expect_error "correct --hidden -1" 2 "--hidden" -- "$QCORR" correct --model "$M" --data "$AB" --out "$OC" --hidden -1 --quiet
expect_error "correct --objective foo" 2 "--objective" "foo" -- "$QCORR" correct --model "$M" --data "$AB" --out "$OC" --objective foo --quiet
expect_error "correct --method foo" 2 "--method" "foo" -- "$QCORR" correct --model "$M" --data "$AB" --out "$OC" --method foo --quiet
expect_error "correct --method lstsq --hidden 8" 2 "lstsq" "--hidden" -- "$QCORR" correct --model "$M" --data "$AB" --out "$OC" --method lstsq --hidden 8 --quiet
expect_error "correct without --model" 2 "--model" -- "$QCORR" correct --data "$AB" --out "$OC" --quiet
expect_error "quantize without --out" 2 "--out" -- "$QCORR" quantize --model "$M"
for kind in quantized corrected; do
    if [ $kind = quantized ]; then src=$QF; else src=$CF; fi
    expect_error "correct --model a $kind checkpoint" 2 "$src" "float model" -- "$QCORR" correct --model "$src" --data "$AB" --out "$OC" --quiet
    expect_error "quantize --model a $kind checkpoint" 2 "$src" "float model" -- "$QCORR" quantize --model "$src" --out "$OQ"
done
expect_error "correct: missing --model file" 1 "$W/none.safetensors" -- "$QCORR" correct --model "$W/none.safetensors" --data "$AB" --quiet

# ---- issue 14: quantizers (mse, gptq) and per-matrix corrections (lowrank, bias) ----
# M is 16x1 with vocabulary 'ab \n' (V 4): the matrices are c_attn 48x16, c_proj 16x16, c_fc
# 64x16, mlp c_proj 16x64 and the head 4x16 (in + out: 64, 32, 80, 80, 20).
json_check() { # json_check DESCRIPTION JSON_FILE PYTHON_ASSERTIONS (o is the object)
    if $PY -c "import json,sys,math; o=json.loads(open(sys.argv[1]).read()); $3" "$2" 2>/dev/null; then ok "$1"; else fail "$1"; show "$2"; fi
}
# shellcheck disable=SC2086
"$QCORR" quantize --model "$M" --out "$H/q_rtn.safetensors" $SCHEME --json >"$T/rtn.json" 2>"$T/err"
# shellcheck disable=SC2086
if "$QCORR" quantize --model "$M" --out "$H/q_mse.safetensors" $SCHEME --quantizer mse --json >"$T/mse.json" 2>"$T/err"; then
    if $PY -c 'import json,sys; r=json.load(open(sys.argv[1])); m=json.load(open(sys.argv[2])); assert "mse" in m["scheme"] and m["quantizer"]=="mse"; assert set(r["rel_error"])==set(m["rel_error"]); assert all(m["rel_error"][k] <= r["rel_error"][k] for k in r["rel_error"]), (r["rel_error"], m["rel_error"])' "$T/rtn.json" "$T/mse.json" 2>/dev/null; then
        ok "quantize --quantizer mse: no tensor's relative error above rtn's"
    else fail "quantize --quantizer mse: no tensor's relative error above rtn's"; show "$T/mse.json"; fi
else fail "quantize --quantizer mse exits 0"; show "$T/err"; fi
# shellcheck disable=SC2086
if "$QCORR" quantize --model "$M" --out "$H/q_gptq.safetensors" $SCHEME --quantizer gptq --act-order --data "$AB" --calib-tokens 500 --json >"$T/gptq.json" 2>"$T/err"; then
    json_check "quantize --quantizer gptq: 512 calibration characters (whole windows of 16), the options in the scheme" "$T/gptq.json" \
        'assert o["calib_tokens"]==512 and o["quantizer"]=="gptq" and "gptq:damp=0.01:act-order" in o["scheme"], o'
    if "$QCORR" eval --model "$H/q_gptq.safetensors" --data "$AB" --json >"$T/out" 2>"$T/err" && grep -q '"quantization":"int3 asym-minmax group:8 gptq:damp=0.01:act-order' "$T/out"; then
        ok "eval of a gptq checkpoint names its quantizer"
    else fail "eval of a gptq checkpoint names its quantizer"; show "$T/out"; show "$T/err"; fi
else fail "quantize --quantizer gptq exits 0"; show "$T/err"; fi
# ---- issue 21: activation quantization (README: Activation quantization) ----
ACTQ="--bits 4 --act-bits same --act-granularity static --act-calib mse --act-asymmetric --act-points inputs,stream,kv,probs --kv-bits 3"
# shellcheck disable=SC2086
if "$QCORR" quantize --model "$M" --out "$H/q_act.safetensors" $ACTQ --data "$AB" --calib-tokens 500 --json >"$T/act.json" 2>"$T/err"; then
    json_check "quantize with static activation ranges: the scheme says every part, calibrated on 512 characters" "$T/act.json" \
        'assert "act=int4:static-mse:asym:inputs,stream,kv,probs:kv=int3" in o["scheme"] and o["calib_tokens"]==512, o'
    "$QCORR" eval --model "$H/q_act.safetensors" --data "$AB" --batch 4 --json >"$T/act_eval.json" 2>"$T/err"
    # shellcheck disable=SC2086
    if "$QCORR" correct --model "$M" $ACTQ --data "$AB" --batch 4 --calib-tokens 500 --steps 3 --quiet --json >"$T/act_corr.json" 2>"$T/err"; then
        if $PY -c 'import json,sys; e=json.load(open(sys.argv[1])); c=json.load(open(sys.argv[2])); assert abs(e["loss"]-c["loss_quant"]) <= 1e-6*c["loss_quant"], (e["loss"], c["loss_quant"]); assert c["loss_corrected"] == c["loss_corrected"]' "$T/act_eval.json" "$T/act_corr.json" 2>/dev/null; then
            ok "eval of the quantized file reproduces correct's quantized loss (static ranges stored), and correct trains through every point"
        else fail "eval of the quantized file reproduces correct's quantized loss"; show "$T/act_eval.json"; show "$T/act_corr.json"; fi
    else fail "correct with activation quantization at every point exits 0"; show "$T/err"; fi
    if "$QCORR" sample --model "$H/q_act.safetensors" --chars 20 --seed 3 >"$T/out" 2>"$T/err" && [ -s "$T/out" ]; then ok "sample runs a static-range checkpoint through its KV cache"
    else fail "sample runs a static-range checkpoint"; show "$T/err"; fi
else fail "quantize with static activation ranges exits 0"; show "$T/err"; fi
expect_error "--act-calib without static" 2 "--act-calib" "static" -- "$QCORR" quantize --model "$M" --out "$OQ" --act-bits 4 --act-calib mse
expect_error "--act-points stream without bits" 2 "--act-points" "--act-bits" -- "$QCORR" quantize --model "$M" --out "$OQ" --act-points stream
expect_error "--act-bits same at 32 bits" 2 "--act-bits same" "32" -- "$QCORR" quantize --model "$M" --out "$OQ" --bits 32 --act-bits same
expect_error "--act-bits 9" 2 "--act-bits" "9" -- "$QCORR" correct --model "$M" --data "$AB" --act-bits 9
expect_error "--act-bits 1" 2 "--act-bits" "1" -- "$QCORR" quantize --model "$M" --out "$OQ" --act-bits 1
expect_error "--act-granularity channel" 2 "--act-granularity" "channel" -- "$QCORR" quantize --model "$M" --out "$OQ" --act-bits 4 --act-granularity channel
expect_error "--act-points keys" 2 "--act-points" "keys" -- "$QCORR" quantize --model "$M" --out "$OQ" --act-bits 4 --act-points inputs,keys
expect_error "--kv-bits 0 with kv" 2 "--kv-bits 0" -- "$QCORR" quantize --model "$M" --out "$OQ" --act-bits 4 --act-points kv --kv-bits 0
expect_error "--act-asymmetric alone" 2 "--act-asymmetric" -- "$QCORR" quantize --model "$M" --out "$OQ" --act-asymmetric
expect_error "--act-calib percentile:20" 2 "--act-calib" "20" -- "$QCORR" quantize --model "$M" --out "$OQ" --act-bits 4 --act-granularity static --act-calib percentile:20
expect_error "sweep --act-bits same with nothing to follow" 2 "--act-bits same" "--kv-bits 4" -- "$QCORR" sweep --out "$W/sw" --act-bits same --act-points kv --kv-bits 4 --dry-run
# ---- issue 21 item 2: what a stream correction reads, narrow corrections' own products (README: Correction layers under activation quantization) ----
READS="--bits 4 --act-bits 4 --act-points inputs,stream --hidden 4 --correction-bits 8 --data $AB --batch 4 --calib-tokens 500 --steps 3 --quiet --json"
# shellcheck disable=SC2086
if "$QCORR" correct --model "$M" $READS --correction-reads float --out "$H/c_reads.safetensors" >"$T/reads.json" 2>"$T/err" &&
   "$QCORR" correct --model "$M" $READS --out "$H/c_readsq.safetensors" >"$T/readsq.json" 2>"$T/err"; then
    "$QCORR" eval --model "$H/c_reads.safetensors" --data "$AB" --batch 4 --json >"$T/reads_eval.json" 2>"$T/err"
    if $PY - "$T/reads.json" "$T/readsq.json" "$T/reads_eval.json" "$H/c_reads.safetensors" "$H/c_readsq.safetensors" <<'PYEOF' 2>"$T/pyerr"
import json, struct, sys
f, q, e = (json.load(open(p)) for p in sys.argv[1:4])
def meta(p):
    with open(p, "rb") as fh:
        n = struct.unpack("<Q", fh.read(8))[0]
        return json.loads(fh.read(n))["__metadata__"]
assert f["scheme"].endswith("act=int4:inputs,stream:reads-float"), f["scheme"]
assert q["scheme"].endswith("act=int4:inputs,stream"), q["scheme"]
assert f["loss_quant"] == q["loss_quant"], (f["loss_quant"], q["loss_quant"])  # no correction: the modes agree
assert f["loss_corrected"] != q["loss_corrected"]
assert e["loss"] == f["loss_corrected"], (e["loss"], f["loss_corrected"])  # eval reproduces correct, narrow products and all
assert meta(sys.argv[4]).get("quant_act_correction_reads") == "float"
assert "quant_act_correction_reads" not in meta(sys.argv[5])
PYEOF
    then ok "correct --correction-reads float: the scheme says reads-float, the metadata holds it (only then), eval reproduces the corrected loss"
    else fail "correct --correction-reads float: scheme, metadata, eval"; show "$T/pyerr"; show "$T/reads.json"; show "$T/reads_eval.json"; fi
    if "$QCORR" sample --model "$H/c_reads.safetensors" --chars 20 --seed 3 >"$T/out" 2>"$T/err" && [ -s "$T/out" ]; then ok "sample runs a float-reading corrected checkpoint"
    else fail "sample runs a float-reading corrected checkpoint"; show "$T/err"; fi
else fail "correct --correction-reads float|quantized exits 0"; show "$T/err"; fi
expect_error "--correction-reads without the stream point" 2 "--correction-reads float" "stream" -- "$QCORR" correct --model "$M" --data "$AB" --act-bits 4 --correction-reads float
expect_error "--correction-reads without activation bits" 2 "--correction-reads float" "stream" -- "$QCORR" correct --model "$M" --data "$AB" --correction-reads float
expect_error "--correction-reads int" 2 "--correction-reads" "'int'" -- "$QCORR" correct --model "$M" --data "$AB" --act-bits 4 --act-points inputs,stream --correction-reads int
expect_error "--correction-reads float with lowrank" 2 "--correction-reads float" "lowrank" -- "$QCORR" correct --model "$M" --data "$AB" --act-bits 4 --act-points inputs,stream --correction-reads float --method lowrank
expect_error "--correction-reads float with bias" 2 "--correction-reads float" "bias" -- "$QCORR" correct --model "$M" --data "$AB" --act-bits 4 --act-points inputs,stream --correction-reads float --method bias
expect_error "sweep --correction-reads float without the stream point" 2 "--correction-reads float" "stream" -- "$QCORR" sweep --out "$W/sw" --act-bits 4 --correction-reads float --dry-run
expect_error "sweep --correction-reads float with lowrank" 2 "--correction-reads float" "lowrank" -- "$QCORR" sweep --out "$W/sw" --act-bits 4 --act-points inputs,stream --methods train,lowrank --correction-reads float --dry-run
LOWRANK=$H/lowrank.safetensors
# shellcheck disable=SC2086
if "$QCORR" correct --model "$M" $SCHEME --data "$AB" --batch 4 --calib-tokens 2000 --quiet --method lowrank --rank 2 --out "$LOWRANK" --json >"$T/lowrank.json" 2>"$T/err"; then
    json_check "correct --method lowrank --rank 2: 2 (64 + 32 + 80 + 80 + 20) = 552 parameters on 5 matrices, no steps by default" "$T/lowrank.json" \
        'assert o["correction_params"]==552 and o["correction_sites"]==5 and o["ranks"]==[2]*5 and o["steps"]==0 and o["correction"]=="lowrank", o'
    "$QCORR" eval --model "$LOWRANK" --data "$AB" --batch 4 --json >"$T/eval.json" 2>"$T/err"
    json_check "eval of the lowrank checkpoint reproduces loss_corrected exactly" "$T/eval.json" \
        'c=json.load(open(sys.argv[1].replace("eval.json","lowrank.json"))); assert o["loss"]==c["loss_corrected"], (o["loss"], c["loss_corrected"])'
    if $PY -c 'import torch' 2>/dev/null; then
        loss=$($PY -c 'import json,sys; print(repr(json.load(open(sys.argv[1]))["loss"]))' "$T/eval.json")
        if $PY tools/check_lora_checkpoint.py "$LOWRANK" "$AB" "$loss" >"$T/out" 2>"$T/err"; then ok "PyTorch: load_state_dict(strict=True) of the lowrank checkpoint into lora_A/lora_B layers, same loss ($(cut -c1-60 "$T/out")...)"
        else fail "PyTorch: load_state_dict(strict=True) of the lowrank checkpoint into lora_A/lora_B layers, same loss"; show "$T/out"; show "$T/err"; fi
    else
        echo "skip - PyTorch load of the lowrank checkpoint: $PY has no torch"
    fi
else fail "correct --method lowrank --rank 2 exits 0"; show "$T/err"; fi
# rank match: a linear correction every 1 has 16^2 + 16 = 272 parameters; 276 per rank is more, so
# k = 0, then one rank each in forward order while it fits: 64, 32, 80, 80 (16 left; the head's 20 does not fit)
# shellcheck disable=SC2086
if "$QCORR" correct --model "$M" $SCHEME $CORRECT_FLAGS --method lowrank --lowrank-scale act --json >"$T/out" 2>"$T/err"; then
    json_check "correct --method lowrank (rank match, act scale): 256 of the 272 parameters, ranks 1,1,1,1 and none on the head" "$T/out" \
        'assert o["correction_params"]==256 and o["ranks"]==[1,1,1,1] and o["lowrank_scale"]=="act", o'
else fail "correct --method lowrank --lowrank-scale act exits 0"; show "$T/err"; fi
# shellcheck disable=SC2086
if "$QCORR" correct --model "$M" $SCHEME $CORRECT_FLAGS --method lowrank --rank 1 --steps 5 --objective kl --json >"$T/out" 2>"$T/err"; then
    json_check "correct --method lowrank --steps 5 --objective kl: fine-tuned, objective kl" "$T/out" 'assert o["steps"]==5 and o["objective"]=="kl" and o["final_objective"] is not None, o'
else fail "correct --method lowrank --steps 5 exits 0"; show "$T/err"; fi
BIAS=$H/bias.safetensors
# shellcheck disable=SC2086
if "$QCORR" correct --model "$M" $SCHEME $SOLVE_FLAGS --method bias --quantizer gptq --out "$BIAS" --json >"$T/bias.json" 2>"$T/err"; then
    json_check "correct --quantizer gptq --method bias: 0 parameters stored, 5 sites" "$T/bias.json" \
        'assert o["correction_params"]==0 and o["correction_sites"]==5 and o["quantizer"]=="gptq" and o["method"]=="bias", o'
    "$QCORR" eval --model "$BIAS" --data "$AB" --batch 4 --json >"$T/eval.json" 2>"$T/err"
    json_check "eval of the bias checkpoint (deltas folded into the biases, no correction tensor) gives loss_corrected to 1e-5" "$T/eval.json" \
        'c=json.load(open(sys.argv[1].replace("eval.json","bias.json"))); assert abs(o["loss"]-c["loss_corrected"])<1e-5 and o["correction_sites"]==0, (o, c["loss_corrected"])'
else fail "correct --method bias exits 0"; show "$T/err"; fi
# the methods that tune the base (0 extra bits): the model's bits are the quantized model's, nothing
# stored beside it, and the saved checkpoint (a plain quantized model) gives loss_corrected again
for m in normtweak qat scales lwc; do
    if "$QCORR" correct --model "$M" $SCHEME $CORRECT_FLAGS --method $m --out "$H/$m.safetensors" --json >"$T/$m.json" 2>"$T/err"; then
        json_check "correct --method $m: 20 steps, model_bits_corrected = model_bits_quant, no correction stored" "$T/$m.json" \
            'assert o["method"]==sys.argv[1].split("/")[-1][:-5] and o["steps"]==20 and o["steps_run"]==20 and o["objective"]=="ce" and o["model_bits_corrected"]==o["model_bits_quant"] and o["correction_bits"]==0 and o["correction_params"]==0 and o["correction_sites"]==0 and o["loss_corrected"]!=o["loss_quant"], o'
        "$QCORR" eval --model "$H/$m.safetensors" --data "$AB" --batch 4 --json >"$T/eval.json" 2>"$T/err"
        json_check "eval of the $m checkpoint gives its loss_corrected to 1e-5" "$T/eval.json" \
            "c=json.load(open('$T/$m.json')); assert abs(o['loss']-c['loss_corrected'])<1e-5 and o['correction_sites']==0, (o, c['loss_corrected'])"
    else fail "correct --method $m exits 0"; show "$T/err"; fi
done
# adaround rounds layer by layer with iterations of its own (no AdamW steps): 0 extra bits, its checkpoint reloads
if "$QCORR" correct --model "$M" $SCHEME --data "$AB" --batch 4 --calib-tokens 2000 --quiet --method adaround --out "$H/adaround.safetensors" --json >"$T/adaround.json" 2>"$T/err"; then
    json_check "correct --method adaround: model_bits_corrected = model_bits_quant, no correction stored, the loss moved" "$T/adaround.json" \
        'assert o["method"]=="adaround" and o["steps"]==0 and o["model_bits_corrected"]==o["model_bits_quant"] and o["correction_bits"]==0 and o["correction_sites"]==0 and o["loss_corrected"]!=o["loss_quant"], o'
    "$QCORR" eval --model "$H/adaround.safetensors" --data "$AB" --batch 4 --json >"$T/eval.json" 2>"$T/err"
    json_check "eval of the adaround checkpoint gives its loss_corrected to 1e-5" "$T/eval.json" \
        "c=json.load(open('$T/adaround.json')); assert abs(o['loss']-c['loss_corrected'])<1e-5, (o, c['loss_corrected'])"
else fail "correct --method adaround exits 0"; show "$T/err"; fi
expect_error "correct --method adaround --bits 32 (no grid)" 2 "adaround" "--bits 32" -- "$QCORR" correct --model "$M" --data "$AB" --out "$OC" --method adaround --bits 32 --quiet
expect_error "correct --method adaround --steps auto" 2 "--steps auto" "adaround" -- "$QCORR" correct --model "$M" --data "$AB" --out "$OC" --method adaround --steps auto --quiet
if "$QCORR" correct --model "$M" $SCHEME $CORRECT_FLAGS --method qat --objective kl --steps auto --max-steps 20 --eval-every 5 --json >"$T/out" 2>"$T/err"; then
    json_check "correct --method qat --objective kl --steps auto: stopped by the rule, a held-out objective" "$T/out" \
        'assert o["steps"]=="auto" and o["objective"]=="kl" and 0<o["steps_run"]<=20 and o["heldout_objective"] is not None, o'
else fail "correct --method qat --steps auto exits 0"; show "$T/err"; fi
expect_error "correct --method normtweak --hidden 8" 2 "normtweak" "--hidden" -- "$QCORR" correct --model "$M" --data "$AB" --out "$OC" --method normtweak --hidden 8 --quiet
# qat at 32 bits is its control arm: the float matrices fine-tuned by the same steps
# shellcheck disable=SC2086
if "$QCORR" correct --model "$M" --bits 32 $CORRECT_FLAGS --method qat --json >"$T/out" 2>"$T/err"; then
    json_check "correct --method qat --bits 32: the float model fine-tuned 20 steps, its loss moved, no bits added" "$T/out" \
        'assert o["steps_run"]==20 and o["loss_corrected"]!=o["loss_quant"] and o["model_bits_corrected"]==o["model_bits_float"], o'
else fail "correct --method qat --bits 32 exits 0"; show "$T/err"; fi
expect_error "correct --method scales --bits 32 (no grid)" 2 "scales" "--bits 32" -- "$QCORR" correct --model "$M" --data "$AB" --out "$OC" --method scales --bits 32 --quiet
# combinations: a zero-bit method, then a correction on the tuned model (issue 22 item 5)
# shellcheck disable=SC2086
if "$QCORR" correct --model "$M" $SCHEME $CORRECT_FLAGS --method lwc+train --out "$H/combined.safetensors" --json >"$T/combined.json" 2>"$T/err"; then
    json_check "correct --method lwc+train: both stages ran 20 steps, a correction stored on top of the quantized model's bits" "$T/combined.json" \
        'assert o["method"]=="lwc+train" and o["first_method"]=="lwc" and o["first_steps_run"]==20 and o["steps_run"]==20 and o["correction_bits"]>0 and o["model_bits_corrected"]==o["model_bits_quant"]+o["correction_bits"], o'
    "$QCORR" eval --model "$H/combined.safetensors" --data "$AB" --batch 4 --json >"$T/eval.json" 2>"$T/err"
    json_check "eval of the lwc+train checkpoint (tuned base and its correction) gives loss_corrected to 1e-5" "$T/eval.json" \
        "c=json.load(open('$T/combined.json')); assert abs(o['loss']-c['loss_corrected'])<1e-5 and o['correction_sites']>0, (o, c['loss_corrected'])"
else fail "correct --method lwc+train exits 0"; show "$T/err"; fi
# shellcheck disable=SC2086
if "$QCORR" correct --model "$M" $SCHEME $SOLVE_FLAGS --method adaround+lstsq --json >"$T/out" 2>"$T/err"; then
    json_check "correct --method adaround+lstsq: no steps, a correction stored" "$T/out" \
        'assert o["method"]=="adaround+lstsq" and o["first_steps_run"]>0 and o["steps_run"]==0 and o["correction_bits"]>0, o'
else fail "correct --method adaround+lstsq exits 0"; show "$T/err"; fi
expect_error "correct --method train+lwc (the order)" 2 "train+lwc" "combination" -- "$QCORR" correct --model "$M" --data "$AB" --out "$OC" --method train+lwc --quiet
expect_error "correct --method lwc+qat (two zero-bit methods)" 2 "lwc+qat" -- "$QCORR" correct --model "$M" --data "$AB" --out "$OC" --method lwc+qat --quiet
expect_error "correct --method adaround+lstsq --steps 10" 2 "--steps" "adaround" "lstsq" -- "$QCORR" correct --model "$M" --data "$AB" --out "$OC" --method adaround+lstsq --steps 10 --quiet
expect_error "correct --method lwc --bits 32 (no grid)" 2 "lwc" "--bits 32" -- "$QCORR" correct --model "$M" --data "$AB" --out "$OC" --method lwc --bits 32 --quiet
expect_error "correct --method normtweak --objective mse" 2 "--objective mse" "normtweak" -- "$QCORR" correct --model "$M" --data "$AB" --out "$OC" --method normtweak --objective mse --quiet
expect_error "correct --method normtweak --scope linear,head,norm" 2 "normtweak" "--scope norm" -- "$QCORR" correct --model "$M" --data "$AB" --out "$OC" --method normtweak --scope linear,head,norm --quiet
expect_error "correct --method qat --quantizer mse --mse-weighted (grids fitted on data)" 1 "qat" "not on the grid" -- "$QCORR" correct --model "$M" --data "$AB" --out "$OC" --method qat --quantizer mse --mse-weighted --calib-tokens 2000 --batch 4 --quiet
# refusals
NOCORPUS="env -C $T"
expect_error "quantize --quantizer foo" 2 "--quantizer" "foo" -- "$QCORR" quantize --model "$M" --out "$OQ" --quantizer foo
expect_error "quantize --quantizer gptq without calibration data" 2 "gptq" "calibration data" -- $NOCORPUS "$QCORR" quantize --model "$M" --out "$OQ" --quantizer gptq
expect_error "quantize --quantizer mse --mse-weighted without calibration data" 2 "--mse-weighted" "calibration data" -- $NOCORPUS "$QCORR" quantize --model "$M" --out "$OQ" --quantizer mse --mse-weighted
for d in 0 -0.01 nan; do
    expect_error "quantize --damp $d" 2 "--damp" -- "$QCORR" quantize --model "$M" --out "$OQ" --quantizer gptq --data "$AB" --damp $d
done
expect_error "quantize --damp with rtn" 2 "--damp" "gptq" -- "$QCORR" quantize --model "$M" --out "$OQ" --damp 0.01
expect_error "quantize --act-order with mse" 2 "--act-order" "mse" -- "$QCORR" quantize --model "$M" --out "$OQ" --quantizer mse --act-order
expect_error "quantize --gptq-fit foo" 2 "--gptq-fit" "foo" -- "$QCORR" quantize --model "$M" --out "$OQ" --quantizer gptq --data "$AB" --gptq-fit foo
expect_error "quantize --gptq-groups current --act-order" 2 "act-order" -- "$QCORR" quantize --model "$M" --out "$OQ" --quantizer gptq --data "$AB" --granularity group:8 --gptq-groups current --act-order
expect_error "quantize --mse-weighted with rtn" 2 "--mse-weighted" -- "$QCORR" quantize --model "$M" --out "$OQ" --mse-weighted
expect_error "correct --quantizer gptq --damp 0" 2 "--damp" -- "$QCORR" correct --model "$M" --data "$AB" --out "$OC" --quantizer gptq --damp 0 --quiet
for m in lowrank bias; do
    expect_error "correct --method $m --bits 32 (nothing to compensate)" 2 "$m" "--bits 32" -- "$QCORR" correct --model "$M" --data "$AB" --out "$OC" --method $m --bits 32 --quiet
done
expect_error "correct --method lowrank --rank 5 (the head is 4 x 16)" 2 "rank 5" "lm_head" -- "$QCORR" correct --model "$M" --data "$AB" --out "$OC" --method lowrank --rank 5 --quiet
expect_error "correct --method lowrank --rank 0" 2 "--rank" -- "$QCORR" correct --model "$M" --data "$AB" --out "$OC" --method lowrank --rank 0 --quiet
expect_error "correct --method lowrank --steps 5 --objective mse" 2 "--objective mse" "lowrank" -- "$QCORR" correct --model "$M" --data "$AB" --out "$OC" --method lowrank --steps 5 --objective mse --quiet
expect_error "correct --method train --rank 2" 2 "--rank" "lowrank" -- "$QCORR" correct --model "$M" --data "$AB" --out "$OC" --rank 2 --quiet
expect_error "correct --lowrank-scale foo" 2 "--lowrank-scale" "foo" -- "$QCORR" correct --model "$M" --data "$AB" --out "$OC" --method lowrank --lowrank-scale foo --quiet
expect_error "correct --method bias --scope linear,head,bias" 2 "bias" "--scope" -- "$QCORR" correct --model "$M" --data "$AB" --out "$OC" --method bias --scope linear,head,bias --quiet
expect_error "correct --method lowrank --hidden 8" 2 "lowrank" "--hidden" -- "$QCORR" correct --model "$M" --data "$AB" --out "$OC" --method lowrank --hidden 8 --quiet

# ---- faults: a corrupt checkpoint to every command that reads one, absurd sizes, signals ----
head -c 3000 "$M" >"$T/cut.safetensors"
expect_error "quantize: truncated checkpoint" 1 "$T/cut.safetensors" -- "$QCORR" quantize --model "$T/cut.safetensors" --out "$OQ"
expect_error "correct: truncated checkpoint" 1 "$T/cut.safetensors" -- "$QCORR" correct --model "$T/cut.safetensors" --data "$AB" --out "$OC" --quiet
expect_error "train --d-model 100000" 2 "--d-model" "100000" -- "$QCORR" train --d-model 100000 --data "$AB" --out "$W/x.safetensors"
expect_error "train: a 20+ GiB model is refused before allocation" 1 "GiB" "d_model 8192" -- \
    "$QCORR" train --d-model 8192 --layers 64 --heads 8 --ctx 2048 --batch 64 --steps 1 --data "$AB" --out "$W/huge.safetensors" --quiet

# training_log DIR NAME: the training log DIR/NAME, or the temporary it is written to until
# training ends (NAME.tmp.*)
training_log() { find "$1" \( -name "$2" -o -name "$2.tmp.*" \) | head -n 1; }
# wait_for DIR NAME MIN_LINES SECONDS: until the training log has MIN_LINES lines (bounded)
wait_for() {
    i=0
    while [ $i -lt $(($4 * 10)) ]; do
        f=$(training_log "$1" "$2")
        [ -n "$f" ] && [ "$(wc -l <"$f" | tr -d ' ')" -ge "$3" ] && return 0
        sleep 0.1
        i=$((i + 1))
    done
    return 1
}
temporaries() { find "$1" -name '*.tmp.*' | wc -l | tr -d ' '; }

S=$T/signal
mkdir -p "$S"
"$QCORR" train --d-model 32 --layers 2 --heads 2 --ctx 32 --batch 8 --steps 1000000 --data "$AB" \
    --out "$S/m.safetensors" --quiet >"$S/out" 2>"$S/err" </dev/null &
pid=$!
if wait_for "$S" m.train.csv 4 30; then
    kill -INT $pid
    wait $pid
    rc=$?
    why=""
    [ $rc = 1 ] || why="$why exit $rc, expected 1;"
    [ "$(wc -l <"$S/err" | tr -d ' ')" = 1 ] || why="$why not one line on stderr;"
    grep -q "interrupted by signal 2" "$S/err" || why="$why no 'interrupted by signal 2';"
    [ ! -e "$S/m.safetensors" ] || why="$why a checkpoint was written;"
    [ "$(temporaries "$S")" = 0 ] || why="$why a temporary file was left;"
    if [ -z "$why" ]; then ok "SIGINT during train: exit 1, one line, no checkpoint, no temporary"
    else fail "SIGINT during train: exit 1, one line, no checkpoint, no temporary" "$why"; show "$S/err"; fi
else
    kill -9 $pid 2>/dev/null
    fail "SIGINT during train: training started (no log lines within 30 s)"
fi

# SIGKILL mid training: the log is never left half-written beside no checkpoint (it is written
# to a temporary and renamed when training ends)
K=$T/killed
mkdir -p "$K"
"$QCORR" train --d-model 32 --layers 2 --heads 2 --ctx 32 --batch 8 --steps 1000000 --data "$AB" \
    --out "$K/m.safetensors" --quiet >"$K/out" 2>"$K/err" </dev/null &
pid=$!
if wait_for "$K" m.train.csv 4 30; then
    kill -9 $pid
    wait $pid 2>/dev/null
    why=""
    [ ! -e "$K/m.train.csv" ] || why="$why a half log m.train.csv ($(wc -l <"$K/m.train.csv" | tr -d ' ') lines) was left;"
    [ ! -e "$K/m.safetensors" ] || why="$why a checkpoint was written;"
    if [ -z "$why" ]; then ok "SIGKILL during train: no half-written log, no checkpoint"
    else fail "SIGKILL during train: no half-written log, no checkpoint" "$why"; fi
else
    kill -9 $pid 2>/dev/null
    fail "SIGKILL during train: training started (no log lines within 30 s)"
fi

# a full disk while the training log is written (LD_PRELOAD shim tests/fault_write.c, the log's
# path only): exit 1, one line naming the log and the reason, no log, no checkpoint, no temporary
FD=$T/fulllog
mkdir -p "$FD"
FD=$(cd "$FD" && pwd -P)
if cc -shared -fPIC -o "$T/fault_write.so" tests/fault_write.c -ldl 2>"$T/cc.err"; then
    env LD_PRELOAD="$T/fault_write.so" ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0" \
        FAULT_WRITE_PREFIX="$FD/m.train.csv" FAULT_WRITE_BUDGET=2000 \
        "$QCORR" train --d-model 16 --layers 1 --heads 2 --ctx 16 --batch 4 --steps 300 --quiet --data "$AB" \
        --out "$FD/m.safetensors" >"$T/out" 2>"$T/err" </dev/null
    rc=$?
    why=""
    [ $rc = 1 ] || why="$why exit $rc, expected 1;"
    [ "$(wc -l <"$T/err" | tr -d ' ')" = 1 ] || why="$why not one line on stderr;"
    grep -q "m.train.csv" "$T/err" || why="$why the message does not name the log;"
    grep -q "No space left on device" "$T/err" || why="$why the message does not give the reason;"
    [ ! -e "$FD/m.train.csv" ] || why="$why a log m.train.csv was left ($(wc -c <"$FD/m.train.csv" | tr -d ' ') bytes);"
    [ ! -e "$FD/m.safetensors" ] || why="$why a checkpoint was written;"
    [ "$(temporaries "$FD")" = 0 ] || why="$why a temporary file was left;"
    if [ -z "$why" ]; then ok "train: full disk for the log: exit 1, one line naming the log and ENOSPC, no log, no checkpoint, no temporary"
    else fail "train: full disk for the log: exit 1, one line naming the log and ENOSPC, no log, no checkpoint, no temporary" "$why"; show "$T/err"; fi
else
    fail "tests/fault_write.c builds"
    show "$T/cc.err"
fi

# a full disk while the checkpoint is written, after training: no log either (the log is
# committed after the checkpoint, so it never stands beside no checkpoint)
FC=$T/fullckpt
mkdir -p "$FC"
FC=$(cd "$FC" && pwd -P)
if [ -f "$T/fault_write.so" ]; then
    # shellcheck disable=SC2086
    env LD_PRELOAD="$T/fault_write.so" ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0" \
        FAULT_WRITE_PREFIX="$FC/m.safetensors" FAULT_WRITE_BUDGET=4000 \
        "$QCORR" train $TRAIN_FLAGS --data "$AB" --out "$FC/m.safetensors" >"$T/out" 2>"$T/err" </dev/null
    rc=$?
    why=""
    [ $rc = 1 ] || why="$why exit $rc, expected 1;"
    [ "$(wc -l <"$T/err" | tr -d ' ')" = 1 ] || why="$why not one line on stderr;"
    grep -q "m.safetensors" "$T/err" && grep -q "No space left on device" "$T/err" || why="$why the message does not name the checkpoint and ENOSPC;"
    [ ! -e "$FC/m.train.csv" ] || why="$why a log m.train.csv was left beside no checkpoint;"
    [ ! -e "$FC/m.safetensors" ] || why="$why a checkpoint was written;"
    [ "$(temporaries "$FC")" = 0 ] || why="$why a temporary file was left;"
    if [ -z "$why" ]; then ok "train: full disk for the checkpoint: exit 1, one line, no log, no checkpoint, no temporary"
    else fail "train: full disk for the checkpoint: exit 1, one line, no log, no checkpoint, no temporary" "$why"; show "$T/err"; fi
fi

# temporaries left by processes that are gone (kill -9 mid training) are removed by the next
# train of that --out; a live process's (this shell's) and another host's are not its to remove
ST=$T/stale
mkdir -p "$ST"
host=$(uname -n | cut -c 1-63 | tr './' '__')
dead=99999999 # above pid_max: no such process
: >"$ST/m.train.csv.tmp.$host.$dead.AbCdEf"
: >"$ST/m.safetensors.tmp.$host.$dead.GhIjKl"
: >"$ST/m.train.csv.tmp.$host.$$.MnOpQr"
: >"$ST/m.train.csv.tmp.otherhost.$dead.StUvWx"
# shellcheck disable=SC2086
if "$QCORR" train $TRAIN_FLAGS --data "$AB" --out "$ST/m.safetensors" >/dev/null 2>"$T/err"; then
    left=$(cd "$ST" && ls | sort | tr '\n' ' ')
    kept=$(printf '%s\n' m.safetensors m.train.csv "m.train.csv.tmp.$host.$$.MnOpQr" "m.train.csv.tmp.otherhost.$dead.StUvWx" | sort | tr '\n' ' ')
    if [ "$left" = "$kept" ]; then
        ok "train clears the temporaries of its outputs left by dead processes of this host, and only those"
    else fail "train clears the temporaries of its outputs left by dead processes of this host, and only those" "left: $left"; fi
else fail "train beside stale temporaries exits 0"; show "$T/err"; fi

# a checkpoint holding a NaN (a corrupt file, a diverged training) is refused at load by every
# command, naming the file and the tensor; finite weights so large that the outputs overflow give
# a non-finite loss, which is an error too, not a result
$PY - "$M" "$W/nan.safetensors" "$W/huge.safetensors" <<'EOF'
import json, struct, sys
b = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
def planted(name, value):
    c = bytearray(b)
    a, e = h[name]["data_offsets"]
    for i in range((e - a) // 4):
        v = value(i)
        if v is not None:
            struct.pack_into("<f", c, 8 + n + a + 4 * i, v)
    return c
open(sys.argv[2], "wb").write(planted("transformer.h.0.mlp.c_fc.weight", lambda i: float("nan") if i == 5 else None))
open(sys.argv[3], "wb").write(planted("lm_head.weight", lambda i: 3e38 if i % 2 else -3e38))
EOF
NAN_TENSOR=transformer.h.0.mlp.c_fc.weight
expect_error "eval: a NaN weight is refused at load" 1 "$W/nan.safetensors" "$NAN_TENSOR" "non-finite" -- "$QCORR" eval --model "$W/nan.safetensors" --data "$AB"
expect_error "eval --reference: a NaN weight is refused at load" 1 "$W/nan.safetensors" "$NAN_TENSOR" -- "$QCORR" eval --model "$M" --reference "$W/nan.safetensors" --data "$AB"
expect_error "sample: a NaN weight is refused at load (no 'zzzz')" 1 "$W/nan.safetensors" "$NAN_TENSOR" -- "$QCORR" sample --model "$W/nan.safetensors" --chars 5
expect_error "quantize: a NaN weight is refused at load (no rel_error 0)" 1 "$W/nan.safetensors" "$NAN_TENSOR" -- "$QCORR" quantize --model "$W/nan.safetensors" --out "$OQ" --json
expect_error "correct: a NaN weight is refused at load (not 'training diverged')" 1 "$W/nan.safetensors" "$NAN_TENSOR" -- "$QCORR" correct --model "$W/nan.safetensors" --data "$AB" --out "$OC" --quiet
expect_error "eval: outputs that overflow give a non-finite loss: an error" 1 "$W/huge.safetensors" "not finite" -- "$QCORR" eval --model "$W/huge.safetensors" --data "$AB" --json
expect_error "sample: outputs that overflow: an error, not 'zzzz'" 1 "$W/huge.safetensors" "not finite" -- "$QCORR" sample --model "$W/huge.safetensors" --chars 5
expect_error "correct: outputs that overflow: an error naming the model" 1 "$W/huge.safetensors" "not finite" -- "$QCORR" correct --model "$W/huge.safetensors" --data "$AB" --quiet
# a corpus whose validation split holds no window: refused before training, as eval refuses it
head -c 150 "$AB" >"$T/short.txt"
# shellcheck disable=SC2086
expect_error "train: a validation split shorter than one window is refused before training (not 'val loss nan')" 1 "$T/short.txt" "validation split" -- \
    "$QCORR" train --data "$T/short.txt" --out "$O" $TRAIN_FLAGS

SW=$T/sigsweep
GRID="--sizes 16x1 --ctx 16 --heads 2 --train-steps 300 --train-batch 8 --steps 5 --batch 4 --calib-tokens 512 --seeds 1,2 --bits 2 --every 1 --hidden 0"
# shellcheck disable=SC2086
"$QCORR" sweep $GRID --data "$AB" --out "$SW" --quiet >"$T/sw.out" 2>"$T/sw.err" </dev/null &
pid=$!
i=0
while [ $i -lt 300 ] && [ "$(find "$SW/runs" -name '*.json' 2>/dev/null | wc -l | tr -d ' ')" -lt 1 ]; do sleep 0.1; i=$((i + 1)); done
kill -TERM $pid 2>/dev/null
wait $pid
rc=$?
why=""
[ $rc = 1 ] || why="$why exit $rc, expected 1 (the sweep may have finished before the signal);"
grep -q "interrupted by signal 15" "$T/sw.err" || why="$why no 'interrupted by signal 15';"
[ "$(temporaries "$SW")" = 0 ] || why="$why a temporary file was left;"
for f in $(find "$SW" -name '*.json'); do
    [ -x "$PY" ] && ! "$PY" -c 'import json,sys; json.load(open(sys.argv[1]))' "$f" 2>/dev/null && why="$why $f is not valid JSON;"
done
if [ -z "$why" ]; then ok "SIGTERM during sweep: exit 1, says how to resume, every file whole"
else fail "SIGTERM during sweep: exit 1, says how to resume, every file whole" "$why"; show "$T/sw.err"; fi
# shellcheck disable=SC2086
if "$QCORR" sweep $GRID --data "$AB" --out "$SW" --quiet >/dev/null 2>"$T/sw2.err" </dev/null &&
    [ "$(find "$SW/runs" -name '*.json' | wc -l | tr -d ' ')" = 4 ] &&
    [ "$(tail -n +2 "$SW/summary.csv" | wc -l | tr -d ' ')" = 4 ]; then
    ok "SIGTERM during sweep: the same command resumes to all 4 runs, each once"
else
    fail "SIGTERM during sweep: the same command resumes to all 4 runs, each once"; show "$T/sw2.err"
fi

# ---- make bench's two engines still run (one step each; the timings belong to the benchmark) ----
# ---- --steps auto: training until the held-out objective stops improving ----
# shellcheck disable=SC2086
if "$QCORR" correct --model "$M" $SCHEME --data "$AB" --steps auto --max-steps 400 --eval-every 10 --batch 4 --calib-tokens 2000 \
    --quiet --json >"$T/auto.json" 2>"$T/err"; then
    json_check "correct --steps auto --json: steps auto, steps_run within the cap, best_step a measurement at most steps_run, stopped_by, a held-out objective" "$T/auto.json" \
        'assert o["steps"] == "auto" and 0 < o["steps_run"] <= 400 and o["best_step"] % 10 == 0 and o["best_step"] <= o["steps_run"]; assert o["stopped_by"] in ("plateau", "cap") and (o["stopped_by"] == "cap") == (o["steps_run"] == 400); assert math.isfinite(o["heldout_objective"]) and o["max_steps"] == 400 and o["schedule"] == "plateau"'
else fail "correct --steps auto exits 0"; show "$T/err"; fi
# shellcheck disable=SC2086
"$QCORR" correct --model "$M" $SCHEME $CORRECT_FLAGS --json >"$T/fixed.json" 2>"$T/err"
json_check "correct --steps 20 --json: steps_run 20, stopped_by fixed, no held-out objective" "$T/fixed.json" \
    'assert o["steps"] == 20 and o["steps_run"] == 20 and o["best_step"] == 20 and o["stopped_by"] == "fixed" and o["heldout_objective"] is None'
expect_error "correct --max-steps without --steps auto" 2 "--max-steps" "--steps auto" -- "$QCORR" correct --model "$M" --data "$AB" --steps 20 --max-steps 50
expect_error "correct --steps abc" 2 "--steps" "abc" -- "$QCORR" correct --model "$M" --data "$AB" --steps abc
expect_error "correct --heldout-share 1" 2 "--heldout-share" -- "$QCORR" correct --model "$M" --data "$AB" --steps auto --heldout-share 1
expect_error "correct --schedule linear" 2 "--schedule" "linear" -- "$QCORR" correct --model "$M" --data "$AB" --steps auto --schedule linear
expect_error "correct --steps auto --method none" 2 "--steps auto" "none" -- "$QCORR" correct --model "$M" --data "$AB" --steps auto --method none
expect_error "correct --init lstsq on an MLP" 2 "--init lstsq" -- "$QCORR" correct --model "$M" --data "$AB" --hidden 8 --init lstsq
AUTO_GRID="--sizes 16x1 --ctx 16 --heads 2 --train-steps 100 --train-batch 8 --batch 4 --calib-tokens 512 --seeds 1 --bits 2 --every 1 --hidden 0 --max-steps 60 --eval-every 10"
# shellcheck disable=SC2086
if "$QCORR" sweep $AUTO_GRID --steps 10,auto --no-control --data "$AB" --out "$T/autosweep" --quiet >/dev/null 2>"$T/err"; then
    if $PY - "$T/autosweep" <<'EOF' 2>"$T/py.err"; then
import csv, json, os, sys
d = sys.argv[1]
m = json.load(open(os.path.join(d, "manifest.json")))
assert m["correction"]["steps"] == [10, "auto"], m["correction"]
assert m["correction"]["stopping"]["max_steps"] == 60 and m["correction"]["stopping"]["eval_every"] == 10
rows = {r["run_id"]: r for r in csv.DictReader(open(os.path.join(d, "summary.csv")))}
a, f = rows["s1_16x1_b2_e1_h0_train_sauto"], rows["s1_16x1_b2_e1_h0_train_s10"]
assert a["steps"] == "-1" and a["stopped_by"] in ("plateau", "cap") and 0 < int(a["steps_run"]) <= 60 and float(a["heldout_objective"]) > 0
assert f["steps"] == "10" and f["steps_run"] == "10" and f["stopped_by"] == "fixed" and f["heldout_objective"] == ""
curve = open(os.path.join(d, "logs", "s1_16x1_b2_e1_h0_train_sauto.heldout.csv")).read().splitlines()
assert curve[0] == "step,heldout_objective,lr,best" and int(curve[-1].split(",")[0]) == int(a["steps_run"]), curve[-1]
assert not os.path.exists(os.path.join(d, "logs", "s1_16x1_b2_e1_h0_train_s10.heldout.csv"))
EOF
        ok "sweep --steps 10,auto: manifest steps [10, \"auto\"] and the rule, ids _s10/_sauto, steps_run/stopped_by/heldout_objective in summary.csv, the held-out curve in logs/"
    else fail "sweep --steps 10,auto: manifest, ids, summary columns and held-out curve"; sed 's/^/#   /' "$T/py.err" | tail -n 3; fi
else fail "sweep --steps 10,auto exits 0"; show "$T/err"; fi
expect_error "sweep --methods bias --scope linear,head,bias (correct's rule)" 2 "--method bias" "--scope bias" -- "$QCORR" sweep --out "$T/sw_bias" --methods bias --scope linear,head,bias
expect_error "sweep --steps auto twice" 2 "--steps" "twice" -- "$QCORR" sweep --out "$T/sw_bad" --steps 10,auto,auto

BENCH=${BUILD:-build}/bench/bench
if [ -x "$BENCH" ]; then
    if OMP_NUM_THREADS=1 "$BENCH" --size 64x2 --steps 1 --warmup 0 --eval-steps 1 --threads 1 --no-peak --random-tokens --json \
        >"$T/bench.json" 2>"$T/err"; then
        json_check "bench: one training, correction and evaluation step, as JSON" "$T/bench.json" \
            'assert o["eval_ms"] > 0 and o["kernels"] in ("generic", "avx2", "avx512"), o'
    else fail "bench --size 64x2 --steps 1 exits 0"; show "$T/err"; fi
else
    fail "the benchmark $BENCH is built by make test"
fi
if $PY -c 'import torch' 2>/dev/null; then
    if $PY bench/torch_step.py --size 64x2 --steps 1 --warmup 0 --eval-steps 1 --threads 1 --json >"$T/torch.json" 2>"$T/err"; then
        json_check "bench/torch_step.py: PyTorch's side of make bench runs one step" "$T/torch.json" 'assert o["eval_ms"] > 0, o'
    else fail "bench/torch_step.py --size 64x2 --steps 1 exits 0"; show "$T/err"; fi
else
    echo "skip - bench/torch_step.py: $PY has no torch"
fi

# ---- issue 21: transforms (README: Transforms) ----
# A transformed float model (--bits 32) computes the float model's function: eval --reference
# gives a loss difference within 1e-5 nats, with the online transforms switched back on at load
# (the file alone says so: quant_online); quantized, the scheme line and eval name the transform.
for t in online rotate smooth rotate+smooth; do
    TF=$H/t_$t.safetensors
    case $t in
    *smooth*) tflags="--smooth-alpha 0.6 --data $AB --calib-tokens 500" ;;
    *) tflags="" ;;
    esac
    case $t in smooth) ;; *) tflags="$tflags --rotate-seed 3" ;; esac
    # shellcheck disable=SC2086
    if "$QCORR" quantize --model "$M" --bits 32 --transform $t $tflags --out "$TF" >/dev/null 2>"$T/err"; then
        "$QCORR" eval --model "$TF" --reference "$M" --data "$AB" --json >"$T/eval.json" 2>"$T/err"
        json_check "quantize --bits 32 --transform $t: the float model's loss (|loss_diff| < 1e-5), the transform named" "$T/eval.json" \
            'assert abs(o["loss_diff"]) < 1e-5 and o["kl_mean"] < 1e-8 and "transform='"$t"'" in o["quantization"], o'
    else fail "quantize --bits 32 --transform $t exits 0"; show "$T/err"; fi
done
if $PY - "$H/t_rotate.safetensors" <<'EOF'
import json, struct, sys
b = open(sys.argv[1], "rb").read()
meta = json.loads(b[8:8 + struct.unpack("<Q", b[:8])[0]])["__metadata__"]
assert meta["quant_transform"] == "rotate" and meta["quant_transform_seed"] == "3", meta
assert meta["quant_online"] == "attn.c_proj,mlp.c_proj" and "quant_smooth_alpha" not in meta, meta
EOF
then ok "a rotated checkpoint's metadata: quant_transform, quant_transform_seed, quant_online"
else fail "a rotated checkpoint's metadata: quant_transform, quant_transform_seed, quant_online"; fi
# the online transforms are needed at load: the same weights without them are another model
if $PY - "$H/t_rotate.safetensors" "$T/stripped.safetensors" <<'EOF'
import json, struct, sys
b = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
for k in ("quant_transform", "quant_transform_seed", "quant_online"):
    del h["__metadata__"][k]
hb = json.dumps(h).encode()
hb += b" " * (-len(hb) % 8)
open(sys.argv[2], "wb").write(struct.pack("<Q", len(hb)) + hb + b[8 + n:])
EOF
then
    "$QCORR" eval --model "$T/stripped.safetensors" --reference "$M" --data "$AB" --json >"$T/eval.json" 2>"$T/err"
    json_check "the rotated weights without their online transforms: the loss moves (> 1e-3)" "$T/eval.json" 'assert abs(o["loss_diff"]) > 1e-3, o'
else fail "strip a rotated checkpoint's transform metadata"; fi
for q in rtn gptq; do
    if "$QCORR" quantize --model "$M" --bits 4 --act-bits 8 --quantizer $q --transform rotate+smooth --data "$AB" --calib-tokens 500 --out "$H/tq_$q.safetensors" --json >"$T/tq.json" 2>"$T/err"; then
        json_check "quantize --quantizer $q --transform rotate+smooth: the scheme line names it" "$T/tq.json" \
            'assert o["scheme"].endswith("act=int8 transform=rotate+smooth:seed=0:alpha=0.5"), o'
        "$QCORR" eval --model "$H/tq_$q.safetensors" --data "$AB" --json >"$T/eval.json" 2>"$T/err"
        json_check "eval of a $q rotate+smooth checkpoint names the transform" "$T/eval.json" 'assert "transform=rotate+smooth" in o["quantization"], o'
    else fail "quantize --quantizer $q --transform rotate+smooth exits 0"; show "$T/err"; fi
done
# correct fits against the float model in the transformed basis: a per-matrix fit (weights) and a
# stream fit (lstsq) both bring the quantized model closer to the float one (KL; against the
# untransformed float model they made it worse: lstsq's loss 2.28 -> 5.53 on the 64x2 model)
for meth in lstsq adaround; do
    if "$QCORR" correct --model "$M" --bits 2 --transform rotate+smooth --method $meth --data "$AB" --batch 4 --calib-tokens 2000 --quiet --json >"$T/tc.json" 2>"$T/err"; then
        json_check "correct --transform rotate+smooth --method $meth: KL to the float model below the quantized one's" "$T/tc.json" \
            'assert o["kl_corrected"] < o["kl_quant"], o'
    else fail "correct --transform rotate+smooth --method $meth exits 0"; show "$T/err"; fi
done
expect_error "quantize --transform spin" 2 "--transform" "spin" -- "$QCORR" quantize --model "$M" --out "$OQ" --transform spin
expect_error "quantize --smooth-alpha without smooth" 2 "--smooth-alpha" -- "$QCORR" quantize --model "$M" --out "$OQ" --transform rotate --smooth-alpha 0.3
expect_error "quantize --smooth-alpha 1.5" 2 "--smooth-alpha" "1.5" -- "$QCORR" quantize --model "$M" --out "$OQ" --data "$AB" --transform smooth --smooth-alpha 1.5
expect_error "quantize --rotate-seed without a rotation" 2 "--rotate-seed" -- "$QCORR" quantize --model "$M" --out "$OQ" --rotate-seed 4
expect_error "quantize --transform smooth without calibration data" 2 "--transform smooth" "calibration data" -- $NOCORPUS "$QCORR" quantize --model "$M" --out "$OQ" --transform smooth
expect_error "correct --transform spin" 2 "--transform" "spin" -- "$QCORR" correct --model "$M" --data "$AB" --transform spin --quiet
expect_error "quantize --model a transformed float checkpoint" 2 "$H/t_rotate.safetensors" "transformed" -- "$QCORR" quantize --model "$H/t_rotate.safetensors" --out "$OQ"
M24=$H/m24.safetensors
if "$QCORR" train --data "$AB" --out "$M24" --d-model 24 --layers 1 --heads 2 --ctx 16 --batch 4 --steps 1 --quiet >/dev/null 2>"$T/err"; then
    expect_error "quantize --transform rotate on d_model 24" 1 "power of two" "24" -- "$QCORR" quantize --model "$M24" --out "$OQ" --transform rotate
    expect_error "quantize --transform online on d_model 24" 1 "power of two" "24" -- "$QCORR" quantize --model "$M24" --out "$OQ" --transform online
else fail "train a d_model 24 model exits 0"; show "$T/err"; fi

echo "cli: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
