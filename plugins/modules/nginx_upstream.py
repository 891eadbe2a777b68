#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: greenflow platform engineers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: nginx_upstream
short_description: Weighted blue/green traffic switching of one app on nginx
version_added: 0.1.0
description:
  - Owns one generated nginx file per app (O(conf_path)) holding two upstream pools,
    C(<app>_blue) and C(<app>_green), and a C(split_clients) block that sends each request to
    a pool with the requested share. It never edits a human's C(nginx.conf); the vhost that
    serves the app does C(proxy_pass http://$<app>_backend;) (returned as RV(proxy_pass_target)),
    and the file must be included at C(http) level (C(conf.d/*.conf) is, on Debian).
  - "Why C(split_clients) on C($request_id) and not server weights: nginx weights start at 1,
    so a weight cannot express 0 %, and weights spread over one mixed upstream would let
    C(proxy_next_upstream) retry a failing canary request on the old colour, hiding the canary's
    errors. C($request_id) is 16 random bytes per request, so each request independently lands
    in a pool with exactly the configured probability (no stickiness, same split for every
    worker), retries stay inside the chosen pool, and a pool at 0 % has no entry in the
    C(split_clients) block: it receives no request at all. At 100/0 the variable maps to one
    pool only. The split is random per request: over N requests the observed share deviates
    from the target by about sqrt(p(1-p)/N) (1.1 points at 50 % over 2,000 requests)."
  - "A change never goes live unchecked: the new file is first written beside O(conf_path) under a
    hidden name that no C(include) glob picks up (C(.<file name>.XXXX.candidate); fsync; mode and
    owner of the previous file), then C(nginx -t) checks the whole configuration with the candidate
    in the place of the live file, through a test copy of O(nginx_conf) (see the notes). Only when
    that passes is the candidate renamed over O(conf_path) (atomic), and nginx reloaded."
  - The reload is graceful (SIGHUP to the master; old workers finish their in-flight requests);
    the module waits until the master has started new workers and the old workers have stopped
    accepting connections, so every connection opened after the module returns gets the new
    split (requests still in flight on an old keep-alive connection finish with the old one).
  - When C(nginx -t) fails, O(conf_path) was never touched (the candidate is removed), nginx keeps
    serving the previous split, and the module fails with nginx's own message. When the reload
    fails, the previous file is put back (or the new one removed if there was none).
  - A run that was killed (timeout, lost connection, SIGKILL) leaves at most a candidate and a test
    config behind, never a half-checked live file; the next run on the same file removes them
    (with a warning).
  - Runs on the same app serialize on an C(flock) lock file next to O(conf_path)
    (C(.<file name>.lock)); the validate-and-reload step also takes a lock per directory so that
    two apps sharing one nginx do not validate each other's half-finished change.
  - "Reading only: with neither O(pools) nor O(shares) the module changes nothing and returns
    the current state parsed from the file's C(# greenflow-state:) header (handy for rollback
    and the cutover). With only O(shares), the pools in the file are kept (a pure traffic shift);
    with only O(pools), the shares in the file are kept. O(keepalive), O(max_fails) and
    O(fail_timeout) also keep their values from the file when omitted."
  - The same input twice gives C(changed=false) and no reload.
author:
  - greenflow platform engineers (@greenflow)
options:
  app:
    description:
      - Name of the app; 1-48 lowercase letters, digits, C(-) and C(_), starting with a letter (the rule
        of the whole collection).
      - Used in the names C(<app>_blue), C(<app>_green) and C($<app>_backend), and in the default
        O(conf_path), with C(-) written as C(_) (nginx variable names cannot take C(-)), so C(my-shop)
        gets C($my_shop_backend). Two apps whose names differ only there (C(my-shop), C(my_shop)) would
        share these names; the second one is refused (the file names the app that owns it).
    type: str
    required: true
  pools:
    description:
      - Servers of each colour, as C(host:port) (IPv4, hostname or C([IPv6])). Colours are
        C(blue) and C(green) only; a missing colour is an empty pool.
      - A pool without servers must have a share of 0 (it gets no upstream block).
      - Omitted, the pools of the existing file are kept.
    type: dict
  shares:
    description:
      - Integer percent of requests per colour, each 0-100, together exactly 100. A missing
        colour is 0.
      - Omitted, the shares of the existing file are kept; with O(pools) also omitted the module
        only reads the current state.
    type: dict
notes:
  - Check mode computes the new file, the diff and the result, and touches nothing (it does not
    take the lock either, nor run C(nginx -t)).
  - "How the candidate is tested: C(nginx -t -c <test config> [-p <nginx_prefix>]). The test
    config is a copy of O(nginx_conf) in which every C(include) that reaches O(conf_path) (a glob
    such as C(conf.d/*.conf), or an explicit path, at any depth) is spelled out file by file in
    nginx's order, with the candidate in the place of O(conf_path); an included file on the way to
    it is copied and rewritten the same way. It is written in the directory of O(nginx_conf),
    because nginx resolves relative paths from the directory of the C(-c) file, as a hidden
    C(.greenflow-nginx-test-*) file, and removed after the test. The C(pid) and log paths are
    unchanged: C(nginx -t) opens the pid file without truncating or writing it, and the logs for
    appending, so the running master's files keep their content."
  - If no C(include) of O(nginx_conf) reaches O(conf_path), nginx does not load the file; then
    C(nginx -t) checks the configuration as it is, and a warning says so. The same happens when
    the module cannot follow the includes of O(nginx_conf) (e.g. an unbalanced quote, which
    C(nginx -t) then reports).
  - Every input is checked before anything is touched (not even the lock file). A server address
    is written into the nginx file verbatim, so a line break, a tab or a non-ASCII character (such
    as a digit of another script) anywhere in it is refused; shares given as strings take the
    ASCII digits 0-9 only.
  - Run it on the load balancer host, as a user that can write O(conf_path) and signal nginx.
extends_documentation_fragment:
  - greenflow.platform.nginx
  - greenflow.platform.attributes
  - greenflow.platform.attributes.idempotent
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  idempotent:
    support: full
seealso:
  - name: nginx split_clients
    description: The directive that splits requests between the pools.
    link: https://nginx.org/en/docs/http/ngx_http_split_clients_module.html
"""

EXAMPLES = r"""
- name: First install of the app on the load balancer, all traffic on blue
  greenflow.platform.nginx_upstream:
    app: demo
    pools:
      blue: ["10.0.0.11:8081", "10.0.0.12:8081"]
      green: ["10.0.0.11:8082", "10.0.0.12:8082"]
    shares:
      blue: 100
      green: 0

- name: Canary - send 5 % of requests to green
  greenflow.platform.nginx_upstream:
    app: demo
    shares:
      blue: 95
      green: 5
  register: canary

- name: Show where the vhost must proxy to
  ansible.builtin.debug:
    msg: "proxy_pass {{ canary.proxy_pass_target }}; (was {{ canary.previous_shares }})"

- name: Read the current split without changing anything
  greenflow.platform.nginx_upstream:
    app: demo
  register: current

- name: Roll back - everything on blue again
  greenflow.platform.nginx_upstream:
    app: demo
    shares:
      blue: 100
      green: 0

- name: Drive an nginx instance with its own config and prefix
  greenflow.platform.nginx_upstream:
    app: demo
    conf_path: /srv/lb/conf/greenflow-upstream-demo.conf
    nginx_conf: /srv/lb/conf/nginx.conf
    nginx_prefix: /srv/lb
    pools:
      blue: ["127.0.0.1:8081"]
      green: ["127.0.0.1:8082"]
    shares:
      blue: 50
      green: 50
"""

RETURN = r"""
conf_path:
  description: The generated file.
  returned: always
  type: str
  sample: /etc/nginx/conf.d/greenflow-upstream-demo.conf
shares:
  description: Shares in effect after the run (the current ones when only reading).
  returned: always
  type: dict
  sample: {"blue": 95, "green": 5}
previous_shares:
  description:
    - Shares read back from the file before the run; empty when the file did not exist.
  returned: always
  type: dict
  sample: {"blue": 100, "green": 0}
pools:
  description: Servers of each pool after the run.
  returned: always
  type: dict
  sample: {"blue": ["10.0.0.11:8081"], "green": ["10.0.0.11:8082"]}
previous_pools:
  description: Servers of each pool before the run; empty when the file did not exist.
  returned: always
  type: dict
  sample: {"blue": ["10.0.0.11:8081"], "green": []}
reloaded:
  description: Whether nginx was reloaded (and loaded the new configuration).
  returned: always
  type: bool
  sample: true
validated:
  description: Whether C(nginx -t) ran and passed on the new configuration.
  returned: always
  type: bool
  sample: true
proxy_pass_target:
  description:
    - The exact target a vhost puts after C(proxy_pass) to reach the app; the variable is set by
      the C(split_clients) block in the generated file.
  returned: always
  type: str
  sample: http://$demo_backend
backend_variable:
  description: The nginx variable naming the chosen pool; log it to see the pool per request.
  returned: always
  type: str
  sample: $demo_backend
upstreams:
  description: Names of the upstream blocks in the file (a pool without servers has none).
  returned: always
  type: list
  elements: str
  sample: ["demo_blue", "demo_green"]
timings:
  description:
    - How long the switch took on the load balancer itself, in seconds; the task's wall time adds
      Ansible's own work (connection, module transfer). V(reload_seconds) lasts until the old workers
      stop accepting, so every connection opened afterwards gets the new split.
  returned: when the file was written
  type: dict
  sample: {"write_seconds": 0.002, "validate_seconds": 0.041, "reload_seconds": 0.118, "total_seconds": 0.161}
read_only:
  description: True when neither O(pools) nor O(shares) was given and nothing was changed.
  returned: always
  type: bool
  sample: false
"""

import os
import signal
import time

from ansible.module_utils.basic import AnsibleModule

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
    UpstreamError,
    backend_variable,
    check_owner,
    compiled_defaults,
    default_conf_path,
    main_directives,
    normalize_pools,
    normalize_shares,
    parse_state,
    proxy_pass_target,
    render,
    resolve_desired,
    upstream_names,
    validate_app,
)
from ansible_collections.greenflow.platform.plugins.module_utils._nginx_upstream import (
    DEFAULT_FAIL_TIMEOUT,
    DEFAULT_KEEPALIVE,
    DEFAULT_MAX_FAILS,
    check_int,
    validate_settings,
)


class Nginx:
    """The nginx instance named by nginx_bin / nginx_conf / nginx_prefix / nginx_pid."""

    def __init__(self, module):
        self.module = module
        p = module.params
        self.conf = p["nginx_conf"]
        self.prefix = p["nginx_prefix"]
        self.pid_file = p["nginx_pid"]
        self.bin = p["nginx_bin"]
        self._compiled = None

    def _resolve_bin(self):
        if os.sep in self.bin:
            return self.bin
        return self.module.get_bin_path(self.bin, required=True, opt_dirs=["/usr/sbin", "/usr/local/sbin"])

    def base_cmd(self):
        cmd = [self._resolve_bin(), "-c", self.conf]
        if self.prefix:
            cmd += ["-p", self.prefix]
        return cmd

    def compiled(self):
        if self._compiled is None:
            rc, out, err = self.module.run_command([self._resolve_bin(), "-V"])
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
        rc, out, err = self.module.run_command(cmd + ["-t"])
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
        after the module returns gets the new split. Workers still finishing in-flight
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


def main():
    module = AnsibleModule(
        argument_spec=dict(
            app=dict(type="str", required=True),
            pools=dict(type="dict"),
            shares=dict(type="dict"),
            conf_path=dict(type="path"),
            keepalive=dict(type="int"),
            max_fails=dict(type="int"),
            fail_timeout=dict(type="int"),
            validate=dict(type="bool", default=True),
            reload=dict(type="bool", default=True),
            nginx_bin=dict(type="str", default="nginx"),
            nginx_conf=dict(type="path", default="/etc/nginx/nginx.conf"),
            nginx_prefix=dict(type="path"),
            nginx_pid=dict(type="path"),
            lock_timeout=dict(type="int", default=60),
            reload_timeout=dict(type="int", default=15),
        ),
        supports_check_mode=True,
    )
    p = module.params
    app = p["app"]
    try:
        validate_app(app)
        # Validate what was given before touching anything (not even the lock file).
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
        p["lock_timeout"] = check_int(p["lock_timeout"], "lock_timeout", 0, 86400)
        p["reload_timeout"] = check_int(p["reload_timeout"], "reload_timeout", 1, 3600)
    except UpstreamError as exc:
        module.fail_json(msg=str(exc))
    conf_path = p["conf_path"] or default_conf_path(app)
    read_only = p["pools"] is None and p["shares"] is None

    result = dict(
        changed=False,
        conf_path=conf_path,
        proxy_pass_target=proxy_pass_target(app),
        backend_variable=backend_variable(app),
        reloaded=False,
        validated=False,
        read_only=read_only,
    )

    if read_only:
        try:
            snap = read_snapshot(conf_path)
            current = parse_state(snap.text())
            check_owner(current, app)
        except (AtomicFileError, UpstreamError) as exc:
            module.fail_json(msg="%s: %s" % (conf_path, exc), **result)
        empty = dict((c, []) for c in COLOURS)
        pools = normalize_pools(current["pools"]) if current else {}
        shares = normalize_shares(current["shares"]) if current else {}
        result.update(
            shares=shares, previous_shares=shares, pools=pools, previous_pools=pools,
            upstreams=upstream_names(app, pools or empty),
        )
        module.exit_json(**result)

    if module.check_mode:
        # Check mode writes nothing, not even the lock file: writes are atomic, so reading
        # without the lock still sees a whole file.
        conf_dir = os.path.dirname(os.path.abspath(conf_path))
        if not os.path.isdir(conf_dir):
            module.fail_json(msg="cannot manage %s: directory %s does not exist" % (conf_path, conf_dir), **result)
        run(module, p, app, conf_path, result)
        module.exit_json(**result)

    try:
        check_writable_dir(conf_path)
    except AtomicFileError as exc:
        module.fail_json(msg="cannot manage %s: %s" % (conf_path, exc), **result)

    try:
        app_lock = FileLock(lock_path_for(conf_path), timeout=p["lock_timeout"]).acquire()
    except AtomicFileError as exc:
        module.fail_json(msg=str(exc), **result)
    try:
        # Holding the lock, whatever is left of an earlier run on this file is a killed run's.
        left = remove_leftovers(conf_path)
        if p["validate"]:
            left += test_config.remove_leftovers(p["nginx_conf"], conf_path)
        if left:
            module.warn("removed what an interrupted run left behind (the live file was never "
                        "touched by it): %s" % ", ".join(left))
        run(module, p, app, conf_path, result)
    finally:
        app_lock.release()
    module.exit_json(**result)


def run(module, p, app, conf_path, result):
    try:
        before = read_snapshot(conf_path)
        current = parse_state(before.text())
    except (AtomicFileError, UpstreamError) as exc:
        module.fail_json(msg="%s: %s" % (conf_path, exc), **result)
    try:
        desired = resolve_desired(
            app, p["pools"], p["shares"], p["keepalive"], p["max_fails"], p["fail_timeout"], current
        )
    except UpstreamError as exc:
        module.fail_json(msg=str(exc), **result)

    previous_shares = normalize_shares(current["shares"]) if current else {}
    previous_pools = normalize_pools(current["pools"]) if current else {}
    new_text = render(app, desired["pools"], desired["shares"], desired["keepalive"],
                      desired["max_fails"], desired["fail_timeout"])
    result.update(
        shares=desired["shares"], previous_shares=previous_shares,
        pools=desired["pools"], previous_pools=previous_pools,
        upstreams=upstream_names(app, desired["pools"]),
    )
    old_text = before.text()
    if old_text == new_text:
        return
    result["changed"] = True
    if module._diff:
        result["diff"] = dict(
            before=old_text or "", after=new_text,
            before_header=conf_path, after_header=conf_path,
        )
    if module.check_mode:
        return

    nginx = Nginx(module)
    # One nginx validates and reloads one change at a time, whatever the app.
    dir_lock_path = os.path.join(os.path.dirname(os.path.abspath(conf_path)), ".greenflow-nginx.lock")
    try:
        dir_lock = FileLock(dir_lock_path, timeout=p["lock_timeout"]).acquire()
    except AtomicFileError as exc:
        module.fail_json(msg=str(exc), **result)
    try:
        apply_change(module, p, nginx, conf_path, before, new_text, result)
    finally:
        dir_lock.release()


def test_candidate(module, nginx, conf_path, candidate):
    """nginx -t on the configuration with ``candidate`` in the place of ``conf_path``."""
    tc = test_config.NginxTestConfig(nginx.conf, conf_path, candidate)
    try:
        try:
            conf = tc.build()
        except test_config.ConfigBuildError as exc:
            return False, str(exc)
        if conf is None and tc.unreadable:
            module.warn(
                "could not follow the includes of %s (%s), so nginx -t checked the configuration "
                "as it is, without the new content of %s" % (nginx.conf, tc.unreadable, conf_path))
        elif conf is None:
            module.warn(
                "no include of %s reaches %s, so nginx does not load it: nginx -t checked the "
                "configuration without it" % (nginx.conf, conf_path))
        ok, msg = nginx.test(conf)
        return ok, tc.translate(msg)
    finally:
        tc.cleanup()


def apply_change(module, p, nginx, conf_path, before, new_text, result):
    def unchanged(msg):
        """Fail before anything went live."""
        left = "" if discard(candidate) else " (the candidate %s is left; the next run removes it)" % candidate
        msg += " The new version was not put in place: %s is unchanged%s%s; nginx keeps serving the previous split." % (
            conf_path, "" if before.exists else " (still absent)", left)
        result["changed"] = False
        result["shares"] = result["previous_shares"]
        result["pools"] = result["previous_pools"]
        module.fail_json(msg=msg, **result)

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
        module.fail_json(msg=msg, **result)

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
        module.fail_json(msg=str(exc), **result)
    try:
        mark = lap("write_seconds", started)
        if p["validate"]:
            try:
                ok, msg = test_candidate(module, nginx, conf_path, candidate)
            except Exception as exc:  # e.g. nginx binary missing
                ok, msg = False, str(exc)
            if not ok:
                # nginx read the candidate under the live file's name (see test_candidate)
                where = " (its line numbers in %s are those of the new version)" % conf_path if conf_path in msg else ""
                unchanged("nginx -t failed with the new upstream file%s: %s." % (where, msg))
            result["validated"] = True
            mark = lap("validate_seconds", mark)
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

    if p["reload"]:
        pid, pid_file = nginx.master_pid()
        if pid is None:
            module.warn(
                "nginx is not running (no live master in pid file %s): the file was written%s, "
                "nginx will use it when it starts" % (pid_file, " and validated" if p["validate"] else "")
            )
            return
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
        lap("reload_seconds", mark)


if __name__ == "__main__":
    main()
