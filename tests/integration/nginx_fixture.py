"""A real nginx on 127.0.0.1 with two small backend pools, for integration tests and benchmarks.

Reusable pieces (pytest fixtures wrapping them live in tests/integration/conftest.py):

- ``Backend(pool, error_rate=0, latency_ms=0, healthy=True)``: a threaded Python HTTP/1.1 server
  in its own process on 127.0.0.1 (port chosen by the kernel). Every answer carries its pool and
  address (``X-Pool`` / ``X-Server`` headers and a JSON body); ``/health`` answers 200, or 503
  when unhealthy; ``/version`` answers the pool. Fault knobs, settable while it runs:
  ``backend.set_faults(error_rate=0.2, latency_ms=50, healthy=False)`` (or POST JSON to
  ``/__faults``); initial values also from DEMO_ERROR_RATE / DEMO_LATENCY_MS / DEMO_HEALTHY.
- ``NginxLab(base_dir, app="demo")``: nginx with its own prefix dir (conf/, logs/, run/, tmp/),
  a main config that includes ``conf/conf.d/*.conf`` (where the module's generated file goes,
  ``lab.upstream_conf``), a vhost on a free 127.0.0.1 port proxying to ``http://$<app>_backend``,
  and a JSON access log (``lab.access_log``) with fields msec, time, status, request_time,
  upstream_addr, upstream_status, upstream_response_time, request_id, upstream_name (the pool's
  upstream chosen by split_clients), uri. ``lab.module_args()`` gives the options that point the
  module at this instance.
  ``NginxLab(base_dir, lua=True)`` (when ``lua_available()``) is the reload-free setup of the
  nginx_lb role: Debian's lua module, the role's own greenflow_split.lua, a shared dict seeded from
  the generated file (written in split mode ``lua``), ``set_by_lua_block`` for ``$<app>_backend``
  in the vhost and the control socket (``lab.control_socket``, in a 0700 directory;
  ``lab.control(method, query)`` calls it).
- ``run_module(args, check=False, diff=False)``: run greenflow.platform.nginx_upstream directly
  (python, no ansible: fast, for loops); ``run_ansible(module, args, check, diff)``: the real
  thing, ``ansible localhost -m ...`` from the checkout. Both return the result dict.
  ``start_module(args)`` starts it without waiting (a Popen in its own session, to kill mid-run).
- ``Load(url, threads, ...)``: a bounded background load (count and time) over keep-alive or
  fresh connections; ``fire(url, n)``: n requests, returns a LoadResult.

Traffic goes to 127.0.0.1 only, and every loop is bounded in count and time.

Run as a script, ``python nginx_fixture.py backend --pool blue`` is the backend server itself.
"""

import argparse
import collections
import http.client
import json
import os
import random
import select
import signal
import socket
import shutil
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))
COLLECTIONS = os.path.join(REPO_ROOT, "collections")
VENV_BIN = os.path.join(REPO_ROOT, ".venv", "bin")
MODULE_NAME = "greenflow.platform.nginx_upstream"
LUA_DIR = os.path.join(REPO_ROOT, "roles", "nginx_lb", "files")
LUA_MODULES = ("/usr/lib/nginx/modules/ndk_http_module.so", "/usr/lib/nginx/modules/ngx_http_lua_module.so")
RESTY_CORE = ("/usr/share/lua/5.1/resty/core.lua", "/usr/local/share/lua/5.1/resty/core.lua")

if COLLECTIONS not in sys.path:
    sys.path.insert(0, COLLECTIONS)


def nginx_binary():
    for cand in ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx"):
        if os.access(cand, os.X_OK):
            return cand
    for d in os.environ.get("PATH", "").split(os.pathsep):
        cand = os.path.join(d, "nginx")
        if os.access(cand, os.X_OK):
            return cand
    return None


def lua_available():
    """Debian's lua module for nginx and lua-resty-core are installed (the reload-free mode)."""
    return all(os.path.exists(m) for m in LUA_MODULES) and any(os.path.exists(r) for r in RESTY_CORE)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.02)
    raise RuntimeError("nothing listens on 127.0.0.1:%d after %.0f s" % (port, timeout))


# ------------------------------------------------------------------ backend (server side)


