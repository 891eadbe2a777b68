"""A bounded load client that runs INSIDE a lab host (python3, standard library only) and sends HTTPS requests to
the load balancers' floating address, which the control node cannot reach (tests/lab/test_lb_pair.py):

    docker exec -i ci-lbp-client-1 python3 - https://172.19.255.254/version --rate 40 --seconds 30 < vip_client.py

- Every request is a new TLS connection (what a new client sees during a move: no connection is reused), with a
  connect-and-answer timeout; certificates are not verified (the lab's is self-signed).
- Paced to --rate requests/s over --threads workers; stops by itself after --seconds (at most 600) or
  --requests requests (at most 100000), whichever comes first.
- Prints ONE JSON document at the end: {"samples": [[sent, done, status, lb, error, body], ...], ...}; times are
  the wall clock (time.time(), the same clock as the control node's: containers share the kernel), status 0 when
  no answer came, lb the X-Greenflow-LB header of the answer (which load balancer served it), body the first 40
  characters of the answer (for /version: the release that answered).
- --stop-file PATH (in the container): stops early once that file exists (a test ends the load when its
  playbook is done).
"""
import argparse
import http.client
import json
import os
import socket
import ssl
import sys
import threading
import time
from urllib.parse import urlsplit

HARD_MAX_SECONDS = 600
HARD_MAX_REQUESTS = 100000


def one(parts, context, timeout):
    sent = time.time()
    conn = http.client.HTTPSConnection(parts.hostname, parts.port or 443, timeout=timeout, context=context)
    try:
        conn.request("GET", parts.path or "/", headers={"Connection": "close"})
        resp = conn.getresponse()
        body = resp.read(4096)
        return [sent, time.time(), resp.status, resp.getheader("X-Greenflow-LB", ""), "",
                body.decode("utf-8", "replace").strip()[:40]]
    except (OSError, http.client.HTTPException, socket.timeout) as exc:
        return [sent, time.time(), 0, "", type(exc).__name__ + ": " + str(exc)[:80], ""]
    finally:
        conn.close()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--rate", type=float, default=40.0)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--requests", type=int, default=10000)
    parser.add_argument("--timeout", type=float, default=2.0)
    parser.add_argument("--stop-file", default="")
    args = parser.parse_args()
    seconds = min(max(args.seconds, 0.0), HARD_MAX_SECONDS)
    budget = min(max(args.requests, 0), HARD_MAX_REQUESTS)
    parts = urlsplit(args.url)
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE

    samples = []
    lock = threading.Lock()
    start = time.time()
    end = start + seconds
    interval = 1.0 / args.rate
    state = {"next": 0}

    def worker():
        while True:
            with lock:
                index = state["next"]
                if index >= budget:
                    return
                state["next"] += 1
            due = start + index * interval
            if args.stop_file and index % 10 == 0 and os.path.exists(args.stop_file):
                state["stopped"] = True
            if due >= end or state.get("stopped"):
                return
            pause = due - time.time()
            if pause > 0:
                time.sleep(pause)
            result = one(parts, context, args.timeout)
            with lock:
                samples.append(result)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(max(1, args.threads))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + args.timeout + 10)
    samples.sort()
    json.dump({"url": args.url, "rate": args.rate, "started": start, "ended": time.time(), "samples": samples},
              sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
