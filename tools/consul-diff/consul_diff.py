#!/usr/bin/env python3
"""Differential check: the Consul double against a real Consul agent.

Runs one request script against both and compares, step by step, what a
client reads: the status, the headers a client looks at, the body's shape
(JSON parsed, index fields replaced by names, digits in error texts masked)
and how the indexes relate to each other (equal / greater / smaller for
every pair seen in the run, never the absolute values).

    consul_diff.py --double target/debug/ckv-consul-double \\
        --consul http://127.0.0.1:8500 \\
        --consul-acl http://127.0.0.1:8502 \\
        --consul-acl-filter http://127.0.0.1:8503 [--token-out FILE]

--consul: a plain dev agent; --consul-acl: ACLs on, default policy deny,
enable_key_list_policy on, not bootstrapped yet; --consul-acl-filter: the
same without the key-list policy (lists are filtered, not refused). The
script bootstraps both ACL agents itself (that is one of the compared steps)
and writes the first one's management token to --token-out.

The double is started by the script with the matching flags on free ports.
Known, accepted differences are listed in KNOWN below and in the double's
README; anything else fails the check. Python 3 standard library only.
"""
import argparse
import gzip
import http.client
import json
import re
import subprocess
import sys
import threading
import time
import uuid

PREFIX = "diff/"

# Headers a client reads. Values compared exactly unless listed in PRESENCE.
HEADERS = ["content-type", "content-encoding", "vary", "x-consul-knownleader",
           "x-consul-lastcontact", "x-consul-query-backend", "x-consul-default-acl-policy",
           "x-consul-results-filtered-by-acls", "allow", "location"]
PRESENCE = ["x-consul-index"]

# (step, what) -> why the difference is accepted. Kept in step with the
# "Differences from Consul 1.14" list in tools/consul-double/README.md.
KNOWN = {}


class Resp:
    def __init__(self, status, headers, body, elapsed):
        self.status = status
        self.headers = headers
        self.body = body
        self.elapsed = elapsed

    def index(self):
        v = self.headers.get("x-consul-index")
        return int(v) if v is not None else None

    def json(self):
        return json.loads(self.body)


