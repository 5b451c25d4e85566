#!/bin/sh
# make_seeds: seed corpora for the fuzz harnesses, generated from real files that build/qcorr
# writes — tiny float, quantized and corrected checkpoints, a corpus snippet, grid files and the
# run records of a tiny sweep — into fuzz/corpus-NAME/ (gitignored; the fuzzer grows them).
#   --if-missing   do nothing when every fuzz/corpus-NAME/ already holds files (used by make fuzz)
#   --committed    also refresh the small committed seeds in fuzz/seeds/NAME/
# Run from the repository root: QCORR=build/qcorr sh fuzz/make_seeds.sh
set -eu

QCORR=${QCORR:-build/qcorr}
NAMES="safetensors corpus grid record"
if_missing=0
committed=0
for arg in "$@"; do
    case $arg in
        --if-missing) if_missing=1 ;;
        --committed) committed=1 ;;
        *) echo "make_seeds: unknown argument '$arg' (--if-missing, --committed)" >&2; exit 2 ;;
    esac
done
if [ $if_missing = 1 ]; then
    missing=0
    for n in $NAMES; do [ -n "$(ls -A "fuzz/corpus-$n" 2>/dev/null)" ] || missing=1; done
    [ $missing = 0 ] && exit 0
fi
[ -x "$QCORR" ] || { echo "make_seeds: $QCORR not built (run make)" >&2; exit 1; }

T=$(mktemp -d "${TMPDIR:-/tmp}/qcorr-seeds.XXXXXX")
trap 'rm -rf "$T"' EXIT
export OMP_NUM_THREADS=1
Q() { nice -n 19 "$QCORR" "$@" >"$T/log" 2>&1 || { cat "$T/log" >&2; echo "make_seeds: qcorr $1 failed" >&2; exit 1; }; }

# corpora: a snippet of the real corpus when one is found, else synthetic text; and a tiny
# alphabet so the committed checkpoints stay a few KiB
src=""
for f in "${QCORR_DATA:-}" data/tinyshakespeare.txt ../shared/data/tinyshakespeare.txt; do
    [ -n "$f" ] && [ -r "$f" ] && { src=$f; break; }
done
if [ -n "$src" ]; then
    head -c 3000 "$src" >"$T/snippet.txt"
else
    i=0; : >"$T/snippet.txt"
    while [ $i -lt 60 ]; do printf 'First Citizen:\nBefore we proceed any further, hear me speak.\n' >>"$T/snippet.txt"; i=$((i + 1)); done
fi
i=0; : >"$T/tiny.txt"
while [ $i -lt 60 ]; do printf 'ab ba\naa b\n' >>"$T/tiny.txt"; i=$((i + 1)); done

# checkpoints: float, quantized (two schemes), corrected (linear, MLP, every 2, lstsq)
train() { Q train --d-model "$2" --layers "$3" --heads "$4" --ctx "$5" --batch 4 --steps 3 --data "$6" --out "$T/$1.safetensors"; }
correct() { name=$1; shift; Q correct --steps 2 --batch 2 --calib-tokens 64 "$@" --out "$T/$name.safetensors"; }
train float_tiny 4 1 1 4 "$T/tiny.txt"
train float_tiny2 4 2 2 4 "$T/tiny.txt"
train float_snippet 8 1 2 8 "$T/snippet.txt"
Q quantize --model "$T/float_tiny.safetensors" --bits 4 --out "$T/quant_tiny_b4.safetensors"
Q quantize --model "$T/float_tiny.safetensors" --bits 3 --granularity group:2 --asymmetric --act-bits 8 \
    --scope linear,head,embedding,norm,bias --out "$T/quant_tiny_b3_group.safetensors"
Q quantize --model "$T/float_snippet.safetensors" --bits 2 --granularity tensor --out "$T/quant_snippet_b2.safetensors"
correct corr_tiny_linear --model "$T/float_tiny.safetensors" --data "$T/tiny.txt" --bits 4
correct corr_tiny_mlp --model "$T/float_tiny.safetensors" --data "$T/tiny.txt" --bits 4 --hidden 2 --act-bits 6
correct corr_tiny2_every2 --model "$T/float_tiny2.safetensors" --data "$T/tiny.txt" --bits 2 --every 2
correct corr_tiny2_lstsq --model "$T/float_tiny2.safetensors" --data "$T/tiny.txt" --bits 32 --method lstsq
correct corr_snippet_mlp --model "$T/float_snippet.safetensors" --data "$T/snippet.txt" --bits 4 --hidden 4

# a tiny sweep: its grid file and run records
cat >"$T/grid.json" <<'JSON'
{"seeds": [1], "bits": [4], "sizes": ["8x1"], "every": [1], "hidden": [0, 2]}
JSON
Q sweep --out "$T/sweep" --grid "$T/grid.json" --ctx 8 --heads 2 --train-steps 3 --train-batch 4 --steps 2 --batch 2 \
    --calib-tokens 64 --methods train,lstsq --data "$T/snippet.txt"

for n in $NAMES; do mkdir -p "fuzz/corpus-$n"; done
cp "$T"/*.safetensors fuzz/corpus-safetensors/
head -c 600 "$T/snippet.txt" >fuzz/corpus-corpus/snippet.txt
cp "$T/tiny.txt" fuzz/corpus-corpus/tiny.txt
# "vocabulary NUL text": the text mapped through a checkpoint's vocabulary (eval's path)
{ printf '\n !&'"'"',-.:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz\000'; head -c 300 "$T/snippet.txt"; } \
    >fuzz/corpus-corpus/vocab_snippet.bin
printf '\n ab\000ab ba\naa b\n' >fuzz/corpus-corpus/vocab_tiny.bin
printf 'caf\303\251 na\303\257ve\n\377\200\n' >fuzz/corpus-corpus/high_bytes.txt
cp "$T/grid.json" fuzz/corpus-grid/tiny.json
cp "$T/sweep/manifest.json" fuzz/corpus-grid/manifest.json
printf '{"seeds":[42,123,999],"bits":[2,4,8],"sizes":["64x2","128x4","256x6"],"every":[1,2,4],"hidden":[0,32,64]}' \
    >fuzz/corpus-grid/seed243.json
printf '{"bits":[3]}' >fuzz/corpus-grid/bits_only.json
# records name the host that wrote them: not this machine's name in a committed file
for r in "$T"/sweep/runs/*.json; do sed 's/"host":[[:space:]]*"[^"]*"/"host": "host"/' "$r" >"fuzz/corpus-record/$(basename "$r")"; done

if [ $committed = 1 ]; then
    for n in $NAMES; do rm -rf "fuzz/seeds/$n"; mkdir -p "fuzz/seeds/$n"; done
    cp "$T/float_tiny.safetensors" "$T/quant_tiny_b3_group.safetensors" "$T/corr_tiny_mlp.safetensors" \
        "$T/corr_tiny2_every2.safetensors" fuzz/seeds/safetensors/
    cp fuzz/corpus-corpus/tiny.txt fuzz/corpus-corpus/vocab_tiny.bin fuzz/corpus-corpus/high_bytes.txt fuzz/seeds/corpus/
    cp fuzz/corpus-grid/tiny.json fuzz/corpus-grid/seed243.json fuzz/seeds/grid/
    cp fuzz/corpus-record/s1_8x1_b4_e1_h2_train.json fuzz/seeds/record/
fi
for n in $NAMES; do echo "make_seeds: fuzz/corpus-$n: $(ls "fuzz/corpus-$n" | wc -l) files"; done