def _serve_backend(pool, port):
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    faults = {
        "error_rate": float(os.environ.get("DEMO_ERROR_RATE", "0") or 0),
        "latency_ms": float(os.environ.get("DEMO_LATENCY_MS", "0") or 0),
        "healthy": os.environ.get("DEMO_HEALTHY", "true").lower() not in ("false", "0", "no"),
    }
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "greenflow-test-backend"

        def setup(self):
            BaseHTTPRequestHandler.setup(self)
            # headers and body are two writes: without NODELAY, Nagle + delayed ACK add 40 ms
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def log_message(self, *args):
            pass

        def _send(self, status, payload):
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Pool", pool)
            self.send_header("X-Server", "127.0.0.1:%d" % self.server.server_address[1])
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            data = self.rfile.read(length) if length else b""
            if self.path.startswith("/__faults"):
                new = json.loads(data or b"{}")
                with lock:
                    for key in ("error_rate", "latency_ms"):
                        if new.get(key) is not None:
                            faults[key] = float(new[key])
                    if new.get("healthy") is not None:
                        faults["healthy"] = bool(new["healthy"])
                    self._send(200, dict(faults))
                return
            self.do_GET()

        def do_GET(self):
            with lock:
                f = dict(faults)
            if self.path.startswith("/__faults"):
                return self._send(200, f)
            if self.path.startswith("/health"):
                return self._send(200 if f["healthy"] else 503, {"pool": pool, "healthy": f["healthy"]})
            if f["latency_ms"] > 0:
                time.sleep(f["latency_ms"] / 1000.0)
            if self.path.startswith("/version"):
                return self._send(200, {"pool": pool, "version": pool})
            if f["error_rate"] > 0 and random.random() < f["error_rate"]:
                return self._send(500, {"pool": pool, "error": "injected"})
            self._send(200, {"pool": pool, "path": self.path,
                             "request_id": self.headers.get("X-Request-Id")})

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 512
        allow_reuse_address = True

    httpd = Server(("127.0.0.1", port), Handler)
    sys.stdout.write("%d\n" % httpd.server_address[1])
    sys.stdout.flush()
    signal.signal(signal.SIGTERM, lambda *a: os._exit(0))
    httpd.serve_forever(poll_interval=0.2)


# ------------------------------------------------------------------ backend (test side)


class Backend:
    """One backend server process of a pool, on 127.0.0.1:<kernel-chosen port>."""

    def __init__(self, pool, error_rate=0.0, latency_ms=0.0, healthy=True):
        self.pool = pool
        self.port = None
        self.proc = None
        self.env = dict(os.environ, DEMO_ERROR_RATE=str(error_rate), DEMO_LATENCY_MS=str(latency_ms),
                        DEMO_HEALTHY="true" if healthy else "false")

    @property
    def address(self):
        return "127.0.0.1:%d" % self.port

    @property
    def url(self):
        return "http://%s" % self.address

    def start(self):
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "backend", "--pool", self.pool],
            stdout=subprocess.PIPE, env=self.env, start_new_session=True,
        )
        line = self.proc.stdout.readline()
        if not line.strip():
            raise RuntimeError("backend %s did not start" % self.pool)
        self.port = int(line)
        wait_port(self.port)
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc and self.proc.stdout:
            self.proc.stdout.close()

    def _call(self, method, path, payload=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            body = json.dumps(payload).encode() if payload is not None else None
            conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read() or b"{}")
        finally:
            conn.close()

    def set_faults(self, error_rate=None, latency_ms=None, healthy=None):
        """Change the fault knobs of the running server; returns the knobs now in force."""
        return self._call("POST", "/__faults", {"error_rate": error_rate, "latency_ms": latency_ms,
                                                 "healthy": healthy})[1]

    def faults(self):
        return self._call("GET", "/__faults")[1]


# ------------------------------------------------------------------ nginx


LOG_FORMAT = (
    '{"msec":"$msec","time":"$time_iso8601","status":$status,"request_time":$request_time,'
    '"upstream_addr":"$upstream_addr","upstream_status":"$upstream_status",'
    '"upstream_response_time":"$upstream_response_time","request_id":"$request_id",'
    '"upstream_name":"$%(app)s_backend","uri":"$uri","connection":"$connection",'
    '"connection_requests":"$connection_requests"}'
)

