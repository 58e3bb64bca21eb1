#!/usr/bin/env bash
# make valgrind: runs the C example (examples/test.sh, against the Consul
# double) and the FFI test binary (tests/ffi.rs) under valgrind memcheck.
#
# Fails on definite leaks, invalid reads/writes, uses of uninitialised
# values and bad frees (any memcheck error counts: --error-exitcode=1 with
# --errors-for-leak-kinds=definite). Indirect and possibly-lost bytes are
# reported in the summary but do not fail the run.
#
# `scripts/valgrind.sh --examples` runs only the C examples (what make test
# does); without it, the FFI test binary too.
#
# Environment:
#   VG_TIMEOUT   seconds allowed per run (default 1800; valgrind is slow)
#   VG_KEEP=1    keep the valgrind logs (printed path) instead of deleting them
#   VG_EXTRA     extra valgrind options
set -uo pipefail
cd "$(dirname "$0")/.."

command -v valgrind >/dev/null || { echo "valgrind: not installed (make deps)"; exit 1; }
timeout_s=${VG_TIMEOUT:-1800}
work=$(mktemp -d /tmp/ckv-valgrind.XXXXXX)
cleanup() { [ "${VG_KEEP:-0}" = 1 ] && echo "logs kept in $work" || rm -rf "$work"; }
trap cleanup EXIT

if [ ! -f target/debug/libckv.so ] || [ ! -x target/debug/ckv-consul-double ]; then
    cargo build --workspace || exit 1
fi

supp=()
[ -f valgrind.supp ] && supp=(--suppressions="$PWD/valgrind.supp")

# --child-silent-after-fork: tests/ffi.rs forks a child that uses a handle
# after fork and leaves with _exit on purpose, leaking what it inherited; the
# child is checked by the test itself (its exit status), not by memcheck.
vg=(valgrind --tool=memcheck --leak-check=full --show-leak-kinds=definite,indirect,possible
    --errors-for-leak-kinds=definite --error-exitcode=1 --child-silent-after-fork=yes
    --num-callers=40 --track-origins=yes "${supp[@]}" ${VG_EXTRA:-})

declare -a names results
fail=0

# summarize NAME RC LOG...: pulls the totals out of one or more valgrind logs.
summarize() {
    local name=$1 rc=$2; shift 2
    local def=0 ind=0 pos=0 errs=0 invalid=0 f n
    for f in "$@"; do
        [ -s "$f" ] || continue
        n=$(grep -oE 'definitely lost: [0-9,]+ bytes' "$f" | tail -1 | grep -oE '[0-9,]+' | tr -d ,); def=$((def + ${n:-0}))
        n=$(grep -oE 'indirectly lost: [0-9,]+ bytes' "$f" | tail -1 | grep -oE '[0-9,]+' | tr -d ,); ind=$((ind + ${n:-0}))
        n=$(grep -oE 'possibly lost: [0-9,]+ bytes' "$f" | tail -1 | grep -oE '[0-9,]+' | tr -d ,); pos=$((pos + ${n:-0}))
        n=$(grep -oE 'ERROR SUMMARY: [0-9,]+ errors' "$f" | tail -1 | grep -oE '[0-9,]+' | tr -d ,); errs=$((errs + ${n:-0}))
        n=$(grep -cE 'Invalid (read|write|free)|uninitialised|Mismatched free|Source and destination overlap' "$f"); invalid=$((invalid + n))
    done
    local verdict=ok
    if [ "$rc" -ne 0 ] || [ "$errs" -ne 0 ] || [ "$def" -ne 0 ] || [ "$invalid" -ne 0 ]; then
        verdict=FAIL; fail=1
    fi
    names+=("$name")
    results+=("$(printf '%-8s rc=%-3s errors=%-4s invalid=%-3s definite=%-7s indirect=%-7s possible=%s' \
        "$verdict" "$rc" "$errs" "$invalid" "$def" "$ind" "$pos")")
    if [ "$verdict" = FAIL ]; then
        for f in "$@"; do
            [ -s "$f" ] || continue
            echo "---- $name: $f"
            # The error and leak records, without the per-thread noise.
            sed -n '/Invalid \|uninitialised\|definitely lost in\|ERROR SUMMARY/,/^==[0-9]*== $/p' "$f" | head -200
        done
    fi
}

# 1. The C examples (watch, pick) against the Consul double.
echo "valgrind: C examples (examples/test.sh)"
mkdir -p "$work/example"
VALGRIND="${vg[*]} --log-file=$work/example/vg.%p.log" \
    WAIT_S=${WAIT_S:-60} timeout "$timeout_s" bash examples/test.sh >"$work/example/out" 2>&1
rc=$?
[ $rc -ne 0 ] && { echo "examples/test.sh exited $rc:"; tail -30 "$work/example/out"; }
summarize "c-example" "$rc" "$work"/example/vg.*.log

# 2. The FFI test binary.
if [ "${1:-}" = --examples ]; then
    bin=skip
else
    echo "valgrind: FFI tests (tests/ffi.rs)"
    bin=$(cargo test --test ffi --no-run --message-format=json 2>/dev/null |
    python3 -c 'import sys, json
for line in sys.stdin:
    try: m = json.loads(line)
    except ValueError: continue
    if m.get("reason") == "compiler-artifact" and m.get("target", {}).get("name") == "ffi" \
       and m.get("profile", {}).get("test") and m.get("executable"):
        print(m["executable"])')
fi
if [ "$bin" = skip ]; then
    :
elif [ -z "$bin" ] || [ ! -x "$bin" ]; then
    echo "could not find the tests/ffi.rs test binary"; fail=1
    names+=("ffi-tests"); results+=("FAIL     test binary not built")
else
    mkdir -p "$work/ffi"
    # One test thread: valgrind serialises threads anyway, and the records
    # are easier to attribute.
    # Without --error-exitcode here: the fork test's child leaves with _exit
    # holding the handle it inherited (on purpose), and valgrind's leak check
    # in the child would turn that into exit status 1, which the test reads
    # as a failure. The child is silent (--child-silent-after-fork), and the
    # parent's own errors and definite leaks are counted from its log below.
    vg_ffi=()
    for a in "${vg[@]}"; do [ "$a" = --error-exitcode=1 ] || vg_ffi+=("$a"); done
    timeout "$timeout_s" "${vg_ffi[@]}" --log-file="$work/ffi/vg.%p.log" \
        "$bin" --test-threads=1 >"$work/ffi/out" 2>&1
    rc=$?
    [ $rc -ne 0 ] && { echo "ffi tests exited $rc:"; tail -30 "$work/ffi/out"; }
    grep -E '^test result:' "$work/ffi/out" | sed 's/^/  /'
    summarize "ffi-tests" "$rc" "$work"/ffi/vg.*.log
fi

echo
echo "valgrind summary (bytes; 'invalid' = invalid read/write/free or uninitialised use)"
for i in "${!names[@]}"; do
    printf '  %-10s %s\n' "${names[$i]}" "${results[$i]}"
done
if [ $fail -ne 0 ]; then
    echo "valgrind: FAIL"
    VG_KEEP=1
    exit 1
fi
echo "valgrind: ok"
