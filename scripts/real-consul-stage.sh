#!/usr/bin/env bash
# The real-Consul stage of `make test`: builds (once per machine) and starts
# real `consul agent -dev` processes, runs against them what needs no fault
# injection, and stops them. Ends with "real-consul: N passed, M failed".
#
#   bash scripts/real-consul-stage.sh
#
# Agents (loopback only, in-memory dev mode, data dirs in a temp folder):
#   127.0.0.1:8500  plain        the suites' first server
#   127.0.0.1:8600  plain        the suites' second, independent server
#   127.0.0.1:8502  ACLs on      default policy deny, key-list policy on,
#                                bootstrapped through PUT /v1/acl/bootstrap
#   127.0.0.1:8503  ACLs on      the same without the key-list policy (lists
#                                are filtered): for the differential check
# DNS and gRPC are disabled; the server/serf ports are free ports. The HTTP
# ports are the suites' fixed ones, so the stage re-runs itself in a private
# network namespace (unshare -n) when it can, as every port-opening test here
# should.
#
# What runs: the differential check (the double against the agents), the
# Test::Nginx suites in real-Consul mode (CKV_REAL_CONSUL=1: TestCKV does not
# start doubles; blocks that need the double's faults or counters are skipped
# and counted), tests/real_consul.rs, the C example against the agent, and
# the propagation figure.
#
# Without Go the stage cannot build Consul: it says so and counts as one
# failure, unless CKV_SKIP_REAL_CONSUL=1 is set on purpose.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
repo=$(pwd)

if [ "${CKV_SKIP_REAL_CONSUL:-}" = 1 ]; then
    echo "real-consul: skipped on purpose (CKV_SKIP_REAL_CONSUL=1)"
    echo "real-consul: 0 passed, 0 failed"
    exit 0
fi

# Consul is built (once per machine) before the stage moves into its own
# network namespace: the build downloads Go modules, and the namespace has
# only loopback. Inside, the path comes from CKV_STAGE_CONSUL.
if [ -n "${CKV_STAGE_NETNS:-}" ] && [ -n "${CKV_STAGE_CONSUL:-}" ]; then
    bin=$CKV_STAGE_CONSUL
else
    bin=$(bash scripts/real-consul.sh)
    rc=$?
    if [ $rc -ne 0 ]; then
        if [ $rc -eq 2 ]; then
            echo "real-consul: Go is missing, so no real Consul: this stage FAILS" \
                 "(set CKV_SKIP_REAL_CONSUL=1 to skip it on purpose)"
        else
            echo "real-consul: building Consul failed (see above)"
        fi
        echo "real-consul: 0 passed, 1 failed"
        exit 1
    fi
fi

if [ -z "${CKV_STAGE_NETNS:-}" ] && [ "$(id -u)" = 0 ] && command -v unshare >/dev/null &&
    unshare -n true 2>/dev/null; then
    export CKV_STAGE_NETNS=1 CKV_STAGE_CONSUL=$bin
    exec unshare -n bash -c 'ip link set lo up && exec bash "$0"' "$0"
fi

# The library and the double the steps use (a no-op inside make test).
if ! cargo build -q -p ckv -p ckv-consul-double; then
    echo "real-consul: cargo build failed"
    echo "real-consul: 0 passed, 1 failed"
    exit 1
fi

work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null; done
    for p in "${pids[@]}"; do
        for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
        kill -KILL "$p" 2>/dev/null
        wait "$p" 2>/dev/null
    done
    rm -rf "$work"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_agent NAME HTTP_PORT ACL(0|1|list)
start_agent() {
    local name=$1 http=$2 acl=$3 dir=$work/$1
    mkdir -p "$dir/data"
    local acl_conf='"acl": {"enabled": false}'
    case $acl in
        1) acl_conf='"acl": {"enabled": true, "default_policy": "deny"}' ;;
        list) acl_conf='"acl": {"enabled": true, "default_policy": "deny", "enable_key_list_policy": true}' ;;
    esac
    cat >"$dir/agent.json" <<EOF
{
  "node_name": "ckv-$name",
  "datacenter": "dc1",
  "data_dir": "$dir/data",
  "bind_addr": "127.0.0.1",
  "client_addr": "127.0.0.1",
  "log_level": "warn",
  "disable_update_check": true,
  "ports": {"http": $http, "https": -1, "dns": -1, "grpc": -1, "grpc_tls": -1,
            "serf_lan": $(free_port), "serf_wan": $(free_port), "server": $(free_port)},
  $acl_conf
}
EOF
    "$bin" agent -dev -config-file "$dir/agent.json" >"$dir/agent.log" 2>&1 &
    pids+=($!)
}

# wait_leader PORT: the agent answers and has elected itself.
wait_leader() {
    local port=$1
    for _ in $(seq 300); do
        local leader
        leader=$(curl -s -m 1 "http://127.0.0.1:$port/v1/status/leader" 2>/dev/null)
        case $leader in '"'?*'"') return 0 ;; esac
        sleep 0.05
    done
    return 1
}

passed=0
failed=0
count() {  # count NAME RC
    if [ "$2" -eq 0 ]; then
        passed=$((passed + 1)); echo "    ok: $1"
    else
        failed=$((failed + 1)); echo "    FAILED: $1"
    fi
}

