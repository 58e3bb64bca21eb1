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
    lua_package_path "{root}/bench/lua/?.lua;{root}/lua/?.lua;{root}/lua/?/init.lua;{root}/t/lib/?.lua;{root}/t/lib/?/init.lua;/usr/share/lua/5.1/?.lua;;";
    lua_package_cpath "{lib}/?.so;/usr/lib/x86_64-linux-gnu/lua/5.1/?.so;;";
    lua_shared_dict ckvbench 16m;
    lua_shared_dict ckvbench_events 512m;
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
    }}
}}
"""


class Nginx:
    def __init__(self, name, workers, conf, log_level="error"):
        self.name = name
        self.workers = workers
        self.dir = os.path.join(OUT, "nginx-" + name)
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(os.path.join(self.dir, "logs"))
        os.makedirs(os.path.join(self.dir, "conf"))
        text = NGINX_CONF.format(workers=workers, dir=self.dir, root=ROOT, lib=LIB_DIR,
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
                        and "fetch nodes failed by" not in l]
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


def rss_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None


def pct(values, p):
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * p / 100
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


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


# ---------------------------------------------------------------- 2 propagation + 5 memory

def shm_dirs():
    return [os.path.join("/dev/shm", d) for d in os.listdir("/dev/shm") if d.startswith("ckv.")]


def du_kb(path):
    out = subprocess.run(["du", "-sk", path], capture_output=True, text=True).stdout
    return int(out.split()[0]) if out else None


def bench_propagation(report):
    log("2/6 propagation (and 5/6 memory at 100k nodes)")
    res = []
    sizes = (10, 1000, 10000, 100000)
    changes = 40 if QUICK else 200
    for nodes in sizes:
        services = max(1, nodes // 10)
        prefix = f"pg{nodes}"
        # (seeded in main(), bodies saved for the full-refresh part)
        before = set(shm_dirs())
        ng = Nginx(f"prop-{nodes}", 2, ours_conf(prefix, services, True))
        try:
            ng.wait_ready(services, timeout=180)
            ng.get(f"/prop?k0={next_k0(5)}&changes=5&services={services}&workers=2")  # warm-up
            t0 = time.time()
            r = ng.get(f"/prop?k0={next_k0(changes)}&changes={changes}&services={services}&workers=2&gap_ms={GAP_MS}")
            wall = time.time() - t0
            lat = r["latencies_ms"]
            row = {"nodes": nodes, "services": services, "changes": changes,
                   "seen_by_all": len(lat), "missed": r["missed"],
                   "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99), "max_ms": max(lat) if lat else None,
                   "min_ms": min(lat) if lat else None,
                   "per_worker_p50_ms": [pct(w, 50) for w in r["per_worker_ms"]],
                   "put_p50_ms": pct(r["put_ms"], 50), "wall_s": wall}
            log(f"   {nodes} nodes: p50 {row['p50_ms']:.2f} ms, p99 {row['p99_ms']:.2f} ms, "
                f"max {row['max_ms']:.2f} ms ({len(lat)}/{changes} changes)")
            res.append(row)
            if nodes == 1000:
                # Changes back to back (5 ms apart): shows the watcher's
                # request rate limit (20/s, burst 8) at work.
                time.sleep(1)
                rb = ng.get(f"/prop?k0={next_k0(40 if QUICK else 100)}&changes={40 if QUICK else 100}&services={services}&workers=2&gap_ms=5")
                lb = rb["latencies_ms"]
                report["propagation_burst"] = {
                    "nodes": nodes, "changes": len(lb), "gap_ms": 5,
                    "p50_ms": pct(lb, 50), "p99_ms": pct(lb, 99), "max_ms": max(lb) if lb else None,
                    "first10_ms": lb[:10]}
                log(f"   {nodes} nodes, changes 5 ms apart: p50 {pct(lb, 50):.2f} ms, p99 {pct(lb, 99):.2f} ms")
            if nodes == 100000:
                report["memory"] = memory_ours(ng, before)
        finally:
            ng.stop()
    report["propagation"] = res


def memory_ours(ng, shm_before):
    roles = ng.get("/roles?workers=2")
    workers = []
    for r in roles:
        workers.append({"worker": r["worker"], "pid": r["pid"], "role": r["role"],
                        "rss_kb": rss_kb(r["pid"])})
    new_dirs = [d for d in shm_dirs() if d not in shm_before]
    shm = {d: du_kb(d) for d in new_dirs}
    files = {}
    for d in new_dirs:
        for f in os.listdir(d):
            files[f] = os.path.getsize(os.path.join(d, f))
    m = {"nodes": 100000, "ours_workers": workers, "master_rss_kb": rss_kb(ng.p.pid),
         "shm_du_kb": shm, "shm_files_bytes": files}
    log(f"   memory: {workers}, shm {shm}")
    return m


# ---------------------------------------------------------------- 3 full refresh

def bench_refresh(report, bodies):
    log("3/6 full refresh")
    args = [RUST_BENCH, SERVER_URL] + [f"pg{n}={path}" for n, path in bodies]
    out = subprocess.run(args, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"ckv-bench failed: {out.stderr}")
    rust = [json.loads(l) for l in out.stdout.splitlines() if l.strip()]
    ng = Nginx("refresh", 1, {"mode": "none", "prefix": "x", "server_url": SERVER_URL,
                              "host": "127.0.0.1", "port": DOUBLE_PORT, "poller": False})
    res = []
    try:
        for (n, path), r in zip(bodies, rust):
            reps = 5 if n >= 100000 else (15 if n >= 10000 else 51)
            if QUICK:
                reps = 3
            lua = ng.get(f"/refresh?file={path}&reps={reps}&prefix=pg{n}&server={SERVER_URL}")
            c = r["cpu_ms"]
            ours_ms = c["leader_total_cold"] + c["follower_decode_cold"]
            row = {"keys": r["keys"], "services": r["services"], "bytes": r["bytes"],
                   "ours": r, "lua_baseline": lua,
                   "ours_cpu_ms": ours_ms,
                   "baseline_cpu_ms": lua["core"]["cpu_ms"],
                   "baseline_as_shipped_cpu_ms": lua["as_shipped"]["cpu_ms"],
                   "ratio_baseline_ours": lua["core"]["cpu_ms"] / ours_ms,
                   "ours_mb_s": r["bytes"] / 1e6 / (ours_ms / 1e3),
                   "baseline_mb_s": r["bytes"] / 1e6 / (lua["core"]["cpu_ms"] / 1e3)}
            log(f"   {r['keys']} keys: ours {ours_ms:.2f} ms CPU, lua {lua['core']['cpu_ms']:.2f} ms "
                f"(as shipped {lua['as_shipped']['cpu_ms']:.2f}), serde Value {c['serde_value']:.2f} ms")
            res.append(row)
    finally:
        ng.stop()
    report["full_refresh"] = res


# ---------------------------------------------------------------- 4 event-loop stall

class Churn(threading.Thread):
    """PUTs a new weight for a random node of the prefix every `period` s."""

    def __init__(self, prefix, services, period=0.1):
        super().__init__(daemon=True)
        self.prefix, self.services, self.period = prefix, services, period
        self.stop_ev = threading.Event()
        self.count = 0

    def run(self):
        k = 5000
        nxt = time.monotonic()
        while not self.stop_ev.is_set():
            k += 1
            i, j = random.randrange(self.services), random.randrange(10)
            key = f"{self.prefix}/svc{i}/10.0.0.{j + 1}:{8000 + j}"
            try:
                http_req(DOUBLE_PORT, "PUT", f"/v1/kv/{key}", f'{{"weight":{k}}}'.encode(), timeout=10)
                self.count += 1
            except OSError:
                pass
            nxt += self.period
            time.sleep(max(0.0, nxt - time.monotonic()))


def wrk(seconds, conns=4):
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
    log("4/6 event-loop stall (100k nodes, a change every 100 ms)")
    secs = 4 if QUICK else 10
    prefix, services = "pg100000", 10000
    res = {}
    for mode in ("ours", "baseline"):
        if mode == "ours":
            conf = ours_conf(prefix, services, False)
        else:
            conf = {"mode": "baseline", "prefix": prefix, "server_url": SERVER_URL,
                    "host": "127.0.0.1", "port": DOUBLE_PORT, "services": services,
                    "poller": False}
        ng = Nginx(f"stall-{mode}", 2, conf)
        try:
            ng.wait_ready(services, timeout=180)
            time.sleep(1)
            pids = ng.worker_pids()
            mem = {str(p): rss_kb(p) for p in pids}
            quiet = wrk(secs)
            churn = Churn(prefix, services)
            churn.start()
            time.sleep(1)
            busy = wrk(secs)
            churn.stop_ev.set()
            churn.join()
            busy["changes"] = churn.count
            time.sleep(1)
            quiet2 = wrk(secs)
        finally:
            errs = ng.stop()
        res[mode] = {"no_churn": quiet, "churn": busy, "no_churn_after": quiet2,
                     "worker_rss_kb": mem, "error_lines": len(errs)}
        log(f"   {mode}: no churn p99 {quiet.get('p99_ms')} ms max {quiet.get('max_ms')} ms; "
            f"churn p99 {busy.get('p99_ms')} ms max {busy.get('max_ms')} ms "
            f"({churn.count} changes)")
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


def build_table(rep):
    lines, targets = [], []

    def add(line):
        lines.append(line)

    add("== 1. request path: ns per nodes() call (1 worker, JIT on, random names) ==")
    add(f"{'services':>9} {'floor':>8} {'ours':>8} {'apisix':>8} {'ours/floor':>11} {'apisix/floor':>13}  target ours<=2x floor")
    for r in rep.get("request_path", []):
        ok = r["ratio_ours_floor"] <= 2.0
        targets.append((f"request path {r['services']} services within 2x table lookup", ok))
        add(f"{r['services']:>9} {r['ns_floor']:>8.1f} {r['ns_ours']:>8.1f} {r['ns_apisix']:>8.1f} "
            f"{r['ratio_ours_floor']:>11.2f} {r['ratio_apisix_floor']:>13.2f}  {verdict(ok)}")
    add("")
    add(f"== 2. propagation: PUT returned -> both workers' nodes() show it (ms), changes {GAP_MS} ms apart ==")
    add(f"{'nodes':>7} {'services':>9} {'changes':>8} {'p50':>8} {'p99':>8} {'max':>8}  target")
    limits = {1000: 5, 10000: 30, 100000: 250}
    for r in rep.get("propagation", []):
        lim = limits.get(r["nodes"])
        t = ""
        if lim is not None:
            ok = r["p99_ms"] is not None and r["p99_ms"] < lim and r["missed"] == 0
            t = f"p99<{lim} ms {verdict(ok)}"
            targets.append((f"propagation p99 < {lim} ms at {r['nodes']} nodes", ok))
        add(f"{r['nodes']:>7} {r['services']:>9} {r['seen_by_all']:>4}/{r['changes']:<3} "
            f"{r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['max_ms']:>8.2f}  {t}")
    b = rep.get("propagation_burst")
    if b:
        add(f"  (1k nodes, changes back to back 5 ms apart: p50 {b['p50_ms']:.2f}, p99 {b['p99_ms']:.2f}, max {b['max_ms']:.2f}; informative)")
    strict = [r for r in rep.get("propagation", []) if r["services"] == 1000]
    if strict:
        ok = strict[0]["p99_ms"] < 5
        add(f"  (strict reading '1k services' = {strict[0]['nodes']} nodes: p99<5 ms {verdict(ok)}; informative)")
    add("")
    add("== 3. full refresh: CPU ms to apply one full-prefix response ==")
    add(f"{'keys':>7} {'MB':>6} {'ours':>8} {'lua':>9} {'lua+logs':>9} {'lua/ours':>9} "
        f"{'ours MB/s':>10} {'lua MB/s':>9} {'serde Value':>12} {'IgnoredAny':>11}  target >=5x")
    for r in rep.get("full_refresh", []):
        c = r["ours"]["cpu_ms"]
        mbps = r["ours"]["mb_per_s"]
        t = ""
        if r["keys"] >= 10000:
            ok = r["ratio_baseline_ours"] >= 5
            t = verdict(ok)
            targets.append((f"full refresh >=5x cheaper than Lua at {r['keys']} keys", ok))
        add(f"{r['keys']:>7} {r['bytes'] / 1e6:>6.2f} {r['ours_cpu_ms']:>8.2f} {r['baseline_cpu_ms']:>9.2f} "
            f"{r['baseline_as_shipped_cpu_ms']:>9.2f} {r['ratio_baseline_ours']:>9.1f} "
            f"{r['ours_mb_s']:>10.0f} {r['baseline_mb_s']:>9.0f} "
            f"{mbps['serde_value']:>8.0f}MB/s {mbps['serde_ignored']:>7.0f}MB/s  {t}")
    add("  ours = leader parse+apply(cold)+snapshot+encode + one follower decode; steps (CPU ms):")
    for r in rep.get("full_refresh", []):
        c = r["ours"]["cpu_ms"]
        add(f"  {r['keys']:>7} keys: parse {c['parse_response']:.2f}, apply cold {c['apply_cold']:.2f} "
            f"(warm, 1 change {c['apply_warm_one_change']:.2f}), snapshot+encode {c['render_snapshot_encode']:.2f}, "
            f"follower decode {c['follower_decode_cold']:.2f} (warm {c['follower_decode_warm']:.2f}); "
            f"lua: cjson.decode {r['lua_baseline']['core']['cjson_decode_cpu_ms']:.2f}, "
            f"broadcast enc {r['lua_baseline']['broadcast']['encode_cpu_ms']:.2f} / dec "
            f"{r['lua_baseline']['broadcast']['decode_cpu_ms']:.2f}")
    add("")
    add("== 4. event-loop stall: wrk latency (ms) through nginx, 100k nodes, change every 100 ms ==")
    add("   (quiet = mean of the runs before and after the churn)")
    add(f"{'':>9} {'quiet p99':>10} {'quiet max':>10} {'churn p99':>10} {'churn max':>10} {'changes':>8} {'rps q/c':>15}  target p99 churn<=2x quiet")
    for mode in ("ours", "baseline"):
        s = rep.get("stall", {}).get(mode)
        if not s:
            continue
        q, c, q2 = s["no_churn"], s["churn"], s["no_churn_after"]
        # reference: the mean of the quiet runs before and after the churn
        q = dict(q)
        for f in ("p99_ms", "max_ms", "rps"):
            if f in q and f in q2:
                q[f] = (q[f] + q2[f]) / 2
        t = ""
        if mode == "ours":
            ok = c.get("p99_ms") is not None and c["p99_ms"] <= 2 * q["p99_ms"]
            t = verdict(ok)
            targets.append(("p99 latency during churn within 2x of no churn", ok))
        add(f"{mode:>9} {q.get('p99_ms', float('nan')):>10.2f} {q.get('max_ms', float('nan')):>10.2f} "
            f"{c.get('p99_ms', float('nan')):>10.2f} {c.get('max_ms', float('nan')):>10.2f} "
            f"{c.get('changes', 0):>8} {q.get('rps', 0):>7.0f}/{c.get('rps', 0):<7.0f}  {t}")
    add("")
    add("== 5. memory at 100k nodes ==")
    m = rep.get("memory", {})
    for w in m.get("ours_workers", []):
        add(f"  ours worker {w['worker']} ({w['role']}): RSS {w['rss_kb'] / 1024:.1f} MiB")
    for d, kb in m.get("shm_du_kb", {}).items():
        add(f"  shared segment {d}: {kb / 1024:.1f} MiB (du); files {m.get('shm_files_bytes')}")
    if "baseline" in rep.get("stall", {}):
        for pid, kb in rep["stall"]["baseline"]["worker_rss_kb"].items():
            add(f"  lua baseline worker pid {pid}: RSS {kb / 1024:.1f} MiB")
        for pid, kb in rep["stall"]["ours"]["worker_rss_kb"].items():
            add(f"  ours (stall run) worker pid {pid}: RSS {kb / 1024:.1f} MiB")
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
    return lines, targets


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


def main():
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    os.makedirs(OUT, exist_ok=True)
    t_start = time.time()
    report = {"machine": machine(), "quick": QUICK, "loadavg_start": loadavg(),
              "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    try:
        start_double()
        log("seeding the propagation prefixes (10, 1k, 10k, 100k nodes)")
        bodies = []
        for n in (10, 1000, 10000, 100000):
            seed(f"pg{n}", max(1, n // 10), min(10, n))
            if n >= 1000:
                path = os.path.join(OUT, f"body_{n}.json")
                with open(path, "wb") as f:
                    f.write(double("GET", f"/v1/kv/pg{n}?recurse"))
                bodies.append((n, path))
        only = os.environ.get("CKV_BENCH_ONLY", "")
        parts = [("1", bench_request_path), ("2", bench_propagation),
                 ("3", lambda r: bench_refresh(r, bodies)), ("4", bench_stall),
                 ("6", bench_consul_load)]
        for key, fn in parts:
            if only and key not in only.split(","):
                continue
            fn(report)
    finally:
        cleanup()
    report["wall_s"] = time.time() - t_start
    report["loadavg_end"] = loadavg()
    lines, targets = build_table(report)
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
