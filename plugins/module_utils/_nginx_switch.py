# -*- coding: utf-8 -*-
# Copyright: greenflow platform engineers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Switching an app's traffic on nginx: the whole I/O path of greenflow.platform.nginx_upstream.

Read the app's file; or write a new version beside it, check it with ``nginx -t`` through a test
config that has the candidate in its place, rename it into place only then, reload gracefully and
wait until the old workers stop accepting, giving the previous file back when the reload fails. The
rules (rendering, parsing, validation) are in _nginx_upstream; the test config in _nginx_test_config.

Two callers run this same code: the module (``host`` is its AnsibleModule) and the load balancer's
release watchdog, which puts traffic back when a cutover's controller is lost (``LocalHost``, and
``put_back``). ``host`` gives what the module gives: run_command, get_bin_path and warn. A failure
raises SwitchError with the message and the result so far; nothing is left half-written.

Reload-free (the file in ``lua`` split mode, nginx_lb's greenflow_split.lua): a change of the shares
alone is the same checked write of the file, then a PUT on nginx's local control socket, which sets
the split in shared memory for every worker at once; no reload, so no keep-alive connection is
closed. A refused PUT gives the previous file back (the control path changed nothing); a PUT without
an answer is checked with a GET, and when nothing can be learnt the previous file is given back and
nginx reloaded, which seeds the shared memory from it again. Everything else the file holds (pools,
upstream settings, the split mode) is nginx configuration: a reload, as before (``plan_apply``).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import http.client
import os
import shutil
import signal
import socket
import subprocess
import time

from ansible_collections.greenflow.platform.plugins.module_utils._atomic_file import (
    AtomicFileError,
    FileLock,
    check_writable_dir,
    discard,
    install,
    lock_path_for,
    read_snapshot,
    remove_leftovers,
    restore,
    write_candidate,
)
from ansible_collections.greenflow.platform.plugins.module_utils import _nginx_test_config as test_config
from ansible_collections.greenflow.platform.plugins.module_utils._nginx_upstream import (
    COLOURS,
    DEFAULT_FAIL_TIMEOUT,
    DEFAULT_KEEPALIVE,
    DEFAULT_MAX_FAILS,
    UpstreamError,
    backend_variable,
    check_int,
    check_owner,
    compiled_defaults,
    default_conf_path,
    main_directives,
    normalize_pools,
    normalize_shares,
    parse_control_answer,
    parse_split_line,
    parse_state,
    plan_apply,
    proxy_pass_target,
    render,
    resolve_desired,
    split_mode,
    upstream_names,
    validate_app,
    validate_settings,
    validate_split,
)
from ansible_collections.greenflow.platform.plugins.module_utils._release_model import nginx_id

# Where the nginx_lb role (reload-free mode) has nginx listen for split changes: a unix socket in a
# directory only root can enter (systemd's RuntimeDirectory of nginx.service, mode 0700).
DEFAULT_CONTROL_SOCKET = "/run/greenflow-nginx/split.sock"
CONTROL_PATH = "/greenflow/split"
CONTROL_TIMEOUT = 5.0

# The module's options and their defaults: the watchdog switches with these unless the lease names others.
DEFAULTS = dict(
    pools=None, shares=None, conf_path=None, keepalive=None, max_fails=None, fail_timeout=None,
    validate=True, reload=True, nginx_bin="nginx", nginx_conf="/etc/nginx/nginx.conf",
    nginx_prefix=None, nginx_pid=None, lock_timeout=60, reload_timeout=15, not_after=None,
    control_socket=DEFAULT_CONTROL_SOCKET, split=None,
)


def argument_spec():
    """The options naming and driving one app's nginx file (doc fragment greenflow.platform.nginx),
    for every module that switches nginx itself."""
    return dict(
        conf_path=dict(type="path"),
        keepalive=dict(type="int"),
        max_fails=dict(type="int"),
        fail_timeout=dict(type="int"),
        validate=dict(type="bool", default=DEFAULTS["validate"]),
        reload=dict(type="bool", default=DEFAULTS["reload"]),
        nginx_bin=dict(type="str", default=DEFAULTS["nginx_bin"]),
        nginx_conf=dict(type="path", default=DEFAULTS["nginx_conf"]),
        nginx_prefix=dict(type="path"),
        nginx_pid=dict(type="path"),
        lock_timeout=dict(type="int", default=DEFAULTS["lock_timeout"]),
        reload_timeout=dict(type="int", default=DEFAULTS["reload_timeout"]),
        control_socket=dict(type="path", default=DEFAULTS["control_socket"]),
    )


class SwitchError(Exception):
    """The switch failed; ``result`` says what was and was not done (the module returns it)."""

    def __init__(self, msg, result):
        super(SwitchError, self).__init__(msg)
        self.msg = msg
        self.result = result


class LocalHost:
    """What the module gets from AnsibleModule, for a caller that runs on the host without Ansible."""

    def __init__(self):
        self.warnings = []

    @staticmethod
    def run_command(argv):
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False,
                              universal_newlines=True)
        return proc.returncode, proc.stdout, proc.stderr

    @staticmethod
    def get_bin_path(name, required=False, opt_dirs=None):
        path = os.pathsep.join([os.environ.get("PATH", "")] + list(opt_dirs or []))
        found = shutil.which(name, path=path)
        if found is None and required:
            raise SwitchError("%s not found in %s" % (name, path), {})
        return found

    def warn(self, msg):
        self.warnings.append(msg)


