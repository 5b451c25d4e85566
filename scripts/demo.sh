#!/bin/sh
# `make demo`: the README's main command — the quick sweep end to end, then its report.
set -e
Q=build/qcorr
OUT=${QCORR_DEMO_DIR:-runs/quick}
$Q sweep --preset quick --out "$OUT"
$Q report "$OUT"
echo "demo: report at $OUT/report.md (plots in $OUT/plots/)"
