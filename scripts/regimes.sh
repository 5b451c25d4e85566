#!/bin/sh
# regimes.sh: how much each of qcorr's weight schemes costs the float models of a sweep directory
# (issue 12 part 6) — every granularity x scope x asymmetric x activation bits, at 2, 4 and 8 bits,
# quantized and evaluated against its float model (loss, KL). Prints CSV on stdout:
#   size,seed,bits,granularity,scope,asymmetric,act_bits,loss_float,loss_quant,gap,kl
# and, on stderr, progress. Usage: scripts/regimes.sh SWEEP_DIR [QCORR] > regimes.csv
set -eu
dir=${1:?usage: scripts/regimes.sh SWEEP_DIR [QCORR]}
qcorr=${2:-build/qcorr}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/qcorr-regimes.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
field() { sed -n "s/.*\"$1\":\([-0-9.eE+]*\).*/\1/p"; }
echo "size,seed,bits,granularity,scope,asymmetric,act_bits,loss_float,loss_quant,gap,kl"
for f in "$dir"/floats/s*_*x*.safetensors; do
    [ -f "$f" ] || { echo "regimes.sh: no float models in $dir/floats" >&2; exit 1; }
    name=$(basename "$f" .safetensors)       # s42_64x2
    seed=${name%%_*}; seed=${seed#s}; size=${name#*_}
    for bits in 2 4 8; do
        for gran in tensor channel group:32; do
            for scope in linear linear,head; do
                for asym in 0 1; do
                    for act in 0 8; do
                        flag=""; [ "$asym" = 1 ] && flag=--asymmetric
                        "$qcorr" quantize --model "$f" --bits "$bits" --granularity "$gran" --scope "$scope" $flag \
                            --act-bits "$act" --out "$tmp/q.safetensors" >/dev/null
                        line=$("$qcorr" eval --model "$tmp/q.safetensors" --reference "$f" --json)
                        loss=$(printf '%s' "$line" | field loss)
                        diff=$(printf '%s' "$line" | field loss_diff)
                        kl=$(printf '%s' "$line" | field kl_mean)
                        lf=$(awk "BEGIN{printf \"%.6f\", $loss - $diff}")
                        echo "$size,$seed,$bits,$gran,\"$scope\",$asym,$act,$lf,$loss,$diff,$kl"
                        echo "regimes: $name int$bits $gran $scope asym=$asym act=$act gap $diff" >&2
                    done
                done
            done
        done
    done
done
