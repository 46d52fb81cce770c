#!/usr/bin/python3
"""tooz_bench.py: the phases of `dlock bench` through OpenStack Tooz.

    tooz_bench.py --url TOOZ_URL|--url-env NAME --phase uncontended|handoff|hold
                  [--threads N] [--seconds S] [--locks H]

Prints one JSON object shaped like `dlock bench --json`.  Each thread has a
coordinator of its own (Tooz's unit of connection and session), as each of
dlock bench's threads has a client.  The lease length and any other driver
option travel in TOOZ_URL's query, the way Tooz takes them; --url-env names
an environment variable holding it, which keeps a password off the process
list.  Threads share
one interpreter: the 8-thread figure is Tooz's under the GIL.
"""

import argparse
import importlib.metadata
import json
import os
import sys
import threading
import time
import uuid

from tooz import coordination


def now_ns():
    return time.monotonic_ns()


def quantile(sorted_ns, q):
    """Nearest rank, as dlock bench computes it; microseconds."""
    n = len(sorted_ns)
    if n == 0:
        return 0.0
    r = int(q * n)
    if r < q * n:
        r += 1
    r = min(max(r, 1), n)
    return sorted_ns[r - 1] / 1e3


def figures(ns, elapsed_s):
    ns = sorted(ns)
    return {"ops": len(ns), "elapsed_s": elapsed_s,
            "ops_per_sec": len(ns) / elapsed_s if elapsed_s > 0 else 0.0,
            "samples": len(ns), "exact": True,
            "p50_us": quantile(ns, 0.5), "p99_us": quantile(ns, 0.99),
            "p999_us": quantile(ns, 0.999),
            "max_us": ns[-1] / 1e3 if ns else 0.0}


def coordinator(url, heart=False):
    c = coordination.get_coordinator(url, ("bench-%s" % uuid.uuid4().hex).encode())
    c.start(start_heart=heart)
    return c


def name(prefix, *parts):
    return ("%s%s" % (prefix, "/".join(str(p) for p in parts))).encode()


