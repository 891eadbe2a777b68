#!/usr/bin/env python3
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A bounded HTTP load generator for the release tests and the bench (loopback only).

    python tests/lab/loadgen.py https://127.0.0.1:38443/version --rate 250 --seconds 10

or, from a test or the bench:

    from loadgen import LoadGen
    with LoadGen("https://127.0.0.1:38443/version", rate=250, max_seconds=120) as load:
        run_the_release()
    print(load.summary())

- Targets 127.0.0.1 / ::1 / localhost only (anything else is refused).
- Always bounded: it stops by itself after ``max_requests`` requests or ``max_seconds`` seconds,
  whichever comes first, even if nobody calls ``stop()``.
- ``threads`` workers, each with one keep-alive HTTP/1.1 connection (TLS not verified: the lab's
  certificate is self-signed), paced together to ``rate`` requests/s.
- A request is ``ok`` when the answer is 2xx. Anything else is a failure: a status >= 300 (kept per
  status), or no answer at all (connection refused, reset, timeout; kept per error kind).
- Idle keep-alive connections that the server has closed (nginx closes those of its old workers on
  every reload) are noticed before they are reused and replaced by a new connection, as urllib3,
  browsers and curl do (``dropped_idle`` in the summary).
- One exception, said out loud in the summary as ``stale_retries``: when a request sent on a REUSED
  keep-alive connection gets no answer at all because the server closed that connection at the
  very moment the request went out (the race RFC 9112 section 9.3.1 describes), the request is
  sent again once on a new connection - what browsers, curl and Go's net/http do for idempotent
  requests. It counts as a failure only if the retry fails too. Set ``retry_stale=False`` to count
  them as failures.
- The body of every answer is kept per request when it is short (``/version`` answers "2\\n"), so
  the caller can tell when traffic moved from one release to another (``versions()``,
  ``switch_window()``).
