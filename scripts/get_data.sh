#!/bin/sh
# `make data`: finds the tiny Shakespeare corpus by qcorr's search order ($QCORR_DATA,
# data/tinyshakespeare.txt, ../shared/data/tinyshakespeare.txt), downloads it into data/ only
# when none is found, and verifies its sha256 either way.
set -e
SHA=86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed
URL=https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt
found=""
for p in "${QCORR_DATA:-}" data/tinyshakespeare.txt ../shared/data/tinyshakespeare.txt; do
    if [ -n "$p" ] && [ -f "$p" ]; then found=$p; break; fi
done
if [ -z "$found" ]; then
    mkdir -p data
    echo "data: downloading the corpus to data/tinyshakespeare.txt" >&2
    if command -v curl >/dev/null 2>&1; then curl -fsSL "$URL" -o data/tinyshakespeare.txt.part
    else wget -q "$URL" -O data/tinyshakespeare.txt.part; fi
    mv data/tinyshakespeare.txt.part data/tinyshakespeare.txt
    found=data/tinyshakespeare.txt
fi
got=$(sha256sum "$found" | cut -d' ' -f1)
if [ "$got" != "$SHA" ]; then
    echo "data: $found: sha256 $got does not match the tiny Shakespeare corpus ($SHA)" >&2
    exit 1
fi
echo "data: $found verified (sha256 $SHA)" >&2
