#!/usr/bin/python3
"""harness.py: dlock beside each store's floor and beside peer libraries.

Run by `scripts/bench peers [SECONDS]`, which installs, builds and starts
what this needs and passes it in the environment:
  PEERS_BUILD   dlock's build dir (tools/dlock, tools/*-floor)
  PEERS_GO      the Go peers' binary        PEERS_TOOZ  tooz_bench.py
  PEERS_URLS    file of `scripts/services urls` lines
  PEERS_PGBIN   PostgreSQL's bin dir (pgbench)
  PEERS_SECONDS ROUNDS HOLD_SECONDS HOLD_ROUNDS LOCKS STORES TTL_S

Each phase runs in rounds; within a round every runner of a store runs once,
in an order that turns around from one round to the next, so that drift in
the machine's speed hits all of them alike.  Tables give the median of the
rounds and ratios between runners; the absolute figures are of this machine
only.  A runner that cannot do a phase is "n/a" with its own reason.
"""

import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

import counting_proxy

ENV = os.environ
BUILD = ENV["PEERS_BUILD"]
DLOCK = os.path.join(BUILD, "tools", "dlock")
GO = ENV["PEERS_GO"]
TOOZ = ENV["PEERS_TOOZ"]
PGBIN = ENV.get("PEERS_PGBIN", "/usr/lib/postgresql/15/bin")
SECS = float(ENV.get("PEERS_SECONDS", "5"))
ROUNDS = int(ENV.get("ROUNDS", "3"))
HOLD_SECS = float(ENV.get("HOLD_SECONDS", "15"))
HOLD_ROUNDS = int(ENV.get("HOLD_ROUNDS", str(ROUNDS)))
LOCKS = int(ENV.get("LOCKS", "10000"))
TTL = int(ENV.get("TTL_S", "10"))
STORES = ENV.get("STORES", "redis zookeeper postgres etcd consul file").split()
THREADS = 8
TMP = tempfile.mkdtemp(prefix="dlock-peers.")


class NA(Exception):
    """A figure that cannot be had, with the reason."""


def log(msg):
    print("peers: " + msg, file=sys.stderr, flush=True)


def run_json(argv, timeout, markers=None, key=None, env=None):
    """Run ARGV, return its JSON (the object under KEY if given).  With
    MARKERS (on_hold, on_release), call them when the runner says on stderr
    that its hold starts and ends."""
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=env)
    err_lines = []

    def read_err():
        for line in p.stderr:
            if markers and " holding " in line:
                markers[0]()
            elif markers and " releasing " in line:
                markers[1]()
            else:
                err_lines.append(line.rstrip())

    t = threading.Thread(target=read_err)
    t.start()
    # stdout is read here and stderr on the thread alone: communicate()
    # would read stderr too, and the markers could go to it.
    expired = []
    timer = threading.Timer(timeout, lambda: (expired.append(1), p.kill()))
    timer.start()
    out = p.stdout.read()
    p.wait()
    timer.cancel()
    t.join()
    if expired:
        raise NA("no answer in %d s" % timeout)
    if p.returncode != 0:
        # The runner's own one-line report, rather than the tail of a trace
        # a library printed before it.
        why = [x for x in err_lines if x.strip()]
        own = [x for x in why if x.startswith(("tooz_bench:", "peers:", "dlock:"))]
        raise NA(short((own or why or ["exit %d" % p.returncode])[-1]))
    j = json.loads(out.strip().splitlines()[-1])
    return j[key] if key else j


def short(s, n=160):
    s = re.sub(r"\s+", " ", s).strip()
    return s if len(s) <= n else s[: n - 1] + "…"


# ---- servers and their URLs ----

def urls():
    m = {}
    with open(ENV["PEERS_URLS"]) as f:
        for line in f:
            name, _, url = line.strip().partition(" ")
            m.setdefault(name, []).append(url)
    return m


def hostport(url):
    return re.match(r"^[a-z0-9+]+://(?:[^@/]*@)?([^/?]+)", url).group(1)


