#!/usr/bin/env bash
# Builds the C examples, runs them against the Consul test double and checks
# what they print:
#  - watch: the initial sync, then each change with its typed node fields,
#    and a clean exit on SIGTERM;
#  - pick: the epoll loop takes the nodes when told by ckv_notify_fd, picks
#    by smooth weighted round robin on "pick N", and sees a change of weights.
#
# Environment: SAN=plain|asan (examples/Makefile's build variant), VALGRIND
# (a command prefix, set by scripts/valgrind.sh), WAIT_S (seconds allowed
# for each expected line; default 20).
set -euo pipefail
cd "$(dirname "$0")/.."
san=${SAN:-plain}
make -s -C examples SAN="$san" build/"$san"/watch build/"$san"/pick
bin=examples/build/$san
double=target/debug/ckv-consul-double
[ -x "$double" ] || cargo build -q -p ckv-consul-double
work=$(mktemp -d)
cleanup() {
    exec 3>&- 2>/dev/null || true
    for p in ${watch_pid:-} ${pick_pid:-} ${double_pid:-}; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

"$double" --listen 127.0.0.1:0 >"$work/double.out" &
double_pid=$!
for _ in $(seq 200); do grep -q listening "$work/double.out" 2>/dev/null && break; sleep 0.02; done
addr=$(grep -oE '127\.0\.0\.1:[0-9]+' "$work/double.out" | head -1)
[ -n "$addr" ] || { echo "double did not start"; exit 1; }

put() { curl -gsf -X PUT --data "$2" "http://$addr/v1/kv/$1" >/dev/null; }
bulk() { curl -gsf -X PUT --data-binary "$1" "http://$addr/_double/bulk" >/dev/null; }

wait_for() {  # wait_for FILE PATTERN: poll an example's output with a deadline
    local deadline=$((SECONDS + ${WAIT_S:-20}))
    while [ $SECONDS -lt $deadline ]; do
        grep -q -- "$2" "$1" && return 0
        sleep 0.02
    done
    echo "never printed: $2"; cat "$1" "${1%.out}.err" 2>/dev/null; exit 1
}

# watch: typed fields of every node, one line each.
${VALGRIND:-} "$bin/watch" "http://$addr" upstreams --seconds 120 \
    >"$work/watch.out" 2>"$work/watch.err" &
watch_pid=$!
wait_for "$work/watch.out" '^change 0 '
put upstreams/web/10.0.0.1:8080 '{"weight":5,"max_fails":2,"fail_timeout":1.5,"metadata":{"zone":"a"}}'
wait_for "$work/watch.out" '^    10.0.0.1:8080 weight=5 max_fails=2 fail_timeout=1.5 metadata={"zone":"a"}$'
put 'upstreams/api/[2001:db8::1]:9000' '{"weight":1,"priority":-2}'
wait_for "$work/watch.out" '^    \[2001:db8::1\]:9000 weight=1 priority=-2$'
kill -TERM "$watch_pid"  # leaves through ckv_shutdown + ckv_free, status 0
rc=0; wait "$watch_pid" || rc=$?
watch_pid=
[ $rc -eq 0 ] || { echo "watch exited with $rc"; cat "$work/watch.err"; exit 1; }
grep -q '^ckv/[0-9.]*, ABI 1$' "$work/watch.out"
grep -q 'watching http://' "$work/watch.err"
grep -q '^  http://.*/v1/kv/upstreams/web/ (generation [0-9]*): 1 nodes$' "$work/watch.out"
echo "watch: ok"

# pick: commands on a FIFO held open here (fd 3), so pick's stdin stays open.
mkfifo "$work/cmd"
exec 3<>"$work/cmd"
${VALGRIND:-} "$bin/pick" "http://$addr" web <"$work/cmd" >"$work/pick.out" 2>"$work/pick.err" &
pick_pid=$!
bulk '{"upstreams/web/10.0.0.1:8080":null,"upstreams/web/10.0.0.1:80":"{\"weight\":5}",
       "upstreams/web/10.0.0.2:80":"{\"weight\":1}","upstreams/web/10.0.0.3:80":"{\"weight\":1}"}'
wait_for "$work/pick.out" '^nodes seq=[0-9]*: 10.0.0.1:80\*5 10.0.0.2:80\*1 10.0.0.3:80\*1$'
echo 'pick 7' >&3
wait_for "$work/pick.out" '^pick 10.0.0.1:80$'
for _ in $(seq 500); do [ "$(grep -c '^pick ' "$work/pick.out")" -ge 7 ] && break; sleep 0.02; done
got=$(grep '^pick ' "$work/pick.out" | sed 's/^pick 10.0.0.//; s/:80$//' | tr '\n' ' ')
# nginx's smooth weighted round robin for weights 5, 1, 1.
[ "$got" = "1 1 2 1 3 1 1 " ] || { echo "pick order: $got"; cat "$work/pick.out"; exit 1; }
bulk '{"upstreams/web/10.0.0.2:80":"{\"weight\":0}","upstreams/web/10.0.0.3:80":null}'
wait_for "$work/pick.out" '^nodes seq=[0-9]*: 10.0.0.1:80\*5 10.0.0.2:80\*0$'
printf 'pick 2\nquit\n' >&3  # two commands in one read
rc=0; wait "$pick_pid" || rc=$?
pick_pid=
[ $rc -eq 0 ] || { echo "pick exited with $rc"; cat "$work/pick.out" "$work/pick.err"; exit 1; }
[ "$(grep -c '^pick ' "$work/pick.out")" -eq 9 ] || { cat "$work/pick.out"; exit 1; }
[ "$(tail -3 "$work/pick.out" | tr '\n' ' ')" = "pick 10.0.0.1:80 pick 10.0.0.1:80 bye " ] ||
    { echo "weight 0 was picked:"; cat "$work/pick.out"; exit 1; }
echo "pick: ok"
echo "c-example ($san): ok"
