#!/usr/bin/env python3
"""Benchmark (issue #16): change nginx's blue/green split with a reload vs without one.

Starts, under a fresh /tmp/greenflow-reloadfree-* directory, two private nginx masters on 127.0.0.1
only: a backend nginx (2 "blue" + 2 "green" servers answering their pool name) and a load balancer
with Debian's lua module (libnginx-mod-http-lua + lua-resty-core) and, if installed, njs
(libnginx-mod-http-js). The load balancer serves the same app three ways, one port each:

  plain  split_clients "${request_id}" from the file nginx_upstream renders (today; switch = reload)
  lua    set_by_lua_block picks the pool from a lua_shared_dict; a control location on a unix
         socket in a 0700 directory validates and updates it; init_by_lua seeds it from the file
  njs    js_set reads a one-line state file per request (njs 0.7.9 has no shared dict)

and measures, side by side: failed requests of 32 HTTP/1.1 keep-alive clients (no retry, like wrk)
during 5 split changes; time from the switch call to the new split served; latency p50/p95 at
~250 req/s; split accuracy at 5/25/50 %; whether the access log attributes each request to its
pool; and the control path's guarantees (bad input refused, previous split kept, restart and
reload come back with the file's split).

Usage:  python3 bench/bench_nginx_reload_free.py [--quick] [--keep]
No ansible needed (it imports the pure renderer of the checkout). Every loop is bounded in count
and time; both nginx masters are stopped at the end (--keep leaves the directory for reading).
"""

import argparse
import json
import math
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "collections"))

from ansible_collections.greenflow.platform.plugins.module_utils import _nginx_upstream as nu  # noqa: E402

MODDIR = "/usr/lib/nginx/modules"
NGINX = "/usr/sbin/nginx"
LUA_MODS = ("ndk_http_module.so", "ngx_http_lua_module.so")
NJS_MOD = "ngx_http_js_module.so"
APP = "demo"
DEADLINE = time.monotonic() + 170  # hard bound of the whole run

# --------------------------------------------------------------------------- configs

BACKEND_CONF = """\
worker_processes 1;
pid %(d)s/backend.pid;
error_log %(d)s/backend-error.log warn;
%(user)s
events { worker_connections 1024; }
http {
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path %(d)s/tmp; proxy_temp_path %(d)s/tmp; fastcgi_temp_path %(d)s/tmp;
    uwsgi_temp_path %(d)s/tmp; scgi_temp_path %(d)s/tmp;
%(servers)s
}
"""
BACKEND_SERVER = """\
    server { listen 127.0.0.1:%(port)d; add_header X-Pool %(pool)s always;
             location / { return 200 "%(pool)s 127.0.0.1:%(port)d\\n"; } }
"""

