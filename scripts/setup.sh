#!/bin/sh
# Installs the Debian packages qcorr builds against, if any is missing (needs root or sudo).
# Called by `make test`, `make demo` and CI, so a fresh Debian/Ubuntu machine needs nothing else.
set -e
need=""
have() { [ -e "$1" ]; }
have /usr/include/x86_64-linux-gnu/openblas-openmp/cblas.h || have /usr/include/cblas.h || need="$need libopenblas-openmp-dev"
have /usr/include/lapacke.h || need="$need liblapacke-dev"
have /usr/include/cmocka.h || need="$need libcmocka-dev"
have /usr/include/cjson/cJSON.h || need="$need libcjson-dev"
command -v cc >/dev/null 2>&1 || need="$need build-essential"
command -v make >/dev/null 2>&1 || need="$need make"
# `make bench-libs` only: the libraries it measures qcorr's kernels against
if [ "${BENCH_LIBS:-0}" = 1 ]; then
    have /usr/include/x86_64-linux-gnu/blis-openmp/blis.h || need="$need libblis-openmp-dev"
    have /usr/include/libxsmm.h || need="$need libxsmm-dev"
    have /usr/include/oneapi/dnnl/dnnl.h || need="$need libdnnl-dev"
    have /usr/include/x86_64-linux-gnu/sleef.h || need="$need libsleef-dev"
fi
# `make fuzz` only: clang with libFuzzer and its sanitizer runtimes
if [ "${FUZZ:-0}" = 1 ]; then command -v clang >/dev/null 2>&1 || need="$need clang libclang-rt-dev"; fi
[ -z "$need" ] && exit 0
echo "setup: installing Debian packages:$need" >&2
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq $need >/dev/null
