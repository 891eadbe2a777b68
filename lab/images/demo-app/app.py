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

PostgreSQL, opt-in: with ``DEMO_DB_HOST`` set the app uses a database (``DEMO_DB_PORT`` 5432, ``DEMO_DB_NAME``
and ``DEMO_DB_USER`` default ``app``, the password read from the file ``DEMO_DB_PASSWORD_FILE``, a swarm
secret). ``/health`` then answers 503 while the database does not answer; ``/notes`` reads the table
``demo_notes`` (GET: how many notes, the newest five) and writes it (``/notes/add``: one note, stamped with
the version when the schema has the column). ``python3 app.py migrate`` brings the schema up to this
version: every migration of ``MIGRATIONS`` whose version is at most this one and that is not yet in
``demo_schema_migrations``, each in its own transaction, under an advisory lock; every run is counted in
``demo_migrate_runs`` (what the lab tests read to prove a migration ran exactly once). Knobs of ``migrate``:

- ``DEMO_MIGRATE_FAIL``: a text; this version's migration fails with it after its statements ran (in the
  transaction: nothing of it stays) and the command exits 1;
- ``DEMO_MIGRATE_SECONDS``: the migration takes this long (a slow step in its transaction, before its schema
  change, so it holds no lock the live release would wait on), e.g. to prove the live release keeps serving
  meanwhile, or to run into ``release_migrate_timeout``.

``DEMO_VERSION`` is baked into the image at build time; ``DEMO_PORT`` (default 8000) is where it listens.
On SIGTERM it stops accepting, finishes the requests in flight and exits.

    python3 app.py            # serve
    python3 app.py migrate    # bring the database schema up to this version, then exit (0: done)
