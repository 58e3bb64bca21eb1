#!/usr/bin/env python3
"""Propagation against a real Consul agent: PUT returned -> both workers' nodes().

Same measurement as part 2 of bench.py (it reuses its nginx harness and the
/prop handler), but the keys live in a real `consul agent -dev` instead of
the double. Two uses:

  * the real-Consul stage of `make test` (small, debug library, no target):
      real_consul_propagation.py --consul http://127.0.0.1:8500 --nodes 100 --changes 20
  * `make bench` part 7 (release library, 1k and 10k keys, next to the
    double's figure from bench/out/report.json):
      real_consul_propagation.py --bench
    which builds Consul with scripts/real-consul.sh and runs its own agent.

Keys are seeded through /v1/txn (64 operations per transaction, Consul's cap).
"""
import argparse
import base64
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench  # noqa: E402  (the nginx harness of make bench)


def consul_call(url, method, path, body=None, timeout=30):
    req = urllib.request.Request(url + path, data=body, method=method)
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, r.read()


def seed(url, prefix, services, per_service):
    ops = []
    for i in range(services):
        for j in range(per_service):
            key = f"{prefix}/svc{i}/10.0.0.{j + 1}:{8000 + j}"
            ops.append({"KV": {"Verb": "set", "Key": key,
                               "Value": base64.b64encode(b'{"weight":1}').decode()}})
    for k in range(0, len(ops), 64):
        st, data = consul_call(url, "PUT", "/v1/txn", json.dumps(ops[k:k + 64]).encode())
        if st != 200:
            raise SystemExit(f"seeding {prefix}: /v1/txn answered {st}: {data[:200]!r}")
    return len(ops)


def measure(url, nodes, changes, lib_dir):
    host, port = url.split("//", 1)[1].rsplit(":", 1)
    bench.LIB_DIR = lib_dir
    services = nodes  # issue 14's shape: 1 node per service
    prefix = f"rc{nodes}"
    seed(url, prefix, services, 1)
    conf = bench.ours_conf(prefix, services, True, servers=[url])
    conf.update({"server_url": url, "host": host, "port": int(port)})
    ng = bench.Nginx(f"real-consul-{nodes}", 2, conf)
    try:
        ng.wait_synced(services, timeout=120)
        ng.get(f"/prop?k0={bench.next_k0(5)}&changes=5&services={services}&workers=2&per=1")
        r = ng.get(f"/prop?k0={bench.next_k0(changes)}&changes={changes}&services={services}"
                   f"&workers=2&per=1&gap_ms={bench.GAP_MS}")
    finally:
        errs = ng.stop()
    lat = r["latencies_ms"]
    return {"nodes": nodes, "services": services, "changes": changes,
            "seen_by_all": len(lat), "missed": r["missed"],
            "p50_ms": bench.pct(lat, 50), "p99_ms": bench.pct(lat, 99),
            "max_ms": max(lat) if lat else None, "put_p50_ms": bench.pct(r["put_ms"], 50),
            "error_lines": len(errs)}


def line(row):
    return (f"{row['nodes']:>7} {row['services']:>9} {row['seen_by_all']:>4}/{row['changes']:<3} "
            f"{row['p50_ms']:>8.2f} {row['p99_ms']:>8.2f} {row['max_ms']:>8.2f}")


def start_agent(work):
    binary = subprocess.run(["bash", os.path.join(bench.ROOT, "scripts", "real-consul.sh")],
                            check=True, capture_output=True, text=True).stdout.strip()
    port = bench.DOUBLE_PORT + 10
    cfg = {"node_name": "ckv-bench", "data_dir": os.path.join(work, "data"),
           "bind_addr": "127.0.0.1", "client_addr": "127.0.0.1", "log_level": "warn",
           "disable_update_check": True,
           "ports": {"http": port, "https": -1, "dns": -1, "grpc": -1, "grpc_tls": -1,
                     "serf_lan": port + 1, "serf_wan": port + 2, "server": port + 3}}
    path = os.path.join(work, "agent.json")
    with open(path, "w") as f:
        json.dump(cfg, f)
    log = open(os.path.join(work, "agent.log"), "w")
    p = subprocess.Popen([binary, "agent", "-dev", "-config-file", path], stdout=log,
                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                         start_new_session=True)
    bench.PROCS.append(("consul", p))
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            if consul_call(url, "GET", "/v1/status/leader", timeout=1)[1].strip(b'"'):
                version = subprocess.run([binary, "version"], capture_output=True,
                                         text=True).stdout.splitlines()[0]
                return url, version
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit("consul agent did not elect a leader in 30 s")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--consul", help="agent URL (default with --bench: start one)")
    ap.add_argument("--nodes", type=int, action="append")
    ap.add_argument("--changes", type=int, default=100)
    ap.add_argument("--lib-dir", default=None)
    ap.add_argument("--bench", action="store_true", help="make bench part 7")
    a = ap.parse_args()
    os.makedirs(bench.OUT, exist_ok=True)
    lib_dir = a.lib_dir or os.path.join(bench.ROOT, "target", "release" if a.bench else "debug")
    nodes = a.nodes or ([1000, 10000] if a.bench else [100])
    rows = []
    try:
        with tempfile.TemporaryDirectory() as work:
            url, version = (a.consul, None) if a.consul else start_agent(work)
            if version:
                print(version)
            for n in nodes:
                rows.append(measure(url, n, a.changes, lib_dir))
    finally:
        bench.cleanup()
    print(f"propagation against real Consul: PUT returned -> both workers' nodes() (ms), "
          f"changes {bench.GAP_MS} ms apart")
    print(f"{'nodes':>7} {'services':>9} {'changes':>8} {'p50':>8} {'p99':>8} {'max':>8}")
    for r in rows:
        print(line(r) + "  real Consul")
    if a.bench:
        try:
            with open(os.path.join(bench.OUT, "report.json")) as f:
                rep = json.load(f)
            for r in rep.get("propagation", []):
                if r["nodes"] in nodes and r.get("impl", "ours") == "ours":
                    print(line(r) + "  double (part 2)")
            rep["propagation_real_consul"] = {"version": version, "rows": rows}
            with open(os.path.join(bench.OUT, "report.json"), "w") as f:
                json.dump(rep, f, indent=1)
        except (OSError, ValueError):
            print("(no bench/out/report.json: run the whole bench for the double's figure)")
    bad = [r for r in rows if r["missed"] or r["seen_by_all"] < r["changes"]]
    if bad:
        print(f"FAILED: changes not seen by both workers: {bad}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