MAIN_CONF = """\
# nginx for greenflow integration tests (generated by tests/integration/nginx_fixture.py)
%(load_modules)s
%(user)s
worker_processes %(workers)d;
pid %(prefix)s/run/nginx.pid;
error_log %(prefix)s/logs/error.log notice;
# old workers get this long to finish in-flight requests after a reload
worker_shutdown_timeout 30s;

events {
    worker_connections 4096;
}

http {
    client_body_temp_path %(prefix)s/tmp/client_body;
    proxy_temp_path %(prefix)s/tmp/proxy;
    fastcgi_temp_path %(prefix)s/tmp/fastcgi;
    uwsgi_temp_path %(prefix)s/tmp/uwsgi;
    scgi_temp_path %(prefix)s/tmp/scgi;

    log_format greenflow_json escape=json '%(log_format)s';
    access_log %(prefix)s/logs/access.log greenflow_json;

    keepalive_timeout 65s;
    keepalive_requests 100000;

    # the module's generated file(s): upstream <app>_blue/<app>_green + split_clients
    include %(prefix)s/conf/conf.d/*.conf;
%(lua_http)s
    server {
        listen 127.0.0.1:%(port)d;
%(lua_server)s
        location / {
            proxy_pass http://$%(app)s_backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Request-Id $request_id;
            proxy_connect_timeout 2s;
            proxy_read_timeout 30s;
            proxy_next_upstream error timeout;
            proxy_next_upstream_tries 3;
            add_header X-Request-Id $request_id always;
            add_header X-Upstream-Name $%(app)s_backend always;
        }
    }
    include %(prefix)s/conf/vhosts/*.conf;
}
"""


LUA_HTTP = """
    # reload-free split (the nginx_lb role's setup): shared dict seeded from the file, control socket
    lua_package_path "%(lua_dir)s/?.lua;;";
    lua_shared_dict greenflow_split 1m;
    init_by_lua_block {
        greenflow_split = require "greenflow_split"
        greenflow_split.seed("%(app)s", "%(conf)s")
    }
    server {
        listen unix:%(socket)s;
        access_log off;
        location = /greenflow/split { content_by_lua_block { greenflow_split.control() } }
        location / { return 404; }
    }
"""


