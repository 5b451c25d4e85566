#!/bin/sh
# kernels_test: the kernel paths (src/kernels/kernels.h) as built. (1) objdump: the avx2 object holds no
# AVX-512 instruction and the generic one no AVX at all, while the avx512 and avx2 objects do hold
# their own (so the check cannot pass on an empty or unreadable disassembly). (2) The whole-model
# suites (model gradients, PyTorch parity) on every path this CPU runs other than the default,
# forced with QCORR_KERNELS (test_ops runs each path itself).
# Prints "ok - ..." / "FAIL - ..." per check and ends with "kernels: N passed, M failed".
# Run from the repository root: BUILD=build sh tests/kernels_test.sh
set -u
BUILD=${BUILD:-build}
passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok - $1"; }
fail() { failed=$((failed + 1)); echo "FAIL - $1"; [ -n "${2:-}" ] && printf '%s\n' "$2" | sed 's/^/#   | /' | head -n 5; }

# disassembly without addresses: "bytes<TAB>mnemonic operands" per instruction
disassemble() { objdump -d --no-addresses "$1" 2>/dev/null | awk -F'\t' 'NF >= 3 { print $2 "\t" $3 }'; }

# AVX-512: a zmm register, a mask register, x/ymm16-31 (EVEX only), or an EVEX prefix (0x62, which
# is no valid instruction start in 64-bit mode otherwise) after any segment/address-size prefix
avx512_lines() {
    grep -E '%zmm|%k[0-7]|%[xy]mm(1[6-9]|2[0-9]|3[01])|^((6[4-7]|2e|3e) )*62 ' "$1" | head -n 5
}

if ! command -v objdump >/dev/null 2>&1; then
    fail "objdump is installed (binutils): the instruction-set checks need it"
else
    T=$(mktemp -d "${TMPDIR:-/tmp}/qcorr-kernels.XXXXXX") || exit 1
    trap 'rm -rf "$T"' EXIT
    for path in generic avx2 avx512; do
        obj=$BUILD/src/kernels/kernels_$path.o
        if [ ! -r "$obj" ]; then fail "$obj exists (build with make)"; continue; fi
        disassemble "$obj" >"$T/$path.s"
    done
    if [ -s "$T/avx512.s" ] && [ -n "$(avx512_lines "$T/avx512.s")" ]; then
        ok "kernels_avx512.o holds AVX-512 instructions (the check below can see them)"
    else
        fail "kernels_avx512.o holds AVX-512 instructions (none found: not built with its -march?)"
    fi
    if [ -s "$T/avx2.s" ] && grep -q 'vfmadd[0-9]*ps.*%ymm' "$T/avx2.s"; then
        bad=$(avx512_lines "$T/avx2.s")
        if [ -z "$bad" ]; then ok "kernels_avx2.o: 256-bit FMA code and no AVX-512 instruction"
        else fail "kernels_avx2.o: no AVX-512 instruction" "$bad"; fi
    else
        fail "kernels_avx2.o holds 256-bit FMA instructions (none found: not built with its -march?)"
    fi
    if [ -s "$T/generic.s" ] && grep -q 'mulps' "$T/generic.s"; then
        bad=$(grep -E '%[yz]mm|%k[0-7]|	v[a-z]' "$T/generic.s" | head -n 5)
        if [ -z "$bad" ]; then ok "kernels_generic.o: SSE code and no AVX instruction"
        else fail "kernels_generic.o: no AVX instruction" "$bad"; fi
    else
        fail "kernels_generic.o holds SSE arithmetic (none found)"
    fi
fi

# the paths this CPU runs, as src/kernels/kernels.c decides (the same feature flags, from /proc/cpuinfo)
flags=$(grep -m 1 '^flags' /proc/cpuinfo 2>/dev/null)
has() { case " $flags " in *" $1 "*) return 0 ;; esac; return 1; }
paths="generic"
if has avx2 && has fma; then
    paths="$paths avx2"
    if has avx512f && has avx512bw && has avx512dq && has avx512vl && has avx512cd; then paths="$paths avx512"; fi
fi
best=${paths##* }
for path in $paths; do
    [ "$path" = "$best" ] && continue # the default: run by make test already
    for suite in test_model test_parity; do
        bin=$BUILD/tests/$suite
        if [ ! -x "$bin" ]; then fail "$bin exists"; continue; fi
        out=$(QCORR_KERNELS=$path "$bin" 2>&1)
        if [ $? -eq 0 ]; then ok "$suite with QCORR_KERNELS=$path"
        else fail "$suite with QCORR_KERNELS=$path" "$(printf '%s\n' "$out" | grep -E 'ERROR|FAILED|rror' | head -n 5)"; fi
    done
done

echo "kernels: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