def run_all(fn, cs, start):
    """fn(i) on a thread per coordinator; the seconds since START once all
    are done, before the coordinators stop."""
    threads = [threading.Thread(target=fn, args=(i,)) for i in range(len(cs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = (now_ns() - start) / 1e9
    for c in cs:
        c.stop()
    return elapsed


def uncontended(args, prefix):
    cs = [coordinator(args.url) for _ in range(args.threads)]
    samples = [[] for _ in cs]
    errors = [None] * len(cs)
    busy = [0] * len(cs)
    start = now_ns()
    end = start + int(args.seconds * 1e9)

    def work(i):
        lock = cs[i].get_lock(name(prefix, "bench", i, 0))
        try:
            while True:
                t0 = now_ns()
                ok = lock.acquire(blocking=False)
                if ok:
                    lock.release()
                t1 = now_ns()
                if ok:
                    samples[i].append(t1 - t0)
                else:
                    busy[i] += 1
                if t1 >= end:
                    return
        except Exception as e:  # reported, not a figure
            errors[i] = e

    elapsed = run_all(work, cs, start)
    for e in errors:
        if e is not None:
            raise e
    r = figures([x for s in samples for x in s], elapsed)
    r["busy"] = sum(busy)
    return r


HANDOFF_HOLD_S = 0.001


def handoff(args, prefix):
    """Strict turns, as dlock bench's handoff phase takes them."""
    cs = [coordinator(args.url), coordinator(args.url)]
    key = name(prefix, "bench", "handoff")
    cv = threading.Condition()
    st = {"waiting": [False, False], "finished": [False, False], "stop": False,
          "last": -1, "rel": 0, "samples": [], "error": None}
    start = now_ns()
    end = start + int(args.seconds * 1e9)

    def fail(e):
        with cv:
            if st["error"] is None:
                st["error"] = e
            st["stop"] = True
            cv.notify_all()

    def run(me):
        other = 1 - me
        lock = cs[me].get_lock(key)
        try:
            while True:
                with cv:
                    while st["last"] == me and not st["stop"] and not st["finished"][other]:
                        cv.wait()
                    if st["stop"] or st["finished"][other]:
                        return
                    st["waiting"][me] = True
                    cv.notify_all()
                try:
                    if not lock.acquire(blocking=30):
                        raise RuntimeError("client %d waited 30 s for the key" % me)
                except Exception as e:
                    fail(e)
                    return
                got = now_ns()
                with cv:
                    st["waiting"][me] = False
                    if st["last"] == other:
                        st["samples"].append(got - st["rel"])
                    st["last"] = me
                    cv.notify_all()
                    while not st["waiting"][other] and not st["stop"] and not st["finished"][other]:
                        cv.wait()
                    last = st["stop"] or st["finished"][other] or now_ns() >= end
                if not last:
                    time.sleep(HANDOFF_HOLD_S)
                with cv:
                    st["rel"] = now_ns()
                    if last:
                        st["stop"] = True
                    cv.notify_all()
                try:
                    lock.release()
                except Exception as e:
                    fail(e)
                    return
                if last:
                    return
        finally:
            with cv:
                st["finished"][me] = True
                cv.notify_all()

    elapsed = run_all(run, cs, start)
    if st["error"] is not None:
        raise st["error"]
    r = figures(st["samples"], elapsed)
    r["hold_us"] = int(HANDOFF_HOLD_S * 1e6)
    return r


def rss_kb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def hold(args, prefix):
    # Tooz renews only from heartbeat(): start_heart runs it on a thread
    # at the interval the driver asks for.
    c = coordinator(args.url, heart=True)
    locks, ns = [], []
    before = rss_kb()
    start = now_ns()
    try:
        for i in range(args.locks):
            lock = c.get_lock(name(prefix, "bench", "hold", i))
            t0 = now_ns()
            if not lock.acquire(blocking=False):
                raise RuntimeError("acquiring %r: busy" % lock.name)
            ns.append(now_ns() - t0)
            locks.append(lock)
        acquire_s = (now_ns() - start) / 1e9
        after = rss_kb()
        print("tooz: holding %d locks for %g s" % (args.locks, args.seconds),
              file=sys.stderr, flush=True)
        t0 = now_ns()
        time.sleep(args.seconds)
        held_s = (now_ns() - t0) / 1e9
        print("tooz: releasing %d locks" % args.locks, file=sys.stderr, flush=True)
        lost = 0
        for lock in locks:
            try:
                if not lock.release():
                    lost += 1
            except Exception:
                lost += 1
        locks = []
    finally:
        for lock in locks:
            try:
                lock.release()
            except Exception:
                pass
        c.stop()
    r = figures(ns, held_s)
    r.update({"ops": args.locks, "ops_per_sec": args.locks / held_s, "locks": args.locks,
              "acquire_s": acquire_s, "rss_before_kb": before, "rss_after_kb": after,
              "rss_per_lock_bytes": (after - before) * 1024.0 / args.locks,
              # A release the driver refused: the lock was gone by then.
              "lost": lost})
    return r


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    url = p.add_mutually_exclusive_group(required=True)
    url.add_argument("--url")
    url.add_argument("--url-env")
    p.add_argument("--phase", choices=("uncontended", "handoff", "hold"), required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seconds", type=float, default=5)
    p.add_argument("--locks", type=int, default=10000)
    args = p.parse_args()
    if args.url_env:
        args.url = os.environ.get(args.url_env, "")
    # Keys of their own, so that a run never meets another's leftovers.
    prefix = "tooz-bench-%d/" % os.getpid()
    phase = {"uncontended": uncontended, "handoff": handoff, "hold": hold}[args.phase]
    try:
        res = phase(args, prefix)
    except Exception as e:
        print("tooz_bench: %s: %s: %s" % (args.phase, type(e).__name__, e), file=sys.stderr)
        return 1
    out = {"library": "tooz " + importlib.metadata.version("tooz"),
           "threads": args.threads, "seconds": args.seconds, args.phase: res}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
