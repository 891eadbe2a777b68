#!/usr/bin/env python3
"""Benchmark the traffic reader behind greenflow.platform.traffic_window.

Writes an nginx-style JSON access log of N lines (default 1,000,000) into a temporary directory,
reads it with the same code the module runs (read_window), and prints lines/s and seconds.
The log mixes two pools, retries, nginx-generated 502s with no upstream and a few malformed
lines, as a real log would.

    .venv/bin/python bench/bench_traffic_window.py [--lines N] [--repeat R]
"""
import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "collections"))

from ansible_collections.greenflow.platform.plugins.module_utils._traffic_stats import (  # noqa: E402
    read_window,
)

POOLS = {
    "blue": ["127.0.0.1:18081", "127.0.0.1:18082"],
    "green": ["127.0.0.1:18091", "127.0.0.1:18092"],
}


def write_log(path, n, seed=7, numbers=False):
    rnd = random.Random(seed)
    servers = POOLS["blue"] + POOLS["green"]
    t0 = time.time() - n / 1000.0
    with open(path, "w") as fh:
        buf = []
        for i in range(n):
            msec = "%.3f" % (t0 + i / 1000.0)
            r = rnd.random()
            if r < 0.001:
                buf.append('{"msec":"%s","status":"200",garbage\n' % msec)
                continue
            if r < 0.003:
                addr, ustatus, urt, status = "-", "-", "-", "502"
            elif r < 0.006:
                a, b = rnd.sample(servers, 2)
                addr, ustatus, urt, status = a + ", " + b, "502, 200", "0.001, 0.012", "200"
            else:
                addr = servers[i % 4]
                status = "500" if r > 0.995 else "200"
                ustatus, urt = status, "%.3f" % rnd.uniform(0.001, 0.25)
            rec = {
                "msec": msec,
                "time": "2025-01-01T00:00:00+00:00",
                "status": status,
                "request_time": urt.rsplit(" ", 1)[-1] if urt != "-" else "0.000",
                "upstream_addr": addr,
                "upstream_status": ustatus,
                "upstream_response_time": urt,
                "request_id": "%032x" % rnd.getrandbits(128),
                "host": "demo.local",
                "request": "GET /api/items/%d HTTP/1.1" % (i % 1000),
            }
            if numbers:  # the test fixture's format: status and request_time unquoted
                rec["status"] = int(rec["status"])
                rec["request_time"] = float(rec["request_time"])
            buf.append(json.dumps(rec, separators=(",", ":")) + "\n")
            if len(buf) >= 10000:
                fh.write("".join(buf))
                buf = []
        fh.write("".join(buf))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=1000000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--numbers", action="store_true",
                    help="write status and request_time as JSON numbers, not strings")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench_traffic_")
    try:
        path = os.path.join(tmp, "access.json.log")
        t = time.perf_counter()
        write_log(path, args.lines, numbers=args.numbers)
        gen = time.perf_counter() - t
        size = os.path.getsize(path)
        print("generated %d lines (%.1f MB) in %.2f s" % (args.lines, size / 1e6, gen))
        best = None
        for i in range(args.repeat):
            t = time.perf_counter()
            c = time.process_time()
            res = read_window(path, pools=POOLS, thresholds_ms=(500, 1000))
            cpu = time.process_time() - c
            dt = time.perf_counter() - t
            best = dt if best is None else min(best, dt)
            print("run %d: %.3f s wall (%.3f s cpu)  %.0f lines/s" % (
                i + 1, dt, cpu, res["lines"] / dt))
        print("lines=%d malformed=%d unattributed=%d blue=%d green=%d green_p95_ms=%s" % (
            res["lines"], res["malformed"], res["unattributed"]["requests"],
            res["pools"]["blue"]["requests"], res["pools"]["green"]["requests"],
            res["pools"]["green"]["p95_ms"]))
        print("load average: %s" % (" ".join("%.2f" % x for x in os.getloadavg())))
        print("best: %.3f s for %d lines = %.0f lines/s" % (best, res["lines"], res["lines"] / best))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
