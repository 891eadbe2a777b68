#!/usr/bin/env python3
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reload-based vs reload-free switching, with the collection's own code, side by side in one run.

    .venv/bin/python bench/bench_switch_modes.py [--clients 32] [--changes 5] [--rate 250]

For each split mode of greenflow.platform.nginx_upstream - ``split_clients`` (every change an nginx
reload) and ``lua`` (the nginx_lb role's reload-free setup: Debian's lua module, the role's
greenflow_split.lua, the control socket) - a private nginx on 127.0.0.1 with two local backend pools
(tests/integration/nginx_fixture.py), and:

1. keep-alive clients: ``--clients`` HTTP/1.1 connections sending back to back while the module
   changes the shares ``--changes`` times. A request that finds its connection closed under it counts
   as failed for a client that does not retry (most API clients); the fixture's client retries it once
   and counts it (``stale_retries``), so both are printed;
2. time to the new split: from the module call (a process, as Ansible runs it on the host) to the
   first answer of the other pool, going from 100 % blue to 100 % green, and the module's own time;
3. per-request cost at ``--rate`` requests/s: latency p50 / p95 of a paced keep-alive client (10 s).

Loopback only; every loop is bounded in count and time. Needs nginx, and for the lua mode Debian's
libnginx-mod-http-lua and lua-resty-core (``make debian-packages``); without them it says so and runs
the split_clients mode alone.
"""
import argparse
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))
sys.path.insert(0, os.path.join(REPO, "collections"))
import nginx_fixture as nf  # noqa: E402


def _set(lab, shares):
    started = time.monotonic()
    res = nf.run_module(lab.module_args(shares=shares))
    if res.get("failed"):
        raise SystemExit("nginx_upstream failed: %s" % res.get("msg"))
    return res, time.monotonic() - started


def keepalive_changes(lab, clients, changes):
    load = nf.Load(lab.url, threads=clients, keepalive=True, max_requests=2_000_000, max_seconds=120).start()
    time.sleep(1)
    applied = []
    for i in range(changes):
        green = (25, 50, 5, 75, 10)[i % 5]
        res, _ = _set(lab, {"blue": 100 - green, "green": green})
        applied.append(res.get("applied") or ("reload" if res.get("reloaded") else "none"))
        time.sleep(1)
    result = load.stop()
    return result, applied


def time_to_new_split(lab):
    _set(lab, {"blue": 100, "green": 0})
    time.sleep(0.5)
    conn = http.client.HTTPConnection("127.0.0.1", lab.port, timeout=5)
    started = time.monotonic()
    payload = dict(lab.module_args(shares={"blue": 0, "green": 100}), _ansible_check_mode=False, _ansible_diff=False)
    env = dict(os.environ, PYTHONPATH=nf.COLLECTIONS)
    proc = subprocess.Popen([sys.executable, "-m", "ansible_collections.greenflow.platform.plugins.modules.nginx_upstream"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=REPO)
    proc.stdin.write(json.dumps({"ANSIBLE_MODULE_ARGS": payload}))
    proc.stdin.close()
    seen = None
    deadline = started + 30
    while time.monotonic() < deadline:
        try:
            conn.request("GET", "/version")
            body = conn.getresponse().read().decode()
        except (OSError, http.client.HTTPException):
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", lab.port, timeout=5)
            continue
        if '"green"' in body:
            seen = time.monotonic() - started
            break
        time.sleep(0.002)
    out = proc.stdout.read()
    proc.wait(timeout=60)
    module_seconds = time.monotonic() - started
    conn.close()
    res = json.loads(out)
    return seen, res, module_seconds


def latency(lab, rate, seconds=10.0):
    conn = http.client.HTTPConnection("127.0.0.1", lab.port, timeout=5)
    lat = []
    gap = 1.0 / rate
    due = time.monotonic()
    end = due + seconds
    while time.monotonic() < end and len(lat) < rate * seconds * 2:
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        due += gap
        t0 = time.monotonic()
        conn.request("GET", "/")
        conn.getresponse().read()
        lat.append((time.monotonic() - t0) * 1000.0)
    conn.close()
    lat.sort()
    return lat[len(lat) // 2], lat[int(len(lat) * 0.95)], len(lat)


def one_mode(lua, args, base):
    backends = {"blue": [nf.Backend("blue").start() for _ in range(2)],
                "green": [nf.Backend("green").start() for _ in range(2)]}
    lab = nf.NginxLab(os.path.join(base, "lua" if lua else "reload"), lua=lua, workers=2)
    try:
        lab.start(pools=dict((c, [b.address for b in bs]) for c, bs in backends.items()), shares={"blue": 100})
        result, applied = keepalive_changes(lab, args.clients, args.changes)
        seen, res, module_seconds = time_to_new_split(lab)
        p50, p95, n = latency(lab, args.rate)
        return {
            "mode": "lua (reload-free)" if lua else "split_clients (reload)",
            "requests": result.requests,
            "failed_no_retry": result.failed + result.stale_retries,
            "failed_with_one_retry": result.failed,
            "applied": ",".join(sorted(set(applied))),
            "to_new_split_ms": round(seen * 1000, 1) if seen is not None else None,
            "module_ms": round(module_seconds * 1000, 1),
            "on_lb_ms": round(1000 * (res.get("timings") or {}).get("total_seconds", 0), 1),
            "p50_ms": round(p50, 2), "p95_ms": round(p95, 2), "latency_samples": n,
        }
    finally:
        lab.stop()
        for bs in backends.values():
            for b in bs:
                b.stop()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--changes", type=int, default=5)
    parser.add_argument("--rate", type=float, default=250.0)
    args = parser.parse_args()
    if not nf.nginx_binary():
        raise SystemExit("nginx is not installed (make debian-packages)")
    modes = [False]
    if nf.lua_available():
        modes.append(True)
    else:
        print("lua mode skipped: libnginx-mod-http-lua / lua-resty-core are not installed (make debian-packages)")
    base = tempfile.mkdtemp(prefix="gf-bench-modes-")
    try:
        rows = [one_mode(lua, args, base) for lua in modes]
    finally:
        shutil.rmtree(base, ignore_errors=True)
    cols = ("mode", "requests", "failed_no_retry", "failed_with_one_retry", "applied", "to_new_split_ms", "module_ms",
            "on_lb_ms", "p50_ms", "p95_ms")
    print("%d keep-alive clients through %d share changes; time to the new split; latency at %g req/s"
          % (args.clients, args.changes, args.rate))
    print(" | ".join(cols))
    for row in rows:
        print(" | ".join(str(row[c]) for c in cols))
    if len(rows) == 2:
        print("failed requests of keep-alive clients that do not retry: %d (reload) vs %d (reload-free)"
              % (rows[0]["failed_no_retry"], rows[1]["failed_no_retry"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
