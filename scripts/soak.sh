#!/usr/bin/env bash
# make soak: nginx (2 workers, resty.consul_kv over the release libckv.so)
# against the release Consul double, with a change in Consul every 10 ms and
# HTTP traffic throughout. Samples RSS, open fds and threads of the nginx
# master, each worker and the double; prints a table, failed requests and a
# verdict (each series flat within 5% after the warm-up, the first 20% of
# the run), and writes everything to bench/out/soak.json.
#
# Environment:
#   SOAK_SECONDS     run length (default 600)
#   SOAK_INTERVAL    seconds between samples (default: SOAK_SECONDS/20, 2..30)
#   SOAK_CHANGE_MS   ms between Consul changes (default 10)
#   SOAK_SERVICES    services (default 5); SOAK_HOSTS hosts per service (20)
#   SOAK_CONNS       wrk connections (default 8)
#   SOAK_LIB_DIR     where libckv.so is (default target/release)
#   SOAK_OUT         JSON output (default bench/out/soak.json)
#   NGINX            nginx binary (default nginx)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

secs=${SOAK_SECONDS:-600}
interval=${SOAK_INTERVAL:-$(( secs / 20 ))}
(( interval < 2 )) && interval=2
(( interval > 30 )) && interval=30
lib_dir=${SOAK_LIB_DIR:-$root/target/release}
double_bin=${SOAK_DOUBLE_BIN:-$root/target/release/ckv-consul-double}
out_json=${SOAK_OUT:-$root/bench/out/soak.json}
nginx_bin=${NGINX:-nginx}

for f in "$lib_dir/libckv.so" "$double_bin"; do
    [ -e "$f" ] || { echo "soak: $f missing (make build)"; exit 1; }
done
command -v "$nginx_bin" >/dev/null || { echo "soak: nginx missing (make deps)"; exit 1; }
command -v wrk >/dev/null || { echo "soak: wrk missing (make deps)"; exit 1; }

work=$(mktemp -d /tmp/ckv-soak.XXXXXX)
mkdir -p "$work/logs" "$(dirname "$out_json")"
pids=()
cleanup() {
    local p
    [ -f "$work/logs/nginx.pid" ] && kill -QUIT "$(cat "$work/logs/nginx.pid")" 2>/dev/null || true
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ "${SOAK_KEEP:-0}" = 1 ]; then echo "soak: work dir kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# --- the Consul double -----------------------------------------------------
"$double_bin" --listen 127.0.0.1:0 --max-wait 30s --tombstone-ttl 10s >"$work/double.out" 2>"$work/double.err" &
double_pid=$!
pids+=("$double_pid")
for _ in $(seq 250); do grep -q listening "$work/double.out" 2>/dev/null && break; sleep 0.02; done
addr=$(grep -oE '127\.0\.0\.1:[0-9]+' "$work/double.out" | head -1)
[ -n "$addr" ] || { echo "soak: the double did not start"; cat "$work/double.err"; exit 1; }

# --- nginx -------------------------------------------------------------------
port=$(free_port)
load_modules=""
if [ -f /usr/lib/nginx/modules/ngx_http_lua_module.so ] && [[ "$nginx_bin" != *openresty* ]]; then
    load_modules="load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;"
