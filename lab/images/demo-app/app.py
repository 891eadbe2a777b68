#!/usr/bin/env python3
"""The lab's demo app: a tiny HTTP service to release, break and roll back.

Endpoints: ``/`` (JSON: version, host), ``/version`` (the version, plain text), ``/health``.
Fault knobs, read from the environment at start, so a test can make a bad release without a new image:

- ``DEMO_ERROR_RATE``: fraction of requests (not ``/health``) answered 500, e.g. ``0.3``;
- ``DEMO_LATENCY_MS``: delay added to every request (not ``/health``);
- ``DEMO_ERRORS_WHILE_FILE``: a path in the container; when set, ``DEMO_ERROR_RATE`` applies only while that
  file exists (``docker exec <task> touch <path>`` breaks a release that is already live, e.g. at 100 %);
- ``DEMO_BROKEN_PATHS``: comma-separated paths answered 500 every time (a release with one broken page
  that its health check does not see);
- ``DEMO_HEALTHY``: ``false`` makes ``/health`` answer 503;
- ``DEMO_BURN_CPU``: cores (e.g. ``0.2``) a child process keeps busy from the start (busy that share of every
  100 ms): the app still answers, its task's CPU use goes up (the cutover's CPU line);
- ``DEMO_HOLD_MEMORY_MB``: MiB the app allocates and touches at start and holds (the cutover's memory line);
- ``DEMO_SECRET_FILE``: a file the app needs (a swarm secret, mounted at ``/run/secrets/<name>``):
  ``/health`` answers 503 while it cannot be read, and ``/secret-digest`` answers its SHA-256 (never the
  secret itself), so a test can tell the app got the right one.

``DEMO_VERSION`` is baked into the image at build time; ``DEMO_PORT`` (default 8000) is where it listens.
On SIGTERM it stops accepting, finishes the requests in flight and exits.
"""
import hashlib
import json
import multiprocessing
import os
import random
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def _env_float(name, default):
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        sys.exit(f"{name} must be a number, got {os.environ.get(name)!r}")


VERSION = os.environ.get("DEMO_VERSION", "0")
PORT = int(os.environ.get("DEMO_PORT", "8000"))
ERROR_RATE = _env_float("DEMO_ERROR_RATE", 0)
LATENCY_S = _env_float("DEMO_LATENCY_MS", 0) / 1000.0
HEALTHY = os.environ.get("DEMO_HEALTHY", "true").lower() not in ("false", "0", "no")
ERRORS_WHILE_FILE = os.environ.get("DEMO_ERRORS_WHILE_FILE", "")
BROKEN_PATHS = frozenset(p.strip() for p in os.environ.get("DEMO_BROKEN_PATHS", "").split(",") if p.strip())
BURN_CPU = _env_float("DEMO_BURN_CPU", 0)
HOLD_MEMORY_MB = _env_float("DEMO_HOLD_MEMORY_MB", 0)
HOST = socket.gethostname()
SECRET_FILE = os.environ.get("DEMO_SECRET_FILE", "")


def _secret_digest():
    """SHA-256 of DEMO_SECRET_FILE's content, or None when it is not set or cannot be read."""
    try:
        with open(SECRET_FILE, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return None


def _burn(cores):
    """Keep ``cores`` of one CPU busy (a child process, so the server's own thread is not starved)."""
    busy = min(max(cores, 0.0), 1.0) * 0.1
    while True:
        until = time.monotonic() + busy
        while time.monotonic() < until:
            pass
        time.sleep(max(0.0, 0.1 - busy))


def _hold_memory(megabytes):
    block = bytearray(int(megabytes * 1024 * 1024))
    for i in range(0, len(block), 4096):  # touch every page: resident, not just reserved
        block[i] = 1
    return block


class DemoHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "greenflow-demo"

    def _send(self, status, body, content_type="text/plain"):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Demo-Version", VERSION)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def do_GET(self):  # noqa: N802 (http.server's naming)
        path = self.path.split("?", 1)[0]
        if path == "/health":
            if SECRET_FILE and _secret_digest() is None:
                self._send(503, "unhealthy: cannot read DEMO_SECRET_FILE %s\n" % SECRET_FILE)
            elif HEALTHY:
                self._send(200, "ok\n")
            else:
                self._send(503, "unhealthy (DEMO_HEALTHY=false)\n")
            return
        if LATENCY_S:
            time.sleep(LATENCY_S)
        if path in BROKEN_PATHS:
            self._send(500, "broken path (DEMO_BROKEN_PATHS)\n")
            return
        if ERROR_RATE and (not ERRORS_WHILE_FILE or os.path.exists(ERRORS_WHILE_FILE)) \
                and random.random() < ERROR_RATE:
            self._send(500, "injected failure (DEMO_ERROR_RATE)\n")
            return
        if path == "/secret-digest":
            digest = _secret_digest() if SECRET_FILE else None
            self._send(200 if digest else 404, (digest or "no DEMO_SECRET_FILE") + "\n")
            return
        if path == "/version":
            self._send(200, VERSION + "\n")
        else:
            body = json.dumps({"app": "demo", "version": VERSION, "host": HOST}) + "\n"
            self._send(200, body, "application/json")

    do_HEAD = do_GET

    def log_message(self, fmt, *args):  # access logs belong to nginx; keep stdout quiet
        pass


class DemoServer(ThreadingHTTPServer):
    daemon_threads = False  # server_close() waits for requests in flight
    allow_reuse_address = True


def main():
    burner = None
    if BURN_CPU > 0:  # before the memory is held: the child is forked without it
        burner = multiprocessing.Process(target=_burn, args=(BURN_CPU,), daemon=True)
        burner.start()
    held = _hold_memory(HOLD_MEMORY_MB) if HOLD_MEMORY_MB > 0 else None  # noqa: F841 (kept until exit)
    server = DemoServer(("0.0.0.0", PORT), DemoHandler)

    def stop(signum, frame):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"demo app version {VERSION} on :{PORT}", flush=True)
    server.serve_forever(poll_interval=0.2)
    server.server_close()
    if burner is not None:
        burner.terminate()


if __name__ == "__main__":
    main()