LUA_MODULE = r"""
-- greenflow_split: the live blue/green split of each app, in a lua_shared_dict.
-- keys: <app> -> green share in percent (0..100); pools:<app> -> "b", "g" or "bg" (pools with servers);
--       serial:<app> -> count of accepted changes since the last seed.
local _M = {}
local dict = ngx.shared.greenflow_split
local names = {}

local function parse_state(path)
    local f, err = io.open(path, "r")
    if not f then return nil, err end
    local text = f:read("*a"); f:close()
    local line = text:match("\n# greenflow%-state: ([^\n]+)") or text:match("^# greenflow%-state: ([^\n]+)")
    if not line then return nil, path .. ": no greenflow-state header" end
    -- the renderer writes compact JSON with sorted keys
    local b, g = line:match('"shares":{"blue":(%d+),"green":(%d+)}')
    local pb, pg = line:match('"pools":{"blue":%[(.-)%],"green":%[(.-)%]}')
    if not b or not pb then return nil, path .. ": cannot read shares/pools in the header" end
    b, g = tonumber(b), tonumber(g)
    if b + g ~= 100 then return nil, path .. ": shares do not add up to 100" end
    local pools = (pb ~= "" and "b" or "") .. (pg ~= "" and "g" or "")
    return {green = g, pools = pools}
end

-- init_by_lua (master, at start, at every reload and in nginx -t): the file is the truth.
function _M.seed(app, path)
    local st, err = parse_state(path)
    if not st then error("greenflow_split: cannot seed " .. app .. ": " .. err) end
    assert(dict:set(app, st.green))
    assert(dict:set("pools:" .. app, st.pools))
    assert(dict:set("serial:" .. app, 0))
end

-- set_by_lua, per request: one shared-dict read, one crc32 of $request_id.
function _M.pick(app)
    local n = names[app]
    if not n then n = {app .. "_blue", app .. "_green"}; names[app] = n end
    local green = dict:get(app)
    if not green or green <= 0 then return n[1] end
    if green >= 100 then return n[2] end
    if ngx.crc32_short(ngx.var.request_id) % 10000 < green * 100 then return n[2] end
    return n[1]
end

local function say(status, msg)
    ngx.status = status
    ngx.header["Content-Type"] = "text/plain"
    ngx.header["Content-Length"] = #msg + 1
    ngx.say(msg)
    return ngx.exit(status)
end

local function current(app)
    local g = dict:get(app)
    return string.format("app=%s blue=%d green=%d serial=%d", app, 100 - g, g, dict:get("serial:" .. app) or 0)
end

-- content_by_lua of the control location: GET ?app=  reads, PUT ?app=&blue=&green= changes.
function _M.control()
    local args = ngx.req.get_uri_args(8)
    local app = args.app
    if type(app) ~= "string" or not app:match("^[a-z][a-z0-9_]*$") then return say(400, "bad app") end
    local pools = dict:get("pools:" .. app)
    if not pools then return say(404, "unknown app " .. app .. " (not seeded from its file)") end
    local method = ngx.req.get_method()
    if method == "GET" then return say(200, current(app)) end
    if method ~= "PUT" then return say(405, "GET or PUT") end
    for k in pairs(args) do
        if k ~= "app" and k ~= "blue" and k ~= "green" then return say(400, "unknown argument " .. k) end
    end
    local b, g = args.blue, args.green
    if type(b) ~= "string" or type(g) ~= "string" or not b:match("^%d%d?%d?$") or not g:match("^%d%d?%d?$") then
        return say(400, "blue and green must be integers 0-100")
    end
    b, g = tonumber(b), tonumber(g)
    if b > 100 or g > 100 or b + g ~= 100 then return say(400, "blue + green must be 100") end
    if (b > 0 and not pools:find("b", 1, true)) or (g > 0 and not pools:find("g", 1, true)) then
        return say(409, "a pool without servers cannot take traffic (pools: " .. pools .. ")")
    end
    local ok, err = dict:set(app, g)  -- one key: the change is atomic for every worker
    if not ok then return say(500, "shared dict: " .. tostring(err)) end
    dict:incr("serial:" .. app, 1, 0)
    return say(200, current(app))
end

return _M
"""

NJS_MODULE = """\
var fs = require('fs');
function pick(r, app, file) {
    var g;
    try { g = parseInt(fs.readFileSync(file, 'utf8'), 10); } catch (e) { g = 0; }
    if (!(g > 0)) { return app + '_blue'; }
    if (g >= 100) { return app + '_green'; }
    var h = parseInt(r.variables.request_id.substring(0, 8), 16) %% 10000;
    return h < g * 100 ? app + '_green' : app + '_blue';
}
function demo(r) { return pick(r, 'demo', '%(d)s/run/njs-split-demo'); }
export default {demo};
"""