def _wait_gone(pid, timeout):
    """Wait (bounded) until process ``pid`` has exited; True when it has."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except OSError:
            return True
        time.sleep(0.05)
    return False


class NginxLab:
    """An nginx master on 127.0.0.1:<free port> with its own prefix, for one app."""

    def __init__(self, base_dir, app="demo", workers=2, lua=False):
        self.app = app
        self.lua = lua
        # a unix socket path has at most 107 bytes: a short private directory (mkdtemp: 0700)
        self._ctl_dir = tempfile.mkdtemp(prefix="gf-ctl-", dir="/tmp") if lua else None
        self.prefix = os.path.abspath(base_dir)
        self.workers = workers
        self.port = None
        self.nginx = nginx_binary()
        if not self.nginx:
            raise RuntimeError("nginx binary not found")
        for sub in ("conf/conf.d", "conf/vhosts", "logs", "run", "tmp"):
            os.makedirs(os.path.join(self.prefix, sub), exist_ok=True)

    # paths
    @property
    def main_conf(self):
        return os.path.join(self.prefix, "conf", "nginx.conf")

    @property
    def conf_dir(self):
        return os.path.join(self.prefix, "conf", "conf.d")

    @property
    def vhost_dir(self):
        return os.path.join(self.prefix, "conf", "vhosts")

    @property
    def upstream_conf(self):
        return os.path.join(self.conf_dir, "greenflow-upstream-%s.conf" % self.app)

    @property
    def access_log(self):
        return os.path.join(self.prefix, "logs", "access.log")

    @property
    def error_log(self):
        return os.path.join(self.prefix, "logs", "error.log")

    @property
    def pid_file(self):
        return os.path.join(self.prefix, "run", "nginx.pid")

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    @property
    def control_socket(self):
        if self._ctl_dir:
            return os.path.join(self._ctl_dir, "split.sock")
        return os.path.join(self.prefix, "run", "no-control", "split.sock")

    def module_args(self, **extra):
        """Options pointing greenflow.platform.nginx_upstream at this instance."""
        args = dict(app=self.app, conf_path=self.upstream_conf, nginx_conf=self.main_conf,
                    nginx_prefix=self.prefix, nginx_bin=self.nginx)
        # reload-free: the lab's socket; otherwise one that does not exist (not the host's default)
        args["control_socket"] = self.control_socket
        args.update(extra)
        return args

    def write_main_conf(self):
        user = "user root root;" if os.geteuid() == 0 else ""
        lua_http = lua_server = load_modules = ""
        if self.lua:
            load_modules = "\n".join("load_module %s;" % m for m in LUA_MODULES)
            lua_http = LUA_HTTP % dict(lua_dir=LUA_DIR, app=self.nginx_id, conf=self.upstream_conf,
                                       socket=self.control_socket)
            lua_server = '        set_by_lua_block $%s_backend { return greenflow_split.pick("%s") }' % (
                self.nginx_id, self.nginx_id)
        with open(self.main_conf, "w") as f:
            f.write(MAIN_CONF % dict(user=user, workers=self.workers, prefix=self.prefix, port=self.port,
                                     app=self.nginx_id, log_format=LOG_FORMAT % dict(app=self.nginx_id),
                                     load_modules=load_modules, lua_http=lua_http, lua_server=lua_server))

    def control(self, method, query, timeout=5):
        """One call on the control socket: (status, body)."""
        from ansible_collections.greenflow.platform.plugins.module_utils import _nginx_switch as sw
        return sw.control_call(self.control_socket, method, query, timeout)

    @property
    def nginx_id(self):
        """The app's name in nginx names ('-' written '_', as the module writes them)."""
        from ansible_collections.greenflow.platform.plugins.module_utils import _release_model as model
        return model.nginx_id(self.app)

    def write_initial_upstream(self, pools, shares):
        """Seed the generated file (with the module's own renderer) so nginx can start."""
        from ansible_collections.greenflow.platform.plugins.module_utils import _nginx_upstream as nu
        text = nu.render(self.app, nu.normalize_pools(pools), nu.normalize_shares(shares),
                         split="lua" if self.lua else "split_clients")
        with open(self.upstream_conf, "w") as f:
            f.write(text)

    def start(self, pools=None, shares=None):
        if pools is not None:
            self.write_initial_upstream(pools, shares or {"blue": 100})
        last = None
        for _ in range(5):
            self.port = free_port()
            self.write_main_conf()
            proc = subprocess.run([self.nginx, "-c", self.main_conf, "-p", self.prefix],
                                  capture_output=True, text=True)
            if proc.returncode == 0:
                wait_port(self.port)
                self._wait_workers()
                return self
            last = proc.stderr
            if "Address already in use" not in proc.stderr:
                break
        raise RuntimeError("nginx did not start: %s" % last)

    def _wait_workers(self, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.worker_pids()) >= self.workers:
                return
            time.sleep(0.02)

    def settle(self, timeout=15):
        """Wait (bounded) until old workers of earlier reloads have exited; returns worker pids."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pids = self.worker_pids()
            if len(pids) <= self.workers:
                return pids
            time.sleep(0.02)
        return self.worker_pids()

    def master_pid(self):
        try:
            with open(self.pid_file) as f:
                pid = int(f.read().strip())
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError):
            return None

    def worker_pids(self):
        pid = self.master_pid()
        if pid is None:
            return set()
        kids = set()
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open("/proc/%s/stat" % entry) as f:
                        data = f.read()
                except OSError:
                    continue
                fields = data[data.rfind(")") + 2:].split()
                if len(fields) > 1 and fields[1] == str(pid):
                    kids.add(int(entry))
        return kids

    def reload_count(self):
        """How many reloads the master has done (SIGHUP lines in the error log)."""
        try:
            with open(self.error_log) as f:
                return sum(1 for line in f if "(SIGHUP) received" in line)
        except OSError:
            return 0

    def stop(self):
        try:
            self._stop_master()
        finally:
            if self._ctl_dir:
                shutil.rmtree(self._ctl_dir, ignore_errors=True)

    def quit(self, timeout=10):
        """Stop the master (SIGQUIT, graceful) and wait; the lab can be started again."""
        pid = self.master_pid()
        if pid is None:
            return
        os.kill(pid, signal.SIGQUIT)
        if not _wait_gone(pid, timeout):
            raise RuntimeError("nginx master %d did not quit within %d s" % (pid, timeout))

    def _stop_master(self):
        pid = self.master_pid()
        if pid is None:
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            return
        if not _wait_gone(pid, 10):
            os.kill(pid, signal.SIGKILL)

    def log_offset(self):
        try:
            return os.path.getsize(self.access_log)
        except OSError:
            return 0

    def read_access_log(self, offset=0):
        """Parsed JSON entries of the access log from byte ``offset``; returns (entries, new_offset)."""
        with open(self.access_log, "rb") as f:
            f.seek(offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        entries = [json.loads(line) for line in data[:end].splitlines() if line.strip()]
        return entries, offset + end

    def read_access_log_until(self, offset, count, timeout=5.0):
        """Like read_access_log, but wait (at most ``timeout`` s) until ``count`` entries are there:
        nginx writes a request's log line only after its response has left, so a client can see
        its last answer a moment before the line exists."""
        deadline = time.monotonic() + timeout
        while True:
            entries, end = self.read_access_log(offset)
            if len(entries) >= count or time.monotonic() >= deadline:
                return entries, end
            time.sleep(0.05)


# ------------------------------------------------------------------ running the module


def run_module(args, check=False, diff=False, timeout=120):
    """Run the module file directly with python (no ansible, fast); returns its JSON result."""
    payload = dict(args, _ansible_check_mode=check, _ansible_diff=diff)
    env = dict(os.environ, PYTHONPATH=COLLECTIONS + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-m", "ansible_collections.greenflow.platform.plugins.modules.nginx_upstream"],
        input=json.dumps({"ANSIBLE_MODULE_ARGS": payload}), capture_output=True, text=True,
        env=env, cwd=REPO_ROOT, timeout=timeout,
    )
    try:
        return json.loads(proc.stdout)
    except ValueError:
        raise RuntimeError("module output is not JSON (rc=%d): %s %s" % (proc.returncode, proc.stdout, proc.stderr))


def start_module(args):
    """Start the module like run_module, without waiting: a Popen in a session of its own, so that a
    test can kill it mid-run (SIGKILL) and then its leftover children (os.killpg(proc.pid, ...))."""
    payload = dict(args, _ansible_check_mode=False, _ansible_diff=False)
    env = dict(os.environ, PYTHONPATH=COLLECTIONS + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(
        [sys.executable, "-m", "ansible_collections.greenflow.platform.plugins.modules.nginx_upstream"],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env=env, cwd=REPO_ROOT, start_new_session=True,
    )
    proc.stdin.write(json.dumps({"ANSIBLE_MODULE_ARGS": payload}).encode())
    proc.stdin.close()
    return proc


def run_ansible(args, module=MODULE_NAME, check=False, diff=False, timeout=300):
    """``ansible localhost -c local -m <module> -a <json>`` from the checkout; returns the result."""
    cmd = [os.path.join(VENV_BIN, "ansible"), "localhost", "-i", "localhost,", "-c", "local",
           "-m", module, "-a", json.dumps(args), "-e", "ansible_python_interpreter=%s" % sys.executable]
    if check:
        cmd.append("--check")
    if diff:
        cmd.append("--diff")
    env = dict(os.environ, ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
               ANSIBLE_NOCOLOR="1", ANSIBLE_DEPRECATION_WARNINGS="0")
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT, env=env, timeout=timeout)
    try:
        out = json.loads(proc.stdout)
        return out["plays"][0]["tasks"][0]["hosts"]["localhost"]
    except (ValueError, KeyError, IndexError):
        raise RuntimeError("ansible failed (rc=%d): %s %s" % (proc.returncode, proc.stdout, proc.stderr))


# ------------------------------------------------------------------ load


class LoadResult:
    def __init__(self):
        self.requests = 0
        self.ok = 0
        self.by_pool = collections.Counter()
        self.by_status = collections.Counter()
        self.errors = []           # connection errors on fresh connections (real failures)
        self.stale_retries = 0     # reused keep-alive connection closed under us, retried once
        self.stale_details = []
        self.dropped_idle = 0      # idle keep-alive connection seen closed before reuse: reconnected
        self.seconds = 0.0

    def merge(self, other):
        self.requests += other.requests
        self.ok += other.ok
        self.by_pool.update(other.by_pool)
        self.by_status.update(other.by_status)
        self.errors.extend(other.errors)
        self.stale_retries += other.stale_retries
        self.stale_details.extend(other.stale_details)
        self.dropped_idle += other.dropped_idle

    @property
    def failed(self):
        return len(self.errors) + sum(n for s, n in self.by_status.items() if s >= 500)

    def share(self, pool):
        total = sum(self.by_pool.values())
        return 100.0 * self.by_pool[pool] / total if total else 0.0

    def summary(self):
        return ("requests=%d ok=%d failed=%d 5xx=%d errors=%d stale_keepalive_retries=%d idle_reconnects=%d by_pool=%s (%.1fs)"
                % (self.requests, self.ok, self.failed,
                   sum(n for s, n in self.by_status.items() if s >= 500), len(self.errors),
                   self.stale_retries, self.dropped_idle, dict(self.by_pool), self.seconds))


_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, ConnectionAbortedError)


class _Client:
    """One client connection; on a reused keep-alive connection that the server closed before
    answering, retries the (idempotent GET) request once on a fresh connection, as browsers and
    HTTP libraries do (RFC 9112 section 9.3.1). Such retries are counted, never hidden."""

    def __init__(self, port, keepalive, timeout=10):
        self.port = port
        self.keepalive = keepalive
        self.timeout = timeout
        self.conn = None
        self.used = 0

    def _fresh(self):
        if self.conn:
            self.conn.close()
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        self.used = 0

    def get(self, path, result):
        if self.conn is None or not self.keepalive:
            self._fresh()
        elif self.conn.sock is not None and select.select([self.conn.sock], [], [], 0)[0]:
            # readable while idle = the server closed it (FIN): reconnect before sending, as
            # urllib3/requests and browsers do; counted, not a failure
            result.dropped_idle += 1
            self._fresh()
        headers = {} if self.keepalive else {"Connection": "close"}
        for attempt in (0, 1):
            reused = self.used > 0
            try:
                self.conn.request("GET", path, headers=headers)
                resp = self.conn.getresponse()
                resp.read()
                self.used += 1
                result.requests += 1
                result.by_status[resp.status] += 1
                if resp.status < 500:
                    result.ok += 1
                result.by_pool[resp.getheader("X-Pool") or "none"] += 1
                if not self.keepalive or resp.will_close:
                    self.conn.close()
                    self.conn = None
                return resp
            except _STALE as exc:
                self._fresh()
                if reused and attempt == 0:
                    result.stale_retries += 1
                    result.stale_details.append(repr(exc))
                    continue
                result.requests += 1
                result.errors.append(repr(exc))
                return None
            except (OSError, http.client.HTTPException) as exc:
                self._fresh()
                result.requests += 1
                result.errors.append(repr(exc))
                return None

    def close(self):
        if self.conn:
            self.conn.close()


def _port_of(url):
    return int(url.rsplit(":", 1)[1].split("/")[0])


def fire(url, n, threads=4, keepalive=True, path="/", max_seconds=120):
    """Send ``n`` GET requests (split over ``threads`` clients); bounded by ``max_seconds``."""
    load = Load(url, threads=threads, keepalive=keepalive, path=path, max_requests=n, max_seconds=max_seconds)
    load.start()
    return load.wait()


class Load:
    """Background load: ``threads`` clients sending GETs until ``stop()``, ``max_requests`` or
    ``max_seconds`` (whichever comes first). ``pause`` seconds between a client's requests."""

    def __init__(self, url, threads=4, keepalive=True, path="/", max_requests=100000, max_seconds=60,
                 pause=0.0):
        self.port = _port_of(url)
        self.threads = threads
        self.keepalive = keepalive
        self.path = path
        self.max_requests = max_requests
        self.max_seconds = max_seconds
        self.pause = pause
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._issued = 0
        self._workers = []
        self._results = []
        self._t0 = None

    def _take(self):
        with self._lock:
            if self._issued >= self.max_requests:
                return False
            self._issued += 1
            return True

    def _run(self, res):
        client = _Client(self.port, self.keepalive)
        deadline = self._t0 + self.max_seconds
        try:
            while not self._stop.is_set() and time.monotonic() < deadline and self._take():
                client.get(self.path, res)
                if self.pause:
                    self._stop.wait(self.pause)
        finally:
            client.close()

    def start(self):
        self._t0 = time.monotonic()
        for _ in range(self.threads):
            res = LoadResult()
            t = threading.Thread(target=self._run, args=(res,), daemon=True)
            self._results.append(res)
            self._workers.append(t)
            t.start()
        return self

    def stop(self):
        self._stop.set()
        return self.wait()

    def wait(self):
        for t in self._workers:
            t.join(self.max_seconds + 30)
        total = LoadResult()
        for r in self._results:
            total.merge(r)
        total.seconds = time.monotonic() - self._t0
        return total


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("backend", help="run one backend server (prints its port)")
    b.add_argument("--pool", required=True)
    b.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    if args.cmd == "backend":
        _serve_backend(args.pool, args.port)


if __name__ == "__main__":
    main()
