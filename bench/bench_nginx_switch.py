#!/usr/bin/env python3
"""Benchmark: how long a traffic switch with greenflow.platform.nginx_upstream takes, and what
the clients see while nginx is switched N times in a row under a steady load.

Starts a private nginx on 127.0.0.1 (tests/integration/nginx_fixture.py) with 2 blue + 2 green
backends, runs a bounded background load (client threads over keep-alive or fresh connections),
switches the shares --switches times through 5/25/50/75/95/100/0 % green by running the module
(python, the same code ansible ships), then prints:

  time per switch (module run: write + nginx -t + SIGHUP + new workers up), min/median/p95/max
  requests during the switches, failed requests (5xx + connection errors on fresh connections),
  stale keep-alive retries (request sent on a reused connection that nginx's old worker closed at
  that instant; retried once as HTTP clients do for idempotent requests) and idle reconnects
  (closed idle connection noticed before reuse).

Usage:  .venv/bin/python bench/bench_nginx_switch.py [--switches 50] [--threads 4] [--no-keepalive]
Everything targets 127.0.0.1 only; the load stops by itself (count and time bounds).
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "integration"))

import nginx_fixture as nf  # noqa: E402

STEPS = [5, 25, 50, 75, 95, 100, 0]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--switches", type=int, default=50)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--no-keepalive", action="store_true")
    ap.add_argument("--pause", type=float, default=0.0, help="seconds between a client's requests")
    ap.add_argument("--max-seconds", type=float, default=300)
    args = ap.parse_args()

    base = tempfile.mkdtemp(prefix="greenflow-bench-")
    backends = {c: [nf.Backend(c).start() for _ in range(2)] for c in ("blue", "green")}
    pools = dict((c, [b.address for b in bs]) for c, bs in backends.items())
    lab = nf.NginxLab(base).start(pools=pools, shares={"blue": 100, "green": 0})
    times = []
    failures = []
    try:
        nf.run_module(lab.module_args(pools=pools, shares={"blue": 100, "green": 0}))
        idle_times = []
        for i in range(10):
            green = STEPS[i % len(STEPS)]
            t0 = time.monotonic()
            nf.run_module(lab.module_args(shares={"blue": 100 - green, "green": green}))
            idle_times.append(time.monotonic() - t0)
        nf.run_module(lab.module_args(shares={"blue": 100, "green": 0}))
        reloads0 = lab.reload_count()
        load = nf.Load(lab.url, threads=args.threads, keepalive=not args.no_keepalive,
                       max_requests=10 ** 7, max_seconds=args.max_seconds, pause=args.pause).start()
        time.sleep(0.5)
        for i in range(args.switches):
            green = STEPS[i % len(STEPS)]
            t0 = time.monotonic()
            res = nf.run_module(lab.module_args(shares={"blue": 100 - green, "green": green}))
            times.append(time.monotonic() - t0)
            if res.get("failed") or not res.get("reloaded"):
                failures.append(res.get("msg"))
        time.sleep(0.5)
        result = load.stop()
        reloads = lab.reload_count() - reloads0
        entries, _ = lab.read_access_log()
        nginx_5xx = sum(1 for e in entries if int(e["status"]) >= 500)
    finally:
        lab.stop()
        for bs in backends.values():
            for b in bs:
                b.stop()

    ms = sorted(t * 1000 for t in times)
    idle_ms = sorted(t * 1000 for t in idle_times)
    print("nginx_upstream switch benchmark (%s, %d client threads, %s)"
          % (os.uname().nodename, args.threads, "fresh connections" if args.no_keepalive else "keep-alive"))
    print("switches:            %d (module failures: %d, nginx reloads seen: %d)" % (len(times), len(failures), reloads))
    print("time per switch ms, no load (10 switches): min %.0f  median %.0f  max %.0f"
          % (idle_ms[0], statistics.median(idle_ms), idle_ms[-1]))
    if ms:
        print("time per switch ms under load:  min %.0f  median %.0f  p95 %.0f  max %.0f"
              % (ms[0], statistics.median(ms), ms[int(0.95 * (len(ms) - 1))], ms[-1]))
    print("requests:            %d in %.1f s (%.0f req/s)" % (result.requests, result.seconds,
                                                              result.requests / max(result.seconds, 1e-9)))
    print("failed requests:     %d (5xx from nginx in log: %d, connection errors: %d)"
          % (result.failed, nginx_5xx, len(result.errors)))
    print("stale keep-alive:    %d retried once (reused connection closed by an exiting worker "
          "while the request was sent)" % result.stale_retries)
    print("idle reconnects:     %d (closed idle connection noticed before reuse)" % result.dropped_idle)
    for f in failures[:5]:
        print("module failure:", f)
    for e in result.errors[:5]:
        print("error:", e)
    return 1 if failures or result.failed else 0


if __name__ == "__main__":
    sys.exit(main())