"""
import hashlib
import json
import multiprocessing
import os
import queue
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
DB_HOST = os.environ.get("DEMO_DB_HOST", "")
MIGRATE_FAIL = os.environ.get("DEMO_MIGRATE_FAIL", "")
MIGRATE_SECONDS = _env_float("DEMO_MIGRATE_SECONDS", 0)

# The schema, one migration per version that changed it: (id, version, statements). Written the expand /
# contract way (docs/deploy.md): 0002 only adds a nullable column, so version 1 keeps working on it.
MIGRATIONS = (
    ("0001_notes", 1, ("CREATE TABLE demo_notes (id bigserial PRIMARY KEY, body text NOT NULL, "
                       "created_at timestamptz NOT NULL DEFAULT now())",)),
    ("0002_notes_version", 2, ("ALTER TABLE demo_notes ADD COLUMN version text",)),
)
MIGRATE_LOCK = 740_101  # pg_advisory_lock key: two migrate runs at once take turns


def _version_number():
    """This version as a number (which migrations it needs); None when it is not one (then: all)."""
    return int(VERSION) if VERSION.isdigit() else None


def _db_connect():
    import psycopg2  # only with DEMO_DB_HOST: the app without a database needs no driver

    password = None
    password_file = os.environ.get("DEMO_DB_PASSWORD_FILE", "")
    if password_file:
        with open(password_file, encoding="utf-8") as f:
            password = f.read().strip()
    conn = psycopg2.connect(host=DB_HOST, port=int(os.environ.get("DEMO_DB_PORT", "5432")),
                            dbname=os.environ.get("DEMO_DB_NAME", "app"), user=os.environ.get("DEMO_DB_USER", "app"),
                            password=password, connect_timeout=3, application_name="demo-%s" % VERSION,
                            options="-c statement_timeout=5000")
    return conn


class DbPool:
    """A few open connections, shared by the request threads (a connection per request would cost a
    login each time); a connection that failed is dropped, the next request opens a new one."""

    def __init__(self, size=8):
        self.idle = queue.LifoQueue(maxsize=size)

    def run(self, sql, args=(), fetch=True):
        try:
            conn = self.idle.get_nowait()
        except queue.Empty:
            conn = _db_connect()
            conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(sql, args)
                rows = cur.fetchall() if fetch else None
        except Exception:
            conn.close()
            raise
        try:
            self.idle.put_nowait(conn)
        except queue.Full:
            conn.close()
        return rows


DB = DbPool() if DB_HOST else None


def _db_error(exc):
    return " ".join(str(exc).split())[:300] or type(exc).__name__


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
            db_error = None
            if DB is not None:
                try:
                    DB.run("SELECT 1")
                except Exception as exc:  # any failure of the database makes the app unhealthy
                    db_error = _db_error(exc)
            if SECRET_FILE and _secret_digest() is None:
                self._send(503, "unhealthy: cannot read DEMO_SECRET_FILE %s\n" % SECRET_FILE)
            elif db_error:
                self._send(503, "unhealthy: the database does not answer: %s\n" % db_error)
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
        if path in ("/notes", "/notes/add"):
            self._notes(path)
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

    def _notes(self, path):
        if DB is None:
            self._send(404, "no database (DEMO_DB_HOST is not set)\n")
            return
        number = _version_number()
        try:
            if path == "/notes/add":
                if number is None or number >= 2:  # this version writes the column 0002 added
                    rows = DB.run("INSERT INTO demo_notes (body, version) VALUES (%s, %s) RETURNING id",
                                  ("note from %s" % HOST, VERSION))
                else:
                    rows = DB.run("INSERT INTO demo_notes (body) VALUES (%s) RETURNING id", ("note from %s" % HOST,))
                body = {"id": rows[0][0], "version": VERSION}
            else:
                count = DB.run("SELECT count(*) FROM demo_notes")[0][0]
                newest = DB.run("SELECT id, body FROM demo_notes ORDER BY id DESC LIMIT 5")
                body = {"count": count, "newest": [{"id": i, "body": b} for i, b in newest], "version": VERSION}
        except Exception as exc:
            self._send(500, "database error: %s\n" % _db_error(exc))
            return
        self._send(200, json.dumps(body) + "\n", "application/json")

    def log_message(self, fmt, *args):  # access logs belong to nginx; keep stdout quiet
        pass


class DemoServer(ThreadingHTTPServer):
    daemon_threads = False  # server_close() waits for requests in flight
    allow_reuse_address = True


def migrate():
    """Bring the schema up to this version; returns the exit code. Every run is counted (demo_migrate_runs)."""
    number = _version_number()
    try:
        conn = _db_connect()
    except Exception as exc:
        print("migrate: cannot connect to the database: %s" % _db_error(exc), file=sys.stderr, flush=True)
        return 2
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_lock(%s)", (MIGRATE_LOCK,))
        cur.execute("CREATE TABLE IF NOT EXISTS demo_schema_migrations (id text PRIMARY KEY, version text NOT NULL, "
                    "applied_at timestamptz NOT NULL DEFAULT now())")
        cur.execute("CREATE TABLE IF NOT EXISTS demo_migrate_runs (run bigserial PRIMARY KEY, version text NOT NULL, "
                    "outcome text, at timestamptz NOT NULL DEFAULT now())")
        cur.execute("INSERT INTO demo_migrate_runs (version) VALUES (%s) RETURNING run", (VERSION,))
        run = cur.fetchone()[0]
        cur.execute("SELECT id FROM demo_schema_migrations")
        done = {row[0] for row in cur.fetchall()}
    pending = [m for m in MIGRATIONS if m[0] not in done and (number is None or m[1] <= number)]
    print("migrate: version %s, run %d: %d migration(s) to apply%s" % (
        VERSION, run, len(pending), (": " + ", ".join(m[0] for m in pending)) if pending else ""), flush=True)
    outcome, code = "ok", 0
    try:
        for index, (ident, _version, statements) in enumerate(pending or [(None, None, ())]):
            last = index == max(len(pending), 1) - 1
            started = time.monotonic()
            conn.autocommit = False
            with conn.cursor() as cur:
                if last and MIGRATE_SECONDS:  # a slow data step before the schema change: it holds no lock
                    time.sleep(MIGRATE_SECONDS)
                for statement in statements:
                    cur.execute(statement)
                if last and MIGRATE_FAIL:
                    raise RuntimeError("DEMO_MIGRATE_FAIL: %s" % MIGRATE_FAIL)
                if ident:
                    cur.execute("INSERT INTO demo_schema_migrations (id, version) VALUES (%s, %s)", (ident, VERSION))
            conn.commit()
            if ident:
                print("migrate: applied %s in %.1f s" % (ident, time.monotonic() - started), flush=True)
    except Exception as exc:
        conn.rollback()
        outcome, code = "failed", 1
        print("migrate: %s failed, rolled back (nothing of it stays): %s" % (ident or "the migration", _db_error(exc)),
              file=sys.stderr, flush=True)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("UPDATE demo_migrate_runs SET outcome = %s WHERE run = %s", (outcome, run))
    conn.close()
    if not code:
        print("migrate: the schema is up to date for version %s" % VERSION, flush=True)
    return code


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
    if sys.argv[1:] == ["migrate"]:
        sys.exit(migrate())
    if sys.argv[1:]:
        sys.exit("usage: app.py [migrate]")
    main()