LB_CONF = """\
%(load)s
worker_processes 2;
pid %(d)s/run/nginx.pid;
error_log %(d)s/logs/error.log notice;
worker_shutdown_timeout 30s;
%(user)s
events { worker_connections 4096; }
http {
    client_body_temp_path %(d)s/tmp/cb; proxy_temp_path %(d)s/tmp/p; fastcgi_temp_path %(d)s/tmp/f;
    uwsgi_temp_path %(d)s/tmp/u; scgi_temp_path %(d)s/tmp/s;
    keepalive_timeout 65s;
    keepalive_requests 100000;
    log_format gf escape=json '{"v":"$greenflow_variant","pool":"$greenflow_pool",'
        '"upstream_addr":"$upstream_addr","x_pool":"$upstream_http_x_pool","status":$status}';
    access_log %(d)s/logs/access.log gf buffer=64k flush=1s;

    # the file nginx_upstream owns: upstream demo_blue / demo_green + split_clients $demo_backend
    include %(d)s/conf/conf.d/*.conf;

    lua_package_path "%(d)s/lua/?.lua;;";
    lua_shared_dict greenflow_split 1m;
    init_by_lua_block {
        greenflow_split = require "greenflow_split"
        greenflow_split.seed("demo", "%(d)s/conf/conf.d/greenflow-upstream-demo.conf")
        greenflow_split.seed("solo", "%(d)s/conf/conf.d/greenflow-upstream-solo.conf")
    }
%(njs_http)s
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_set_header X-Request-Id $request_id;

    server {   # today: split_clients, a change is a reload
        listen 127.0.0.1:%(p_plain)d;
        set $greenflow_variant plain;
        set $greenflow_pool $demo_backend;
        location / { proxy_pass http://$demo_backend; }
    }
    server {   # lua: the pool from the shared dict
        listen 127.0.0.1:%(p_lua)d;
        set $greenflow_variant lua;
        set_by_lua_block $demo_live { return greenflow_split.pick("demo") }
        set $greenflow_pool $demo_live;
        location / { proxy_pass http://$demo_live; }
    }
%(njs_server)s
    server {   # control: local only (unix socket in a 0700 directory)
        listen unix:%(d)s/ctl/control.sock;
        set $greenflow_variant control;
        set $greenflow_pool "";
        access_log off;
        location = /greenflow/split { content_by_lua_block { greenflow_split.control() } }
        location / { return 404; }
    }
}
"""
NJS_HTTP = """\
    js_import split from %(d)s/njs/split.js;
    js_set $demo_njs split.demo;
"""
NJS_SERVER = """\
    server {   # njs: the pool from a state file read per request
        listen 127.0.0.1:%(p_njs)d;
        set $greenflow_variant njs;
        set $greenflow_pool $demo_njs;
        location / { proxy_pass http://$demo_njs; }
    }
"""

# --------------------------------------------------------------------------- helpers


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError("nothing listens on 127.0.0.1:%d" % port)


def children(pid):
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


def accepting(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            title = f.read()
    except OSError:
        return False
    return bool(title) and b"shutting down" not in title


def write_atomic(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)


class Conn:
    """One HTTP/1.1 keep-alive connection; like wrk, a request on a connection the server closed
    fails (no check before reuse, no retry)."""

    def __init__(self, port, unix=None):
        self.port, self.unix, self.sock, self.buf = port, unix, None, b""

    def _connect(self):
        if self.unix:
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.settimeout(5)
            self.sock.connect(self.unix)
        else:
            self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def close(self):
        if self.sock:
            self.sock.close()
        self.sock = None

    def request(self, method="GET", path="/"):
        """Returns (status, headers dict, body) or raises OSError / EOFError (closed)."""
        if self.sock is None:
            self._connect()
        try:
            self.sock.sendall(("%s %s HTTP/1.1\r\nHost: bench\r\nContent-Length: 0\r\n\r\n"
                               % (method, path)).encode())
            while b"\r\n\r\n" not in self.buf:
                self._fill()
            head, self.buf = self.buf.split(b"\r\n\r\n", 1)
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            hdrs = dict((k.strip().lower(), v.strip()) for k, _, v in (ln.partition(":") for ln in lines[1:]))
            n = int(hdrs.get("content-length", "0"))
            while len(self.buf) < n:
                self._fill()
            body, self.buf = self.buf[:n], self.buf[n:]
        except (OSError, EOFError, ValueError, IndexError):
            self.close()
            raise EOFError("connection lost")
        if hdrs.get("connection", "").lower() == "close":
            self.close()
        return status, hdrs, body

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("closed by peer")
        self.buf += data


def cpu_ns(pids):
    """On-CPU time (ns) of the given processes (/proc/<pid>/schedstat, first field)."""
    total = 0
    for pid in pids:
        try:
            with open("/proc/%d/schedstat" % pid) as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total


def pct(values, q):
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(math.ceil(q / 100.0 * len(s))) - 1)]


