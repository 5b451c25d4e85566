#!/bin/sh
# `make demo`: the README's main command, end to end on a small model.
set -e
Q=build/qcorr
OUT=runs/demo
mkdir -p "$OUT"
$Q train --d-model 64 --layers 2 --heads 4 --ctx 128 --batch 32 --steps 600 --lr 3e-3 --seed 42 --out "$OUT/float.safetensors"
$Q eval --model "$OUT/float.safetensors"
$Q sample --model "$OUT/float.safetensors" --prompt "ROMEO:" --chars 200 --temperature 0.8 --seed 1
echo "demo: checkpoint and training log in $OUT/"
