#!/bin/sh
# regimes_wa.sh: what weight + activation schemes cost the float models of a sweep directory (issue 21
# item 4, "which regime was the original's") — regimes.sh's approach (quantize each float model, then
# eval against it over the whole validation split) over the activation scheme (granularity, static
# calibration, asymmetric grids, points, KV bits) and the transforms, driven by a plan file.
#
# Usage: scripts/regimes_wa.sh SWEEP_DIR PLAN [QCORR] > regimes-wa.csv
#   SWEEP_DIR/floats/s<seed>_<size>.safetensors: the float models (as regimes.sh reads them).
#   PLAN: one regime a line (blank lines and # comments skipped), whitespace-separated fields
#     sizes bits weights act points asym transform [act_bits [kv_bits]]
#       sizes      comma list of sizes (64x2,128x4) or all
#       bits       comma list of weight bits (2,4,8)
#       weights    granularity/scope: channel/linear,head (seed243's) or tensor/linear (seed243-tensor's)
#       act        none | token | tensor | static-minmax | static-mse | static-percentile[:P]
#       points     comma list of inputs,stream,kv,probs, or all (the four); - with act none
#       asym       0 (symmetric grids) or 1 (--act-asymmetric)
#       transform  none | rotate | online | smooth | rotate+smooth
#       act_bits   same (default: the weights' bits) or a number (0 with a kv_bits: the KV cache alone)
#       kv_bits    - (default: kv, if a point, at act_bits) or a number (--kv-bits)
# Prints CSV on stdout:
#   size,seed,bits,weights,act,points,asym,act_bits,kv_bits,transform,loss_float,loss_quant,gap,kl
# (gap: loss_quant - loss_float, the paired loss difference; kl: mean KL to the float model, nats)
# and progress on stderr.
set -eu
dir=${1:?usage: scripts/regimes_wa.sh SWEEP_DIR PLAN [QCORR]}
plan=${2:?usage: scripts/regimes_wa.sh SWEEP_DIR PLAN [QCORR]}
qcorr=${3:-build/qcorr}
[ -f "$plan" ] || { echo "regimes_wa.sh: no plan file $plan" >&2; exit 1; }
ls "$dir"/floats/s*_*x*.safetensors >/dev/null 2>&1 || { echo "regimes_wa.sh: no float models in $dir/floats" >&2; exit 1; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/qcorr-regimes-wa.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
field() { sed -n "s/.*\"$1\":\([-0-9.eE+]*\).*/\1/p"; }
has() { case ",$1," in *",$2,"*) return 0;; esac; return 1; }   # has LIST ITEM
echo "size,seed,bits,weights,act,points,asym,act_bits,kv_bits,transform,loss_float,loss_quant,gap,kl"
for f in "$dir"/floats/s*_*x*.safetensors; do
    name=$(basename "$f" .safetensors)       # s42_64x2
    seed=${name%%_*}; seed=${seed#s}; size=${name#*_}
    grep -v '^[[:space:]]*\(#\|$\)' "$plan" | while read -r sizes bitlist weights act points asym transform abits kvbits; do
        [ "$sizes" = all ] || has "$sizes" "$size" || continue
        abits=${abits:-same}; kvbits=${kvbits:--}
        [ "$points" = all ] && points=inputs,stream,kv,probs
        for bits in $(echo "$bitlist" | tr , ' '); do
            set -- --bits "$bits" --granularity "${weights%%/*}" --scope "${weights#*/}" --transform "$transform"
            if [ "$act" != none ]; then
                a=$abits; [ "$a" = same ] && a=$bits
                set -- "$@" --act-bits "$a" --act-points "$points"
                case $act in
                    token|tensor) set -- "$@" --act-granularity "$act" ;;
                    static-*) set -- "$@" --act-granularity static --act-calib "${act#static-}" ;;
                    *) echo "regimes_wa.sh: unknown act '$act' in $plan" >&2; exit 1 ;;
                esac
                [ "$asym" = 1 ] && set -- "$@" --act-asymmetric
            fi
            [ "$kvbits" = - ] || set -- "$@" --kv-bits "$kvbits"
            "$qcorr" quantize --model "$f" "$@" --out "$tmp/q.safetensors" >/dev/null
            line=$("$qcorr" eval --model "$tmp/q.safetensors" --reference "$f" --json)
            loss=$(printf '%s' "$line" | field loss)
            diff=$(printf '%s' "$line" | field loss_diff)
            kl=$(printf '%s' "$line" | field kl_mean)
            lf=$(awk "BEGIN{printf \"%.6f\", $loss - $diff}")
            echo "$size,$seed,$bits,\"$weights\",$act,\"$points\",$asym,$abits,$kvbits,$transform,$lf,$loss,$diff,$kl"
            echo "regimes_wa: $name int$bits $weights $act@$points asym=$asym act_bits=$abits kv=$kvbits $transform gap $diff" >&2
        done
    done
done