class Target:
    """One server under test plus what was observed on it."""

    def __init__(self, name, url):
        self.name = name
        host, port = url.split("//", 1)[1].rsplit(":", 1)
        self.host, self.port = host, int(port)
        self.obs = []        # (step, observation dict)
        self.indexes = []    # (label, value)
        self.vars = {}

    def call(self, method, path, body=None, headers=None, timeout=30):
        c = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        t0 = time.monotonic()
        try:
            c.putrequest(method, path, skip_accept_encoding=True)
            for k, v in (headers or {}).items():
                c.putheader(k, v)
            data = body if isinstance(body, bytes) or body is None else body.encode()
            if data is not None or method in ("PUT", "POST"):
                c.putheader("Content-Length", str(len(data or b"")))
            try:
                c.endheaders(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # answered (413) and closed before the whole body was sent
            r = c.getresponse()
            raw = r.read()
            hdrs = {k.lower(): v for k, v in r.getheaders()}
            return Resp(r.status, hdrs, raw, time.monotonic() - t0)
        finally:
            c.close()

    def record_index(self, label, value):
        if value is not None:
            self.indexes.append((label, value))


MASK_DIGITS = re.compile(r"\d+")
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
UUID_IN_TEXT = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
ANONYMOUS = "00000000-0000-0000-0000-000000000002"


def mask_text(text):
    """Error texts without their numbers and ids (the anonymous id is kept)."""
    text = UUID_IN_TEXT.sub(lambda m: "<anonymous>" if m.group(0) == ANONYMOUS else "<uuid>", text)
    return MASK_DIGITS.sub("N", text)


def shape(value, t, label):
    """A JSON value with index fields recorded and replaced by their label."""
    if isinstance(value, list):
        return [shape(v, t, f"{label}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        out = []
        for k, v in value.items():  # order kept: Go's field order is part of the shape
            if k in ("CreateIndex", "ModifyIndex") and isinstance(v, int):
                t.record_index(f"{label}.{k}", v)
                out.append((k, "<index>"))
            elif k == "CreateTime":
                out.append((k, "<time>" if isinstance(v, str) else v))
            elif k == "Hash":
                out.append((k, "<base64>" if isinstance(v, str) else v))
            elif isinstance(v, str) and UUID_RE.match(v):
                out.append((k, "<uuid>"))
            else:
                out.append((k, shape(v, t, f"{label}.{k}")))
        return {"object": out}
    return value


def observe(t, step, r, body="auto", timing=None):
    """Records what a client reads from r under the step's name."""
    o = {"status": r.status}
    for h in HEADERS:
        if h in r.headers:
            o[h] = r.headers[h]
    for h in PRESENCE:
        o[h] = h in r.headers
    t.record_index(f"{step}.X-Consul-Index", r.index())
    raw = r.body
    if r.headers.get("content-encoding") == "gzip":
        raw = gzip.decompress(raw)
    if body == "auto":
        ctype = r.headers.get("content-type", "")
        if raw and ctype.startswith("application/json"):
            o["body"] = shape(json.loads(raw), t, step)
        else:
            o["body"] = mask_text(raw.decode("utf-8", "replace"))
    elif body is not None:
        o["body"] = body
    if timing is not None:
        o["timing"] = timing
    t.obs.append((step, o))
    return r


# ------------------------------------------------------------------ the script

def plain_script(t):
    p = PREFIX
    g = lambda step, path, **kw: observe(t, step, t.call("GET", path, **kw))  # noqa: E731
    put = lambda step, path, body, **kw: observe(t, step, t.call("PUT", path, body, **kw))  # noqa: E731

    g("get-missing-key", f"/v1/kv/{p}missing")
    g("recurse-missing", f"/v1/kv/{p}?recurse")
    g("keys-missing", f"/v1/kv/{p}?keys")
    put("put-a", f"/v1/kv/{p}a", "1")
    put("put-b-flags", f"/v1/kv/{p}b?flags=42", "2")
    put("put-empty-value", f"/v1/kv/{p}sub/c", "")
    put("put-flags-max", f"/v1/kv/{p}sub/d?flags=18446744073709551615", "x")
    a = g("get-a", f"/v1/kv/{p}a")
    g("recurse", f"/v1/kv/{p}?recurse")
    g("recurse-greedy", f"/v1/kv/{p[:-1]}?recurse")
    g("keys", f"/v1/kv/{p}?keys")
    g("keys-separator", f"/v1/kv/{p}?keys&separator=/")
    g("keys-seperator-alias", f"/v1/kv/{p}?keys&seperator=/")
    g("raw", f"/v1/kv/{p}a?raw")
    g("raw-missing", f"/v1/kv/{p}nope?raw")
    g("pretty", f"/v1/kv/{p}a?pretty")
    a_idx = a.json()[0]["ModifyIndex"]
    put("cas-0-existing", f"/v1/kv/{p}a?cas=0", "x")
    put("cas-wrong", f"/v1/kv/{p}a?cas={a_idx + 1000}", "x")
    put("cas-right", f"/v1/kv/{p}a?cas={a_idx}", "1b")
    put("cas-0-new", f"/v1/kv/{p}e?cas=0", "e")
    put("cas-bad", f"/v1/kv/{p}a?cas=abc", "x")
    put("flags-bad", f"/v1/kv/{p}a?flags=-1", "x")
    put("reput-identical", f"/v1/kv/{p}b?flags=42", "2")
    g("after-reput", f"/v1/kv/{p}b")
    put("put-no-flags-resets", f"/v1/kv/{p}b", "2")
    g("after-flags-reset", f"/v1/kv/{p}b")
    observe(t, "delete-missing", t.call("DELETE", f"/v1/kv/{p}nope"))
    g("after-delete-missing", f"/v1/kv/{p}?recurse")

    # Blocking queries.
    cur = t.call("GET", f"/v1/kv/{p}?recurse").index()
    r = t.call("GET", f"/v1/kv/{p}?recurse&index={cur}&wait=1s")
    observe(t, "block-timeout", r, timing={"waited-1s": r.elapsed >= 0.9,
                                            "same-index": r.index() == cur})
    holder = {}

    def blocked():
        holder["r"] = t.call("GET", f"/v1/kv/{p}?recurse&index={cur}&wait=20s")
    th = threading.Thread(target=blocked)
    th.start()
    put("put-wakes", f"/v1/kv/{p}f", "f")
    th.join(30)
    r = holder.get("r")
    if r is None:
        t.obs.append(("block-wake", {"error": "blocked read did not return in 30 s"}))
    else:
        observe(t, "block-wake", r, timing={"before-wait": r.elapsed < 10,
                                             "index-moved": r.index() > cur})
    miss = t.call("GET", f"/v1/kv/{p}none/?recurse")
    r = t.call("GET", f"/v1/kv/{p}none/?recurse&index={miss.index()}&wait=1s")
    observe(t, "block-404-timeout", r, timing={"waited-1s": r.elapsed >= 0.9,
                                                "same-index": r.index() == miss.index()})
    r = t.call("GET", f"/v1/kv/{p}?recurse&index={cur + 10**9}&wait=1s")
    observe(t, "block-future-index", r, timing={"waited-1s": r.elapsed >= 0.9})

    # Tombstones: a delete moves the prefix index past every live entry.
    before = g("before-tombstone", f"/v1/kv/{p}?recurse")
    observe(t, "delete-one", t.call("DELETE", f"/v1/kv/{p}f"))
    after = g("after-tombstone", f"/v1/kv/{p}?recurse")
    live_max = max(e["ModifyIndex"] for e in after.json())
    t.obs.append(("tombstone-index", {"above-live": after.index() > live_max,
                                      "above-before": after.index() > before.index()}))
    observe(t, "delete-cas-0", t.call("DELETE", f"/v1/kv/{p}e?cas=0"))
    observe(t, "delete-recurse-cas", t.call("DELETE", f"/v1/kv/{p}?recurse&cas=1"))
    observe(t, "delete-all", t.call("DELETE", f"/v1/kv/{p}?recurse"))
    gone = g("after-delete-all", f"/v1/kv/{p}?recurse")
    g("sub-after-delete-all", f"/v1/kv/{p}sub/?recurse")
    g("keys-after-delete-all", f"/v1/kv/{p}?keys")
    r = t.call("GET", f"/v1/kv/{p}?recurse&index={gone.index()}&wait=1s")
    observe(t, "block-after-delete-all", r, timing={"same-index": r.index() == gone.index()})

    # Consistency modes and parameter errors.
    put("put-g", f"/v1/kv/{p}g", "g")
    g("stale", f"/v1/kv/{p}g?stale")
    g("consistent", f"/v1/kv/{p}g?consistent")
    g("stale-and-consistent", f"/v1/kv/{p}g?stale&consistent")
    g("bad-index", f"/v1/kv/{p}g?index=abc")
    g("negative-index", f"/v1/kv/{p}g?index=-1")
    g("bad-wait", f"/v1/kv/{p}g?index=1&wait=abc")
    g("wait-no-unit", f"/v1/kv/{p}g?index=1&wait=10")
    g("recurse-false-is-recurse", f"/v1/kv/{p}?recurse=false")
    g("missing-key-name", "/v1/kv/")
    put("put-missing-key-name", "/v1/kv/", "x")
    observe(t, "post-405", t.call("POST", f"/v1/kv/{p}g", "x"))
    observe(t, "options", t.call("OPTIONS", f"/v1/kv/{p}g"))
    g("no-trailing-slash-301", "/v1/kv")
    g("unknown-endpoint", "/v1/nope")
    g("namespace-ce", f"/v1/kv/{p}g?ns=x")
    r = t.call("GET", "/v1/status/leader")
    observe(t, "status-leader", r,
            body=bool(re.fullmatch(rb'"127\.0\.0\.1:\d+"', r.body.strip())))  # a Raft address

    # gzip: only with Accept-Encoding and only above gziphandler's 1400 bytes.
    for i in range(30):
        t.call("PUT", f"/v1/kv/{p}gz/k{i:02}", "v" * 100)
    gz = {"Accept-Encoding": "gzip"}
    g("gzip-large", f"/v1/kv/{p}gz/?recurse", headers=gz)
    g("gzip-small", f"/v1/kv/{p}g", headers=gz)
    g("no-gzip-asked", f"/v1/kv/{p}gz/?recurse")

    # Value size limit (kv_max_value_size, 512 KiB).
    put("value-at-limit", f"/v1/kv/{p}big", b"x" * 524288)
    put("value-over-limit", f"/v1/kv/{p}big", b"x" * 524289)

    # ACLs are off on this agent.
    observe(t, "bootstrap-acl-disabled", t.call("PUT", "/v1/acl/bootstrap"))
    observe(t, "cleanup", t.call("DELETE", f"/v1/kv/{p}?recurse"))


def acl_script(t, reader, list_policy):
    p = PREFIX
    r = observe(t, "bootstrap", t.call("PUT", "/v1/acl/bootstrap"))
    mgmt = r.json().get("SecretID", "") if r.status == 200 else ""
    t.vars["mgmt"] = mgmt
    observe(t, "bootstrap-again", t.call("PUT", "/v1/acl/bootstrap"))
    m = {"X-Consul-Token": mgmt}
    if t.name.startswith("consul"):
        make_reader(t, mgmt, reader, f"{p}pub/")
    for k in ("pub/a", "pub/b", "sec/x"):
        observe(t, f"put-{k}", t.call("PUT", f"/v1/kv/{p}{k}", "v", headers=m))
    observe(t, "put-anonymous", t.call("PUT", f"/v1/kv/{p}pub/c", "v"))
    observe(t, "get-anonymous", t.call("GET", f"/v1/kv/{p}pub/a"))
    observe(t, "get-unknown-token", t.call("GET", f"/v1/kv/{p}pub/a",
                                             headers={"X-Consul-Token": str(uuid.uuid4())}))
    rd = {"X-Consul-Token": reader}
    observe(t, "reader-get", t.call("GET", f"/v1/kv/{p}pub/a", headers=rd))
    observe(t, "reader-get-denied", t.call("GET", f"/v1/kv/{p}sec/x", headers=rd))
    observe(t, "reader-put-denied", t.call("PUT", f"/v1/kv/{p}pub/a", "w", headers=rd))
    observe(t, "reader-list-own", t.call("GET", f"/v1/kv/{p}pub/?recurse", headers=rd))
    observe(t, "reader-list-parent", t.call("GET", f"/v1/kv/{p}?recurse", headers=rd))
    observe(t, "reader-keys-parent", t.call("GET", f"/v1/kv/{p}?keys", headers=rd))
    observe(t, "anonymous-list", t.call("GET", f"/v1/kv/{p}?recurse"))
    observe(t, "token-query-param", t.call("GET", f"/v1/kv/{p}pub/a?token={reader}"))
    observe(t, "token-bearer", t.call("GET", f"/v1/kv/{p}pub/a",
                                        headers={"Authorization": f"Bearer {reader}"}))
    observe(t, "mgmt-list", t.call("GET", f"/v1/kv/{p}?recurse", headers=m))
    observe(t, "cleanup", t.call("DELETE", f"/v1/kv/{p}?recurse", headers=m))


def make_reader(t, mgmt, secret, prefix):
    """On a real agent: a policy with key:read on prefix and a token with that secret."""
    m = {"X-Consul-Token": mgmt}
    name = "diff-read-" + secret[:8]
    rules = f'key_prefix "{prefix}" {{ policy = "read" }}'
    r = t.call("PUT", "/v1/acl/policy", json.dumps({"Name": name, "Rules": rules}), headers=m)
    if r.status != 200:
        raise SystemExit(f"{t.name}: creating policy: {r.status} {r.body[:200]!r}")
    r = t.call("PUT", "/v1/acl/token", json.dumps({"SecretID": secret,
                                                   "Policies": [{"Name": name}]}), headers=m)
    if r.status != 200:
        raise SystemExit(f"{t.name}: creating token: {r.status} {r.body[:200]!r}")


# ------------------------------------------------------------------ comparison

def relations(t):
    """sign(a - b) for every ordered pair of recorded indexes, keyed by labels."""
    out = {}
    idx = t.indexes
    for i in range(len(idx)):
        for j in range(i + 1, len(idx)):
            (la, a), (lb, b) = idx[i], idx[j]
            out[(la, lb)] = (a > b) - (a < b)
    return out


def compare(double, consul):
    diffs = []
    dsteps, csteps = dict(double.obs), dict(consul.obs)
    if [s for s, _ in double.obs] != [s for s, _ in consul.obs]:
        diffs.append(("<steps>", "sequence", [s for s, _ in double.obs], [s for s, _ in consul.obs]))
    for step, co in consul.obs:
        do = dsteps.get(step)
        if do is None:
            continue
        for k in sorted(set(co) | set(do)):
            if co.get(k) != do.get(k):
                diffs.append((step, k, do.get(k), co.get(k)))
    dr, cr = relations(double), relations(consul)
    for pair in sorted(set(dr) & set(cr)):
        if dr[pair] != cr[pair]:
            sym = {-1: "<", 0: "==", 1: ">"}
            diffs.append((pair[0].split(".")[0], "index relation",
                          f"{pair[0]} {sym[dr[pair]]} {pair[1]}",
                          f"{pair[0]} {sym[cr[pair]]} {pair[1]}"))
    missing = set(cr) ^ set(dr)
    if missing:
        diffs.append(("<indexes>", "labels", sorted({a for a, _ in missing if (a, _) in dr})[:5],
                      sorted({a for a, _ in missing if (a, _) in cr})[:5]))
    del dsteps, csteps
    return diffs


def start_double(binary, args):
    p = subprocess.Popen([binary, "--listen", "127.0.0.1:0", "--max-index-skip", "3"] + args,
                         stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    line = p.stdout.readline().decode()
    m = re.search(r"listening on (\S+)", line)
    if not m:
        p.kill()
        raise SystemExit(f"double did not start: {line!r}")
    return p, "http://" + m.group(1)


def run_pair(name, double_url, consul_url, script, *args, dump=None):
    d, c = Target("double", double_url), Target("consul", consul_url)
    for t in (d, c):
        script(t, *args)
    if dump is not None:
        dump[name] = {t.name: {"steps": t.obs, "indexes": t.indexes} for t in (d, c)}
    diffs = compare(d, c)
    accepted = [x for x in diffs if (x[0], x[1]) in KNOWN]
    real = [x for x in diffs if (x[0], x[1]) not in KNOWN]
    steps = len(c.obs)
    print(f"{name}: {steps} steps, {len(c.indexes)} indexes compared pairwise, "
          f"{len(real)} difference(s), {len(accepted)} known")
    for step, what, dv, cv in accepted:
        print(f"  known  {step} / {what}: {KNOWN[(step, what)]}")
    for step, what, dv, cv in real:
        print(f"  DIFF   {step} / {what}:\n           double: {dv!r}\n           consul: {cv!r}")
    return c, real


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--double", required=True)
    ap.add_argument("--consul", required=True)
    ap.add_argument("--consul-acl", required=True)
    ap.add_argument("--consul-acl-filter", required=True)
    ap.add_argument("--token-out")
    ap.add_argument("--dump", help="write every observation of both sides to this JSON file")
    a = ap.parse_args()
    dump = {}
    procs = []
    failures = 0
    try:
        reader = str(uuid.uuid4())
        p1, plain = start_double(a.double, [])
        mgmt = str(uuid.uuid4())
        p2, acl = start_double(a.double, ["--token", mgmt, "--acl-key-list-policy",
                                          "--read-token", f"{reader}={PREFIX}pub/"])
        p3, acl_f = start_double(a.double, ["--token", mgmt,
                                            "--read-token", f"{reader}={PREFIX}pub/"])
        procs += [p1, p2, p3]
        _, real = run_pair("plain", plain, a.consul, plain_script, dump=dump)
        failures += len(real)
        c, real = run_pair("acl (key-list policy)", acl, a.consul_acl, acl_script, reader, True,
                           dump=dump)
        failures += len(real)
        if a.token_out and c.vars.get("mgmt"):
            with open(a.token_out, "w") as f:
                f.write(c.vars["mgmt"])
        _, real = run_pair("acl (lists filtered)", acl_f, a.consul_acl_filter, acl_script,
                           reader, False, dump=dump)
        failures += len(real)
    finally:
        for p in procs:
            p.terminate()
            p.wait(5)
        if a.dump:
            with open(a.dump, "w") as f:
                json.dump(dump, f, indent=1, default=str)
    print(f"differential: {'ok' if failures == 0 else f'{failures} unexplained difference(s)'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
