#!/usr/bin/env bash
# make demo: the APISIX drop-in (apisix.discovery.consul_kv over libckv.so) in
# a real nginx with 2 workers, against the project's Consul double.
#
#  1. dependencies (scripts/install-deps.sh) and the release build;
#  2. the Consul double on 127.0.0.1:8500, seeded with demo/seed.json;
#  3. nginx (demo/nginx.conf.in) on 127.0.0.1:9080: /svc/<name>/ is proxied
#     to the discovered nodes of upstreams/<name>/ (demo/router.lua); the
#     backends are server blocks of the same nginx (demo/backends.conf);
#  4. traffic, then a node registered and one removed in Consul, with the
#     time each change took to reach every worker (demo/client.pl);
#  5. everything stopped. Ctrl-C stops everything too.
#
# Leftovers of an interrupted run are found through /tmp/ckv-demo/ (pid
# files) and stopped only if they are this demo's processes.
set -uo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

CONSUL_PORT=${CKV_DEMO_CONSUL_PORT:-8500}
ROUTER_PORT=${CKV_DEMO_ROUTER_PORT:-9080}
BACKEND_PORTS=(9101 9102 9103 9104 9201 9202)
WORKERS=2
STATE=/tmp/ckv-demo
NGINX=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
DOUBLE=$repo/target/release/ckv-consul-double
CONSUL=127.0.0.1:$CONSUL_PORT
ROUTER=127.0.0.1:$ROUTER_PORT
TOTAL=10

n=0
step() {             # step "text": prints "[n/N] text ... " (no newline)
    n=$((n + 1))
    printf '[%d/%d] %s ... ' "$n" "$TOTAL" "$1"
    step_t0=${EPOCHREALTIME/,/.}
}
elapsed() {          # seconds since step() with one decimal
    awk -v a="$step_t0" -v b="${EPOCHREALTIME/,/.}" 'BEGIN { printf "%.1fs", b - a }'
}
fail() {
    printf 'FAILED\n  %s\n' "$1"
    shift
    for f in "$@"; do
        [ -s "$f" ] && { echo "  last lines of $f:"; tail -n 20 "$f" | sed 's/^/  | /'; }
    done
    exit 1
}
client() { perl "$repo/demo/client.pl" "$@"; }

# ---- stopping (also used for leftovers of an earlier run) -----------------

is_ours() {          # is_ours PID PATTERN: alive and its command line matches
    local pid=$1 pat=$2
    [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] &&
        tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$pat"
}

