"""The demo app's PostgreSQL mode, for real on this machine: a scratch PostgreSQL 15 (own port on 127.0.0.1), the
app as a process. Covers `app.py migrate` (each migration once, a failing one leaving nothing, every run
counted), the notes it writes per version (the expand migration keeps version 1 working), and /health failing
without the database. Needs the Debian package postgresql-15 (Makefile DEBIAN_PACKAGES)."""
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
APP = os.path.join(ROOT, "lab", "images", "demo-app", "app.py")
PG_BIN = "/usr/lib/postgresql/15/bin"

pytestmark = pytest.mark.skipif(not os.path.exists(os.path.join(PG_BIN, "initdb")),
                                reason="needs postgresql-15 (make debian-packages)")


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Database:
    """A scratch cluster with the role `app` and its database `app` (trust on 127.0.0.1: no password)."""

    def __init__(self):
        self.as_root = os.geteuid() == 0
        self.dir = tempfile.mkdtemp(prefix="greenflow-demo-db-", dir="/tmp")
        if self.as_root:  # initdb refuses root
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        self.data = os.path.join(self.dir, "pg")
        self.port = _free_port()

    def run(self, argv):
        if self.as_root:
            argv = ["runuser", "-u", "postgres", "--"] + argv
        return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=120)

    def start(self):
        self.run([os.path.join(PG_BIN, "initdb"), "-D", self.data, "-A", "trust", "-U", "postgres", "--no-sync"])
        with open(os.path.join(self.data, "postgresql.conf"), "a") as handle:
            handle.write("\nport = %d\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '%s'\nfsync = off\n"
                         % (self.port, self.dir))
        self.run([os.path.join(PG_BIN, "pg_ctl"), "-D", self.data, "-l", self.data + ".log", "-w", "start"])
        self.psql("CREATE ROLE app LOGIN")
        self.psql("CREATE DATABASE app OWNER app")

    def psql(self, sql, database="postgres"):
        return self.run([os.path.join(PG_BIN, "psql"), "-XAtq", "-h", self.dir, "-p", str(self.port), "-U", "postgres",
                         "-d", database, "-c", sql]).stdout.strip()

    def stop(self):
        subprocess.run((["runuser", "-u", "postgres", "--"] if self.as_root else [])
                       + [os.path.join(PG_BIN, "pg_ctl"), "-D", self.data, "-m", "immediate", "-w", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def database():
    db = Database()
    try:
        db.start()
        yield db
    finally:
        db.stop()


def _env(db, version, **extra):
    return dict(os.environ, DEMO_VERSION=str(version), DEMO_DB_HOST="127.0.0.1", DEMO_DB_PORT=str(db.port),
                DEMO_DB_NAME="app", DEMO_DB_USER="app", **extra)


def migrate(db, version, **extra):
    return subprocess.run([sys.executable, APP, "migrate"], env=_env(db, version, **extra), capture_output=True,
                          text=True, timeout=60)


@pytest.fixture
def app_on(database):
    procs = []

    def start(version, db=database, **extra):
        port = _free_port()
        proc = subprocess.Popen([sys.executable, APP], env=dict(_env(db, version, **extra), DEMO_PORT=str(port)),
                                stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        proc.stdout.readline()  # it listens
        return port

    yield start
    for proc in procs:
        proc.kill()
        proc.wait(timeout=10)


def _get(port, path):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_migrate_applies_each_migration_once_and_counts_every_run(database):
    first = migrate(database, 1)
    assert first.returncode == 0, first.stderr
    assert "1 migration(s) to apply: 0001_notes" in first.stdout and "applied 0001_notes" in first.stdout
    again = migrate(database, 1)
    assert again.returncode == 0 and "0 migration(s) to apply" in again.stdout
    second = migrate(database, 2)
    assert second.returncode == 0 and "applied 0002_notes_version" in second.stdout
    assert database.psql("SELECT string_agg(id || ':' || version, ',' ORDER BY id) FROM demo_schema_migrations",
                         "app") == "0001_notes:1,0002_notes_version:2"
    assert database.psql("SELECT string_agg(version || ':' || outcome, ',' ORDER BY run) FROM demo_migrate_runs",
                         "app") == "1:ok,1:ok,2:ok"


def test_a_failing_migration_leaves_nothing_of_itself_and_exits_1(database):
    assert migrate(database, 1).returncode == 0
    failed = migrate(database, 2, DEMO_MIGRATE_FAIL="no room for the index")
    assert failed.returncode == 1
    assert "0002_notes_version failed, rolled back" in failed.stderr and "no room for the index" in failed.stderr
    assert database.psql("SELECT count(*) FROM information_schema.columns WHERE table_name = 'demo_notes' "
                         "AND column_name = 'version'", "app") == "0"
    assert database.psql("SELECT string_agg(outcome, ',' ORDER BY run) FROM demo_migrate_runs", "app") == "ok,failed"


def test_the_expand_migration_keeps_version_1_writing_beside_version_2(database, app_on):
    assert migrate(database, 1).returncode == 0
    v1 = app_on(1)
    assert _get(v1, "/notes/add")[0] == 200
    assert migrate(database, 2).returncode == 0
    v2 = app_on(2)
    status, body = _get(v1, "/notes/add")
    assert status == 200 and json.loads(body)["version"] == "1"
    status, body = _get(v2, "/notes/add")
    assert status == 200 and json.loads(body)["version"] == "2"
    status, body = _get(v2, "/notes")
    assert status == 200 and json.loads(body)["count"] == 3
    assert database.psql("SELECT string_agg(coalesce(version, '-'), ',' ORDER BY id) FROM demo_notes", "app") == "-,-,2"


def test_version_2_without_its_migration_fails_its_writes(database, app_on):
    assert migrate(database, 1).returncode == 0
    status, body = _get(app_on(2), "/notes/add")
    assert status == 500 and "database error" in body and "version" in body


def test_health_fails_while_the_database_does_not_answer(database, app_on):
    assert _get(app_on(1), "/health") == (200, "ok\n")
    closed = type("Closed", (), {"port": _free_port()})()  # nothing listens there
    status, body = _get(app_on(1, db=closed), "/health")
    assert status == 503 and body.startswith("unhealthy: the database does not answer")
    assert _get(app_on(1, db=closed), "/version") == (200, "1\n")  # the rest still answers
    assert _get(app_on(1, db=closed), "/notes")[0] == 500


def test_migrate_says_when_it_cannot_reach_the_database():
    closed = type("Closed", (), {"port": _free_port()})()
    out = migrate(closed, 1)
    assert out.returncode == 2 and "cannot connect to the database" in out.stderr