# Tooz's URL for each store whose address is HOST:PORT, the lease in it.
# etcd3gw, Tooz's HTTP driver for etcd, cannot run on Debian's
# python3-etcd3gw 2.0 (Tooz passes it an api_path it does not take):
# etcd3:// is Tooz's gRPC driver, on python3-etcd3.
TOOZ_URLS = {
    "redis": "redis://%s?lock_timeout=%d",
    "zookeeper": "zookeeper://%s?timeout=%d",
    "etcd": "etcd3://%s?lock_timeout=%d",
    "consul": "consul://%s?ttl=%d",
}


class Store:
    """One store: its URLs for each runner, its floor, its request counter."""

    def __init__(self, name, all_urls):
        self.name = name
        self.floor_note = ""
        u = all_urls.get(name, [None])
        self.dlock_urls = []  # (label, url)
        self.go = None        # (store flag, addr)
        self.tooz = None      # tooz URL
        self.counter = None   # () -> requests so far, or None
        self.proxied = False
        t = "ttl=%ds" % TTL
        if name in TOOZ_URLS:
            self.url = u[0]
            hp = hostport(self.url)
            self.dlock_urls = [("dlock", add_param(self.url, t))]
            if name == "etcd":
                # The native transport first: the ratio column is of the
                # first dlock runner, and the Go client speaks gRPC too.
                self.dlock_urls = [("dlock etcd+grpc", "etcd+grpc://%s?%s" % (hp, t)),
                                   ("dlock etcd (gateway)", self.dlock_urls[0][1])]
            self.go = (name, hp)
            self.tooz = TOOZ_URLS[name] % (hp, TTL)
            count = COUNTERS.get(name)
            self.counter = count and (lambda: count(hp))
            self.proxied = count is None
        elif name == "postgres":
            adv = [x for x in u if "mode=" not in x][0]
            lease = [x for x in u if "mode=lease" in x][0]
            self.url = adv
            self.dlock_urls = [("dlock advisory", add_param(adv, t)),
                               ("dlock lease", add_param(lease, t))]
            self.go = ("postgres", adv)
            self.tooz = "postgresql://" + adv.split("://", 1)[1]
            self.proxied = True
        elif name == "file":
            self.url = "file://" + os.path.join(TMP, "file-store")
            self.dlock_urls = [("dlock", add_param(self.url, t))]

    def runners(self):
        r = [(lbl, "dlock", url) for lbl, url in self.dlock_urls]
        if self.go:
            r.append(("Go peer", "go", self.go))
        if self.tooz:
            r.append(("tooz", "tooz", self.tooz))
        return r


def add_param(url, p):
    return url + ("&" if "?" in url else "?") + p