"""
from __future__ import annotations

import argparse
import http.client
import json
import select
import signal
import socket
import ssl
import threading
import time
from collections import Counter
from urllib.parse import urlsplit

LOOPBACK = ("127.0.0.1", "::1", "localhost")
HARD_MAX_SECONDS = 1800
HARD_MAX_REQUESTS = 5_000_000


def _dropped(conn):
    """True when an idle keep-alive connection was closed by the server (readable with nothing to
    read but EOF, or gone)."""
    sock = conn.sock
    if sock is None:
        return True
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)  # an idle HTTP/1.1 connection has nothing to say: EOF (or junk)


class Sample:
    """One request: when it was sent and answered (monotonic seconds since the start), the
    status (0: no answer), the body (if short), the error kind, and whether it was retried."""

    __slots__ = ("sent", "done", "status", "body", "error", "retried")

    def __init__(self, sent, done, status, body, error, retried):
        self.sent, self.done, self.status = sent, done, status
        self.body, self.error, self.retried = body, error, retried

    @property
    def ok(self):
        return 200 <= self.status < 300


class LoadGen:
    def __init__(self, url, rate=250.0, threads=8, max_requests=200_000, max_seconds=300.0,
                 timeout=10.0, retry_stale=True, keepalive=True, headers=None):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise ValueError("loadgen: only http:// and https:// URLs, got %r" % url)
        if parts.hostname not in LOOPBACK:
            raise ValueError("loadgen: targets the loopback address only (127.0.0.1, ::1, "
                             "localhost), got %r" % parts.hostname)
        if not 0 < max_seconds <= HARD_MAX_SECONDS:
            raise ValueError("loadgen: max_seconds must be in (0, %d]" % HARD_MAX_SECONDS)
        if not 0 < max_requests <= HARD_MAX_REQUESTS:
            raise ValueError("loadgen: max_requests must be in (0, %d]" % HARD_MAX_REQUESTS)
        if rate is not None and rate <= 0:
            raise ValueError("loadgen: rate must be > 0 (or None: as fast as possible)")
        self.url = url
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.path = (parts.path or "/") + ("?" + parts.query if parts.query else "")
        self.rate = rate
        self.threads = max(1, int(threads))
        self.max_requests = int(max_requests)
        self.max_seconds = float(max_seconds)
        self.timeout = timeout
        self.retry_stale = retry_stale
        self.keepalive = keepalive
        self.headers = dict(headers or {})
        if not keepalive:
            self.headers["Connection"] = "close"
        self._ctx = ssl.create_default_context()
        self._ctx.check_hostname = False
        self._ctx.verify_mode = ssl.CERT_NONE
        self._lock = threading.Lock()
        self._issued = 0
        self._stop = threading.Event()
        self._workers = []
        self.samples = []
        self.stale_retries = 0
        self.dropped_idle = 0
        self.connections = 0
        self.t0 = None          # monotonic start
        self.epoch0 = None      # wall-clock start (time.time()), to line up with playbook logs
        self.stopped_at = None  # seconds since start

    # -- running ---------------------------------------------------------------------------
    def start(self):
        if self.t0 is not None:
            raise RuntimeError("loadgen: already started")
        self.t0 = time.monotonic()
        self.epoch0 = time.time()
        for i in range(self.threads):
            worker = threading.Thread(target=self._work, args=(i,), name="loadgen-%d" % i,
                                      daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def stop(self):
        self._stop.set()
        for worker in self._workers:
            worker.join(self.timeout + 5)
        if self.stopped_at is None and self.t0 is not None:
            self.stopped_at = time.monotonic() - self.t0
        return self

    def wait(self):
        """Block until the bounds stop the load by themselves."""
        for worker in self._workers:
            worker.join()
        return self.stop()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    def now(self):
        """Seconds since the start (the samples' clock)."""
        return time.monotonic() - self.t0

    def _next_slot(self):
        """The index of the next request and when it is due, or None when a bound is reached."""
        with self._lock:
            if self._stop.is_set() or self._issued >= self.max_requests:
                return None
            index = self._issued
            self._issued += 1
        due = self.t0 + (index / self.rate if self.rate else 0.0)
        return index, due

    def _connect(self):
        if self.scheme == "https":
            conn = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout,
                                               context=self._ctx)
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        conn.connect()
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            self.connections += 1
        return conn

    def _once(self, conn):
        """One request on conn (connected if None). Returns (conn, status, body, error, stale):
        stale is True when a reused connection gave no answer at all."""
        if conn is not None and _dropped(conn):
            # the server closed this idle connection (FIN already here): reconnect before sending,
            # as urllib3, browsers and curl do - not a failure, not a retry
            conn.close()
            conn = None
            with self._lock:
                self.dropped_idle += 1
        reused = conn is not None
        try:
            if conn is None:
                conn = self._connect()
            conn.request("GET", self.path, headers=self.headers)
            resp = conn.getresponse()
            data = resp.read()
            body = data.decode("utf-8", "replace").strip() if len(data) <= 64 else None
            if resp.will_close or not self.keepalive:
                conn.close()
                conn = None
            return conn, resp.status, body, None, False
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
                ConnectionAbortedError, http.client.BadStatusLine, ssl.SSLEOFError) as exc:
            if conn is not None:
                conn.close()
            return None, 0, None, type(exc).__name__, reused
        except (OSError, http.client.HTTPException) as exc:  # refused, timeout, TLS, ...
            if conn is not None:
                conn.close()
            return None, 0, None, type(exc).__name__, False

    def _work(self, _index):
        conn = None
        deadline = self.t0 + self.max_seconds
        while True:
            slot = self._next_slot()
            if slot is None:
                break
            _n, due = slot
            now = time.monotonic()
            if due > now:
                if due >= deadline:
                    break
                if self._stop.wait(due - now):
                    break
            if time.monotonic() >= deadline:
                break
            sent = time.monotonic() - self.t0
            conn, status, body, error, stale = self._once(conn)
            retried = False
            if stale and self.retry_stale:
                retried = True
                with self._lock:
                    self.stale_retries += 1
                conn, status, body, error, _stale = self._once(None)
            sample = Sample(sent, time.monotonic() - self.t0, status, body, error, retried)
            with self._lock:
                self.samples.append(sample)
        if conn is not None:
            conn.close()

    # -- results ---------------------------------------------------------------------------
    def _snapshot(self, since=None, until=None):
        with self._lock:
            samples = list(self.samples)
        return [s for s in samples if (since is None or s.sent >= since)
                and (until is None or s.sent < until)]

    def failures(self, since=None, until=None):
        return [s for s in self._snapshot(since, until) if not s.ok]

    def versions(self, since=None, until=None):
        """Counter of the bodies of ok answers (the release versions, for /version)."""
        return Counter(s.body for s in self._snapshot(since, until) if s.ok)

    def switch_window(self, old, new, since=None):
        """When traffic moved from body ``old`` to body ``new``: (first answer of new, last
        answer of old, seconds between them - 0 when the switch was clean). None if no answer
        of ``new`` was seen."""
        samples = sorted(self._snapshot(since), key=lambda s: s.done)
        first_new = next((s.done for s in samples if s.ok and s.body == new), None)
        if first_new is None:
            return None
        last_old = max([s.done for s in samples if s.ok and s.body == old] or [first_new])
        return {"first_new": round(first_new, 3), "last_old": round(last_old, 3),
                "overlap_seconds": round(max(0.0, last_old - first_new), 3)}

    def summary(self, since=None, until=None):
        samples = self._snapshot(since, until)
        fails = [s for s in samples if not s.ok]
        if samples:
            span = max(s.done for s in samples) - min(s.sent for s in samples)
        else:
            span = 0.0
        lat = sorted(1000.0 * (s.done - s.sent) for s in samples if s.ok)

        def pct(q):
            return round(lat[min(len(lat) - 1, int(q * len(lat)))], 1) if lat else None

        return {
            "url": self.url,
            "requests": len(samples),
            "ok": len(samples) - len(fails),
            "failed": len(fails),
            "failed_by": dict(Counter(str(s.status) if s.status else (s.error or "error")
                                      for s in fails)),
            "stale_retries": self.stale_retries,
            "dropped_idle": self.dropped_idle,
            "connections": self.connections,
            "seconds": round(span, 2),
            "rate": round(len(samples) / span, 1) if span > 0 else 0.0,
            "p50_ms": pct(0.50),
            "p95_ms": pct(0.95),
            "p99_ms": pct(0.99),
            "versions": dict(Counter(s.body for s in samples if s.ok)),
            "first_failure": round(min(s.sent for s in fails), 3) if fails else None,
            "last_failure": round(max(s.sent for s in fails), 3) if fails else None,
        }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="e.g. https://127.0.0.1:38443/version (loopback only)")
    parser.add_argument("--rate", type=float, default=250.0, help="requests/s (default 250)")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0, help="bound in seconds (default 10)")
    parser.add_argument("--max-requests", type=int, default=100_000)
    parser.add_argument("--no-retry-stale", action="store_true",
                        help="count a reset idle keep-alive connection as a failure")
    args = parser.parse_args(argv)
    load = LoadGen(args.url, rate=args.rate, threads=args.threads, max_requests=args.max_requests,
                   max_seconds=args.seconds, retry_stale=not args.no_retry_stale)
    # SIGTERM / Ctrl-C stop the load early; the summary is printed all the same
    signal.signal(signal.SIGTERM, lambda *_: load._stop.set())
    load.start()
    try:
        while any(w.is_alive() for w in load._workers):
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    load.stop()
    print(json.dumps(load.summary(), indent=2))
    return 0 if not load.failures() else 1


if __name__ == "__main__":
    raise SystemExit(main())
