#!/usr/bin/env python3
"""make bench: ckv against its baselines, measured side by side in one run.

Starts the Consul double and several short-lived nginx instances (Debian's
nginx + lua module), runs the six measurements of bench/README.md, prints a
table with PASS/FAIL per target and writes bench/out/report.json.
Every process it starts is stopped on exit.
"""
import http.client
import json
import math
import os
import platform
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "bench", "out")
LIB_DIR = os.path.join(ROOT, "target", "release")
DOUBLE_BIN = os.path.join(LIB_DIR, "ckv-consul-double")
RUST_BENCH = os.path.join(ROOT, "target", "bench", "release", "ckv-bench")
DOUBLE_PORT = int(os.environ.get("CKV_BENCH_DOUBLE_PORT", "18500"))
DOUBLE_PORT2 = DOUBLE_PORT + 1
NGINX_PORT = int(os.environ.get("CKV_BENCH_NGINX_PORT", "18080"))
SERVER_URL = f"http://127.0.0.1:{DOUBLE_PORT}"
SERVER_URL2 = f"http://127.0.0.1:{DOUBLE_PORT2}"
GAP_MS = 60  # between changes: below Consul-watch rate limits (see README)
QUICK = os.environ.get("CKV_BENCH_QUICK") == "1"  # smaller, for trying the script
# APISIX's own consul_kv (3.8.0) with lua-resty-consul and lua-resty-http;
# see bench/README.md ("APISIX's real module"). Unset: those rows are skipped.
PEER_DIR = os.environ.get("APISIX_PEER_DIR", "")
PEER_FILES = ("apisix/discovery/consul_kv/init.lua", "resty/consul.lua", "resty/http.lua")
IMPLS = ("ours", "baseline", "peer")  # ckv's drop-in, the Lua re-implementation, APISIX's module

PROCS = []  # (name, Popen) to stop on exit
_K = [100000]


def next_k0(n):
    """A fresh range of n weights for /prop (unique over the run)."""
    k0 = _K[0]
    _K[0] += n + 10
    return k0


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------- processes