def redis_calls(hp):
    """Commands the server has run, from INFO commandstats, less the INFOs."""
    h, p = hp.rsplit(":", 1)
    with socket.create_connection((h, int(p)), timeout=5) as s:
        s.sendall(b"INFO commandstats\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
            m = re.match(rb"\$(\d+)\r\n", data)
            if m and len(data) >= m.end() + int(m.group(1)):
                break
    n = 0
    for name, calls in re.findall(rb"cmdstat_([a-z|]+):calls=(\d+)", data):
        if name != b"info":
            n += int(calls)
    return n


def zk_received(hp):
    """Packets the server has received, from the srvr command."""
    h, p = hp.rsplit(":", 1)
    with socket.create_connection((h, int(p)), timeout=5) as s:
        s.sendall(b"srvr")
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    # srvr's own connection counts one packet-less exchange; nothing to take.
    return int(re.search(rb"Received: (\d+)", data).group(1))


def etcd_received(hp):
    """gRPC messages the server has received, every method and stream alike
    (HTTP gateway requests reach it as gRPC calls too)."""
    text = urllib.request.urlopen("http://%s/metrics" % hp, timeout=5).read().decode()
    return int(sum(float(v) for v in re.findall(
        r"^grpc_server_msg_received_total\{[^}]*\} (\S+)$", text, re.M)))


# The stores counted at the server; the others are counted on the way in.
COUNTERS = {"redis": redis_calls, "zookeeper": zk_received, "etcd": etcd_received}


# ---- runners ----

def runner_argv(kind, target, phase, threads=1, secs=None, locks=LOCKS):
    """The runner's argv and the environment variable holding its URL: a
    URL can carry a password, which argv would show to every user."""
    secs = "%g" % (SECS if secs is None else secs)
    if kind == "dlock":
        return [DLOCK, "bench", "--url-env", "PEERS_URL", "--json", "--only", phase,
                "--threads", str(threads), "--seconds", secs, "--locks", str(locks)], target
    if kind == "go":
        return [GO, "-store", target[0], "-addr-env", "PEERS_URL", "-phase", phase,
                "-threads", str(threads), "-seconds", secs, "-locks", str(locks),
                "-ttl", "%ds" % TTL], target[1]
    return ["/usr/bin/python3", TOOZ, "--url-env", "PEERS_URL", "--phase", phase,
            "--threads", str(threads), "--seconds", secs, "--locks", str(locks)], target


def run_runner(kind, target, phase, threads=1, secs=None, markers=None, locks=LOCKS):
    argv, url = runner_argv(kind, target, phase, threads, secs, locks)
    budget = (secs or SECS) + 120 + (LOCKS / 50 if phase == "hold" else 0)
    return run_json(argv, budget, markers=markers, key=phase, env=dict(ENV, PEERS_URL=url))


# ---- floors ----

def floor_tool(store):
    return os.path.join(BUILD, "tools", {"zookeeper": "zk-floor", "etcd": "etcd-floor",
                                         "consul": "consul-floor",
                                         "redis": "redis-floor"}[store])


def floor_once(st, threads):
    """The store's raw floor: {'p50_us','p99_us','ops_per_sec'} (p50/p99
    only at one thread)."""
    if st.name == "postgres":
        return pgbench(st.url, threads)
    if st.name == "redis" and not os.access(floor_tool("redis"), os.X_OK):
        return redis_benchmark(hostport(st.url), threads)
    if st.name not in ("zookeeper", "etcd", "consul", "redis"):
        raise NA("no raw floor for this store")
    hp = hostport(st.url)
    if st.name == "redis":
        return run_json([floor_tool("redis"), hp, "%g" % SECS, str(threads)], SECS + 60)
    # One floor process a thread, all at once: the floor tools are
    # single-threaded clients, and THREADS of them are what 8 threads could
    # get from the store.
    ps = [subprocess.Popen([floor_tool(st.name), hp, "%g" % SECS], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True) for _ in range(threads)]
    res = []
    for p in ps:
        out, err = p.communicate(timeout=SECS + 60)
        if p.returncode != 0:
            raise NA(short(err.strip().splitlines()[-1] if err.strip() else "floor failed"))
        res.append(json.loads(out))
    if threads == 1:
        return res[0]
    return {"ops_per_sec": sum(r["ops_per_sec"] for r in res)}


REDIS_ACQ = ("local p = redis.call('PTTL', KEYS[1]) if p ~= -2 then return {0, p} end "
             "local t = redis.call('INCR', KEYS[2]) redis.call('SET', KEYS[1], ARGV[1] .. ':' "
             ".. string.format('%d', t) .. ':' .. ARGV[3], 'PX', ARGV[2]) return {1, t}")
REDIS_REL = ("local v = redis.call('GET', KEYS[1]) if v and string.sub(v, 1, #ARGV[1] + 1) == "
             "ARGV[1] .. ':' then redis.call('DEL', KEYS[1]) redis.call('PUBLISH', KEYS[2], "
             "ARGV[1]) return 1 end return 0")


def redis_benchmark(hp, threads):
    """Until build/tools/redis-floor exists: redis-benchmark running dlock's
    acquire and release scripts, one after the other; a pair costs the sum."""
    h, p = hp.rsplit(":", 1)
    n = str(int(SECS * 7500 * (threads if threads > 1 else 1)))
    figs = []
    for script, k2 in ((REDIS_ACQ, "fence"), (REDIS_REL, "ch")):
        out = subprocess.run(
            ["redis-benchmark", "-h", h, "-p", p, "-c", str(threads), "-n", n, "-r",
             "100000000", "--dbnum", "9", "--csv", "EVAL", script, "2",
             "bench-raw:lock:{__rand_int__}", "bench-raw:%s:{__rand_int__}" % k2, "owner",
             "1000", "label"], capture_output=True, text=True, timeout=SECS * 4 + 60).stdout
        row = [c.strip('"') for c in out.strip().splitlines()[-1].split('","')]
        # rps, avg, min, p50, p95, p99, max (ms)
        figs.append((float(row[1]), float(row[4]) * 1e3, float(row[6]) * 1e3))
    subprocess.run(["redis-cli", "-h", h, "-p", p, "-n", "9", "flushdb"], capture_output=True)
    return {"ops_per_sec": 1 / (1 / figs[0][0] + 1 / figs[1][0]),
            "p50_us": figs[0][1] + figs[1][1], "p99_us": figs[0][2] + figs[1][2]}


PG_SQL = """\\set k random(1, 9000000000000000000)
SELECT CASE WHEN pg_try_advisory_lock(:k) THEN nextval('dlock_fence') END;
SELECT pg_advisory_unlock(:k);
"""


def pg_env(url):
    """libpq's environment for URL, which keeps its password off argv."""
    u = urllib.parse.urlsplit(url)
    return dict(ENV, PGHOST=u.hostname, PGPORT=str(u.port or 5432), PGUSER=u.username or "",
                PGPASSWORD=urllib.parse.unquote(u.password or ""),
                PGDATABASE=u.path.lstrip("/"))


def pgbench(url, threads):
    """pgbench running the advisory pair dlock sends, as scripts/bench does."""
    script = os.path.join(TMP, "advisory.sql")
    with open(script, "w") as f:
        f.write(PG_SQL)
    env = pg_env(url)
    subprocess.run([os.path.join(PGBIN, "psql"), "-X", "-q", "-c",
                    "CREATE SEQUENCE IF NOT EXISTS dlock_fence"], check=True,
                   capture_output=True, env=env)
    logdir = tempfile.mkdtemp(dir=TMP)
    out = subprocess.run([os.path.join(PGBIN, "pgbench"), "-n", "-M", "extended", "-c",
                          str(threads), "-j", str(min(threads, 2)), "-T", str(max(1, int(SECS))),
                          "-f", script, "-l", "--log-prefix=" + os.path.join(logdir, "raw")],
                         capture_output=True, text=True, timeout=SECS + 60, env=env)
    tps = float(re.search(r"^tps = ([0-9.]+)", out.stdout, re.M).group(1))
    lat = []
    for fn in os.listdir(logdir):
        with open(os.path.join(logdir, fn)) as f:
            lat += [int(line.split()[2]) for line in f if line.strip()]
    shutil.rmtree(logdir)
    lat.sort()
    q = lambda x: lat[min(len(lat) - 1, max(0, -(-int(x * len(lat) * 1000) // 1000) - 1))]
    return {"ops_per_sec": tps, "p50_us": q(0.5), "p99_us": q(0.99)}


# ---- phases ----

def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def rounds_of(names, fn, rounds):
    """fn(name) per name per round, order turned around each round.
    Returns {name: [results]} or {name: NA}."""
    res = {n: [] for n in names}
    for r in range(rounds):
        order = names if r % 2 == 0 else list(reversed(names))
        for n in order:
            if isinstance(res[n], NA):
                continue
            try:
                res[n].append(fn(n))
            except NA as e:
                res[n] = e
    return res


def fmt(x, d=1):
    if x is None:
        return "—"
    if isinstance(x, str):
        return x
    if abs(x) >= 1000 and d <= 1:
        return "%d" % round(x)
    return ("%%.%df" % d) % x


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "—"
    x = a / b
    return "%.2f" % x if x >= 0.1 or x == 0 else "%.2g" % x


def p1_p4(st, threads):
    names = (["floor"] if st.name != "file" else []) + [r[0] for r in st.runners()]
    kinds = {r[0]: r for r in st.runners()}

    def one(n):
        if n == "floor":
            return floor_once(st, threads)
        _, kind, target = kinds[n]
        return run_runner(kind, target, "uncontended", threads=threads)

    log("%s: %s, %d thread%s" % (st.name, "P1" if threads == 1 else "P4", threads,
                                 "" if threads == 1 else "s"))
    res = rounds_of(names, one, ROUNDS)
    out = {}
    for n, v in res.items():
        if isinstance(v, NA):
            out[n] = v
        else:
            out[n] = {k: med([x.get(k) for x in v]) for k in ("p50_us", "p99_us", "ops_per_sec")}
    return out


def p2(st):
    kinds = {r[0]: r for r in st.runners()}
    log("%s: P2 handoff" % st.name)
    res = rounds_of(list(kinds), lambda n: run_runner(kinds[n][1], kinds[n][2], "handoff"),
                    ROUNDS)
    return {n: (v if isinstance(v, NA) else
                {k: med([x[k] for x in v]) for k in ("p50_us", "p99_us", "ops")})
            for n, v in res.items()}


def p3_p5(st):
    kinds = {r[0]: r for r in st.runners()}

    def one(n):
        _, kind, target = kinds[n]
        proxy = None
        counter = st.counter
        if st.proxied:
            # No server-side count that is both current and exact: count
            # the requests on their way in instead.
            proxy = counting_proxy.Proxy(hostport(st.url), "pg" if st.name == "postgres"
                                         else "http")
            target = retarget(kind, target, st.url, proxy.address)
            counter = proxy.count
        marks = {}

        def at(name):
            def f():
                marks[name] = (time.monotonic(), counter() if counter else None)
            return f

        try:
            r = run_runner(kind, target, "hold", secs=HOLD_SECS, markers=(at("a"), at("b")))
        finally:
            if proxy:
                proxy.close()
        if "a" in marks and "b" in marks and counter:
            (t0, c0), (t1, c1) = marks["a"], marks["b"]
            r["server_requests"] = c1 - c0
            r["server_per_ttl"] = (c1 - c0) / (t1 - t0) * TTL
        return r

    log("%s: P3/P5 holding %d locks" % (st.name, LOCKS))
    names = list(kinds)
    # The Consul API's Lock keeps a blocking query open per held lock; the
    # agent counts those connections against the client's address until
    # each query's wait ends, so whatever ran after it would find the agent
    # refusing connections.  It runs once, after the rounds.
    last = ["Go peer"] if st.name == "consul" else []
    res = rounds_of([n for n in names if n not in last], one, HOLD_ROUNDS)
    res.update(rounds_of(last, one, 1))
    out = {}
    for n, v in res.items():
        if isinstance(v, NA):
            out[n] = v
            continue
        out[n] = {k: med([x.get(k) for x in v])
                  for k in ("server_per_ttl", "rss_per_lock_bytes", "acquire_s")}
        out[n]["lost"] = max(x.get("lost", 0) for x in v)
    return out


def retarget(kind, target, url, addr):
    old = hostport(url)
    if kind == "go":
        return (target[0], target[1].replace(old, addr))
    return target.replace(old, addr)


# ---- tables ----

def cell_na(v):
    return "n/a (%s)" % v


def table_p1(title, stores, data, threads):
    print("\n### %s\n" % title)
    if threads == 1:
        print("| store | runner | p50 µs | p99 µs | ops/s | p50 ÷ floor | ops/s ÷ floor | "
              "dlock p50 ÷ this p50 |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    else:
        print("| store | runner | ops/s, %d threads | ÷ floor | dlock ÷ this |" % threads)
        print("| --- | --- | --- | --- | --- |")
    for st in stores:
        d = data[st.name]
        fl = d.get("floor")
        fl = fl if isinstance(fl, dict) else None
        dl = d.get(st.dlock_urls[0][0])
        dl = dl if isinstance(dl, dict) else None
        for n, v in d.items():
            label = n + (" (%s)" % st.floor_note if n == "floor" and st.floor_note else "")
            if isinstance(v, NA):
                cols = 6 if threads == 1 else 3
                print("| %s | %s | %s |%s" % (st.name, label, cell_na(v), " |" * (cols - 1)))
                continue
            if threads == 1:
                print("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
                    st.name, label, fmt(v["p50_us"]), fmt(v["p99_us"]), fmt(v["ops_per_sec"]),
                    ratio(v["p50_us"], fl and fl["p50_us"]) if n != "floor" else "",
                    ratio(v["ops_per_sec"], fl and fl["ops_per_sec"]) if n != "floor" else "",
                    ratio(dl and dl["p50_us"], v["p50_us"])
                    if n not in ("floor", st.dlock_urls[0][0]) else ""))
            else:
                print("| %s | %s | %s | %s | %s |" % (
                    st.name, label, fmt(v["ops_per_sec"]),
                    ratio(v["ops_per_sec"], fl and fl["ops_per_sec"]) if n != "floor" else "",
                    ratio(dl and dl["ops_per_sec"], v["ops_per_sec"])
                    if n not in ("floor", st.dlock_urls[0][0]) else ""))


def table_p2(stores, data, p1):
    print("\n### P2: handoff, strict turns, holder releases 1 ms after the waiter "
          "announces itself\n")
    print("| store | runner | handoffs | p50 µs | p99 µs | p50 ÷ floor pair p50 | "
          "dlock p50 ÷ this p50 |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for st in stores:
        d = data[st.name]
        fl = p1[st.name].get("floor")
        fl = fl["p50_us"] if isinstance(fl, dict) else None
        dl = d.get(st.dlock_urls[0][0])
        dl = dl["p50_us"] if isinstance(dl, dict) else None
        for n, v in d.items():
            if isinstance(v, NA):
                print("| %s | %s | %s | | | | |" % (st.name, n, cell_na(v)))
                continue
            print("| %s | %s | %d | %s | %s | %s | %s |" % (
                st.name, n, v["ops"], fmt(v["p50_us"]), fmt(v["p99_us"]), ratio(v["p50_us"], fl),
                ratio(dl, v["p50_us"]) if n != st.dlock_urls[0][0] else ""))


def table_p3_p5(stores, data, p1):
    print("\n### P3 and P5: %d locks acquired one after another, then held for %g s "
          "(ttl %d s)\n" % (LOCKS, HOLD_SECS, TTL))
    print("| store | runner | P5 acquire s | ÷ floor | server requests per %d s held | "
          "client bytes per held lock | lost | dlock requests ÷ this |" % TTL)
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for st in stores:
        if st.name not in data:
            continue
        d = data[st.name]
        fl = p1[st.name].get("floor")
        # The floor's rate is of acquire+release pairs: LOCKS of them take
        # at least as long as LOCKS bare acquires would.
        fl_s = LOCKS / fl["ops_per_sec"] if isinstance(fl, dict) else None
        dl = d.get(st.dlock_urls[0][0])
        dl = dl.get("server_per_ttl") if isinstance(dl, dict) else None
        for n, v in d.items():
            if isinstance(v, NA):
                print("| %s | %s | %s | | | | | |" % (st.name, n, cell_na(v)))
                continue
            print("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
                st.name, n, fmt(v["acquire_s"], 2), ratio(v["acquire_s"], fl_s),
                fmt(v["server_per_ttl"], 0) if v["server_per_ttl"] is not None else "—",
                fmt(v["rss_per_lock_bytes"], 0), v["lost"],
                ratio(dl, v["server_per_ttl"]) if n != st.dlock_urls[0][0] else ""))
    print("\nP5's floor is %d ÷ the P1 floor's rate (one raw acquire+release pair at a "
          "time), so it over-states what bare acquires would take." % LOCKS)


def main():
    all_urls = urls()
    stores = [Store(s, all_urls) for s in STORES]
    if not os.access(floor_tool("redis"), os.X_OK):
        for st in stores:
            if st.name == "redis":
                st.floor_note = "redis-benchmark: acquire p50 + release p50"
    p1, p4, p2d, p3 = {}, {}, {}, {}
    for st in stores:
        p1[st.name] = p1_p4(st, 1)
        p2d[st.name] = p2(st)
        p4[st.name] = p1_p4(st, THREADS)
        if st.name != "file":
            p3[st.name] = p3_p5(st)
    print("## dlock beside the floors and peer libraries\n")
    print("Medians of %d rounds of %g s (holds: %d rounds of %g s); runners alternate "
          "within each round." % (ROUNDS, SECS, HOLD_ROUNDS, HOLD_SECS))
    table_p1("P1: uncontended acquire+release, one client", stores, p1, 1)
    table_p2(stores, p2d, p1)
    table_p1("P4: uncontended, %d threads on distinct keys" % THREADS, stores, p4, THREADS)
    table_p3_p5(stores, p3, p1)
    shutil.rmtree(TMP, ignore_errors=True)


if __name__ == "__main__":
    main()
