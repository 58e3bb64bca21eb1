#!/usr/bin/env bash
# Runs tests/c/threads.c (16 threads on the typed API) while the Consul
# double churns the service "churn", built with clang -fsanitize=thread
# (SAN=tsan, the default) or plain (SAN=plain). Fails when a view mixed two
# snapshots, when the readers saw too few changes, or when ThreadSanitizer
# reports anything.
#
# Each version v of the service is one atomic write (the double's bulk
# endpoint): (v % 5) + 1 nodes, each with weight v and metadata {"v":"v"}.
# SECONDS_RUN (default 4) is how long the threads read.
set -euo pipefail
cd "$(dirname "$0")/../.."
san=${SAN:-tsan}
command -v clang >/dev/null || [ "$san" != tsan ] || { echo "clang not installed (make deps)"; exit 1; }
make -s -C examples SAN="$san" build/"$san"/threads
double=target/debug/ckv-consul-double
[ -x "$double" ] || cargo build -q -p ckv-consul-double
work=$(mktemp -d)
cleanup() {
    for p in ${churn_pid:-} ${double_pid:-}; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

"$double" --listen 127.0.0.1:0 >"$work/double.out" &
double_pid=$!
for _ in $(seq 200); do grep -q listening "$work/double.out" 2>/dev/null && break; sleep 0.02; done
addr=$(grep -oE '127\.0\.0\.1:[0-9]+' "$work/double.out" | head -1)
[ -n "$addr" ] || { echo "double did not start"; exit 1; }

# One version of the service as a bulk body: nodes 0..4, present or null.
version() {
    local v=$1 n=$(( $1 % 5 + 1 )) i body=
    for i in 0 1 2 3 4; do
        [ -n "$body" ] && body+=,
        if [ "$i" -lt "$n" ]; then
            body+="\"upstreams/churn/10.0.1.$i:80\":\"{\\\"weight\\\":$v,\\\"metadata\\\":{\\\"v\\\":\\\"$v\\\"}}\""
        else
            body+="\"upstreams/churn/10.0.1.$i:80\":null"
        fi
    done
    printf '{%s}' "$body"
}
curl -gsf -X PUT --data-binary "$(version 1)" "http://$addr/_double/bulk" >/dev/null
(
    v=2
    while :; do
        curl -gsf -X PUT --data-binary "$(version $v)" "http://$addr/_double/bulk" >/dev/null || exit 0
        v=$((v + 1))
    done
) &
churn_pid=$!

supp=$PWD/tests/c/tsan.supp
export TSAN_OPTIONS="halt_on_error=0 exitcode=66 suppressions=$supp ${TSAN_OPTIONS:-}"
rc=0
"examples/build/$san/threads" "http://$addr" "${SECONDS_RUN:-4}" >"$work/out" 2>"$work/err" || rc=$?
cat "$work/out"
if [ $rc -ne 0 ] || grep -q 'WARNING: ThreadSanitizer' "$work/err"; then
    echo "threads ($san) FAILED, rc=$rc:"
    head -150 "$work/err"
    exit 1
fi
grep -q '^threads: ok$' "$work/out"
echo "c-threads ($san): ok"