def stop_proc(p, sig=signal.SIGTERM, timeout=10):
    if p.poll() is not None:
        return
    try:
        os.killpg(p.pid, sig)
    except ProcessLookupError:
        return
    try:
        p.wait(timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait(5)


def cleanup(*_):
    while PROCS:
        _, p = PROCS.pop()
        stop_proc(p)


def cleanup_nginx():
    """Stops the nginx instances a failed part left (the double stays)."""
    for item in [x for x in PROCS if x[0].startswith("nginx-")]:
        PROCS.remove(item)
        stop_proc(item[1])


def on_signal(signum, _frame):
    cleanup()
    sys.exit(128 + signum)


def start_double():
    p = subprocess.Popen(
        [DOUBLE_BIN, "--listen", f"127.0.0.1:{DOUBLE_PORT}",
         "--listen", f"127.0.0.1:{DOUBLE_PORT2}", "--max-wait", "10m"],
        stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, start_new_session=True)
    PROCS.append(("double", p))
    line = p.stdout.readline().decode()
    if "listening on" not in line:
        raise SystemExit(f"consul double did not start: {line!r}")
    return p


def http_req(port, method, path, body=None, timeout=30, headers=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        data = r.read()
        return r.status, data
    finally:
        c.close()


def double(method, path, body=None, timeout=60):
    st, data = http_req(DOUBLE_PORT, method, path, body, timeout)
    if st >= 300:
        raise RuntimeError(f"double {method} {path}: {st} {data[:200]!r}")
    return data


def seed(prefix, services, per_service):
    """{prefix}/svc{i}/10.0.0.{j+1}:{8000+j} = {"weight":1}, one index."""
    kv = {}
    for i in range(services):
        for j in range(per_service):
            kv[f"{prefix}/svc{i}/10.0.0.{j + 1}:{8000 + j}"] = '{"weight":1}'
    double("PUT", "/_double/bulk", json.dumps(kv).encode(), timeout=120)
    return len(kv)


NGINX_CONF = """
{user}
worker_processes {workers};
daemon off;
master_process on;
error_log {dir}/logs/error.log {log_level};
pid {dir}/logs/nginx.pid;
load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    lua_package_path "{lua_path};/usr/share/lua/5.1/?.lua;;";
    lua_package_cpath "{lib}/?.so;/usr/lib/x86_64-linux-gnu/lua/5.1/?.so;;";
    lua_shared_dict ckvbench 16m;
    lua_shared_dict ckvbench_events 512m;
    lua_shared_dict worker-events 128m;
    init_by_lua_block {{
        require("ckvbench.run").init(require("cjson").decode([==[{conf}]==]))
    }}
    init_worker_by_lua_block {{ require("ckvbench.run").init_worker() }}
    server {{
        listen 127.0.0.1:{port} reuseport;
        keepalive_requests 1000000;
        location = /ready   {{ content_by_lua_block {{ require("ckvbench.run").ready() }} }}
        location = /roles   {{ content_by_lua_block {{ require("ckvbench.run").roles() }} }}
        location = /prop    {{ content_by_lua_block {{ require("ckvbench.run").prop() }} }}
        location = /req     {{ content_by_lua_block {{ require("ckvbench.run").req() }} }}
        location = /reqpath {{ content_by_lua_block {{ require("ckvbench.run").reqpath() }} }}
        location = /refresh {{ content_by_lua_block {{ require("ckvbench.run").refresh() }} }}
        location = /gc      {{ content_by_lua_block {{ require("ckvbench.run").gc() }} }}
        location = /touch   {{ content_by_lua_block {{ require("ckvbench.run").touch() }} }}
        location = /gapwin  {{ content_by_lua_block {{ require("ckvbench.run").gapwin() }} }}
        location = /gapstats {{ content_by_lua_block {{ require("ckvbench.run").gapstats() }} }}
        location = /peersync {{ content_by_lua_block {{ require("ckvbench.run").peersync() }} }}
    }}
}}
"""


def peer_missing():
    """Why APISIX's module cannot run (None when it can)."""
    if not PEER_DIR:
        return "skipped (APISIX_PEER_DIR unset)"
    for f in PEER_FILES:
        if not any(os.path.isfile(os.path.join(PEER_DIR, d, f)) for d in ("", "lib")):
            return f"skipped (APISIX_PEER_DIR has no {f})"
    return None


def lua_path(mode):
    bench_lua = f"{ROOT}/bench/lua/?.lua"
    if mode == "peer":
        # APISIX's module and its two libraries, then the bench's stubs of
        # apisix.core, apisix.events, ...; never the repository's lua/.
        d = os.path.abspath(PEER_DIR)
        return ";".join([bench_lua, f"{d}/?.lua", f"{d}/?/init.lua", f"{d}/lib/?.lua",
                         f"{ROOT}/bench/lua/peer/?.lua"])
    return ";".join([bench_lua, f"{ROOT}/lua/?.lua", f"{ROOT}/lua/?/init.lua",
                     f"{ROOT}/t/lib/?.lua", f"{ROOT}/t/lib/?/init.lua"])


class Nginx:
    def __init__(self, name, workers, conf, log_level="error"):
        self.name = name
        self.workers = workers
        self.dir = os.path.join(OUT, "nginx-" + name)
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(os.path.join(self.dir, "logs"))
        os.makedirs(os.path.join(self.dir, "conf"))
        text = NGINX_CONF.format(workers=workers, dir=self.dir, root=ROOT, lib=LIB_DIR,
                                 lua_path=lua_path(conf.get("mode")),
                                 conf=json.dumps(conf), port=NGINX_PORT, log_level=log_level,
                                 # As Test::Nginx: as root, workers stay root, so a
                                 # checkout in a private (0700) directory works.
                                 user="user root;" if os.geteuid() == 0 else "")
        with open(os.path.join(self.dir, "conf", "nginx.conf"), "w") as f:
            f.write(text)
        self.p = subprocess.Popen(
            ["nginx", "-p", self.dir, "-c", os.path.join(self.dir, "conf", "nginx.conf")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            start_new_session=True)
        PROCS.append(("nginx-" + name, self.p))
        deadline = time.time() + 10
        while time.time() < deadline:
            if self.p.poll() is not None:
                raise SystemExit(f"nginx {name} exited: {self.p.stderr.read().decode()}")
            try:
                http_req(NGINX_PORT, "GET", "/roles?workers=1", timeout=2)
                return
            except OSError:
                time.sleep(0.05)
        raise SystemExit(f"nginx {name} did not start")

    def get(self, path, timeout=600):
        st, data = http_req(NGINX_PORT, "GET", path, timeout=timeout)
        if st != 200:
            raise RuntimeError(f"nginx {self.name} GET {path}: {st} {data[:300]!r}")
        return json.loads(data)

    def wait_ready(self, services, timeout=120, server=None):
        """Every worker sees every service (asked until 4×workers answers in a row)."""
        q = f"/ready?services={services}" + (f"&server={server}" if server else "")
        deadline = time.time() + timeout
        streak = 0
        while time.time() < deadline:
            r = self.get(q)
            streak = streak + 1 if r["seen"] == services else 0
            if streak >= 4 * self.workers:
                return
            time.sleep(0.02 if streak else 0.2)
        raise RuntimeError(f"nginx {self.name}: services not visible in time")

    def each_worker(self, path, done, timeout):
        """GET path until every worker has answered with done(answer) true."""
        deadline = time.time() + timeout
        ok = set()
        while time.time() < deadline:
            r = self.get(path)
            if done(r):
                ok.add(r["worker"])
                if len(ok) == self.workers:
                    return
            else:
                time.sleep(0.1)
        raise RuntimeError(f"nginx {self.name}: {path}: not every worker answered in time")

    def wait_synced(self, services, timeout=180):
        """Every worker sees the first and last service and 62 between (the
        first sync is applied at once), without serving every service."""
        self.each_worker(f"/ready?services={services}&sample=1",
                         lambda r: r["seen"] == services, timeout)

    def touch_all(self, services, timeout=300):
        """Every worker has served every service once."""
        self.each_worker(f"/touch?services={services}", lambda r: r["seen"] == services, timeout)

    def worker_pids(self):
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(self.p.pid)],
                             capture_output=True, text=True).stdout.split()
        return [int(x) for x in out]

    def stop(self):
        stop_proc(self.p, signal.SIGQUIT, timeout=15)
        errs = []
        try:
            with open(os.path.join(self.dir, "logs", "error.log")) as f:
                errs = [l.strip() for l in f if re.search(r"\[(error|crit|alert|emerg)\]", l)
                        and "fetch nodes failed by" not in l
                        and "application is nil" not in l]
        except OSError:
            pass
        if errs:
            log(f"nginx {self.name}: {len(errs)} error line(s) in its error.log, first: {errs[0][:300]}")
        return errs


def ours_conf(prefix, services, poller, servers=None):
    return {
        "mode": "ours", "prefix": prefix, "server_url": SERVER_URL,
        "host": "127.0.0.1", "port": DOUBLE_PORT, "services": services, "poller": poller,
        "consul_kv": {"servers": servers or [SERVER_URL], "prefix": prefix,
                      "timeout": {"wait": 60}},
    }


# ---------------------------------------------------------------- 1 request path

def bench_request_path(report):
    log("1/6 request path")
    res = []
    iters = 500_000 if QUICK else 3_000_000
    for n in (10, 1000, 10000):
        prefix = f"rp{n}"
        seed(prefix, n, 3)
        ng = Nginx(f"reqpath-{n}", 1, ours_conf(prefix, n, False))
        try:
            ng.wait_ready(n)
            r = ng.get(f"/reqpath?services={n}&iters={iters}&rounds=5")
        finally:
            ng.stop()
        ns = r["ns"]
        row = {"services": n, "iters": iters, "ns_index_only": ns["index"],
               "ns_floor": ns["floor"], "ns_ours": ns["ours"], "ns_apisix": ns["apisix"],
               "ratio_ours_floor": ns["ours"] / ns["floor"],
               "ratio_apisix_floor": ns["apisix"] / ns["floor"],
               "same_table_identity": r["same_tables"], "jit": r["jit"]}
        log(f"   {n} services: floor {ns['floor']:.1f} ns, ours {ns['ours']:.1f} ns, "
            f"apisix {ns['apisix']:.1f} ns")
        res.append(row)
    report["request_path"] = res


# ---------------------------------------------------------------- implementations

def impl_conf(mode, prefix, services, name, poller=False, gap=False):
    """The ckvbench.run config of one implementation: "ours" (ckv's drop-in),
    "baseline" (the Lua re-implementation) or "peer" (APISIX's module)."""
    if mode == "ours":
        c = ours_conf(prefix, services, poller)
        # a known share group, so that its /dev/shm directory can be measured
        c["consul_kv"]["share"] = {"group": f"bench-{name}-{os.getpid()}"}
    else:
        c = {"mode": mode, "prefix": prefix, "server_url": SERVER_URL, "host": "127.0.0.1",
             "port": DOUBLE_PORT, "services": services, "poller": poller}
    if mode == "peer":
        # APISIX's schema defaults, as config-default.yaml leaves them
        c["consul_kv"] = {"servers": [SERVER_URL], "prefix": prefix, "weight": 1,
                          "timeout": {"connect": 2000, "read": 2000, "wait": 60},
                          "keepalive": True, "fetch_interval": 3}
        c["events_interval"] = 0.001
    c["gap"] = gap
    return c


def impls():
    """The implementations this run measures (APISIX's only with APISIX_PEER_DIR)."""
    only = [m for m in os.environ.get("CKV_BENCH_IMPLS", "").split(",") if m]
    return [m for m in IMPLS
            if (m != "peer" or not peer_missing()) and (not only or m in only)]


def failed(report, what, e):
    """Records one implementation's failed measurement; the part goes on."""
    import traceback
    traceback.print_exc()
    report.setdefault("errors", []).append(f"{what}: {e!r}")
    log(f"   {what} failed: {e!r}")
    cleanup_nginx()


def rss_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None


def mem_kb(pid):
    """Rss and Pss (smaps_rollup) and the anon/file/shmem parts (status), KiB."""
    out = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("Rss", "Pss", "Pss_Anon", "Pss_File", "Pss_Shmem"):
                    out[k.lower()] = int(v.split()[0])
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("RssAnon", "RssFile", "RssShmem"):
                    out[k.lower()] = int(v.split()[0])
    except OSError:
        pass
    return out


def du_kb(path):
    out = subprocess.run(["du", "-sk", path], capture_output=True, text=True).stdout
    return int(out.split()[0]) if out else None


def share_dirs(conf):
    """ckv's /dev/shm directories of this instance's share group."""
    group = conf.get("consul_kv", {}).get("share", {}).get("group")
    if not group:
        return []
    return [os.path.join("/dev/shm", d) for d in os.listdir("/dev/shm")
            if d.startswith("ckv.") and (d.endswith("." + group) or f".{group}+" in d)]


def pct(values, p):
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * p / 100
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def node_key(prefix, i, j=0):
    return f"{prefix}/svc{i}/10.0.0.{j + 1}:{8000 + j}"


# ---------------------------------------------------------------- 2 propagation + event-loop gap

def bench_propagation(report):
    log("2/6 propagation (1 node per service, 2 workers) and the event-loop gap at 10k services")
    res, gaps = [], {}
    changes = 40 if QUICK else 200
    gap_secs = 4 if QUICK else 8
    for services in (1000, 10000):
        prefix = f"is{services // 1000}k"
        for mode in impls():
            name = f"prop-{mode}-{services}"
            try:
                ng = Nginx(name, 2, impl_conf(mode, prefix, services, name, poller=True,
                                              gap=services == 10000))
            except (Exception, SystemExit) as e:
                failed(report, name, e)
                continue
            try:
                ng.wait_synced(services)
                ng.get(f"/prop?k0={next_k0(5)}&changes=5&services={services}&workers=2&per=1")
                # the Lua implementations take ~0.3 s a change at 10k: fewer
                n = changes if mode == "ours" or services < 10000 else changes // 2
                r = ng.get(f"/prop?k0={next_k0(n)}&changes={n}&services={services}"
                           f"&workers=2&per=1&gap_ms={GAP_MS}")
                lat = r["latencies_ms"]
                row = {"impl": mode, "nodes": services, "services": services, "changes": n,
                       "seen_by_all": len(lat), "missed": r["missed"],
                       "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99),
                       "max_ms": max(lat) if lat else None,
                       "per_worker_p50_ms": [pct(w, 50) for w in r["per_worker_ms"]],
                       "put_p50_ms": pct(r["put_ms"], 50)}
                if any(r.get("steps") or []):
                    row["steps_p50_ms"] = step_split(r["steps"])
                    log(f"   {mode} {services} steps p50 (ms): {row['steps_p50_ms']}")
                    row["change_split_ms"] = change_split(r["steps"])
                    log(f"   {mode} {services} split of a change (ms): {row['change_split_ms']}")
                log(f"   {mode} {services} services: p50 {row['p50_ms']:.2f} ms, "
                    f"p99 {row['p99_ms']:.2f} ms ({len(lat)}/{n} changes)")
                res.append(row)
                if services == 10000:
                    gaps[mode] = measure_gap(ng, prefix, services, gap_secs)
            except Exception as e:
                failed(report, name, e)
            finally:
                ng.stop()
    report["propagation"] = res
    report["event_loop_gap"] = gaps


def step_split(steps):
    """p50 of each of the leader's steps of a change (ckv's last_change_steps,
    unix us), from what the workers' stats said when they first served it."""
    pairs = [("body", "headers_us", "received_us"), ("parse", "received_us", "parsed_us"),
             ("apply", "parsed_us", "applied_us"), ("publish", "applied_us", "published_us")]
    out = {}
    leader = [s for w in steps for s in w if s.get("published_us")]
    for name, a, b in pairs:
        d = [(s[b] - s[a]) / 1000 for s in leader if s.get(a) and s.get(b)]
        if d:
            out[name] = round(pct(d, 50), 2)
    return out


CHANGE_PARTS = ("wire", "body", "parse", "apply", "publish", "follow", "poll")


def change_split(steps):
    """Where each change's time went, PUT returned -> last worker saw it (ms).
    wire: PUT returned -> the leader had the response's headers (the double's
    wake-up and the leader thread's); body, parse, apply, publish: the
    leader's steps; follow: published -> the last worker served it; poll:
    served -> seen by the 1 ms poller. p50 and p99 of each over all changes,
    and the mean of each over the slowest 2 % of changes (the p99 ones)."""
    by_change = {}
    for w in steps:
        for s in w:
            if s.get("change") is not None:
                by_change.setdefault(s["change"], []).append(s)
    rows = []
    for seen in by_change.values():
        leader = [s for s in seen if s.get("published_us")]
        if len(leader) != 1 or len(seen) < 2 or not all(s.get("seen_us") for s in seen):
            continue
        ld = leader[0]
        if any(s.get("seq") != ld.get("seq") for s in seen):
            continue
        served = max(s["served_us"] for s in seen)
        last_seen = max(s["seen_us"] for s in seen)
        marks = [ld["put_us"], ld["headers_us"], ld["received_us"], ld["parsed_us"],
                 ld["applied_us"], ld["published_us"], served, last_seen]
        if not all(marks):
            continue
        parts = {n: (b - a) / 1000 for n, a, b in zip(CHANGE_PARTS, marks, marks[1:])}
        parts["total"] = (last_seen - ld["put_us"]) / 1000
        rows.append(parts)
    if not rows:
        return {}
    out = {"changes": len(rows)}
    for n in CHANGE_PARTS + ("total",):
        vals = [r[n] for r in rows]
        out[n] = {"p50": round(pct(vals, 50), 2), "p99": round(pct(vals, 99), 2)}
    slow = sorted(rows, key=lambda r: r["total"])[-max(1, len(rows) // 50):]
    out["slowest_2pct_mean"] = {n: round(sum(r[n] for r in slow) / len(slow), 2)
                                for n in CHANGE_PARTS + ("total",)}
    return out


def measure_gap(ng, prefix, services, secs):
    """Lateness of a 1 ms ngx.sleep in each worker: a quiet window, then a
    window with a change every 100 ms."""
    ng.get("/gapwin?name=quiet")
    time.sleep(secs)
    churn = Churn(prefix, services, per=1)
    ng.get("/gapwin?name=churn")
    churn.start()
    time.sleep(secs)
    churn.stop_ev.set()
    churn.join()
    ng.get("/gapwin?name=")
    time.sleep(0.5)
    st = ng.get(f"/gapstats?windows=quiet,churn&workers={ng.workers}")
    per = []
    for w in range(ng.workers):
        q, c = st["quiet"][w], st["churn"][w]
        if not q or not c:
            continue
        per.append({"worker": w, "quiet": q, "churn": c,
                    "added_p99_ms": c["p99"] - q["p99"], "added_max_ms": c["max"] - q["max"]})
    worst = max(per, key=lambda x: x["added_p99_ms"]) if per else None
    g = {"services": services, "secs": secs, "changes": churn.count, "per_worker": per,
         "added_p99_ms": worst and worst["added_p99_ms"], "worst_worker": worst and worst["worker"]}
    log(f"   gap: {[(p['worker'], round(p['quiet']['p99'], 2), round(p['churn']['p99'], 2), round(p['churn']['max'], 1)) for p in per]}"
        f" (worker, quiet p99, churn p99, churn max; {churn.count} changes)")
    return g


# ---------------------------------------------------------------- 5 memory

def bench_memory(report):
    log("5/6 memory at 100k nodes (1 node per service), 2 and 4 workers")
    prefix, services = "is100k", 100000
    res = []
    for workers in (2, 4):
        for mode in impls():
            name = f"mem-{mode}-{workers}"
            conf = impl_conf(mode, prefix, services, name)
            try:
                ng = Nginx(name, workers, conf)
            except (Exception, SystemExit) as e:
                failed(report, name, e)
                continue
            try:
                ng.wait_synced(services, timeout=300)
                time.sleep(2)
                after_sync = mem_state(ng, conf)
                ng.touch_all(services)
                time.sleep(1)
                after_serving = mem_state(ng, conf)
                heap = {}
                ng.each_worker("/gc", lambda r: heap.setdefault(r["worker"], r) is r, 60)
                after_gc = mem_state(ng, conf)
                for w in after_gc["workers"]:
                    w["lua_heap_kb"] = heap.get(w["worker"])
            except Exception as e:
                failed(report, name, e)
                continue
            finally:
                ng.stop()
            row = {"impl": mode, "workers": workers, "nodes": services,
                   "after_sync": after_sync, "after_serving": after_serving,
                   "after_full_gc": after_gc}
            for when in ("after_sync", "after_serving", "after_full_gc"):
                ws = row[when]["workers"]
                log(f"   {mode} {workers} workers {when}: "
                    + ", ".join(f"w{w['worker']} {w['role']} rss {w['mem'].get('rss', 0) / 1024:.1f} "
                                f"pss {w['mem'].get('pss', 0) / 1024:.1f} MiB" for w in ws)
                    + (f"; shm {row[when]['shm_kb'] / 1024:.1f} MiB" if row[when]["shm_kb"] else ""))
            res.append(row)
    report["memory"] = res


def mem_state(ng, conf):
    roles = ng.get(f"/roles?workers={ng.workers}")
    workers = []
    for r in roles:
        role = r["role"]
        if conf["mode"] != "ours":
            role = "leader" if r["worker"] == 0 else "follower"
        workers.append({"worker": r["worker"], "pid": r["pid"], "role": role,
                        "mem": mem_kb(r["pid"])})
        keep = os.environ.get("CKV_BENCH_SMAPS_DIR")
        if keep:
            # each worker's full smaps, for finding what its RSS is made of
            os.makedirs(keep, exist_ok=True)
            with open(f"/proc/{r['pid']}/smaps") as src, \
                    open(os.path.join(keep, f"{ng.name}-w{r['worker']}-{role}-{len(os.listdir(keep))}"), "w") as dst:
                dst.write(src.read())
    dirs = share_dirs(conf)
    files = {}
    for d in dirs:
        for f in os.listdir(d):
            files[f] = os.path.getsize(os.path.join(d, f))
    shm = sum(du_kb(d) or 0 for d in dirs)
    return {"workers": workers, "master": mem_kb(ng.p.pid), "shm_kb": shm,
            "shm_files_bytes": files}


# ---------------------------------------------------------------- 3 full refresh

def bench_refresh(report, bodies):
    log("3/6 full refresh and one change (CPU)")
    args = [RUST_BENCH, SERVER_URL] + [f"{prefix}={path}" for prefix, _, path in bodies]
    out = subprocess.run(args, capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        raise RuntimeError(f"ckv-bench failed: {out.stderr}")
    rust = [json.loads(l) for l in out.stdout.splitlines() if l.strip()]
    ng = Nginx("refresh", 1, {"mode": "none", "prefix": "x", "server_url": SERVER_URL,
                              "host": "127.0.0.1", "port": DOUBLE_PORT, "poller": False})
    res = []
    try:
        for (prefix, per, path), r in zip(bodies, rust):
            n = r["keys"]
            reps = 5 if n >= 100000 else (15 if n >= 10000 else 51)
            if QUICK:
                reps = 3
            lua = ng.get(f"/refresh?file={path}&reps={reps}&prefix={prefix}&server={SERVER_URL}")
            c = r["cpu_ms"]
            ours_ms = r["first_full_sync_cpu_ms"]
            row = {"prefix": prefix, "nodes_per_service": per, "keys": n,
                   "services": r["services"], "bytes": r["bytes"],
                   "ours": r, "lua_baseline": lua,
                   "ours_cpu_ms": ours_ms,
                   "ours_one_change_cpu_ms": r["one_change_parse_apply_cpu_ms"],
                   "baseline_cpu_ms": lua["core"]["cpu_ms"],
                   "baseline_as_shipped_cpu_ms": lua["as_shipped"]["cpu_ms"],
                   "ratio_baseline_ours": lua["core"]["cpu_ms"] / ours_ms,
                   "ours_mb_s": r["bytes"] / 1e6 / (ours_ms / 1e3),
                   "baseline_mb_s": r["bytes"] / 1e6 / (lua["core"]["cpu_ms"] / 1e3)}
            log(f"   {n} keys ({per}/service): ours {ours_ms:.2f} ms CPU (one change "
                f"{row['ours_one_change_cpu_ms']:.2f}), lua {lua['core']['cpu_ms']:.2f} ms "
                f"(as shipped {lua['as_shipped']['cpu_ms']:.2f}), serde Value {c['serde_value']:.2f} ms")
            res.append(row)
    finally:
        ng.stop()
    if not peer_missing():
        for row in res:
            if row["nodes_per_service"] != 1:
                continue
            name = f"peersync-{row['keys']}"
            conf = impl_conf("peer", row["prefix"], row["services"], name)
            conf["consul_kv"].update({"keepalive": False, "fetch_interval": 3600})
            pg = Nginx(name, 1, conf)
            try:
                pg.wait_synced(row["services"])
                reps = 3 if QUICK else (5 if row["keys"] >= 100000 else 15)
                row["peer"] = pg.get(f"/peersync?reps={reps}")
            finally:
                pg.stop()
            log(f"   APISIX's connect(), {row['keys']} keys: {row['peer']['cpu_ms']:.2f} ms CPU "
                f"(of which fetch + decode by lua-resty-consul {row['peer']['fetch_cpu_ms']:.2f})")
    report["full_refresh"] = res


# ---------------------------------------------------------------- 4 request latency under churn

class Churn(threading.Thread):
    """PUTs a new weight for a random node of the prefix every `period` s."""

    def __init__(self, prefix, services, period=0.1, per=10):
        super().__init__(daemon=True)
        self.prefix, self.services, self.period, self.per = prefix, services, period, per
        self.stop_ev = threading.Event()
        self.count = 0

    def run(self):
        k = 5000
        nxt = time.monotonic()
        while not self.stop_ev.is_set():
            k += 1
            key = node_key(self.prefix, random.randrange(self.services), random.randrange(self.per))
            try:
                http_req(DOUBLE_PORT, "PUT", f"/v1/kv/{key}", f'{{"weight":{k}}}'.encode(), timeout=10)
                self.count += 1
            except OSError:
                pass
            nxt += self.period
            time.sleep(max(0.0, nxt - time.monotonic()))


def wrk(seconds, conns=16):
    # 16 connections: with reuseport the kernel spreads connections over the
    # workers by hash, and with 4 all of them land on one worker one run in
    # eight, which hides whatever happens in the other worker's event loop.
    out = subprocess.run(["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--latency",
                          f"http://127.0.0.1:{NGINX_PORT}/req"],
                         capture_output=True, text=True, timeout=seconds + 60).stdout

    def dur(s):
        m = re.match(r"([\d.]+)(us|ms|s)", s)
        v = float(m.group(1))
        return v / 1000 if m.group(2) == "us" else (v if m.group(2) == "ms" else v * 1000)

    r = {"raw": out}
    m = re.search(r"Latency\s+(\S+)\s+(\S+)\s+(\S+)", out)
    if m:
        r["mean_ms"], r["max_ms"] = dur(m.group(1)), dur(m.group(3))
    for p in ("50", "90", "99"):
        m = re.search(rf"\s{p}%\s+(\S+)", out)
        if m:
            r[f"p{p}_ms"] = dur(m.group(1))
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if m:
        r["rps"] = float(m.group(1))
    m = re.search(r"(\d+) requests in", out)
    if m:
        r["requests"] = int(m.group(1))
    return r


def bench_stall(report):
    log("4/6 request latency under churn (100k nodes, 1 per service, a change every 100 ms)")
    secs = 4 if QUICK else 10
    prefix, services = "is100k", 100000
    res = {}
    for mode in impls():
        name = f"stall-{mode}"
        try:
            ng = Nginx(name, 2, impl_conf(mode, prefix, services, name))
        except (Exception, SystemExit) as e:
            failed(report, name, e)
            continue
        try:
            ng.wait_synced(services, timeout=300)
            time.sleep(1)
            quiet = wrk(secs)
            churn = Churn(prefix, services, per=1)
            churn.start()
            time.sleep(1)
            busy = wrk(secs)
            churn.stop_ev.set()
            churn.join()
            busy["changes"] = churn.count
            time.sleep(1)
            quiet2 = wrk(secs)
        except Exception as e:
            failed(report, name, e)
            continue
        finally:
            errs = ng.stop()
        res[mode] = {"no_churn": quiet, "churn": busy, "no_churn_after": quiet2,
                     "error_lines": len(errs)}
        log(f"   {mode}: no churn p99 {quiet.get('p99_ms')} ms max {quiet.get('max_ms')} ms; "
            f"churn p99 {busy.get('p99_ms')} ms max {busy.get('max_ms')} ms "
            f"({churn.count} changes); after p99 {quiet2.get('p99_ms')} ms")
    report["stall"] = res


# ---------------------------------------------------------------- 6 Consul load

def bench_consul_load(report):
    log("6/6 Consul load")
    prefix, services = "ld", 10
    seed(prefix, services, 10)
    changes = 20
    res = []
    for workers, servers in ((1, [SERVER_URL]), (2, [SERVER_URL]), (8, [SERVER_URL]),
                             (8, [SERVER_URL, SERVER_URL2])):
        ng = Nginx(f"load-{workers}-{len(servers)}", workers,
                   ours_conf(prefix, services, True, servers))
        try:
            ng.wait_ready(services)
            if len(servers) > 1:
                ng.wait_ready(services, server=SERVER_URL2)
            ng.get(f"/prop?k0={next_k0(3)}&changes=3&services={services}&workers={workers}")
            time.sleep(0.3)
            double("POST", "/_double/stats/reset")
            r = ng.get(f"/prop?k0={next_k0(changes)}&changes={changes}&services={services}&workers={workers}")
            time.sleep(0.3)
            st = json.loads(double("GET", "/_double/stats"))
        finally:
            ng.stop()
        row = {"workers": workers, "servers": len(servers), "changes": changes,
               "seen_by_all": len(r["latencies_ms"]),
               "long_polls": st["blocking_in_flight"],
               "open_connections": st["open_connections"] - 1,  # minus the stats call
               "kv_gets": st["kv_gets_total"],
               "gets_per_change": st["kv_gets_total"] / changes,
               "gets_per_change_per_server": st["kv_gets_total"] / changes / len(servers),
               "blocking_per_path": st.get("blocking_per_path")}
        log(f"   {workers} workers, {len(servers)} server(s): {row['long_polls']} long polls, "
            f"{row['open_connections']} connections, {row['gets_per_change']:.2f} GETs/change")
        res.append(row)
    report["consul_load"] = res


# ---------------------------------------------------------------- report

def verdict(ok):
    return "PASS" if ok else "FAIL"


IMPL_TITLE = {"ours": "ours", "baseline": "lua", "peer": "apisix"}
MIB = 1024.0


def mem_rows(rep, workers, when):
    """{impl: (leader worker, worst follower)} of the memory part."""
    out = {}
    for r in rep.get("memory", []):
        if r["workers"] != workers:
            continue
        ws = r[when]["workers"]
        leaders = [w for w in ws if w["role"] == "leader"]
        followers = [w for w in ws if w["role"] != "leader"]
        lead = leaders[0] if leaders else None
        fol = max(followers, key=lambda w: w["mem"].get("rss", 0)) if followers else None
        out[r["impl"]] = (lead, fol, r[when])
    return out


def fmt_mem(w):
    if not w:
        return "-"
    return f"{w['mem'].get('rss', 0) / MIB:.1f} ({w['mem'].get('pss', 0) / MIB:.1f})"


def quiet_ref(s):
    """The quiet reference of a wrk run: the mean of the runs before and after."""
    q, q2 = dict(s["no_churn"]), s["no_churn_after"]
    for f in ("p99_ms", "max_ms", "rps"):
        if f in q and f in q2:
            q[f] = (q[f] + q2[f]) / 2
    return q


def issue_rows(rep):
    """The table of issue 14: (figure, {impl: text}, target text, ok or None)."""
    rows = []
    skipped = rep.get("peer", {}).get("skipped")
    # after serving: how the old part 5 measured the issue's figures (its
    # readiness check called nodes() of every service in every worker)
    mem = mem_rows(rep, 2, "after_serving")
    for idx, label, limit in ((0, "RSS (PSS) at 100k nodes, leader worker, MiB", 60),
                              (1, "RSS (PSS) at 100k nodes, follower worker, MiB", 25)):
        if not mem:
            continue
        vals = {m: fmt_mem(v[idx]) for m, v in mem.items()}
        ours = mem.get("ours", (None, None))[idx]
        ok = ours is not None and ours["mem"].get("rss", 1e12) / MIB <= limit
        rows.append((label, vals, f"<= {limit} MiB", ok))
    fr = [r for r in rep.get("full_refresh", []) if r["nodes_per_service"] == 1 and r["keys"] == 100000]
    if fr:
        r = fr[0]
        vals = {"ours": f"{r['ours_cpu_ms']:.1f}", "baseline": f"{r['baseline_cpu_ms']:.1f}"}
        if "peer" in r:
            vals["peer"] = f"{r['peer']['cpu_ms']:.1f}"
        ok = r["ours_cpu_ms"] <= 60 and r["ratio_baseline_ours"] >= 5
        rows.append(("first full sync, 100k keys, CPU ms (lua/ours "
                     f"{r['ratio_baseline_ours']:.1f}x)", vals, "<= 60 ms, >= 5x", ok))
        vals = {"ours": f"{r['ours_one_change_cpu_ms']:.1f}",
                "baseline": f"{r['baseline_cpu_ms']:.1f}*"}
        if "peer" in r:
            vals["peer"] = f"{r['peer']['cpu_ms']:.1f}*"
        c = r["ours"]["cpu_ms"]
        rows.append((f"one change at 100k keys: parse + apply, CPU ms ({c['parse_response']:.1f} + "
                     f"{c['apply_warm_one_change']:.1f})", vals, "<= 12 ms",
                     r["ours_one_change_cpu_ms"] <= 12))
    for services, limit in ((1000, 2.5), (10000, 8)):
        ps = {r["impl"]: r for r in rep.get("propagation", []) if r["services"] == services}
        if not ps:
            continue
        vals = {m: (f"{r['p99_ms']:.2f}" if r["p99_ms"] is not None else "-")
                + (f" ({r['missed']} missed)" if r["missed"] else "") for m, r in ps.items()}
        o = ps.get("ours")
        ok = o is not None and o["p99_ms"] is not None and o["p99_ms"] <= limit and not o["missed"]
        rows.append((f"propagation p99, {services // 1000}k services, ms", vals, f"<= {limit} ms", ok))
    g = rep.get("event_loop_gap", {})
    if g:
        vals = {m: (f"{v['added_p99_ms']:+.2f}" if v["added_p99_ms"] is not None else "-")
                for m, v in g.items()}
        o = g.get("ours")
        ok = o is not None and o["added_p99_ms"] is not None and o["added_p99_ms"] <= 0.5
        rows.append(("event-loop gap added while changes apply, 10k services, p99 ms", vals,
                     "<= +0.5 ms", ok))
    st = rep.get("stall", {})
    if st:
        vals = {}
        for m, s in st.items():
            q = quiet_ref(s)
            vals[m] = f"{s['churn'].get('p99_ms', float('nan')):.2f} / {q.get('p99_ms', float('nan')):.2f}"
        o = st.get("ours")
        ok = None
        if o:
            q = quiet_ref(o)
            ok = o["churn"].get("p99_ms") is not None and o["churn"]["p99_ms"] <= 2 * q["p99_ms"]
        rows.append(("request p99 under churn / quiet, 100k nodes (wrk), ms", vals,
                     "<= 2x quiet", ok))
    return rows, skipped


def build_table(rep):
    lines, targets = [], []

    def add(line):
        lines.append(line)

    rows, skipped = issue_rows(rep)
    add("== issue 14: targets (2 workers, 1 node per service; same run) ==")
    add("   ours = ckv's drop-in; lua = the Lua re-implementation (bench/lua/ckvbench/baseline.lua);")
    add("   apisix = APISIX 3.8.0's own consul_kv (APISIX_PEER_DIR) with the bench's stubs"
        + (f": {skipped}" if skipped else ""))
    add(f"{'figure':<72} {'ours':>14} {'lua':>14} {'apisix':>14}  {'target':<16} verdict")
    for label, vals, target, ok in rows:
        peer = vals.get("peer", "skipped" if skipped else "-")
        add(f"{label:<72} {vals.get('ours', '-'):>14} {vals.get('baseline', '-'):>14} {peer:>14}  "
            f"{target:<16} {verdict(ok) if ok is not None else '-'}")
        if ok is not None:
            targets.append((f"issue 14: {label}: {target}", ok))
    add("   RSS/PSS rows: after every worker served every service once, as the issue's figures were")
    add("   taken; right after the first sync, and with 4 workers, in part 5.")
    add("   * the Lua code has no incremental path: one change costs a full refresh.")
    add("")

    add("== 1. request path: ns per nodes() call (1 worker, JIT on, random names, 3 nodes/service) ==")
    add(f"{'services':>9} {'floor':>8} {'ours':>8} {'apisix':>8} {'ours/floor':>11} {'apisix/floor':>13}  target ours<=2x floor")
    for r in rep.get("request_path", []):
        ok = r["ratio_ours_floor"] <= 2.0
        targets.append((f"request path {r['services']} services within 2x table lookup", ok))
        add(f"{r['services']:>9} {r['ns_floor']:>8.1f} {r['ns_ours']:>8.1f} {r['ns_apisix']:>8.1f} "
            f"{r['ratio_ours_floor']:>11.2f} {r['ratio_apisix_floor']:>13.2f}  {verdict(ok)}")
    add("")
    add(f"== 2. propagation: PUT returned -> both workers' nodes() show it (ms), 2 workers, "
        f"1 node per service, changes {GAP_MS} ms apart ==")
    add(f"{'services':>9} {'impl':>7} {'changes':>8} {'p50':>8} {'p99':>8} {'max':>8}")
    for r in rep.get("propagation", []):
        add(f"{r['services']:>9} {IMPL_TITLE[r['impl']]:>7} {r['seen_by_all']:>4}/{r['changes']:<3} "
            + " ".join(f"{r[k]:>8.2f}" if r[k] is not None else f"{'-':>8}"
                       for k in ("p50_ms", "p99_ms", "max_ms")))
    if skipped:
        add(f"   apisix: {skipped}")
    add("")
    g = rep.get("event_loop_gap", {})
    if g:
        any_g = next(iter(g.values()))
        add(f"== 2b. event-loop gap: how late a 1 ms ngx.sleep wakes (ms), 10k services, 2 workers, "
            f"quiet {any_g['secs']} s then a change every 100 ms for {any_g['secs']} s ==")
        add(f"{'impl':>7} {'worker':>7} {'quiet p99':>10} {'quiet max':>10} {'churn p99':>10} "
            f"{'churn max':>10} {'added p99':>10} {'changes':>8}")
        for m, v in g.items():
            for w in v["per_worker"]:
                add(f"{IMPL_TITLE[m]:>7} {w['worker']:>7} {w['quiet']['p99']:>10.2f} {w['quiet']['max']:>10.2f} "
                    f"{w['churn']['p99']:>10.2f} {w['churn']['max']:>10.2f} {w['added_p99_ms']:>+10.2f} "
                    f"{v['changes']:>8}")
        add("   the figure is the worst worker's added p99 (churn p99 - quiet p99)")
        if skipped:
            add(f"   apisix: {skipped}")
        add("")
    add("== 3. full refresh and one change: CPU ms for one full-prefix response ==")
    add(f"{'keys':>7} {'/svc':>4} {'MB':>6} {'first sync':>10} {'one chg':>8} {'lua':>9} {'lua+logs':>9} "
        f"{'apisix':>8} {'lua/ours':>9} {'ours MB/s':>10} {'serde Value':>12} {'IgnoredAny':>11}")
    for r in rep.get("full_refresh", []):
        mbps = r["ours"]["mb_per_s"]
        peer = f"{r['peer']['cpu_ms']:>8.2f}" if "peer" in r else f"{'-':>8}"
        add(f"{r['keys']:>7} {r['nodes_per_service']:>4} {r['bytes'] / 1e6:>6.2f} {r['ours_cpu_ms']:>10.2f} "
            f"{r['ours_one_change_cpu_ms']:>8.2f} {r['baseline_cpu_ms']:>9.2f} "
            f"{r['baseline_as_shipped_cpu_ms']:>9.2f} {peer} {r['ratio_baseline_ours']:>9.1f} "
            f"{r['ours_mb_s']:>10.0f} {mbps['serde_value']:>8.0f}MB/s {mbps['serde_ignored']:>7.0f}MB/s")
    add("  first sync = leader parse + apply (cold) + snapshot + encode, plus one follower's map +")
    add("  validation of the file (what a follower does; a decode into the heap shown beside it);")
    add("  one change = parse of the whole response + apply (warm, one value changed). Steps (CPU ms):")
    for r in rep.get("full_refresh", []):
        c = r["ours"]["cpu_ms"]
        add(f"  {r['keys']:>7} keys, {r['nodes_per_service']}/svc: parse {c['parse_response']:.2f}, "
            f"apply cold {c['apply_cold']:.2f} (warm, 1 change {c['apply_warm_one_change']:.2f}), "
            f"snapshot+encode {c['render_snapshot_encode']:.2f}, follower map+validate "
            f"{c.get('follower_map_open', float('nan')):.2f} (heap decode {c['follower_decode_cold']:.2f}); "
            f"lua: cjson.decode "
            f"{r['lua_baseline']['core']['cjson_decode_cpu_ms']:.2f}, broadcast enc "
            f"{r['lua_baseline']['broadcast']['encode_cpu_ms']:.2f} / dec "
            f"{r['lua_baseline']['broadcast']['decode_cpu_ms']:.2f}")
    add("  heap (counting allocator, MiB): model after a cold apply / + snapshot / peak during apply+encode"
        " / one follower's decoded copy (peak)")
    for r in rep.get("full_refresh", []):
        h = r["ours"]["heap_bytes"]
        add(f"  {r['keys']:>7} keys, {r['nodes_per_service']}/svc: {h['model_after_cold_apply'] / 2**20:.1f} / "
            f"{h['model_and_snapshot_after_cold_apply'] / 2**20:.1f} / "
            f"{h['peak_during_cold_apply_and_encode'] / 2**20:.1f} / "
            f"{h['follower_decoded_snapshot'] / 2**20:.1f} ({h['follower_decode_peak'] / 2**20:.1f}); "
            f"response {h['body'] / 2**20:.1f}")
    peers = [r for r in rep.get("full_refresh", []) if "peer" in r]
    if skipped:
        add(f"  apisix: {skipped}")
    if peers:
        add("  apisix = CPU of APISIX's connect() in its nginx worker for one full response: fetch and")
        add("  decode by lua-resty-consul, eager log encodes, update_application, events post:")
        for r in peers:
            add(f"  {r['keys']:>7} keys: {r['peer']['cpu_ms']:.2f} (fetch + decode alone "
                f"{r['peer']['fetch_cpu_ms']:.2f})")
    add("")
    add("== 4. request latency under churn: wrk -t1 -c16 through nginx (ms), 2 workers, 100k nodes "
        "(1/service), change every 100 ms ==")
    add("   (quiet = mean of the runs before and after the churn)")
    add(f"{'':>7} {'quiet p99':>10} {'quiet max':>10} {'churn p99':>10} {'churn max':>10} {'changes':>8} "
        f"{'rps q/c':>15}  target p99 churn<=2x quiet")
    for m, s in rep.get("stall", {}).items():
        q, c = quiet_ref(s), s["churn"]
        add(f"{IMPL_TITLE[m]:>7} {q.get('p99_ms', float('nan')):>10.2f} {q.get('max_ms', float('nan')):>10.2f} "
            f"{c.get('p99_ms', float('nan')):>10.2f} {c.get('max_ms', float('nan')):>10.2f} "
            f"{c.get('changes', 0):>8} {q.get('rps', 0):>7.0f}/{c.get('rps', 0):<7.0f}")
    if skipped:
        add(f"   apisix: {skipped}")
    add("")
    add("== 5. memory at 100k nodes (1 per service): RSS / PSS / of which shared memory (PSS), MiB ==")
    for r in rep.get("memory", []):
        for when in ("after_sync", "after_serving", "after_full_gc"):
            st = r[when]
            ws = "; ".join(f"w{w['worker']} {w['role'][:4]} {w['mem'].get('rss', 0) / MIB:.1f} / "
                           f"{w['mem'].get('pss', 0) / MIB:.1f} / {w['mem'].get('pss_shmem', 0) / MIB:.1f}"
                           for w in st["workers"])
            shm = f"; /dev/shm {st['shm_kb'] / MIB:.1f}" if st["shm_kb"] else ""
            add(f"  {IMPL_TITLE[r['impl']]:>6} {r['workers']}w {when.replace('_', ' '):<13}: {ws}{shm}")
        heaps = [w.get("lua_heap_kb") for w in r["after_full_gc"]["workers"]]
        if all(heaps):
            add(f"  {'':>6}    Lua heap before/after the full GC: "
                + "; ".join(f"w{h['worker']} {h['before_kb'] / MIB:.1f}/{h['after_kb'] / MIB:.1f}" for h in heaps))
    if skipped:
        add(f"   apisix: {skipped}")
    add("   'after full gc': after collectgarbage() in every worker, so that Lua garbage not yet")
    add("   collected (GC timing) is told apart from what is live.")
    add("   PSS divides shared pages (the bench's shared dicts, ckv's mapped snapshot) among the")
    add("   processes mapping them; /dev/shm is ckv's share directory (du).")
    add("")
    add("== 6. Consul load: what the double sees from one nginx ==")
    add(f"{'workers':>8} {'servers':>8} {'long polls':>11} {'connections':>12} {'GETs/change':>12}  target long polls = servers")
    for r in rep.get("consul_load", []):
        ok = r["long_polls"] == r["servers"]
        targets.append((f"watches per instance = servers ({r['workers']} workers, {r['servers']} servers)", ok))
        add(f"{r['workers']:>8} {r['servers']:>8} {r['long_polls']:>11} {r['open_connections']:>12} "
            f"{r['gets_per_change']:>12.2f}  {verdict(ok)}")
    add("")
    add("== targets ==")
    for name, ok in targets:
        add(f"  {verdict(ok)}  {name}")
    return drop_unmeasured(lines, rep), targets


SECTION_DATA = {"== 1.": "request_path", "== 2.": "propagation", "== 3.": "full_refresh",
                "== 4.": "stall", "== 5.": "memory", "== 6.": "consul_load"}


def drop_unmeasured(lines, rep):
    """Leaves out the sections of parts this run did not measure (CKV_BENCH_ONLY)."""
    out, block = [], []
    for line in lines + [""]:
        block.append(line)
        if line == "":
            key = next((v for k, v in SECTION_DATA.items() if block[0].startswith(k)), None)
            if key is None or rep.get(key):
                out.extend(block)
            block = []
    return out[:-1]


def loadavg():
    with open("/proc/loadavg") as f:
        return f.read().split()[:3]


def machine():
    model = ""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    nginx_v = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip()
    return {"nproc": os.cpu_count(), "cpu": model, "kernel": platform.release(), "nginx": nginx_v}


def missing_builds():
    """What bench/run.sh (make bench) builds and this script runs."""
    wanted = [os.path.join(LIB_DIR, "libckv.so"), DOUBLE_BIN, RUST_BENCH]
    return [os.path.relpath(p, ROOT) for p in wanted if not os.path.isfile(p)]


def main():
    missing = missing_builds()
    if missing:
        raise SystemExit(f"bench.py: not built yet: {', '.join(missing)}; `make bench` "
                         "(or `bash bench/run.sh`) builds what this script runs")
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    os.makedirs(OUT, exist_ok=True)
    t_start = time.time()
    report = {"machine": machine(), "quick": QUICK, "loadavg_start": loadavg(),
              "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    try:
        start_double()
        log("seeding the prefixes: 1k, 10k, 100k nodes, 1 per service (issue 14's shape) "
            "and 10 per service")
        bodies = []
        for per in (1, 10):
            for n in (1000, 10000, 100000):
                # no prefix is another's prefix (Consul's ?recurse matches
                # "is1k" against "is1k/..." only, never "is10k/...")
                prefix = ("is" if per == 1 else "pg") + f"{n // 1000}k"
                seed(prefix, n // per, per)
                path = os.path.join(OUT, f"body_{prefix}.json")
                with open(path, "wb") as f:
                    f.write(double("GET", f"/v1/kv/{prefix}?recurse"))
                bodies.append((prefix, per, path))
        report["peer"] = {"dir": PEER_DIR or None, "skipped": peer_missing()}
        only = os.environ.get("CKV_BENCH_ONLY", "")
        parts = [("1", bench_request_path), ("2", bench_propagation),
                 ("3", lambda r: bench_refresh(r, bodies)), ("4", bench_stall),
                 ("5", bench_memory), ("6", bench_consul_load)]
        for key, fn in parts:
            if only and key not in only.split(","):
                continue
            try:
                fn(report)
            except Exception as e:  # one part failing must not lose the others' figures
                import traceback
                traceback.print_exc()
                report.setdefault("errors", []).append(f"part {key}: {e!r}")
                log(f"part {key} failed: {e!r}")
                cleanup_nginx()
    finally:
        cleanup()
    report["wall_s"] = time.time() - t_start
    report["loadavg_end"] = loadavg()
    lines, targets = build_table(report)
    lines += [f"ERROR: {e}" for e in report.get("errors", [])]
    report["table"] = lines
    report["targets"] = [{"target": n, "pass": ok} for n, ok in targets]
    with open(os.path.join(OUT, "report.json"), "w") as f:
        json.dump(report, f, indent=1)
    with open(os.path.join(OUT, "report.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print()
    m = report["machine"]
    print(f"machine: {m['nproc']} CPUs, {m['cpu']}, kernel {m['kernel']}, {m['nginx']}; "
          f"load average at start {' '.join(report['loadavg_start'])}, at end {' '.join(report['loadavg_end'])}")
    print("\n".join(lines))
    print(f"\nwall time {report['wall_s']:.0f} s; report: bench/out/report.json")


if __name__ == "__main__":
    main()