# --------------------------------------------------------------------------- the lab


class Lab:
    def __init__(self, base, with_njs):
        self.d = base
        self.with_njs = with_njs
        for sub in ("conf/conf.d", "logs", "run", "tmp", "lua", "njs", "ctl", "be/tmp"):
            os.makedirs(os.path.join(base, sub), exist_ok=True)
        os.chmod(os.path.join(base, "ctl"), 0o700)
        self.user = "user root root;" if os.geteuid() == 0 else ""
        self.pools = {"blue": [], "green": []}
        self.be_pid = os.path.join(base, "be", "backend.pid")
        self.conf = os.path.join(base, "conf", "nginx.conf")
        self.ctl = os.path.join(base, "ctl", "control.sock")
        self.green = 0
        self.ctl_times = []

    def upstream_file(self, app):
        return os.path.join(self.d, "conf", "conf.d", "greenflow-upstream-%s.conf" % app)

    def start_backends(self):
        servers = []
        for colour in ("blue", "green"):
            for _ in range(2):
                port = free_port()
                self.pools[colour].append("127.0.0.1:%d" % port)
                servers.append(BACKEND_SERVER % dict(port=port, pool=colour))
        path = os.path.join(self.d, "be", "backend.conf")
        with open(path, "w") as f:
            f.write(BACKEND_CONF % dict(d=os.path.join(self.d, "be"), user=self.user, servers="".join(servers)))
        subprocess.run([NGINX, "-c", path, "-p", os.path.join(self.d, "be")], check=True, capture_output=True)
        for addr in self.pools["blue"] + self.pools["green"]:
            wait_port(int(addr.rsplit(":", 1)[1]))

    def render(self, green):
        return nu.render(APP, nu.normalize_pools(self.pools), nu.normalize_shares({"blue": 100 - green, "green": green}))

    def start_lb(self):
        write_atomic(self.upstream_file(APP), self.render(0))
        # a second app with no green servers, to show that the control path refuses traffic to an empty pool
        solo = nu.render("solo", nu.normalize_pools({"blue": self.pools["blue"][:1]}), nu.normalize_shares({"blue": 100}))
        write_atomic(self.upstream_file("solo"), solo)
        shutil.copy(os.path.join(self.d, "lua_src.lua"), os.path.join(self.d, "lua", "greenflow_split.lua"))
        mods = list(LUA_MODS) + ([NJS_MOD] if self.with_njs else [])
        self.ports = dict(p_plain=free_port(), p_lua=free_port(), p_njs=free_port())
        with open(os.path.join(self.d, "njs", "split.js"), "w") as f:
            f.write(NJS_MODULE % dict(d=self.d))
        write_atomic(os.path.join(self.d, "run", "njs-split-demo"), "0\n")
        with open(self.conf, "w") as f:
            f.write(LB_CONF % dict(
                d=self.d, user=self.user,
                load="\n".join("load_module %s/%s;" % (MODDIR, m) for m in mods),
                njs_http=NJS_HTTP % dict(d=self.d) if self.with_njs else "",
                njs_server=NJS_SERVER % self.ports if self.with_njs else "", **self.ports))
        self.nginx("-t")
        self.nginx()
        for key in ("p_plain", "p_lua") + (("p_njs",) if self.with_njs else ()):
            wait_port(self.ports[key])
        self.wait_workers()

    def nginx(self, *args):
        proc = subprocess.run([NGINX, "-c", self.conf, "-p", self.d] + list(args), capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError("nginx %s failed: %s" % (" ".join(args), proc.stderr.strip()))
        return proc

    def master(self):
        with open(os.path.join(self.d, "run", "nginx.pid")) as f:
            return int(f.read())

    def wait_workers(self, n=2, timeout=10):
        end = time.monotonic() + timeout
        while time.monotonic() < end and len([p for p in children(self.master()) if accepting(p)]) < n:
            time.sleep(0.01)

    def stop(self):
        for pidfile in (os.path.join(self.d, "run", "nginx.pid"), self.be_pid):
            try:
                with open(pidfile) as f:
                    pid = int(f.read())
                os.kill(pid, signal.SIGQUIT)
                end = time.monotonic() + 10
                while time.monotonic() < end:
                    os.kill(pid, 0)
                    time.sleep(0.05)
                os.kill(pid, signal.SIGTERM)
            except (OSError, ValueError):
                pass

    # ---- the three ways to switch (each returns when the switch is in force)

    def switch_reload(self, green):
        """Today's path: render, nginx -t, put in place, SIGHUP, wait for new workers and for the
        old ones to stop accepting (as _nginx_switch does)."""
        write_atomic(self.upstream_file(APP), self.render(green))
        self.nginx("-t")
        pid = self.master()
        before = children(pid)
        os.kill(pid, signal.SIGHUP)
        end = time.monotonic() + 15
        while time.monotonic() < end and not (children(pid) - before):
            time.sleep(0.005)
        while time.monotonic() < end and any(accepting(w) for w in before):
            time.sleep(0.005)
        self.green = green

    def control(self, method, query):
        c = Conn(None, unix=self.ctl)
        try:
            status, _, body = c.request(method, "/greenflow/split?" + query)
        finally:
            c.close()
        return status, body.decode().strip()

    def switch_lua(self, green):
        """Reload-free: the owned file first (it is what a restart or a reload seeds from), then the
        control call; on a refusal the previous file goes back and the dict was never touched."""
        path = self.upstream_file(APP)
        with open(path) as f:
            previous = f.read()
        write_atomic(path, self.render(green))
        t0 = time.monotonic()
        status, body = self.control("PUT", "app=%s&blue=%d&green=%d" % (APP, 100 - green, green))
        self.ctl_times.append(time.monotonic() - t0)
        if status != 200:
            write_atomic(path, previous)
            raise RuntimeError("control refused: %d %s" % (status, body))
        self.green = green

    def switch_njs(self, green):
        write_atomic(os.path.join(self.d, "run", "njs-split-demo"), "%d\n" % green)
        self.green = green


# --------------------------------------------------------------------------- measurements


def keepalive_clients(port, seconds, switch, steps, conns=32, rate=6.0):
    """32 paced keep-alive clients (conns x rate req/s) while ``switch`` runs through ``steps``."""
    stop = threading.Event()
    stats = {"ok": 0, "failed": 0, "non2xx": 0}
    lock = threading.Lock()

    def client(i):
        c = Conn(port)
        nxt = time.monotonic() + random.random() / rate
        n = 0
        while not stop.is_set() and n < int(seconds * rate * 2) and time.monotonic() < DEADLINE:
            delay = nxt - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            nxt += 1.0 / rate
            n += 1
            try:
                status, _, _ = c.request()
                key = "ok" if 200 <= status < 300 else "non2xx"
            except EOFError:
                key = "failed"
            with lock:
                stats[key] += 1
        c.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(conns)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    gap = (seconds - 2.0) / len(steps)
    for g in steps:
        switch(g)
        time.sleep(max(0.0, gap))
    time.sleep(1.0)
    stop.set()
    for t in threads:
        t.join(10)
    return stats


def time_to_serve(port, switch, rounds=5):
    """Seconds from the start of the switch call until a request on an already open keep-alive
    connection (or a new one, if nginx closed it) gets the other pool; alternates 100 % green / blue."""
    out = []
    c = Conn(port)
    for i in range(rounds):
        target = "green" if i % 2 == 0 else "blue"
        t0 = time.monotonic()
        switch(100 if target == "green" else 0)
        while time.monotonic() - t0 < 10:
            try:
                _, hdrs, _ = c.request()
            except EOFError:
                continue
            if hdrs.get("x-pool") == target:
                break
        out.append(time.monotonic() - t0)
    c.close()
    return out


def latency(port, seconds, rate=250.0, conns=8):
    """Client-side latency (ms) at ~rate req/s over ``conns`` keep-alive connections."""
    lat, lock, fails = [], threading.Lock(), [0]

    def client():
        c = Conn(port)
        per = rate / conns
        nxt = time.monotonic() + random.random() / per
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            d = nxt - time.monotonic()
            if d > 0:
                time.sleep(d)
            nxt += 1.0 / per
            t0 = time.perf_counter()
            try:
                c.request()
            except EOFError:
                fails[0] += 1
                continue
            with lock:
                lat.append((time.perf_counter() - t0) * 1000.0)
        c.close()

    ts = [threading.Thread(target=client, daemon=True) for _ in range(conns)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(seconds + 10)
    return lat, fails[0]


def share(port, n, conns=4):
    """Fraction of n requests answered by green (unpaced, over keep-alive connections)."""
    counts = {"green": 0, "other": 0}
    lock = threading.Lock()

    def client(k):
        c = Conn(port)
        for _ in range(k):
            try:
                _, hdrs, _ = c.request()
            except EOFError:
                continue
            with lock:
                counts["green" if hdrs.get("x-pool") == "green" else "other"] += 1
        c.close()

    ts = [threading.Thread(target=client, args=(n // conns,), daemon=True) for _ in range(conns)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    total = counts["green"] + counts["other"]
    return counts["green"] / float(total or 1), total


# --------------------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="shorter windows (smoke run)")
    ap.add_argument("--keep", action="store_true", help="keep the /tmp directory")
    args = ap.parse_args()

    missing = [m for m in LUA_MODS if not os.path.exists(os.path.join(MODDIR, m))]
    if not os.access(NGINX, os.X_OK) or missing or not os.path.exists("/usr/share/lua/5.1/resty/core.lua"):
        print("SKIP: needs Debian's nginx, libnginx-mod-http-lua and lua-resty-core "
              "(apt-get install libnginx-mod-http-lua lua-resty-core); missing: %s"
              % (", ".join(missing) or "nginx or resty.core"))
        return 0
    with_njs = os.path.exists(os.path.join(MODDIR, NJS_MOD))
    if not with_njs:
        print("note: libnginx-mod-http-js not installed, the njs column is skipped")

    base = tempfile.mkdtemp(prefix="greenflow-reloadfree-", dir="/tmp")
    with open(os.path.join(base, "lua_src.lua"), "w") as f:
        f.write(LUA_MODULE)
    lab = Lab(base, with_njs)
    variants = ["plain", "lua"] + (["njs"] if with_njs else [])
    port = dict(plain=None, lua=None, njs=None)
    switches = {}
    checks = []
    quick = args.quick
    try:
        lab.start_backends()
        lab.start_lb()
        port.update(plain=lab.ports["p_plain"], lua=lab.ports["p_lua"], njs=lab.ports["p_njs"])
        switches = dict(plain=lab.switch_reload, lua=lab.switch_lua, njs=lab.switch_njs)
        label = dict(plain="reload (split_clients)", lua="lua shared dict", njs="njs file per request")

        # 1. keep-alive clients during 5 split changes
        steps = [5, 25, 50, 100, 0]
        ka = {}
        for v in variants:
            ka[v] = keepalive_clients(port[v], 6.0 if quick else 9.0, switches[v], steps)
        # 2. time from the switch call to the new split served
        tts = dict((v, time_to_serve(port[v], switches[v])) for v in variants)
        # 3. latency at ~250 req/s, interleaved rounds (the machine's load drifts)
        lat = dict((v, []) for v in variants)
        lat_fail = dict((v, 0) for v in variants)
        for v in variants:
            switches[v](50)
        for _ in range(2 if quick else 3):
            for v in variants:
                got, fails = latency(port[v], 2.0 if quick else 4.0)
                lat[v] += got
                lat_fail[v] += fails
        # 4. split accuracy
        acc = dict((v, []) for v in variants)
        cpu = dict((v, []) for v in variants)  # LB worker CPU microseconds per request
        n = 1000 if quick else 2000
        for target in (5, 25, 50):
            for v in variants:
                switches[v](target)
                workers = children(lab.master())
                c0 = cpu_ns(workers)
                obs, total = share(port[v], n)
                cpu[v].append((cpu_ns(workers) - c0) / 1000.0 / max(1, total))
                p = target / 100.0
                sd = math.sqrt(p * (1 - p) / total)
                acc[v].append((target, obs * 100, abs(obs - p) / sd))

        # 5. access-log attribution: the logged pool vs the pool that answered, upstream_addr in it
        time.sleep(1.3)  # access_log flush=1s
        attr = dict((v, [0, 0, 0]) for v in variants)  # records, pool mismatches, addr mismatches
        with open(os.path.join(base, "logs", "access.log")) as f:
            for line in f:
                rec = json.loads(line)
                v = rec.get("v")
                if v not in attr or not rec.get("x_pool"):
                    continue
                attr[v][0] += 1
                colour = rec["pool"].rsplit("_", 1)[-1]
                if colour != rec["x_pool"]:
                    attr[v][1] += 1
                last = rec["upstream_addr"].replace(" : ", ", ").split(", ")[-1]
                if last not in lab.pools[rec["x_pool"]]:
                    attr[v][2] += 1

        # control-path guarantees (lua)
        lab.switch_lua(25)
        before = lab.control("GET", "app=demo")[1]
        bad = [("PUT", "app=demo&blue=90&green=5"), ("PUT", "app=demo&blue=50&green=x"),
               ("PUT", "app=demo&blue=-5&green=105"), ("PUT", "app=demo&blue=95&green=5&x=1"),
               ("PUT", "app=nope&blue=100&green=0"), ("PUT", "app=solo&blue=0&green=100"),
               ("POST", "app=demo&blue=0&green=100")]
        codes = [lab.control(m, q)[0] for m, q in bad]
        after = lab.control("GET", "app=demo")[1]
        checks.append(("7 bad control calls refused (%s), split unchanged" % "/".join(map(str, codes)),
                       all(c >= 400 for c in codes) and before.startswith("app=demo blue=75 green=25")
                       and before.split(" serial")[0] == after.split(" serial")[0]))
        # a dict change without the file is undone by the next reload: the file must be written first
        lab.control("PUT", "app=demo&blue=0&green=100")
        pid = lab.master()
        old = children(pid)
        os.kill(pid, signal.SIGHUP)
        end = time.monotonic() + 10
        while time.monotonic() < end and (not (children(pid) - old) or any(accepting(w) for w in old)):
            time.sleep(0.01)
        reseeded = lab.control("GET", "app=demo")[1]
        checks.append(("reload re-seeds the dict from the file (%s)" % reseeded, "green=25" in reseeded))
        # a restart comes back with the file's (last) split
        lab.switch_lua(50)
        lab.nginx("-s", "quit")
        end = time.monotonic() + 10
        while time.monotonic() < end and os.path.exists(os.path.join(base, "run", "nginx.pid")):
            time.sleep(0.05)
        lab.nginx()
        wait_port(port["lua"])
        lab.wait_workers()
        restarted = lab.control("GET", "app=demo")[1]
        checks.append(("restart seeds the last split from the file (%s)" % restarted, "green=50" in restarted))
        # nginx -t does NOT run init_by_lua: a file that cannot seed passes -t; the reload then fails
        # in the master (emerg), which keeps its workers, configuration and dict
        path = lab.upstream_file(APP)
        with open(path) as f:
            good = f.read()
        write_atomic(path, good.replace('"shares":{"blue":50,"green":50}', '"shares":{"blue":50,"green":60}'))
        try:
            lab.nginx("-t")
            t_passes = True
        except RuntimeError:
            t_passes = False
        pid = lab.master()
        old = children(pid)
        os.kill(pid, signal.SIGHUP)
        time.sleep(1.0)
        kept = children(pid) == old and "green=50" in lab.control("GET", "app=demo")[1]
        write_atomic(path, good)
        checks.append(("unseedable file: nginx -t %s; reload refused, workers and split kept"
                       % ("passes (init_by_lua not run)" if t_passes else "fails"), kept))
        st = os.stat(lab.ctl)
        checks.append(("control socket mode %o in a 0700 directory (nginx makes it 0666)" % (st.st_mode & 0o777),
                       (os.stat(os.path.dirname(lab.ctl)).st_mode & 0o777) == 0o700))
    finally:
        lab.stop()

    # ---------------------------------------------------------------- report
    cols = variants
    w = 24
    print("\nnginx %s, %d cores, load average %.1f; 2 LB workers, 2+2 backends (nginx), loopback only"
          % (subprocess.run([NGINX, "-v"], capture_output=True, text=True).stderr.strip().split("/")[-1],
             os.cpu_count(), os.getloadavg()[0]))
    print("%-44s" % "" + "".join("%-*s" % (w, label[v]) for v in cols))

    def row(name, fn):
        print("%-44s" % name + "".join("%-*s" % (w, fn(v)) for v in cols))

    row("1. keep-alive: requests / failed / non-2xx", lambda v: "%d / %d / %d" % (
        ka[v]["ok"] + ka[v]["failed"] + ka[v]["non2xx"], ka[v]["failed"], ka[v]["non2xx"]))
    row("   (32 conns x 6 req/s, 5 changes 5-25-50-100-0)", lambda v: "")
    row("2. switch call -> served, median (max) ms", lambda v: "%.1f (%.1f)" % (
        statistics.median(tts[v]) * 1000, max(tts[v]) * 1000))
    if "lua" in cols:
        print("%-44s%-*s%.2f ms median (the rest: file write + fsync)" % (
            "   of which the control call (lua)", w, "", statistics.median(lab.ctl_times) * 1000))
    row("3. latency at 250 req/s p50 / p95 ms", lambda v: "%.3f / %.3f" % (pct(lat[v], 50), pct(lat[v], 95)))
    row("   requests (failed)", lambda v: "%d (%d)" % (len(lat[v]), lat_fail[v]))
    row("   LB worker CPU per request (unpaced), us", lambda v: "%.1f" % statistics.median(cpu[v]))
    for i, target in enumerate((5, 25, 50)):
        row("4. green share at %d %% (|dev|/sd, n=%d)" % (target, n),
            lambda v: "%.2f %% (%.1f) %s" % (acc[v][i][1], acc[v][i][2], "ok" if acc[v][i][2] < 4 else "OUT"))
    row("5. log records / pool or addr mismatches", lambda v: "%d / %d / %d" % tuple(attr[v]))
    print("\ncontrol path (lua):")
    for text, ok in checks:
        print("  [%s] %s" % ("ok" if ok else "FAIL", text))
    print("\ndirectory: %s%s" % (base, "" if args.keep else " (removed)"))
    if not args.keep:
        shutil.rmtree(base, ignore_errors=True)
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