fi
user_line=""
[ "$(id -u)" = 0 ] && user_line="user root;"
cat >"$work/nginx.conf" <<EOF
$load_modules
$user_line
worker_processes 2;
daemon off;
master_process on;
pid $work/logs/nginx.pid;
error_log $work/logs/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $work/tmp_body;
    proxy_temp_path $work/tmp_proxy;
    fastcgi_temp_path $work/tmp_fcgi;
    uwsgi_temp_path $work/tmp_uwsgi;
    scgi_temp_path $work/tmp_scgi;
    lua_package_path "$root/lua/?.lua;$root/lua/?/init.lua;/usr/share/lua/5.1/?.lua;;";
    lua_package_cpath "$lib_dir/?.so;/usr/lib/x86_64-linux-gnu/lua/5.1/?.so;;";

    init_worker_by_lua_block {
        local consul_kv = require("resty.consul_kv")
        local kv, err = consul_kv.new({
            servers = { "http://$addr" },
            prefix  = "upstreams",
            timeout = { connect = 2000, read = 2000, wait = 30 },
            share   = { dir = "$work", group = "soak" },
        })
        if not kv then
            ngx.log(ngx.EMERG, "ckv: ", err)
            return
        end
        package.loaded.soak_kv = kv
    }

    server {
        listen 127.0.0.1:$port;
        keepalive_requests 1000000;
        # GET /nodes?s=svc3 -> number of nodes of upstreams/svc3/
        location = /nodes {
            content_by_lua_block {
                local kv = package.loaded.soak_kv
                if not kv then return ngx.exit(503) end
                local nodes = kv:nodes("http://$addr/v1/kv/upstreams/" .. (ngx.var.arg_s or "") .. "/")
                ngx.say(nodes and #nodes or 0)
            }
        }
        location = /pid { content_by_lua_block { ngx.say(ngx.worker.pid()) } }
    }
}
EOF
"$nginx_bin" -p "$work" -c "$work/nginx.conf" -e "$work/logs/error.log" >"$work/nginx.out" 2>&1 &
pids+=("$!")
for _ in $(seq 250); do
    curl -sf "http://127.0.0.1:$port/nodes?s=none" >/dev/null 2>&1 && break
    sleep 0.02
done
curl -sf "http://127.0.0.1:$port/nodes?s=none" >/dev/null || {
    echo "soak: nginx did not start"; cat "$work/nginx.out" "$work/logs/error.log"; exit 1; }
master_pid=$(cat "$work/logs/nginx.pid")

# --- traffic -----------------------------------------------------------------
services=${SOAK_SERVICES:-5}
cat >"$work/wrk.lua" <<EOF
local i = 0
request = function()
    i = i + 1
    return wrk.format("GET", "/nodes?s=svc" .. (i % $services))
end
EOF
wrk -t1 -c"${SOAK_CONNS:-8}" -d"${secs}s" --timeout 5s -s "$work/wrk.lua" \
    "http://127.0.0.1:$port/" >"$work/wrk.out" 2>&1 &
wrk_pid=$!
pids+=("$wrk_pid")

echo "soak: ${secs}s, sample every ${interval}s, a Consul change every ${SOAK_CHANGE_MS:-10} ms;" \
     "nginx master $master_pid on :$port, double $double_pid on $addr"

# --- the Consul driver and the sampler (one Python process) -----------------
SOAK_ADDR=$addr SOAK_PORT=$port SOAK_SECS=$secs SOAK_INTERVAL_S=$interval \
SOAK_MASTER=$master_pid SOAK_DOUBLE=$double_pid SOAK_WORK=$work SOAK_JSON=$out_json \
SOAK_WRK_PID=$wrk_pid python3 - <<'PY'
import http.client, json, os, statistics, subprocess, sys, threading, time

addr = os.environ["SOAK_ADDR"]
port = int(os.environ["SOAK_PORT"])
secs = int(os.environ["SOAK_SECS"])
interval = int(os.environ["SOAK_INTERVAL_S"])
master = int(os.environ["SOAK_MASTER"])
double = int(os.environ["SOAK_DOUBLE"])
work = os.environ["SOAK_WORK"]
change_ms = int(os.environ.get("SOAK_CHANGE_MS", "10"))
n_svc = int(os.environ.get("SOAK_SERVICES", "5"))
n_hosts = int(os.environ.get("SOAK_HOSTS", "20"))
wrk_pid = int(os.environ["SOAK_WRK_PID"])

host, dport = addr.split(":")
keys = [f"upstreams/svc{s}/10.0.{s}.{h + 1}:8080" for h in range(n_hosts) for s in range(n_svc)]
live = {}            # key -> weight, what Consul holds
driver = {"changes": 0, "failed": 0, "puts": 0, "deletes": 0, "late_ms_max": 0.0}
stop = threading.Event()

