#!/usr/bin/env bash
# Runs a built C example (examples/watch.c) against the Consul double and
# checks that it prints a node written to Consul after it started. Run it in
# a private network namespace (it listens on 127.0.0.1).
#   example-vs-double.sh <command...>
# The command is the example itself, or a wrapper such as `chroot ROOT
# /path/watch`; the double's URL and the example's options are appended.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 <command...>" >&2; exit 2; }
here=$(cd "$(dirname "$0")/../.." && pwd)
double=${CKV_DOUBLE:-$here/target/debug/ckv-consul-double}
[ -x "$double" ] || { echo "no Consul double at $double (cargo build --workspace)" >&2; exit 1; }
work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

"$double" --listen 127.0.0.1:0 >"$work/double.out" 2>&1 &
pids+=($!)
for _ in $(seq 250); do grep -q listening "$work/double.out" 2>/dev/null && break; sleep 0.02; done
addr=$(grep -m1 -oE '127\.0\.0\.1:[0-9]+' "$work/double.out")
[ -n "$addr" ] || { echo "the double did not start:"; cat "$work/double.out"; exit 1; }

"$@" "http://$addr" upstreams --changes 2 --seconds 30 >"$work/watch.out" 2>"$work/watch.err" &
watch_pid=$!
pids+=($watch_pid)
wait_for() {  # wait_for PATTERN: poll the example's output until a deadline
    for _ in $(seq 750); do grep -q "$1" "$work/watch.out" 2>/dev/null && return 0; sleep 0.02; done
    echo "the example never printed: $1"
    echo "--- stdout"; cat "$work/watch.out"; echo "--- stderr"; cat "$work/watch.err"
    exit 1
}
wait_for '^change 0 '
curl -gsf -X PUT --data '{"weight":4}' "http://$addr/v1/kv/upstreams/pkg/10.9.8.7:8080" >/dev/null
wait_for '^    10\.9\.8\.7:8080 weight=4$'
rc=0
wait "$watch_pid" || rc=$?
[ "$rc" -eq 0 ] || { echo "the example exited with $rc"; cat "$work/watch.err"; exit 1; }
head -n 1 "$work/watch.out"
echo "example-vs-double: the example saw the node written to Consul"
