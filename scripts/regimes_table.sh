#!/bin/sh
# regimes_table.sh REGIMES_CSV (from scripts/regimes.sh): per size x bits, the gap (nats) of seed243's scheme (channel, linear+head),
# of seed243-tensor's (tensor, linear) and the scheme whose gap is nearest the original report's
# (1.8 / 0.43 / 0.18 nats at 2 / 4 / 8 bits), as a markdown table.
sed 's/"linear,head"/linear+head/; s/"linear"/linear/' "$1" | awk -F, '
function original(bits) { return (bits == 2) ? 1.8 : (bits == 4) ? 0.43 : 0.18 }
NR > 1 {
    key = $1 " " $3
    name = $4 " " $5 (($6 == 1) ? " asym" : "") (($7 > 0) ? " act" $7 : "")
    target = original($3)
    if ($4 == "channel" && $5 == "linear+head" && $6 == 0 && $7 == 0) chan[key] = $10
    if ($4 == "tensor" && $5 == "linear" && $6 == 0 && $7 == 0) tens[key] = $10
    d = $10 - target; if (d < 0) d = -d
    if (!(key in best) || d < bestd[key]) { best[key] = name; bestd[key] = d; bestgap[key] = $10; bestkl[key] = $11 }
    if (!(key in seen)) { seen[key] = 1; order[n++] = key }
} END {
    print "| size | bits | original | channel, linear+head (seed243) | tensor, linear (seed243-tensor) | nearest scheme | its gap | its KL |"
    print "|---|---:|---:|---:|---:|---|---:|---:|"
    for (i = 0; i < n; i++) {
        split(order[i], k, " ")
        printf "| %s | %s | %.2f | %.3g | %.3g | %s | %.3g | %.3g |\n", k[1], k[2], original(k[2]), chan[order[i]], tens[order[i]], best[order[i]], bestgap[order[i]], bestkl[order[i]]
    }
}' | { IFS= read -r h1; IFS= read -r h2; printf '%s\n%s\n' "$h1" "$h2"; sort -t'|' -k2,2V -k3,3n; }
