#!/bin/sh
# regimes_wa_table.sh CSV... (from scripts/regimes_wa.sh): markdown tables of what the weight +
# activation regimes cost against the original report's gaps (1.82 / 0.43 / 0.18 nats at 2 / 4 / 8
# bits, mean over its sizes).
#   1. per size x bits: seed243's weight-only gap (channel, linear+head), seed243-tensor's (tensor,
#      linear), the same-bits W+A regime (activations at the weights' bits, KV too) whose gap is
#      nearest the original's, its gap and KL, and how many same-bits W+A regimes ran there.
#   2. the mean gap over the three sizes of every regime run at all three (the original's figures
#      are means over its sizes), at 2 / 4 / 8 bits, ordered by the distance of its 4-bit mean
#      from 0.43.
#   3. per size, every 8-bit regime with activations or KV at fewer bits than the weights, by gap.
# Labels: "W channel+head" / "W tensor"; act granularity (token, tensor: dynamic per window,
# static-minmax, static-mse), "asym", the points ("inputs" or "all": inputs,stream,kv,probs),
# "aN" / "kvN" where activations / keys and values run at N bits, the transform where not none.
usage="usage: scripts/regimes_wa_table.sh CSV..."
[ $# -ge 1 ] || { echo "$usage" >&2; exit 1; }
# quote-aware: commas inside "..." become '+', the quotes go
awk '{ s = ""; q = 0; for (i = 1; i <= length($0); i++) { c = substr($0, i, 1)
        if (c == "\"") { q = !q; continue } if (q && c == ",") c = "+"; s = s c } print s }' "$@" | awk -F, '
function original(bits) { return (bits == 2) ? 1.82 : (bits == 4) ? 0.43 : 0.18 }
function label(   w, a) {
    w = ($4 == "channel/linear+head") ? "W channel+head" : ($4 == "tensor/linear") ? "W tensor" : "W " $4
    if ($5 == "none") a = ($9 != "-") ? "activations float" : "weights only"
    else a = $5 (($7 == 1) ? " asym" : "") " " (($6 == "inputs+stream+kv+probs") ? "all" : $6)
    if ($8 != "same" && $8 != 0 && $5 != "none") a = a " a" $8
    if ($9 != "-") a = a " kv" $9
    return w ", " a (($10 != "none") ? ", " $10 : "")
}
BEGIN { n = 0; m = 0; nr = 0 }
$1 == "size" { next }
{
    key = $1 " " $3; ord = ($1 == "64x2") ? 1 : ($1 == "128x4") ? 2 : 3
    if (!(key in seen)) { seen[key] = 1; order[n++] = key; rank[key] = ord * 10 + $3 }
    if ($5 == "none" && $9 == "-" && $10 == "none") {
        if ($4 == "channel/linear+head") chan[key] = $13
        if ($4 == "tensor/linear") tens[key] = $13
    }
    r = label(); if (!((r, $3) in nsz)) nsz[r, $3] = 0
    nsz[r, $3]++; sum[r, $3] += $13; if (!(r in rseen)) { rseen[r] = 1; rorder[nr++] = r }
    same = ($5 != "none" && $8 == "same" && $9 == "-")
    if (same) {
        count[key]++
        d = $13 - original($3); if (d < 0) d = -d
        if (!(key in best) || d < bestd[key]) { best[key] = label(); bestd[key] = d; bestgap[key] = $13; bestkl[key] = $14 }
    } else if ($3 == 8 && ($9 != "-" || ($8 != "same" && $8 != 8))) {
        low[m] = $1; lowrank[m] = ord; lowlab[m] = label(); lowgap[m] = $13; lowkl[m] = $14; m++
    }
} END {
    for (i = 0; i < n; i++) for (j = i + 1; j < n; j++) if (rank[order[j]] < rank[order[i]]) { t = order[i]; order[i] = order[j]; order[j] = t }
    print "| size | bits | original | seed243 (channel, linear+head), weights only | seed243-tensor (tensor, linear), weights only | nearest same-bits W+A regime | its gap | its KL | W+A regimes run |"
    print "|---|---:|---:|---:|---:|---|---:|---:|---:|"
    for (i = 0; i < n; i++) {
        k = order[i]; split(k, f, " ")
        printf "| %s | %s | %.2f | %.3g | %.3g | %s | %.3g | %.3g | %d |\n", f[1], f[2], original(f[2]), chan[k], tens[k], best[k], bestgap[k], bestkl[k], count[k]
    }
    q = 0
    for (i = 0; i < nr; i++) {
        r = rorder[i]
        if (nsz[r, 2] != 3 || nsz[r, 4] != 3 || nsz[r, 8] != 3) continue
        mr[q] = r; m2[q] = sum[r, 2] / 3; m4[q] = sum[r, 4] / 3; m8[q] = sum[r, 8] / 3
        d = m4[q] - 0.43; md[q] = (d < 0) ? -d : d; q++
    }
    for (i = 0; i < q; i++) for (j = i + 1; j < q; j++) if (md[j] < md[i]) {
        t = mr[i]; mr[i] = mr[j]; mr[j] = t; t = m2[i]; m2[i] = m2[j]; m2[j] = t
        t = m4[i]; m4[i] = m4[j]; m4[j] = t; t = m8[i]; m8[i] = m8[j]; m8[j] = t; t = md[i]; md[i] = md[j]; md[j] = t
    }
    print ""
    print "| regime (run at 64x2, 128x4 and 256x6) | mean gap, 2 bits (original 1.82) | 4 bits (0.43) | 8 bits (0.18) |"
    print "|---|---:|---:|---:|"
    for (i = 0; i < q; i++) printf "| %s | %.3g | %.3g | %.3g |\n", mr[i], m2[i], m4[i], m8[i]
    if (m == 0) exit
    for (i = 0; i < m; i++) for (j = i + 1; j < m; j++)
        if (lowrank[j] < lowrank[i] || (lowrank[j] == lowrank[i] && lowgap[j] + 0 < lowgap[i] + 0)) {
            t = low[i]; low[i] = low[j]; low[j] = t; t = lowrank[i]; lowrank[i] = lowrank[j]; lowrank[j] = t
            t = lowlab[i]; lowlab[i] = lowlab[j]; lowlab[j] = t; t = lowgap[i]; lowgap[i] = lowgap[j]; lowgap[j] = t
            t = lowkl[i]; lowkl[i] = lowkl[j]; lowkl[j] = t
        }
    print ""
    print "| size | 8-bit weights, activations or KV at fewer bits | gap | KL |"
    print "|---|---|---:|---:|"
    for (i = 0; i < m; i++) printf "| %s | %s | %.3g | %.3g |\n", low[i], lowlab[i], lowgap[i], lowkl[i]
}'
