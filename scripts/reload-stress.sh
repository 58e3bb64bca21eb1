#!/usr/bin/env bash
# Reloads nginx (HUP) RELOADS times (default 100) under constant traffic and
# checks: no failed request (every answer 200 with the right node count), a
# new share group after every reload, no leaked thread, fd or shared
# directory, master RSS stable, and a single long poll at the end. Then
# stops Consul and reloads DOWN_RELOADS times (default 5) more: the new
# workers still answer every request, from the previous group's snapshot.
# Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
RELOADS=${RELOADS:-100}
DOWN_RELOADS=${DOWN_RELOADS:-5}
LIB_DIR=${CKV_LIB_DIR:-$PWD/target/debug}
DOUBLE=${CKV_DOUBLE_BIN:-$PWD/target/debug/ckv-consul-double}
DPORT=${DPORT:-18531}
NPORT=${NPORT:-18532}
work=$(mktemp -d /tmp/ckv-reload.XXXXXX)
chmod 755 "$work"
cleanup() {
    [ -f "$work/logs/nginx.pid" ] && kill -QUIT "$(cat "$work/logs/nginx.pid")" 2>/dev/null || true
    [ -n "${traffic_pid:-}" ] && kill "$traffic_pid" 2>/dev/null || true
    [ -n "${double_pid:-}" ] && kill "$double_pid" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

"$DOUBLE" --listen "127.0.0.1:$DPORT" --max-wait 2s >"$work/double.out" &
double_pid=$!
for _ in $(seq 200); do grep -q listening "$work/double.out" 2>/dev/null && break; sleep 0.02; done
for i in 1 2 3; do
    curl -gsf -X PUT --data '{"weight":1}' "http://127.0.0.1:$DPORT/v1/kv/reload/web/10.0.0.$i:80" >/dev/null
done

mkdir -p "$work/logs" "$work/conf"
cat >"$work/conf/nginx.conf" <<CONF
load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;
worker_processes 2;
error_log logs/error.log notice;
pid logs/nginx.pid;
events { worker_connections 256; }
http {
    access_log off;
    client_body_temp_path $work/cbt; proxy_temp_path $work/pt;
    fastcgi_temp_path $work/ft; uwsgi_temp_path $work/ut; scgi_temp_path $work/st;
    lua_package_path "$PWD/lua/?.lua;;";
    lua_package_cpath "$LIB_DIR/?.so;;";
    # Loaded by the master: workers (user nobody) need not read the tree.
    init_by_lua_block { require("resty.consul_kv") }
    init_worker_by_lua_block {
        package.loaded.kv = assert(require("resty.consul_kv").new({
            servers = { "http://127.0.0.1:$DPORT" }, prefix = "reload",
            timeout = { wait = 2 },
        }))
    }
    server {
        listen 127.0.0.1:$NPORT;
        location /t {
            content_by_lua_block {
                local n = package.loaded.kv:nodes("http://127.0.0.1:$DPORT/v1/kv/reload/web/")
                ngx.say(n and #n or 0)
            }
        }
        location /group {
            content_by_lua_block { ngx.print(require("resty.consul_kv").instance_group()) }
        }
    }
}
CONF
nginx -p "$work" -c conf/nginx.conf
master=$(cat "$work/logs/nginx.pid")
for _ in $(seq 250); do [ "$(curl -s "http://127.0.0.1:$NPORT/t")" = 3 ] && break; sleep 0.02; done

# Traffic: a new connection per request; anything but "200, 3 nodes" fails.
python3 - "$NPORT" "$work/traffic.out" <<'PY' &
import http.client, sys, time, signal
port, out = int(sys.argv[1]), sys.argv[2]
ok = bad = 0
first_bad = ""
running = True
def stop(*_):
    global running
    running = False
signal.signal(signal.SIGTERM, stop)
while running:
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        c.request("GET", "/t")
        r = c.getresponse()
        body = r.read().strip()
        c.close()
        if r.status == 200 and body == b"3":
            ok += 1
        else:
            bad += 1
            first_bad = first_bad or f"{r.status} {body!r}"
    except Exception as e:
        bad += 1
        first_bad = first_bad or repr(e)
with open(out, "w") as f:
    f.write(f"{ok} {bad} {first_bad}\n")
PY
traffic_pid=$!

group_now() { curl -s "http://127.0.0.1:$NPORT/group"; }
groups_seen=$(group_now)
same_group=0
# Every reload must make a new group.
note_group() {
    local g
    g=$(group_now)
    case " $groups_seen " in *" $g "*) same_group=$((same_group + 1)) ;; esac
    groups_seen="$groups_seen $g"
}

rss() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
fds() { ls "/proc/$1/fd" | wc -l; }
workers() { ps -o pid= --ppid "$master" | tr -d ' '; }

reload() {
    local old now left
    old=$(workers | sort | tr '\n' ' ')
    kill -HUP "$master"
    # Wait until none of the old workers is left.
    for _ in $(seq 500); do
        now=$(workers | sort | tr '\n' ' ')
        left=0
        for p in $old; do case " $now " in *" $p "*) left=1 ;; esac; done
        if [ $left -eq 0 ] && [ "$(workers | wc -l)" -eq 2 ]; then
            note_group
            return 0
        fi
        sleep 0.01
    done
    echo "FAIL: old workers did not exit after a reload"
    return 1
}

# The master's first reloads allocate its config cycle pools and Lua state
# once (RSS 2 -> 8 MB, then flat): measure from after a short warm-up.
rss_start=$(rss "$master")
for _ in 1 2 3 4 5; do reload; done
sleep 0.5
rss0=$(rss "$master"); fd0=$(fds "$master")
t0=$SECONDS
for i in $(seq "$RELOADS"); do
    reload || exit 1
done
elapsed=$((SECONDS - t0))
sleep 1
rss1=$(rss "$master"); fd1=$(fds "$master")
polls=$(curl -s "http://127.0.0.1:$DPORT/_double/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["blocking_per_path"].get("/v1/kv/reload/", 0))')

# Consul goes away; reloads go on: every new generation serves what the
# previous one had.
kill "$double_pid"; wait "$double_pid" 2>/dev/null || true; double_pid=
for i in $(seq "$DOWN_RELOADS"); do
    reload || exit 1
done
kill -TERM "$traffic_pid"; wait "$traffic_pid" || true; traffic_pid=
read -r ok bad first_bad <"$work/traffic.out"
down_answer=$(curl -s "http://127.0.0.1:$NPORT/t")

threads=0
for p in $(workers); do
    threads=$((threads + $( (grep -l "^ckv-" /proc/"$p"/task/*/comm 2>/dev/null || true) | wc -l)))
done
# The shared directory is named after the instance's group (new at every
# reload); the old workers remove theirs when they exit.
group=$(group_now)
dirs=$( (ls -d /dev/shm/ckv.*."$group" /dev/shm/ckv.*."$group"+* 2>/dev/null || true) | wc -l)
old_dirs=0
for g in $groups_seen; do
    [ "$g" = "$group" ] && continue
    old_dirs=$((old_dirs + $( (ls -d /dev/shm/ckv.*."$g" /dev/shm/ckv.*."$g"+* 2>/dev/null || true) | wc -l)))
done
n_groups=$(printf '%s\n' $groups_seen | sort -u | wc -l)

status=0
printf 'reloads: %d in %ds, then %d with Consul down; requests: %d ok, %d failed %s\n' "$RELOADS" "$elapsed" "$DOWN_RELOADS" "$ok" "$bad" "$first_bad"
printf 'groups: %d distinct over %d loads (want all distinct), old group dirs left %d (want 0)\n' "$n_groups" "$((RELOADS + DOWN_RELOADS + 6))" "$old_dirs"
printf 'master: RSS %s kB at start, %s -> %s kB over the reloads, fds %s -> %s\n' "$rss_start" "$rss0" "$rss1" "$fd0" "$fd1"
printf 'after: ckv threads %s (want 3), shared dirs %s (want 1), long polls %s (want 1)\n' "$threads" "$dirs" "$polls"
[ "$bad" -eq 0 ] && [ "$ok" -gt 0 ] || { echo "FAIL: failed requests"; status=1; }
[ "$fd1" -le "$fd0" ] || { echo "FAIL: master fds grew"; status=1; }
# After the warm-up, more than 5% growth is a leak.
[ "$rss1" -le $((rss0 + rss0 / 20)) ] || { echo "FAIL: master RSS grew more than 5%"; status=1; }
[ "$threads" -eq 3 ] || { echo "FAIL: thread count"; status=1; }
[ ${#group} -eq 32 ] || { echo "FAIL: instance group '$group'"; status=1; }
[ "$dirs" -eq 1 ] || { echo "FAIL: shared directories"; status=1; }
[ "$polls" -eq 1 ] || { echo "FAIL: long polls"; status=1; }
[ "$same_group" -eq 0 ] && [ "$n_groups" -eq $((RELOADS + DOWN_RELOADS + 6)) ] || { echo "FAIL: a reload kept the share group"; status=1; }
[ "$old_dirs" -eq 0 ] || { echo "FAIL: directories of old groups left"; status=1; }
[ "$down_answer" = 3 ] || { echo "FAIL: with Consul down, /t answered '$down_answer'"; status=1; }
if grep -E "\[(alert|crit|emerg)\]" "$work/logs/error.log" | head -5 | grep -q .; then echo "FAIL: alerts in error.log"; status=1; fi

kill -QUIT "$master"
for _ in $(seq 300); do kill -0 "$master" 2>/dev/null || break; sleep 0.02; done
left=$( (ls -d /dev/shm/ckv.*."$group" /dev/shm/ckv.*."$group"+* 2>/dev/null || true) | wc -l)
printf 'after quit: shared dirs %s (want 0)\n' "$left"
[ "$left" -eq 0 ] || { echo "FAIL: shared directory left after quit"; status=1; }
[ $status -eq 0 ] && echo "reload-stress: ok"
exit $status