def drive():
    conn = http.client.HTTPConnection(host, int(dport), timeout=5)
    i = 0
    t0 = time.monotonic()
    while not stop.is_set():
        due = t0 + i * change_ms / 1000.0
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        else:
            driver["late_ms_max"] = max(driver["late_ms_max"], (now - due) * 1000)
        key = keys[i % len(keys)]
        # A rotating set: each key is PUT on one pass, DELETEd on the next,
        # with a weight that changes from pass to pass.
        if key in live and (i // len(keys)) % 2 == 1:
            method, body = "DELETE", None
        else:
            method, body = "PUT", json.dumps({"weight": 1 + (i // len(keys)) % 7})
        try:
            conn.request(method, "/v1/kv/" + key, body=body)
            r = conn.getresponse()
            r.read()
            if r.status != 200:
                driver["failed"] += 1
            else:
                if method == "PUT":
                    live[key] = True; driver["puts"] += 1
                else:
                    live.pop(key, None); driver["deletes"] += 1
                driver["changes"] += 1
        except Exception:
            driver["failed"] += 1
            conn.close()
            conn = http.client.HTTPConnection(host, int(dport), timeout=5)
        i += 1
    conn.close()

def proc(pid):
    try:
        st = {}
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                st[k] = v.strip()
        fds = os.listdir(f"/proc/{pid}/fd")
        sockets = 0
        for fd in fds:
            try:
                sockets += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
            except OSError:
                pass
        return {
            "pid": pid,
            "rss_kb": int(st["VmRSS"].split()[0]),
            # Anonymous memory (heap, thread stacks, LuaJIT arenas): where a
            # leak shows; the rest of RSS is mostly shared-library pages
            # faulted in as new code paths run.
            "rss_anon_kb": int(st["RssAnon"].split()[0]),
            "threads": int(st["Threads"]),
            "fds": len(fds),
            "sockets": sockets,
        }
    except (OSError, KeyError, ValueError):
        return None

def workers():
    try:
        with open(f"/proc/{master}/task/{master}/children") as f:
            return sorted(int(p) for p in f.read().split())
    except OSError:
        return []

samples = []
worker_pids_seen = set()

def sample(t):
    ws = [proc(p) for p in workers()]
    ws = [w for w in ws if w]
    for w in ws:
        worker_pids_seen.add(w["pid"])
    s = {"t": round(t, 1), "master": proc(master), "workers": ws, "double": proc(double)}
    samples.append(s)
    return s

def fmt_row(s):
    cells = [f"{s['t']:>6.0f}"]
    for name, p in [("master", s["master"])] + [(f"w{i}", w) for i, w in enumerate(s["workers"])] + [("double", s["double"])]:
        if p:
            cells.append(f"{p['rss_kb']/1024:7.1f} {p['fds']:4d} {p['threads']:3d}")
        else:
            cells.append(f"{'gone':>16}")
    return " | ".join(cells)

th = threading.Thread(target=drive, daemon=True)
th.start()
start = time.monotonic()
print("  time | master MiB fds thr | w0 MiB fds thr | w1 MiB fds thr | double MiB fds thr", flush=True)
next_t = 0.0
while True:
    t = time.monotonic() - start
    if t >= next_t:
        print(fmt_row(sample(t)), flush=True)
        next_t += interval
    if t >= secs:
        break
    time.sleep(min(0.2, max(0.0, next_t - t)))
stop.set()
th.join(timeout=10)
final = sample(time.monotonic() - start)
print(fmt_row(final), flush=True)

# Convergence: once the driver stops, every service's node count in nginx
# (asked several times, so that both workers answer) must equal Consul's.
want = {f"svc{s}": sum(1 for k in live if k.startswith(f"upstreams/svc{s}/")) for s in range(n_svc)}
converged, conv_ms = False, None
t0 = time.monotonic()
while time.monotonic() - t0 < 10:
    ok = True
    for _ in range(4):
        for svc, n in want.items():
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            try:
                c.request("GET", f"/nodes?s={svc}")
                r = c.getresponse()
                got = int(r.read().strip() or -1)
            except Exception:
                got = -1
            finally:
                c.close()
            if got != n:
                ok = False
    if ok:
        converged, conv_ms = True, round((time.monotonic() - t0) * 1000)
        break
    time.sleep(0.05)

# wrk's own summary (it ends at SOAK_SECONDS).
deadline = time.time() + 30
while time.time() < deadline:
    try:
        os.kill(wrk_pid, 0)
        time.sleep(0.2)
    except OSError:
        break
time.sleep(0.3)
wrk_out = open(os.path.join(work, "wrk.out")).read()
def grab(pattern, default=0):
    import re
    m = re.search(pattern, wrk_out)
    return int(m.group(1)) if m else default
import re
requests_total = grab(r"(\d+) requests in")
non2xx = grab(r"Non-2xx or 3xx responses: (\d+)")
sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", wrk_out)
sock_errors = sum(int(x) for x in sock.groups()) if sock else 0
m = re.search(r"Requests/sec:\s+([\d.]+)", wrk_out)
rps = float(m.group(1)) if m else 0.0

# Verdict: after the warm-up (first 20% of the run), the largest value of
# each series may exceed the first post-warm-up value by at most 5%. Fds are
# judged as non-socket fds per process plus sockets summed over the workers
# (client connections move between workers), with 2 fds of slack for the
# connections that come and go.
warm = secs * 0.2
post = [s for s in samples if s["t"] >= warm]
series = {}
def add(name, p):
    if p:
        for m_ in ("rss_kb", "rss_anon_kb", "threads"):
            series.setdefault(f"{name}.{m_}", []).append(p[m_])
        series.setdefault(f"{name}.files", []).append(p["fds"] - p["sockets"])
for s in post:
    add("master", s["master"])
    for i, w in enumerate(s["workers"]):
        add(f"worker{i}", w)
    series.setdefault("workers.sockets", []).append(sum(w["sockets"] for w in s["workers"]))
    add("double", s["double"])
    if s["double"]:
        series.setdefault("double.sockets", []).append(s["double"]["sockets"])
checks = {}
flat = True
for name, vals in sorted(series.items()):
    base = vals[0]
    slack = 2 if name.endswith((".files", ".sockets")) else 0
    informational = name.endswith(".rss_anon_kb")
    limit = base * 1.05 + slack
    growth = (max(vals) - base) / base * 100 if base else 0.0
    ok = max(vals) <= limit
    if not informational:
        flat &= ok
    checks[name] = {"first": base, "min": min(vals), "max": max(vals), "last": vals[-1],
                    "growth_pct": round(growth, 2), "flat": ok, "in_verdict": not informational}
restarts = len(worker_pids_seen) > 2
if restarts:
    flat = False
err_log = open(os.path.join(work, "logs", "error.log"), errors="replace").read().splitlines()
bad_log = [l for l in err_log if re.search(r"\[(alert|crit|emerg)\]", l)]
verdict = flat and non2xx == 0 and sock_errors == 0 and converged and not bad_log

print()
print(f"requests: {requests_total} ({rps:.0f}/s), non-2xx: {non2xx}, socket errors: {sock_errors}")
print(f"consul changes: {driver['changes']} ({driver['changes']/secs:.1f}/s; {driver['puts']} PUT, "
      f"{driver['deletes']} DELETE), failed: {driver['failed']}, driver max lateness {driver['late_ms_max']:.0f} ms")
print(f"converged after the last change: {converged}" + (f" ({conv_ms} ms)" if conv_ms is not None else ""))
print(f"worker pids seen: {sorted(worker_pids_seen)}" + (" (a worker was respawned!)" if restarts else ""))
print(f"error log: {len(err_log)} lines, {len(bad_log)} alert/crit/emerg")
print(f"series after warm-up ({warm:.0f}s), growth = (max - first) / first"
      " (rss_anon_kb is shown, not judged):")
for name, c in checks.items():
    print(f"  {name:19s} first {c['first']:>8} max {c['max']:>8} last {c['last']:>8}  "
          f"{c['growth_pct']:+6.2f}%  {'flat' if c['flat'] else 'GROWS'}"
          f"{'' if c['in_verdict'] else ' (info)'}")
print(f"verdict: {'FLAT' if flat else 'NOT FLAT'}; overall {'ok' if verdict else 'FAIL'}")

result = {
    "seconds": secs, "interval": interval, "change_ms": change_ms,
    "services": n_svc, "hosts_per_service": n_hosts, "warmup_seconds": warm,
    "samples": samples,
    "requests": {"total": requests_total, "per_second": rps, "non_2xx": non2xx,
                 "socket_errors": sock_errors},
    "driver": driver,
    "converged": converged, "converged_ms": conv_ms,
    "worker_pids": sorted(worker_pids_seen),
    "error_log_lines": len(err_log), "error_log_alerts": bad_log[:20],
    "checks": checks, "flat": flat, "ok": verdict,
}
with open(os.environ["SOAK_JSON"], "w") as f:
    json.dump(result, f, indent=1)
print(f"wrote {os.environ['SOAK_JSON']}")
sys.exit(0 if verdict else 1)
PY