def check_params(p):
    """Check what was given before touching anything (not even the lock file). Raises UpstreamError."""
    validate_app(p["app"])
    if p["pools"] is not None:
        normalize_pools(p["pools"])
    if p["shares"] is not None:
        normalize_shares(p["shares"])
    # the values the file gets, or the defaults in their place (only to check the ranges here)
    validate_settings(
        DEFAULT_KEEPALIVE if p["keepalive"] is None else p["keepalive"],
        DEFAULT_MAX_FAILS if p["max_fails"] is None else p["max_fails"],
        DEFAULT_FAIL_TIMEOUT if p["fail_timeout"] is None else p["fail_timeout"],
    )
    if p.get("split") is not None:
        validate_split(p["split"])
    p["lock_timeout"] = check_int(p["lock_timeout"], "lock_timeout", 0, 86400)
    p["reload_timeout"] = check_int(p["reload_timeout"], "reload_timeout", 1, 3600)


def base_result(p):
    app = p["app"]
    return dict(
        changed=False,
        conf_path=p["conf_path"] or default_conf_path(app),
        proxy_pass_target=proxy_pass_target(app),
        backend_variable=backend_variable(app),
        reloaded=False,
        validated=False,
        applied="none",
        read_only=is_read_only(p),
    )


def is_read_only(p):
    """Neither pools, shares nor the split mode given: the module only reads."""
    return p["pools"] is None and p["shares"] is None and p.get("split") is None


def read(p):
    """The app's pools and shares as the file has them (nothing written). Raises SwitchError."""
    result = base_result(p)
    app, conf_path = p["app"], result["conf_path"]
    try:
        current = parse_state(read_snapshot(conf_path).text())
        check_owner(current, app)
    except (AtomicFileError, UpstreamError) as exc:
        raise SwitchError("%s: %s" % (conf_path, exc), result)
    empty = dict((c, []) for c in COLOURS)
    pools = normalize_pools(current["pools"]) if current else {}
    shares = normalize_shares(current["shares"]) if current else {}
    result.update(
        shares=shares, previous_shares=shares, pools=pools, previous_pools=pools,
        upstreams=upstream_names(app, pools or empty), split=split_mode(current) if current else "",
    )
    return result


def change(host, p, check_mode=False, diff=False):
    """Bring the app's file to the pools / shares asked for (``check_params`` first). Raises SwitchError."""
    result = base_result(p)
    app, conf_path = p["app"], result["conf_path"]
    if check_mode:
        # Check mode writes nothing, not even the lock file: writes are atomic, so reading
        # without the lock still sees a whole file.
        conf_dir = os.path.dirname(os.path.abspath(conf_path))
        if not os.path.isdir(conf_dir):
            raise SwitchError("cannot manage %s: directory %s does not exist" % (conf_path, conf_dir), result)
        _run(host, p, app, conf_path, result, check_mode, diff)
        return result

    try:
        check_writable_dir(conf_path)
    except AtomicFileError as exc:
        raise SwitchError("cannot manage %s: %s" % (conf_path, exc), result)

    try:
        app_lock = FileLock(lock_path_for(conf_path), timeout=p["lock_timeout"]).acquire()
    except AtomicFileError as exc:
        raise SwitchError(str(exc), result)
    try:
        # Holding the lock, whatever is left of an earlier run on this file is a killed run's.
        left = remove_leftovers(conf_path)
        if p["validate"]:
            left += test_config.remove_leftovers(p["nginx_conf"], conf_path)
        if left:
            host.warn("removed what an interrupted run left behind (the live file was never "
                      "touched by it): %s" % ", ".join(left))
        _run(host, p, app, conf_path, result, check_mode, diff)
    finally:
        app_lock.release()
    return result