"$bin" version | head -n 1 | sed 's/^/real-consul: /'
start_agent plain 8500 0
start_agent second 8600 0
start_agent acl 8502 list
start_agent acl-filter 8503 1
for port in 8500 8600 8502 8503; do
    if ! wait_leader "$port"; then
        echo "real-consul: the agent on $port did not elect a leader in 15 s"
        tail -n 20 "$work"/*/agent.log
        echo "real-consul: 0 passed, 1 failed"
        exit 1
    fi
done

# 1. The differential check. It bootstraps the ACL agent itself (that is
#    one of the things it compares) and leaves the management token for the
#    steps after it.
double=${CKV_DOUBLE_BIN:-$repo/target/debug/ckv-consul-double}
python3 tools/consul-diff/consul_diff.py --double "$double" \
    --consul http://127.0.0.1:8500 --consul-acl http://127.0.0.1:8502 \
    --consul-acl-filter http://127.0.0.1:8503 \
    --token-out "$work/mgmt-token" ${CKV_DIFF_DUMP:+--dump "$CKV_DIFF_DUMP"} >"$work/diff.log" 2>&1
rc=$?
sed 's/^/    | /' "$work/diff.log"
count "differential check (double vs Consul)" $rc
if [ ! -s "$work/mgmt-token" ]; then
    echo "real-consul: no management token from the bootstrap; ACL steps will fail"
fi
CKV_REAL_CONSUL_TOKEN=$(cat "$work/mgmt-token" 2>/dev/null)
export CKV_REAL_CONSUL_TOKEN

# 2. The Test::Nginx suites in real-Consul mode.
export CKV_REAL_CONSUL=1
suites=(t/001-sanity.t t/010-dropin-config.t t/011-dropin-live.t t/012-dropin-dump.t
        t/013-table-identity.t t/014-jit.t t/015-binding.t t/050-multi-worker.t
        t/090-one-connection-per-server.t)
bash scripts/prove.sh -v "${suites[@]}" >"$work/prove.log" 2>&1
rc=$?
total=$(grep -oE 'Tests=[0-9]+' "$work/prove.log" | tail -1 | cut -d= -f2)
skipped=$(grep -cE '^\s*ok [0-9]+ .*# skip' "$work/prove.log")
bad=$(grep -cE '^\s*not ok [0-9]+' "$work/prove.log")
total=${total:-0}
echo "    Test::Nginx in real-Consul mode: $((total - bad - skipped)) passed," \
     "$bad failed, $skipped skipped (they need the double's faults or counters)"
grep -E '^\s*not ok ' "$work/prove.log" | sed 's/^\s*/    ! /' | head -n 40
grep -E '^\s*ok [0-9]+ # skip' "$work/prove.log" | sed -E 's/^\s*ok [0-9]+ # skip (t\/[^ ]+ TEST [0-9]+).*/\1/' |
    uniq -c | sed 's/^ */    skipped: /' 
if [ $rc -ne 0 ] && [ "$bad" -eq 0 ]; then
    bad=1
    tail -n 30 "$work/prove.log" | sed 's/^/    | /'
fi
passed=$((passed + total - bad - skipped))
failed=$((failed + bad))
unset CKV_REAL_CONSUL

# 3. The Rust tests that need no fault injection (tests/real_consul.rs).
CKV_REAL_CONSUL_URL=http://127.0.0.1:8500 CKV_REAL_CONSUL_ACL_URL=http://127.0.0.1:8502 \
    cargo test --test real_consul -- --ignored >"$work/rust.log" 2>&1
rc=$?
p=$(grep -oE '[0-9]+ passed' "$work/rust.log" | awk '{s+=$1} END {print s+0}')
f=$(grep -oE '[0-9]+ failed' "$work/rust.log" | awk '{s+=$1} END {print s+0}')
if [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
echo "    Rust tests against Consul: $p passed, $f failed"
[ $rc -eq 0 ] || grep -E 'panicked|FAILED|^error' "$work/rust.log" | head -n 20 | sed 's/^/    ! /'
passed=$((passed + p))
failed=$((failed + f))

# 4. The C example against the agent: the initial sync, then two changes.
c_example() {
    make -s -C examples >/dev/null || return 1
    local out=$work/watch.out
    # The program `make` just built from examples/watch.c (typed node lines).
    examples/build/plain/watch http://127.0.0.1:8500 realc --changes 3 --seconds 20 >"$out" 2>"$work/watch.err" &
    local wpid=$!
    wait_out() {
        for _ in $(seq 500); do grep -q "$1" "$out" && return 0; sleep 0.02; done
        echo "example never printed: $1"; cat "$out" "$work/watch.err"; return 1
    }
    wait_out '^change 0 ' &&
    curl -gsf -X PUT --data '{"weight":5}' "http://127.0.0.1:8500/v1/kv/realc/web/10.0.0.1:8080" >/dev/null &&
    wait_out '^    10\.0\.0\.1:8080 weight=5\b' &&
    curl -gsf -X PUT --data '{"weight":1}' "http://127.0.0.1:8500/v1/kv/realc/api/[2001:db8::1]:9000" >/dev/null &&
    wait_out '^    \[2001:db8::1\]:9000 weight=1\b' || { kill "$wpid" 2>/dev/null; wait "$wpid"; return 1; }
    wait "$wpid"
}
c_example >"$work/c.log" 2>&1
rc=$?
[ $rc -eq 0 ] || sed 's/^/    | /' "$work/c.log"
count "C example (examples/watch) against Consul" $rc

# 5. The propagation figure: PUT returned -> both workers' nodes().
python3 bench/real_consul_propagation.py --consul http://127.0.0.1:8500 \
    --nodes 100 --changes 20 >"$work/prop.log" 2>&1
rc=$?
sed 's/^/    | /' "$work/prop.log"
count "propagation figure against Consul" $rc

echo "real-consul: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
