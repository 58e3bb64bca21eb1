#!/usr/bin/env bash
# Builds examples/watch, runs it against the Consul test double, changes
# Consul twice and checks that the example printed each change (the first
# change is the initial sync of the empty prefix).
set -euo pipefail
cd "$(dirname "$0")/.."
make -s -C examples
double=target/debug/ckv-consul-double
work=$(mktemp -d)
cleanup() {
    [ -n "${watch_pid:-}" ] && kill "$watch_pid" 2>/dev/null || true
    [ -n "${double_pid:-}" ] && kill "$double_pid" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

"$double" --listen 127.0.0.1:0 >"$work/double.out" &
double_pid=$!
for _ in $(seq 200); do grep -q listening "$work/double.out" 2>/dev/null && break; sleep 0.02; done
addr=$(grep -oE '127\.0\.0\.1:[0-9]+' "$work/double.out" | head -1)
[ -n "$addr" ] || { echo "double did not start"; exit 1; }

${VALGRIND:-} examples/watch "http://$addr" upstreams --changes 3 --seconds 20 >"$work/watch.out" 2>"$work/watch.err" &
watch_pid=$!

wait_for() {  # wait_for PATTERN: poll the example's output with a deadline
    for _ in $(seq 500); do grep -q "$1" "$work/watch.out" && return 0; sleep 0.02; done
    echo "example never printed: $1"; cat "$work/watch.out" "$work/watch.err"; exit 1
}
wait_for '^change 0 '
curl -gsf -X PUT --data '{"weight":5}' "http://$addr/v1/kv/upstreams/web/10.0.0.1:8080" >/dev/null
wait_for '"host":"10.0.0.1","port":8080,"weight":5'
curl -gsf -X PUT --data '{"weight":1}' "http://$addr/v1/kv/upstreams/api/[2001:db8::1]:9000" >/dev/null
wait_for '"host":"\[2001:db8::1\]","port":9000'
wait "$watch_pid"
rc=$?
watch_pid=
[ $rc -eq 0 ] || { echo "example exited with $rc"; cat "$work/watch.err"; exit 1; }
grep -q '^ckv/[0-9.]*, ABI 1$' "$work/watch.out"
grep -q 'watching http://' "$work/watch.err"
echo "c-example: ok"
cat "$work/watch.out"