def put_back(app, lease, host=None):
    """The watchdog's switch: all traffic of ``app`` on the lease's from-colour, pools as they are.

    The lease may carry the nginx instance the cutover switched (``lease["nginx"]``: conf_path,
    nginx_conf, nginx_bin, ...). Returns a sentence for the record; raises SwitchError or UpstreamError.
    """
    host = host or LocalHost()
    p = dict(DEFAULTS)
    p.update((k, v) for k, v in (lease.get("nginx") or {}).items() if k in DEFAULTS)
    p.update(app=app, pools=None, shares={lease["from_color"]: 100})
    check_params(p)
    result = change(host, p)
    if result["applied"] == "live":
        how = "switched live, without a reload"
    elif result["reloaded"]:
        how = "nginx reloaded"
    else:
        how = "unchanged" if not result["changed"] else "nginx not running"
    return "traffic put back: %s 100 %% (was %s; %s)" % (
        lease["from_color"],
        ", ".join("%s %s %%" % kv for kv in sorted(result.get("previous_shares", {}).items())) or "no file",
        how)


class Nginx:
    """The nginx instance named by nginx_bin / nginx_conf / nginx_prefix / nginx_pid."""

    def __init__(self, host, p):
        self.host = host
        self.conf = p["nginx_conf"]
        self.prefix = p["nginx_prefix"]
        self.pid_file = p["nginx_pid"]
        self.bin = p["nginx_bin"]
        self._compiled = None

    def _resolve_bin(self):
        if os.sep in self.bin:
            return self.bin
        return self.host.get_bin_path(self.bin, required=True, opt_dirs=["/usr/sbin", "/usr/local/sbin"])

    def base_cmd(self):
        cmd = [self._resolve_bin(), "-c", self.conf]
        if self.prefix:
            cmd += ["-p", self.prefix]
        return cmd

    def compiled(self):
        if self._compiled is None:
            rc, out, err = self.host.run_command([self._resolve_bin(), "-V"])
            self._compiled = compiled_defaults((out or "") + (err or ""))
        return self._compiled

    def _abs(self, path):
        if os.path.isabs(path):
            return path
        prefix = self.prefix or self.compiled().get("prefix") or "/"
        return os.path.join(prefix, path)

    def _main_directives(self):
        try:
            with open(self.conf, "r") as f:
                return main_directives(f.read())
        except (IOError, OSError):
            return {}

    def test(self, conf=None):
        """nginx -t on the whole config (or the test config ``conf``); returns (ok, message)."""
        cmd = self.base_cmd()
        if conf:
            cmd[2] = conf  # the -c argument; -p stays, so the prefix-relative paths stay the same
        rc, out, err = self.host.run_command(cmd + ["-t"])
        msg = "\n".join(x.strip() for x in (err, out) if x and x.strip())
        return rc == 0, msg

    def master_pid(self):
        pid_file = self.pid_file or self._main_directives().get("pid") or self.compiled().get("pid-path")
        if not pid_file:
            return None, None
        pid_file = self._abs(pid_file)
        try:
            with open(pid_file) as f:
                pid = int(f.read().strip())
            os.kill(pid, 0)
        except (IOError, OSError, ValueError):
            return None, pid_file
        return pid, pid_file

    @staticmethod
    def children(pid):
        kids = set()
        try:
            entries = os.listdir("/proc")
        except OSError:
            return None
        for entry in entries:
            if not entry.isdigit():
                continue
            try:
                with open("/proc/%s/stat" % entry) as f:
                    data = f.read()
            except (IOError, OSError):
                continue
            fields = data[data.rfind(")") + 2:].split()
            if len(fields) > 1 and fields[1] == str(pid):
                kids.add(int(entry))
        return kids

    @staticmethod
    def _accepting(pid):
        """False once a worker is gone or has begun its graceful exit: nginx retitles it
        'worker process is shutting down' right before it closes its listening sockets."""
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                title = f.read()
        except (IOError, OSError):
            return False
        return bool(title) and b"shutting down" not in title

    def wait_old_workers(self, old, deadline):
        """Wait until no old worker accepts new connections, so that every connection opened
        after the switch returns gets the new split. Workers still finishing in-flight
        requests are fine (they no longer accept). Bounded by the reload deadline."""
        while time.monotonic() < deadline:
            if not any(self._accepting(w) for w in old):
                return True
            time.sleep(0.01)
        return False

    def error_log_tail(self, since_size):
        path = self._main_directives().get("error_log") or self.compiled().get("error-log-path")
        if not path or path == "stderr":
            return ""
        path = self._abs(path)
        try:
            with open(path, "rb") as f:
                f.seek(since_size or 0)
                data = f.read(64 * 1024).decode("utf-8", "replace")
        except (IOError, OSError):
            return ""
        lines = [ln for ln in data.splitlines() if "[emerg]" in ln or "[alert]" in ln or "[crit]" in ln]
        return "\n".join(lines[-5:])

    def error_log_size(self):
        path = self._main_directives().get("error_log") or self.compiled().get("error-log-path")
        if not path or path == "stderr":
            return 0
        try:
            return os.path.getsize(self._abs(path))
        except OSError:
            return 0

    def reload(self, pid, timeout):
        """SIGHUP the master and wait for new workers. Returns (ok, message)."""
        before = self.children(pid)
        log_size = self.error_log_size()
        try:
            os.kill(pid, signal.SIGHUP)
        except OSError as exc:
            return False, "cannot signal nginx master %d: %s" % (pid, exc.strerror)
        if before is None:  # no /proc: cannot verify, trust the signal
            return True, ""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            now = self.children(pid)
            if now - before:
                self.wait_old_workers(before, deadline)
                return True, ""
            time.sleep(0.02)
        detail = self.error_log_tail(log_size)
        return False, (
            "nginx master %d did not start workers with the new configuration within %d s after "
            "SIGHUP; it keeps the previous one. %s" % (pid, timeout, detail or "See nginx's error log.")
        ).strip()