alive() {            # running (a zombie left for init to reap is not)
    local state
    state=$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) || return 1
    [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

stop_pid() {         # TERM, wait up to 5 s, then KILL
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || return 0
    for i in $(seq 250); do
        alive "$pid" || return 0
        sleep 0.02
    done
    kill -KILL "$pid" 2>/dev/null
    sleep 0.1
}

stop_nginx_in() {    # stop_nginx_in PREFIX: the nginx master running from PREFIX
    local prefix=$1
    local pid kids k
    pid=$(cat "$prefix/logs/nginx.pid" 2>/dev/null)
    if is_ours "$pid" "nginx: master process .* -p $prefix"; then
        kids=$(pgrep -P "$pid")
        stop_pid "$pid"
        for k in $kids; do    # workers outlive a master that had to be killed
            is_ours "$k" "nginx: " && kill -KILL "$k" 2>/dev/null
        done
    fi
}

stop_double() {
    local pid
    pid=$(cat "$STATE/double.pid" 2>/dev/null)
    if is_ours "$pid" "ckv-consul-double"; then
        stop_pid "$pid"
    fi
    rm -f "$STATE/double.pid"
}

cleaned=0
cleanup() {
    [ "$cleaned" = 1 ] && return
    cleaned=1
    trap '' INT TERM
    [ -n "${prefix:-}" ] && stop_nginx_in "$prefix"
    stop_double
    [ -n "${prefix:-}" ] && rm -rf "$prefix"
}
on_signal() {
    printf '\ninterrupted: stopping nginx and the Consul double ... '
    cleanup
    echo ok
    exit 130
}
trap cleanup EXIT
trap on_signal INT TERM

# Leftovers of an interrupted run (only processes that are this demo's).
if [ -e "$STATE" ] && { [ ! -d "$STATE" ] || [ ! -O "$STATE" ]; }; then
    echo "$STATE exists but is not a directory of $(id -un); remove it" >&2
    exit 1
fi
mkdir -p "$STATE" && chmod 755 "$STATE"
for old in "$STATE"/nginx.*; do
    [ -d "$old" ] || continue
    stop_nginx_in "$old"
    rm -rf "$old"
done
stop_double

# ---- 1. dependencies -------------------------------------------------------

step "dependencies (Debian nginx, lua module, lua-resty-core, lua-cjson, cargo)"
deps_log=$STATE/deps.log
bash scripts/install-deps.sh >"$deps_log" 2>&1 || fail "scripts/install-deps.sh failed" "$deps_log"
[ -x "$NGINX" ] || fail "nginx not found (set NGINX=/path/to/nginx)"
perl -MTime::HiRes -MIO::Socket::INET -e1 2>/dev/null || fail "perl with Time::HiRes is needed"
command -v curl >/dev/null || fail "curl is needed"
echo ok

# ---- 2. build --------------------------------------------------------------

step "building libckv.so and the Consul double (cargo build --release)"
build_log=$STATE/build.log
CARGO_TERM_COLOR=never cargo build --release -p ckv -p ckv-consul-double >"$build_log" 2>&1 ||
    fail "cargo build failed" "$build_log"
[ -f target/release/libckv.so ] || fail "target/release/libckv.so is missing after the build"
echo "ok ($(elapsed))"

# Every port the demo listens on must be free.
for port in "$CONSUL_PORT" "$ROUTER_PORT" "${BACKEND_PORTS[@]}"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "port 127.0.0.1:$port is in use by another program. The demo needs" \
             "127.0.0.1 ports $CONSUL_PORT (Consul double), $ROUTER_PORT (router) and" \
             "${BACKEND_PORTS[*]} (backends); the first two can be moved with" \
             "CKV_DEMO_CONSUL_PORT=... CKV_DEMO_ROUTER_PORT=..." >&2
        exit 1
    fi
done

# ---- 3. the Consul double --------------------------------------------------

step "Consul double on $CONSUL: web = 9101 9102 9103, api = 9201 (weight 1) 9202 (weight 3)"
double_log=$STATE/double.log
"$DOUBLE" --listen "$CONSUL" --seed-file "$repo/demo/seed.json" \
    --pid-file "$STATE/double.pid" </dev/null >"$double_log" 2>&1 &
double_pid=$!
for _ in $(seq 200); do
    grep -q 'listening on' "$double_log" 2>/dev/null && break
    kill -0 "$double_pid" 2>/dev/null || fail "the Consul double exited" "$double_log"
    sleep 0.025
done
grep -q 'listening on' "$double_log" || fail "the Consul double did not start in 5 s" "$double_log"
# The pid file is written by the double itself; make sure cleanup finds it.
[ -s "$STATE/double.pid" ] || echo "$double_pid" >"$STATE/double.pid"
echo ok

# ---- 4. nginx --------------------------------------------------------------

step "nginx on $ROUTER ($WORKERS workers, apisix.discovery.consul_kv drop-in)"
prefix=$(mktemp -d "$STATE/nginx.XXXXXX")
chmod 755 "$prefix"
mkdir -p "$prefix/logs" "$prefix/conf"
load_modules=""
if [ -f /usr/lib/nginx/modules/ngx_http_lua_module.so ] && [[ "$NGINX" != *openresty* ]]; then
    load_modules="load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;"
fi
awk -v mods="$load_modules" -v repo="$repo" -v demo="$repo/demo" \
    -v libdir="$repo/target/release" -v consul="$CONSUL" -v port="$ROUTER_PORT" '
    { gsub(/@LOAD_MODULES@/, mods); gsub(/@REPO@/, repo); gsub(/@DEMO@/, demo);
      gsub(/@LIBDIR@/, libdir); gsub(/@CONSUL@/, consul); gsub(/@ROUTER_PORT@/, port);
      print }' demo/nginx.conf.in >"$prefix/conf/nginx.conf"
nginx_out=$prefix/logs/start.log
"$NGINX" -p "$prefix/" -e "$prefix/logs/error.log" -c "$prefix/conf/nginx.conf" >"$nginx_out" 2>&1 ||
    fail "nginx did not start" "$nginx_out" "$prefix/logs/error.log"
roles=$(client workers "$ROUTER" "$WORKERS" 2>&1) ||
    fail "workers did not answer: $roles" "$prefix/logs/error.log"
echo "ok: $roles"

# ---- 5. discovery and traffic ---------------------------------------------

step "discovery: every worker sees web (3 nodes) and api (2 nodes)"
t=$(client ready "$ROUTER" web 3 "$WORKERS" 2>&1) || fail "$t" "$prefix/logs/error.log"
client ready "$ROUTER" api 2 "$WORKERS" >/dev/null 2>&1 || fail "api not discovered" "$prefix/logs/error.log"
echo "ok"

n=$((n + 1))
printf '[%d/%d] traffic through the router (one connection per request):\n' "$n" "$TOTAL"
web=$(client traffic "$ROUTER" web 12 2>&1) || fail "$web" "$prefix/logs/error.log"
echo "      12 x GET /svc/web/ -> $web"
api=$(client traffic "$ROUTER" api 8 2>&1) || fail "$api" "$prefix/logs/error.log"
echo "       8 x GET /svc/api/ -> $api"

# ---- 6. one long poll per nginx instance ------------------------------------

step "long polls held on Consul"
stats=""
blocking=0
for _ in $(seq 100); do
    stats=$(curl -s "http://$CONSUL/_double/stats")
    blocking=$(grep -o '"blocking_in_flight":[0-9]*' <<<"$stats" | cut -d: -f2)
    [ "${blocking:-0}" -ge 1 ] && break
    sleep 0.02
done
paths=$(grep -o '"blocking_per_path":{[^}]*}' <<<"$stats" | sed 's/"blocking_per_path"://')
if [ "${blocking:-0}" = 1 ]; then
    echo "Consul sees 1 long poll from $WORKERS workers ($paths)"
else
    echo "Consul sees ${blocking:-0} long polls from $WORKERS workers ($paths)"
fi

# ---- 7./8. changes in Consul ------------------------------------------------

step "register 127.0.0.1:9104 in web"
r=$(client change "$ROUTER" "$CONSUL" web put 127.0.0.1:9104 '{"weight":1}' "$WORKERS" 2>&1) ||
    fail "$r" "$prefix/logs/error.log"
echo "$r"
web=$(client traffic "$ROUTER" web 12 2>&1) || fail "$web" "$prefix/logs/error.log"
echo "      12 x GET /svc/web/ -> $web"

step "remove 127.0.0.1:9101 from web"
r=$(client change "$ROUTER" "$CONSUL" web delete 127.0.0.1:9101 '' "$WORKERS" 2>&1) ||
    fail "$r" "$prefix/logs/error.log"
echo "$r"
web=$(client traffic "$ROUTER" web 12 2>&1) || fail "$web" "$prefix/logs/error.log"
echo "      12 x GET /svc/web/ -> $web"

# ---- 9. stop ----------------------------------------------------------------

step "stopping nginx and the Consul double"
errors=$(grep -cE '\[(alert|crit|emerg)\]' "$prefix/logs/error.log")
cleanup
echo "ok ($(elapsed); nginx error log had ${errors} alert/crit/emerg lines)"