class _UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP/1.1 over a unix socket (the control path of greenflow_split.lua)."""

    def __init__(self, path, timeout):
        http.client.HTTPConnection.__init__(self, "localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.unix_path)
        except (OSError, socket.timeout):
            sock.close()
            raise
        self.sock = sock


def control_call(path, method, query, timeout=CONTROL_TIMEOUT):
    """One request on the control socket; returns (status, body text). Raises OSError/HTTPException."""
    conn = _UnixHTTPConnection(path, timeout)
    try:
        conn.request(method, "%s?%s" % (CONTROL_PATH, query))
        resp = conn.getresponse()
        body = resp.read(4096).decode("utf-8", "replace").strip()
        return resp.status, body
    finally:
        conn.close()


def control_get(path, app, timeout=CONTROL_TIMEOUT):
    """The split nginx holds for ``app`` (dict with app/shares/serial), None when it does not know it.
    Raises OSError/HTTPException when the socket does not answer, SwitchError-free."""
    status, body = control_call(path, "GET", "app=%s" % nginx_id(app), timeout)
    return parse_control_answer(body) if status == 200 else None


def _put_live(path, app, shares, timeout):
    """Set the split through the control socket. Returns (outcome, detail), outcome being
    "live" (nginx holds ``shares`` now), "unknown_app" (not seeded: a reload seeds it), "refused"
    (the control path answered no: it changed nothing) or "unknown" (no answer; the split nginx
    holds could not be learnt)."""
    app_id = nginx_id(app)
    query = "app=%s&blue=%d&green=%d" % (app_id, shares["blue"], shares["green"])
    try:
        status, body = control_call(path, "PUT", query, timeout)
    except (OSError, socket.timeout, http.client.HTTPException) as exc:
        # the PUT may or may not have been taken: ask
        try:
            status, body = control_call(path, "GET", "app=%s" % app_id, timeout)
        except (OSError, socket.timeout, http.client.HTTPException) as exc2:
            return "unknown", "the control socket %s did not answer (%s; then %s)" % (path, exc, exc2)
        held = parse_control_answer(body) if status == 200 else None
        if held and held["app"] == app_id and held["shares"] == shares:
            return "live", held
        return "unknown", "the control socket %s dropped the change (%s); it now says %d %s" % (
            path, exc, status, body)
    if status == 404:
        return "unknown_app", body
    held = parse_control_answer(body) if status == 200 else None
    if held and held["app"] == app_id and held["shares"] == shares:
        return "live", held
    if status == 200:
        # an answer that is not the split asked for: what nginx holds is not known for sure
        return "unknown", "the control socket %s answered %r to %s" % (path, body, query)
    return "refused", "the control socket %s refused %s: %d %s" % (path, query, status, body)


def _run(host, p, app, conf_path, result, check_mode, diff):
    try:
        before = read_snapshot(conf_path)
        current = parse_state(before.text())
    except (AtomicFileError, UpstreamError) as exc:
        raise SwitchError("%s: %s" % (conf_path, exc), result)
    try:
        desired = resolve_desired(
            app, p["pools"], p["shares"], p["keepalive"], p["max_fails"], p["fail_timeout"], current,
            split=p.get("split"),
        )
    except UpstreamError as exc:
        raise SwitchError(str(exc), result)

    previous_shares = normalize_shares(current["shares"]) if current else {}
    previous_pools = normalize_pools(current["pools"]) if current else {}
    new_text = render(app, desired["pools"], desired["shares"], desired["keepalive"],
                      desired["max_fails"], desired["fail_timeout"], desired["split"])
    if desired["split"] == "lua":
        # nginx -t does not run init_by_lua: check here that the Lua seed can read what goes live
        try:
            parse_split_line(new_text, app)
        except UpstreamError as exc:
            raise SwitchError("internal error, the new file could not seed nginx's split: %s. Nothing "
                              "was changed." % exc, result)
    result.update(
        shares=desired["shares"], previous_shares=previous_shares,
        pools=desired["pools"], previous_pools=previous_pools,
        upstreams=upstream_names(app, desired["pools"]), split=desired["split"],
    )
    old_text = before.text()
    if old_text == new_text:
        return
    result["changed"] = True
    if diff:
        result["diff"] = dict(
            before=old_text or "", after=new_text,
            before_header=conf_path, after_header=conf_path,
        )
    if check_mode:
        return

    nginx = Nginx(host, p)
    # One nginx validates and reloads one change at a time, whatever the app.
    dir_lock_path = os.path.join(os.path.dirname(os.path.abspath(conf_path)), ".greenflow-nginx.lock")
    try:
        dir_lock = FileLock(dir_lock_path, timeout=p["lock_timeout"]).acquire()
    except AtomicFileError as exc:
        raise SwitchError(str(exc), result)
    try:
        _apply_change(host, p, nginx, conf_path, before, new_text, result, plan_apply(current, desired))
    finally:
        dir_lock.release()


def _test_candidate(host, nginx, conf_path, candidate):
    """nginx -t on the configuration with ``candidate`` in the place of ``conf_path``."""
    tc = test_config.NginxTestConfig(nginx.conf, conf_path, candidate)
    try:
        try:
            conf = tc.build()
        except test_config.ConfigBuildError as exc:
            return False, str(exc)
        if conf is None and tc.unreadable:
            host.warn(
                "could not follow the includes of %s (%s), so nginx -t checked the configuration "
                "as it is, without the new content of %s" % (nginx.conf, tc.unreadable, conf_path))
        elif conf is None:
            host.warn(
                "no include of %s reaches %s, so nginx does not load it: nginx -t checked the "
                "configuration without it" % (nginx.conf, conf_path))
        ok, msg = nginx.test(conf)
        return ok, tc.translate(msg)
    finally:
        tc.cleanup()


def _past_deadline(not_after, now=None):
    """Seconds since ``not_after`` (an epoch) passed, or None when there is none or it has not."""
    if not_after is None:
        return None
    late = (time.time() if now is None else now) - float(not_after)
    return late if late > 0 else None


def _apply_change(host, p, nginx, conf_path, before, new_text, result, plan):
    def unchanged(msg):
        """Fail before anything went live."""
        left = "" if discard(candidate) else " (the candidate %s is left; the next run removes it)" % candidate
        msg += " The new version was not put in place: %s is unchanged%s%s; nginx keeps serving the previous split." % (
            conf_path, "" if before.exists else " (still absent)", left)
        result["changed"] = False
        result["shares"] = result["previous_shares"]
        result["pools"] = result["previous_pools"]
        raise SwitchError(msg, result)

    def give_back(msg):
        try:
            restore(conf_path, before)
        except AtomicFileError as exc:
            msg += " RESTORING THE PREVIOUS FILE FAILED TOO: %s" % exc
        else:
            msg += " The previous %s was %s; nginx keeps serving the previous split." % (
                conf_path, "restored" if before.exists else "absent and the new one was removed")
        result["changed"] = False
        result["shares"] = result["previous_shares"]
        result["pools"] = result["previous_pools"]
        raise SwitchError(msg, result)

    started = time.monotonic()
    timings = result["timings"] = {}

    def lap(name, since):
        timings[name] = round(time.monotonic() - since, 3)
        timings["total_seconds"] = round(time.monotonic() - started, 3)
        return time.monotonic()

    # The new content goes live only by the rename below, after nginx -t passed on it: a run
    # killed before that (e.g. during a slow nginx -t) leaves the live file as it was.
    try:
        candidate = write_candidate(conf_path, new_text.encode("utf-8"), like=before)
    except AtomicFileError as exc:
        raise SwitchError(str(exc), result)
    try:
        mark = lap("write_seconds", started)
        if p["validate"]:
            try:
                ok, msg = _test_candidate(host, nginx, conf_path, candidate)
            except Exception as exc:  # e.g. nginx binary missing
                ok, msg = False, str(exc)
            if not ok:
                # nginx read the candidate under the live file's name (see test_candidate)
                where = " (its line numbers in %s are those of the new version)" % conf_path if conf_path in msg else ""
                unchanged("nginx -t failed with the new upstream file%s: %s." % (where, msg))
            result["validated"] = True
            mark = lap("validate_seconds", mark)
        # A caller holding a lease on the release (the cutover) gives its expiry: once it passed, the
        # watchdog owns the put-back. Checked under the app's lock, which the watchdog's switch takes
        # too: a switch that passes here is live before the watchdog can act, never after it.
        late = _past_deadline(p.get("not_after"))
        if late is not None:
            unchanged("The caller's lease ran out %.1f s before this switch (not_after): the load balancer's "
                      "release watchdog puts traffic back, so this switch is refused." % late)
        try:
            install(candidate, conf_path)
        except AtomicFileError as exc:
            unchanged(str(exc) + ".")
        # the rename counts as writing
        timings["write_seconds"] = round(timings["write_seconds"] + time.monotonic() - mark, 3)
        timings["total_seconds"] = round(time.monotonic() - started, 3)
        mark = time.monotonic()
    finally:
        discard(candidate)  # gone already once installed; on any way out before, not left behind

    if not p["reload"]:
        result["applied_reason"] = "reload is false: the file was written, nginx was not told"
        return
    pid, pid_file = nginx.master_pid()
    if pid is None:
        host.warn(
            "nginx is not running (no live master in pid file %s): the file was written%s, "
            "nginx will use it when it starts" % (pid_file, " and validated" if p["validate"] else "")
        )
        result["applied_reason"] = "nginx is not running"
        return
    how, why = plan
    sock = p.get("control_socket")
    if how == "live" and not (sock and os.path.exists(sock)):
        how, why = "reload", "no control socket at %s" % sock
    if how == "live":
        outcome, detail = _put_live(sock, p["app"], result["shares"],
                                    min(CONTROL_TIMEOUT, p["reload_timeout"]))
        if outcome == "live":
            result["applied"] = "live"
            result["applied_reason"] = why
            result["live_serial"] = detail["serial"]
            lap("control_seconds", mark)
            return
        if outcome == "unknown_app":
            how, why = "reload", "the control socket does not know the app yet (%s)" % detail
        elif outcome == "refused":
            give_back("%s; nginx's split was not changed." % detail)
        else:
            # Nobody can tell which split nginx holds: with the previous file back, a reload seeds
            # the shared memory from it again, so nginx serves the previous split for sure.
            try:
                restore(conf_path, before)
            except AtomicFileError as exc:
                detail += ". RESTORING THE PREVIOUS FILE FAILED TOO: %s" % exc
                result["changed"] = False
                raise SwitchError(detail, result)
            ok, msg = nginx.reload(pid, p["reload_timeout"])
            result["reloaded"] = ok
            result["changed"] = False
            result["shares"] = result["previous_shares"]
            result["pools"] = result["previous_pools"]
            raise SwitchError(
                "%s. The previous %s was restored and nginx %s, so it serves the previous split." % (
                    detail, conf_path, "reloaded to seed it from that file" if ok else
                    "asked to reload to seed it from that file, which it did not confirm (%s)" % msg),
                result)
    ok, msg = nginx.reload(pid, p["reload_timeout"])
    if not ok:
        # If the master was only slow, a second HUP after the restore brings it back to the
        # previous file too; if it had rejected the change, it reloads what it already runs.
        try:
            os.kill(pid, signal.SIGHUP)
        except OSError:
            pass
        give_back("reload failed: %s." % msg)
    result["reloaded"] = True
    result["applied"] = "reload"
    result["applied_reason"] = why
    lap("reload_seconds", mark)
