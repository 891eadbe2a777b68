# -*- coding: utf-8 -*-
# Copyright: greenflow platform engineers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin greenflow.platform.release_cutover: the health-gated blue/green cutover.

Runs on the controller; the task targets the load balancer host. Every step sets the shares
with greenflow.platform.nginx_upstream, then watches the step's window of the access log with
greenflow.platform.traffic_window (both through _execute_module, so on the load balancer), which
also probes the new colour's health URLs from the load balancer, every poll_seconds. The documentation
is in plugins/modules/release_cutover.py; the decisions in module_utils/_cutover_gates.py.

With ``peers`` (the other load balancers of the group) every switch, log read and lease runs on each of
them too, through a connection of their own (plugin_utils/_peer_hosts.py): a step is set on all of them
or put back on all of them, and the gates judge the windows of all their logs added up
(_traffic_stats.merge_windows). The task's host keeps the release record and the lock; each peer holds a
copy of the lease that its own watchdog guards.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import socket
import time
from datetime import datetime, timezone

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display
from ansible_collections.greenflow.platform.plugins.module_utils import _cutover_gates as gates_mod
from ansible_collections.greenflow.platform.plugins.module_utils import _release_lease as lease_mod
from ansible_collections.greenflow.platform.plugins.module_utils import _release_model as model
from ansible_collections.greenflow.platform.plugins.module_utils._traffic_stats import (
    candidate_view, merge_windows,
)
from ansible_collections.greenflow.platform.plugins.plugin_utils._peer_hosts import PeerError, PeerHosts

display = Display()

COLOURS = model.COLOURS
UPSTREAM_MODULE = "greenflow.platform.nginx_upstream"
WINDOW_MODULE = "greenflow.platform.traffic_window"
RECORD_MODULE = "greenflow.platform.release_record"
# what the load balancer's watchdog needs to switch the same nginx the cutover switches
LEASE_NGINX = ("conf_path", "nginx_bin", "nginx_conf", "nginx_prefix", "nginx_pid", "lock_timeout", "reload_timeout",
               "control_socket")
MAX_WAIT_LIMIT = 3600
NGINX_PASS_THROUGH = ("conf_path", "nginx_bin", "nginx_conf", "nginx_prefix", "nginx_pid",
                      "keepalive", "max_fails", "fail_timeout", "validate", "reload",
                      "lock_timeout", "reload_timeout", "control_socket")

ARGUMENT_SPEC = dict(
    app=dict(type="str", required=True),
    from_color=dict(type="str", required=True, choices=list(COLOURS)),
    to_color=dict(type="str", required=True, choices=list(COLOURS)),
    pools=dict(type="dict"),
    count_unattributed_5xx=dict(type="bool", default=True),
    log_match=dict(type="dict"),
    health_urls=dict(type="list", elements="str", default=[]),
    health_timeout=dict(type="float", default=2.0),
    health_validate_certs=dict(type="bool", default=True),
    log_path=dict(type="path", required=True),
    conf_path=dict(type="path"),
    nginx_bin=dict(type="str"),
    nginx_conf=dict(type="path"),
    nginx_prefix=dict(type="path"),
    nginx_pid=dict(type="path"),
    keepalive=dict(type="int"),
    max_fails=dict(type="int"),
    fail_timeout=dict(type="int"),
    validate=dict(type="bool"),
    reload=dict(type="bool"),
    lock_timeout=dict(type="int"),
    reload_timeout=dict(type="int"),
    control_socket=dict(type="path"),
    record_entry=dict(type="int"),
    record_path=dict(type="path"),
    lease_ttl=dict(type="float", default=10.0),
    # the other load balancers of the group, switched together with the task's host
    peers=dict(type="list", elements="str", default=[]),
    validate_only=dict(type="bool", default=False),
    # the new colour's CPU and memory (the resource lines): node exporter pages of its nodes
    resource_urls=dict(type="list", elements="str", default=[]),
    resource_service=dict(type="str"),
    resource_timeout=dict(type="float", default=2.0),
)
# steps, their timing and the gates: types and defaults from the release model (documented by the doc
# fragment greenflow.platform.gates, which a unit test keeps equal to it)
ARGUMENT_SPEC.update(model.gate_argument_spec())


class ControllerGone(Exception):
    """The ansible-playbook process that started this cutover no longer exists."""


class LeaseLost(Exception):
    """The cutover's lease on the load balancer ran out: the watchdog there put traffic back."""

    def __init__(self, msg, host=None):
        super(LeaseLost, self).__init__(msg)
        self.host = host


def _now_iso(epoch=None):
    return datetime.fromtimestamp(time.time() if epoch is None else epoch,
                                  tz=timezone.utc).isoformat(timespec="milliseconds")


def _pct(value):
    return "n/a" if value is None else "%.2f%%" % (100.0 * value)


def _ms(value):
    return "n/a" if value is None else "%.0f ms" % value


def _read_costs(polls):
    """What reading the new colour's CPU and memory took per poll (ms, all nodes in parallel)."""
    costs = sorted(p["resource_ms"] for p in polls if p.get("resource_ms") is not None)
    if not costs:
        return None
    return {"reads": len(costs), "median": costs[len(costs) // 2], "max": costs[-1]}


def check_options(args):
    """Checks beyond the argument spec. Returns (gates, steps) or raises AnsibleActionFail with
    every problem found, before anything is touched."""
    problems = []
    try:
        model.check_app(args["app"])
    except model.ReleaseModelError as exc:
        problems.append(str(exc))
    if args["from_color"] == args["to_color"]:
        problems.append("from_color and to_color must differ (both are %r)" % args["from_color"])
    steps = args["steps"]
    if not steps:
        problems.append("steps must not be empty")
    else:
        for s in steps:
            if not 1 <= s <= 100:
                problems.append("every step must be a percent between 1 and 100, got %r" % s)
                break
        if any(b <= a for a, b in zip(steps, steps[1:])):
            problems.append("steps must be strictly ascending, got %r" % steps)
        if steps[-1] != 100:
            problems.append("the last step must be 100 (the cutover ends with all traffic on "
                            "to_color), got %r" % steps[-1])
    dwells = []
    try:
        dwells = model.step_dwells(args["step_seconds"], steps or [])
    except model.ReleaseModelError as exc:
        problems.append(str(exc))
    if not 0 <= args["watch_seconds"] <= model.MAX_WATCH_SECONDS:
        problems.append("watch_seconds must be between 0 and %g, got %r"
                        % (model.MAX_WATCH_SECONDS, args["watch_seconds"]))
    if not args["poll_seconds"] <= args["watch_window_seconds"] <= model.MAX_STEP_SECONDS:
        problems.append("watch_window_seconds must be between poll_seconds (%r) and %g, got %r"
                        % (args["poll_seconds"], model.MAX_STEP_SECONDS, args["watch_window_seconds"]))
    if not 0 < args["poll_seconds"] <= 2:
        problems.append("poll_seconds must be > 0 and <= 2 (an abort is acted on within one "
                        "poll), got %r" % args["poll_seconds"])
    if not 0 <= args["max_wait_seconds"] <= MAX_WAIT_LIMIT:
        problems.append("max_wait_seconds must be between 0 and %d, got %r"
                        % (MAX_WAIT_LIMIT, args["max_wait_seconds"]))
    lease_ttl = args.get("lease_ttl", lease_mod.DEFAULT_TTL)
    if not lease_mod.MIN_TTL <= lease_ttl <= lease_mod.MAX_TTL:
        problems.append("lease_ttl must be between %g and %g seconds, got %r"
                        % (lease_mod.MIN_TTL, lease_mod.MAX_TTL, lease_ttl))
    if not args["health_timeout"] > 0:
        problems.append("health_timeout must be > 0, got %r" % args["health_timeout"])
    for key in ("health_urls", "resource_urls"):
        for url in args.get(key) or []:
            if not (url.startswith("http://") or url.startswith("https://")):
                problems.append("%s must be http:// or https:// URLs, got %r" % (key, url))
    peers = args.get("peers") or []
    if len(set(peers)) != len(peers) or any(not p for p in peers):
        problems.append("peers must name each other load balancer once, got %r" % (peers,))
    if not args.get("resource_timeout", 2.0) > 0:
        problems.append("resource_timeout must be > 0, got %r" % args.get("resource_timeout"))
    pools = args.get("pools")
    if pools is not None:
        for colour, members in pools.items():
            if colour not in COLOURS:
                problems.append("pools: unknown colour %r (colours are blue and green)" % colour)
            elif members is not None and not isinstance(members, list):
                problems.append("pools.%s must be a list of host:port strings" % colour)
        if not (pools.get(args["to_color"]) or []):
            problems.append("pools.%s (to_color) has no server: nothing to move traffic to"
                            % args["to_color"])
        if not (pools.get(args["from_color"]) or []):
            problems.append("pools.%s (from_color) has no server: nothing to go back to"
                            % args["from_color"])
    gates = None
    try:
        gates = gates_mod.check_gates(dict((k, args.get(k)) for k in model.JUDGING_GATES))
    except gates_mod.GateError as exc:
        problems.append(str(exc))
    if problems:
        raise AnsibleActionFail("release_cutover: invalid options, nothing was changed: "
                                + "; ".join(problems))
    return gates, list(steps), dwells


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = True

    def run(self, tmp=None, task_vars=None):
        # ansible-playbook's workers run in sessions of their own: when the controller is killed
        # (SIGKILL, no clean-up), this worker goes on. It must not move traffic on its own then.
        self._controller_pid = os.getppid()
        # who holds the cutover's lease on the load balancer (one ansible-playbook run on one controller)
        self._holder = "%s:%d" % (socket.gethostname(), self._controller_pid)
        self._lease_renewed = 0.0
        self._lease_expires = {}  # per load balancer, its lease's expiry (its clock): forward switches are refused after it
        self._lease_entry = None  # the primary's entry as its lease call returned it: what the peers copy
        self._supports_check_mode = True
        self._supports_async = False
        result = super(ActionModule, self).run(tmp, task_vars)
        del tmp
        task_vars = task_vars or {}
        _dummy, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        gates, steps, dwells = check_options(args)
        self._args = args
        self._gates = gates
        self._dwells = dwells
        # the resource lines are judged when they are on and the new colour's node exporters are given
        self._resources_on = bool(args["resource_urls"]) and gates_mod.resources_judged(gates)
        self._resource_service = args.get("resource_service") or model.service_name(args["app"], args["to_color"])
        self._streaks = {}
        self._samples_seen = {}
        self._resource_warned = set()
        self._task_vars = task_vars
        # the load balancers switched together: the task's host (the record's) first, then the peers
        self._me = task_vars.get("inventory_hostname") or "the load balancer"
        self._peers = [p for p in args["peers"] if p != self._me]
        self._hosts = [self._me] + self._peers
        self._peer_hosts = PeerHosts(self, task_vars)
        if args["validate_only"]:
            result.update(changed=False, plan=self._plan_steps(steps), gates=gates,
                          msg="release_cutover: the options are valid (%d steps); nothing was read or moved"
                          % len(steps))
            return result
        try:
            if self._task.check_mode:
                result.update(self._plan(steps))
            else:
                result.update(self._cutover(steps))
        finally:
            self._peer_hosts.close()
            self._remove_tmp_path(self._connection._shell.tmpdir)
        return result

    # -- helpers ----------------------------------------------------------------------------
    def _nginx_args(self, shares=None, deadline=False, host=None):
        """nginx_upstream's arguments; ``deadline``: a forward step, refused once the lease ran out (the
        lease of ``host``, by default the task's)."""
        a = self._args
        out = {"app": a["app"]}
        expires = self._lease_expires.get(host or self._me)
        if deadline and expires is not None:
            out["not_after"] = expires
        for key in NGINX_PASS_THROUGH:
            if a.get(key) is not None:
                out[key] = a[key]
        if a.get("pools") is not None:
            out["pools"] = a["pools"]
        if shares is not None:
            out["shares"] = shares
        return out

    def _probe_args(self):
        """traffic_window's health probe options: the new colour's servers, probed from the LB; and, with
        the resource lines on, the node exporter pages its tasks' CPU and memory are read from."""
        a = self._args
        out = {"health_urls": a["health_urls"], "health_timeout": a["health_timeout"],
               "health_validate_certs": a["health_validate_certs"]}
        if self._resources_on:
            out.update(resource_urls=a["resource_urls"], resource_service=self._resource_service,
                       resource_timeout=a["resource_timeout"])
        return out

    def _resource_decision(self, window, decision, record):
        """The resource lines on this poll's reading: ``decision`` becomes an abort when one is breached.
        ``record`` (the poll) gets the highest CPU and memory percent read. A page that cannot be read
        mid-cutover is said once per node and judged as no reading (the preflight made sure every node
        answered before any traffic moved)."""
        if not self._resources_on or window.get("failed"):
            return decision
        read = window.get("resources") or {}
        tasks = read.get("tasks") or []
        for err in read.get("errors") or []:
            if err["url"] not in self._resource_warned:
                self._resource_warned.add(err["url"])
                display.warning("release_cutover %s: no CPU and memory reading from %s: %s (judged on the other "
                                "readings until it answers)" % (self._args["app"], err["url"], err["error"]))
        for metric in ("cpu_percent", "memory_percent"):
            values = [t[metric] for t in tasks if t.get(metric) is not None]
            if values:
                record[metric] = max(values)
        if read.get("errors"):
            record["resource_errors"] = len(read["errors"])
        if read.get("ms") is not None:
            record["resource_ms"] = read["ms"]
        for node, seconds in gates_mod.stale_nodes(tasks, self._samples_seen, time.monotonic()):
            if node not in self._resource_warned:
                self._resource_warned.add(node)
                display.warning("release_cutover %s: the CPU and memory sample of %s has not changed for %.0f s (is "
                                "greenflow-container-stats running there?); judged as no reading"
                                % (self._args["app"], node, seconds))
                record["resource_stale"] = node
        breaches = gates_mod.resource_breaches(tasks, self._gates, self._streaks)
        return gates_mod.with_resource_breaches(decision, breaches)

    def _check_resources(self, mark):
        """Preflight of the resource lines: every node exporter page answers with greenflow_container_*
        metrics and shows the new colour's tasks; else nothing moves. Returns a problem or None."""
        if not self._resources_on:
            return None
        a = self._args
        read = mark.get("resources") or {}
        problems = ["%s: %s" % (e["url"], e["error"]) for e in read.get("errors") or []]
        nodes = set(t.get("node") for t in read.get("tasks") or [])
        for url in a["resource_urls"]:
            node = url.split("://", 1)[-1].split("/", 1)[0]
            if node not in nodes and not any(p.startswith(url + ":") for p in problems):
                problems.append("%s: no task of %s there" % (url, self._resource_service))
        if not problems:
            return None
        return ("cannot read the CPU and memory of %s's tasks, which the resource lines (abort_cpu_percent %g, "
                "abort_memory_percent %g) judge: %s. Is greenflow-container-stats running on the swarm nodes "
                "(role greenflow.platform.monitoring) and may the load balancer reach their node exporter "
                "(firewall_swarm_stats_ports)? To release without these lines set abort_cpu_percent and "
                "abort_memory_percent to 0 (deploy.yml: cutover_abort_cpu_percent=0 cutover_abort_memory_percent=0)"
                % (a["to_color"], self._gates["abort_cpu_percent"], self._gates["abort_memory_percent"],
                   "; ".join(problems)))

    def _run(self, module, module_args, host=None):
        """One module run on ``host`` (a load balancer of the group; by default the task's). A peer that
        cannot be reached is a failed result, like a module that failed there."""
        if host is None or host == self._me:
            return self._execute_module(module_name=module, module_args=module_args, task_vars=self._task_vars)
        try:
            with self._peer_hosts.on(host):
                return self._execute_module(module_name=module, module_args=module_args, task_vars=self._task_vars)
        except (PeerError, AnsibleActionFail) as exc:
            return {"failed": True, "msg": "%s: %s" % (host, exc)}

    def _on_all(self, module, args_of):
        """``module`` on every load balancer (``args_of(host)`` its arguments), the task's host first.
        Returns [(host, result)]."""
        return [(host, self._run(module, args_of(host), host)) for host in self._hosts]

    # -- the lease on the load balancer (record_entry given) ----------------------------------------
    def _lease(self, action, hosts=None):
        """lease / renew / release on the release record of the task's host, then on the copies of the
        peers (``hosts``: only these); raises LeaseLost or AnsibleActionFail at the first that fails."""
        a = self._args
        if a.get("record_entry") is None:
            return
        for host in hosts or self._hosts:
            args = {"app": a["app"], "action": action, "id": a["record_entry"], "holder": self._holder}
            if host != self._me:
                args["path"] = model.peer_record_path(a["app"], a.get("record_path"))
                if action == "lease":
                    args.update(mirror=self._lease_entry, mirror_of=self._me)
            elif a.get("record_path"):
                args["path"] = a["record_path"]
            if action == "lease":
                args["lease_ttl"] = a["lease_ttl"]
                args["lease_nginx"] = dict((k, a[k]) for k in LEASE_NGINX if a.get(k) is not None)
            res = self._run(RECORD_MODULE, args, host)
            where = "" if host == self._me else " (the copy on %s)" % host
            if res.get("failed"):
                if res.get("lease_lost"):
                    raise LeaseLost("%s%s" % (res.get("msg"), where), host)
                raise AnsibleActionFail("release_cutover: %s of the lease on entry %s%s failed%s: %s"
                                        % (action, a["record_entry"], where,
                                           " (no traffic was moved)" if action == "lease" else "", res.get("msg")))
            if host == self._me:
                self._lease_renewed = time.monotonic()
                if action == "lease":
                    self._lease_entry = res.get("entry")
            lease = (res.get("entry") or {}).get("lease") or {}
            self._lease_expires[host] = lease.get("expires_epoch") if action in ("lease", "renew") else None

    def _take_leases(self):
        """The lease on every load balancer before the first switch; when a peer refuses, the leases taken
        are given back and nothing moves."""
        taken = []
        for host in self._hosts:
            try:
                self._lease("lease", [host])
                taken.append(host)
            except (LeaseLost, AnsibleActionFail) as exc:
                for done in taken:
                    try:
                        self._lease("release", [done])
                    except (LeaseLost, AnsibleActionFail):
                        pass
                raise AnsibleActionFail("release_cutover %s: cannot take the lease on %s (no traffic was moved): %s"
                                        % (self._args["app"], host, exc))

    def _renew_lease(self, now=False):
        """Renew when a third of the ttl has gone by (``now``: at once, e.g. right before a switch)."""
        if self._args.get("record_entry") is None:
            return
        if now or time.monotonic() - self._lease_renewed >= self._args["lease_ttl"] / 3.0:
            self._lease("renew")

    def _release_lease(self):
        """The cutover ended by itself: nothing for the watchdog to guard (a failure only warns: the
        playbook closes the entry next, and the watchdog never acts on a closed entry). Every load balancer
        is tried."""
        for host in self._hosts:
            try:
                self._lease("release", [host])
            except (LeaseLost, AnsibleActionFail) as exc:
                display.warning("release_cutover %s: %s" % (self._args["app"], exc))

    def _after_lost_lease(self, exc):
        """A lease ran out (a watchdog took over). With peers, one watchdog may have acted before the
        others: every load balancer is put back at once, and the leases still held are given back."""
        if not self._peers:
            return ""
        bad = [(host, res.get("msg")) for host, res in self._on_all(
            UPSTREAM_MODULE, lambda host: self._nginx_args(self._shares(0))) if res.get("failed")]
        for host in self._hosts:
            if host != exc.host:
                try:
                    self._lease("release", [host])
                except (LeaseLost, AnsibleActionFail):
                    pass
        if bad:
            return "; putting every load balancer back FAILED on %s" % ", ".join("%s (%s)" % b for b in bad)
        return "; every load balancer (%s) put back on %s" % (", ".join(self._hosts), self._args["from_color"])

    def _check_controller(self):
        if os.getppid() != self._controller_pid:
            raise ControllerGone()

    def _shares(self, to_pct):
        return {self._args["to_color"]: to_pct, self._args["from_color"]: 100 - to_pct}

    def _attribution_pools(self, pools):
        """Pools for the log reader: the servers, plus the upstream group names nginx writes
        in upstream_addr when no server of a group is available."""
        out = {}
        for colour in COLOURS:
            members = list((pools or {}).get(colour) or [])
            members.append(model.upstream_name(self._args["app"], colour))
            out[colour] = members
        return out

    def _read_state(self):
        a = self._args
        args = {"app": a["app"]}
        for key in ("conf_path", "nginx_bin", "nginx_conf", "nginx_prefix", "nginx_pid"):
            if a.get(key) is not None:
                args[key] = a[key]
        res = self._run(UPSTREAM_MODULE, args)  # neither pools nor shares: read only
        if res.get("failed"):
            raise AnsibleActionFail("release_cutover: cannot read the current state of app %s "
                                    "(nothing was changed): %s" % (self._args["app"],
                                                                   res.get("msg")))
        return res

    # -- check mode -------------------------------------------------------------------------
    def _plan_steps(self, steps):
        a = self._args
        return [{"step": i, "share": pct, "shares": self._shares(pct), "dwell_seconds": dwell,
                 "max_seconds": dwell + a["max_wait_seconds"]}
                for i, (pct, dwell) in enumerate(zip(steps, self._dwells), 1)]

    def _plan(self, steps):
        a = self._args
        plan = self._plan_steps(steps)
        display.display("release_cutover %s (check mode, no traffic moved): %s -> %s in %d steps"
                        % (a["app"], a["from_color"], a["to_color"], len(steps)))
        for p in plan:
            display.display("  plan step %d/%d: %s %d%% / %s %d%%, dwell %gs (up to %gs when "
                            "traffic is thin)" % (p["step"], len(plan), a["to_color"], p["share"],
                                                  a["from_color"], 100 - p["share"],
                                                  p["dwell_seconds"], p["max_seconds"]))
        if a["watch_seconds"] > 0:
            display.display("  then watch %gs at 100%% (abort lines on the last %gs at every poll; %s "
                            "still runs and takes all traffic back on a breach)"
                            % (a["watch_seconds"], a["watch_window_seconds"], a["from_color"]))
        display.display("  gates: pass if >= %d requests, error rate <= %s, p95 <= %s; abort if "
                        "error rate >= %s or p95 >= %s (after %d bad requests) or a health probe "
                        "fails" % (self._gates["min_requests"], _pct(self._gates["max_error_rate"]),
                                   _ms(self._gates["max_p95_ms"]),
                                   _pct(self._gates["abort_error_rate"]),
                                   _ms(self._gates["abort_p95_ms"]),
                                   self._gates["abort_min_failures"]))
        if self._resources_on:
            display.display("  resource lines: abort if a task of %s is at >= %g%% of its CPU limit or >= %g%% of "
                            "its memory limit on %d samples in a row (0: off), read from %d node(s)"
                            % (a["to_color"], self._gates["abort_cpu_percent"], self._gates["abort_memory_percent"],
                               self._gates["abort_resource_samples"], len(a["resource_urls"])))
        return {"changed": True, "check_mode": True, "plan": plan, "timeline": [],
                "watch_seconds": a["watch_seconds"],
                "gates": self._gates, "shares": None,
                "msg": "check mode: %d steps planned, no traffic moved" % len(plan)}

    # -- the cutover ------------------------------------------------------------------------
    def _cutover(self, steps):
        a = self._args
        gates = self._gates
        to_c, from_c = a["to_color"], a["from_color"]
        timeline = []
        out = {"changed": False, "timeline": timeline, "gates": gates, "from_color": from_c,
               "to_color": to_c, "reverted": False}
        start = time.time()

        pools = a.get("pools")
        if pools is None:
            state = self._read_state()
            pools = state.get("pools") or {}
            if not pools.get(to_c) or not pools.get(from_c):
                raise AnsibleActionFail(
                    "release_cutover: app %s has pools %r; both %s and %s need servers "
                    "(nothing was changed)" % (a["app"], pools, from_c, to_c))
        attribution = self._attribution_pools(pools)
        thresholds = gates_mod.latency_thresholds(gates)

        # preflight: the log is readable and the new colour is healthy, before any traffic moves
        mark = self._run(WINDOW_MODULE, dict(self._probe_args(), log_path=a["log_path"], from_end=True))
        if mark.get("failed"):
            raise AnsibleActionFail("release_cutover: cannot read the access log %s (nothing was "
                                    "changed): %s" % (a["log_path"], mark.get("msg")))
        positions = {self._me: mark.get("position")}
        # the other load balancers carry the same split as this one (all on from_color), and their logs are read
        if self._peers:
            positions.update(self._check_peers())
        health = mark.get("health") or []
        bad = [h for h in health if not h["ok"]]
        preflight = {"event": "preflight", "time": _now_iso(), "health": health}
        timeline.append(preflight)
        if bad:
            out.update(failed=True, msg="release_cutover %s: %s is not healthy, no traffic was "
                       "moved: %s" % (a["app"], to_c, "; ".join(
                           "%s -> %s" % (h["url"], h.get("status") or h.get("error"))
                           for h in bad)))
            display.display("release_cutover %s: preflight failed, nothing moved" % a["app"])
            return out
        # an unhealthy colour is said first (above); then every node must show its tasks' CPU and memory
        if self._resources_on:
            preflight["resources"] = mark.get("resources")
            problem = self._check_resources(mark)
            if problem:
                out.update(failed=True, msg="release_cutover %s: %s. No traffic was moved." % (a["app"], problem))
                display.display("release_cutover %s: preflight failed, nothing moved" % a["app"])
                return out

        # from here on traffic moves: the load balancer's watchdog puts it back if this run is lost
        self._take_leases()
        if self._peers:
            display.display("release_cutover %s: %d load balancers switched together: %s (the record and the lock on %s)"
                            % (a["app"], len(self._hosts), ", ".join(self._hosts), self._me))
        display.display("release_cutover %s: %s -> %s, steps %s, dwell %s%s%s"
                        % (a["app"], from_c, to_c, steps,
                           ("%gs each" % self._dwells[0]) if len(set(self._dwells)) == 1
                           else "/".join("%gs" % d for d in self._dwells),
                           (", then a %gs watch" % a["watch_seconds"]) if a["watch_seconds"] > 0 else "",
                           (", lease %gs on entry %s" % (a["lease_ttl"], a["record_entry"]))
                           if a.get("record_entry") is not None else ""))
        # Each window starts where the previous read stopped (before the new shares are set):
        # no request of the step is missed; the few of the previous split it may include are
        # attributed to the pool that really answered them.
        position = positions
        for index, pct in enumerate(steps, 1):
            step = {"event": "step", "step": index, "steps": len(steps), "share": pct,
                    "shares": self._shares(pct), "position": position,
                    "dwell_seconds": self._dwells[index - 1]}
            timeline.append(step)
            try:
                verdict = self._run_step(step, attribution, thresholds)
                position = step.get("end_position") or position
            except LeaseLost as exc:
                # the watchdog on the load balancer took over (this run was cut off longer than the
                # lease): it put traffic back and closed the entry; nothing more to do here
                out.update(failed=True, changed=True, reverted=True, shares=self._shares(0),
                           msg="release_cutover %s: lost the lease at step %d: %s%s"
                           % (a["app"], index, exc, self._after_lost_lease(exc)))
                display.error(out["msg"])
                return out
            except ControllerGone:
                # nobody is left to report to: stop where traffic is, change nothing more (the
                # release record says in_progress; rollback.yml -e release_force=true resolves it)
                out.update(failed=True, msg="release_cutover %s: the controller is gone; stopped at "
                           "step %d without moving more traffic" % (a["app"], index))
                return out
            except Exception as exc:  # anything unexpected once traffic may have moved: go back
                step.update(verdict="error", reasons=[str(exc)], ended=_now_iso())
                self._show(step)
                return self._revert_and_fail(out, step, "error: %s" % exc)
            out["changed"] = True
            self._show(step)
            if verdict != gates_mod.PASS:
                return self._revert_and_fail(out, step, "; ".join(step.get("reasons") or []))
        if a["watch_seconds"] > 0:
            watch = {"event": "watch", "step": len(steps) + 1, "steps": len(steps), "share": 100,
                     "shares": self._shares(100), "position": position}
            timeline.append(watch)
            try:
                verdict = self._watch(watch, attribution, thresholds)
            except LeaseLost as exc:
                out.update(failed=True, changed=True, reverted=True, shares=self._shares(0),
                           msg="release_cutover %s: lost the lease during the watch: %s%s"
                           % (a["app"], exc, self._after_lost_lease(exc)))
                display.error(out["msg"])
                return out
            except ControllerGone:
                out.update(failed=True, msg="release_cutover %s: the controller is gone; stopped during the "
                           "watch with all traffic on %s" % (a["app"], to_c))
                return out
            except Exception as exc:  # pylint: disable=broad-except  # unknown state: go back
                watch.update(verdict="error", reasons=[str(exc)], ended=_now_iso())
                self._show_watch(watch)
                return self._revert_and_fail(out, watch, "error: %s" % exc)
            self._show_watch(watch)
            out["watch"] = dict((k, watch.get(k)) for k in (
                "verdict", "seconds", "requests", "error_rate", "p95_ms", "reasons"))
            if verdict != gates_mod.PASS:
                return self._revert_and_fail(out, watch, "; ".join(watch.get("reasons") or []))
        self._release_lease()
        out["shares"] = self._shares(100)
        out["seconds"] = round(time.time() - start, 3)
        out["msg"] = ("release_cutover %s: all traffic on %s after %d steps in %.0f s"
                      % (a["app"], to_c, len(steps), out["seconds"]))
        display.display(out["msg"])
        return out

    def _run_step(self, step, attribution, thresholds):
        a = self._args
        gates = self._gates
        step["position"] = self._fill_positions(step.get("position"))
        self._check_controller()
        self._renew_lease(now=True)
        # the step on every load balancer; the first one that cannot carry it stops the step (an error: the
        # caller puts every load balancer back)
        set_results = []
        for host in self._hosts:
            set_res = self._run(UPSTREAM_MODULE, self._nginx_args(step["shares"], deadline=True, host=host), host)
            set_results.append(set_res)
            problem = self._set_problem(set_res, step["shares"])
            if problem:
                break
        t0 = time.monotonic()
        step["started_epoch"] = round(time.time(), 3)
        step["started"] = _now_iso(step["started_epoch"])
        if problem:
            step["verdict"] = "error"
            step["reasons"] = ["%s%s" % ("%s: " % host if self._peers else "", problem)]
            step["ended"] = _now_iso()
            return "error"
        step["set_changed"] = any(r.get("changed") for r in set_results)
        step["reloaded"] = any(r.get("reloaded") for r in set_results)
        dwell_end = t0 + step["dwell_seconds"]
        wait_end = dwell_end + a["max_wait_seconds"]
        polls = []
        step["polls"] = polls
        waiting_shown = False
        while True:
            self._check_controller()
            self._renew_lease()
            poll_start = time.monotonic()
            # traffic_window probes the new colour from the load balancer while it reads the log
            window, health, view, decision = self._read_window(step["position"], attribution, thresholds)
            now = time.monotonic()
            poll = {}
            if decision is None:
                decision = gates_mod.evaluate(view, gates, final=now >= dwell_end,
                                              wait_over=now >= wait_end, health=health)
                decision = self._resource_decision(window, decision, poll)
            poll.update({"t": round(now - t0, 3), "verdict": decision["verdict"],
                         "requests": view.get("requests"), "errors_5xx": view.get("errors_5xx"),
                         "error_rate": view.get("error_rate"), "p95_ms": view.get("p95_ms")})
            if health:
                poll["health_ok"] = all(h["ok"] for h in health)
            polls.append(poll)
            display.vv("  poll step %d t=%.1fs: %s requests, %s 5xx, p95 %s -> %s" % (
                step["step"], poll["t"], poll["requests"], poll["errors_5xx"],
                _ms(poll["p95_ms"]), poll["verdict"]))
            verdict = decision["verdict"]
            if verdict == gates_mod.WAIT and not waiting_shown:
                waiting_shown = True
                display.display("  step %d/%d: %s at %d%%: %s requests so far, need %d; waiting "
                                "up to %gs more" % (step["step"], step["steps"], a["to_color"],
                                                    step["share"], view.get("requests"),
                                                    gates["min_requests"], a["max_wait_seconds"]))
            if verdict in (gates_mod.PASS, gates_mod.FAIL, gates_mod.ABORT):
                break
            sleep_for = a["poll_seconds"] - (time.monotonic() - poll_start)
            if verdict == gates_mod.WATCH:
                sleep_for = min(sleep_for, dwell_end - time.monotonic())
            if sleep_for > 0:
                time.sleep(sleep_for)
        ended = time.time()
        step.update({
            "verdict": verdict, "reasons": decision["reasons"], "breaches": decision["breaches"],
            "ended_epoch": round(ended, 3), "ended": _now_iso(ended),
            "seconds": round(ended - step["started_epoch"], 3),
            "requests": view.get("requests"), "errors_5xx": view.get("errors_5xx"),
            "error_rate": view.get("error_rate"), "p50_ms": view.get("p50_ms"),
            "p95_ms": view.get("p95_ms"), "p99_ms": view.get("p99_ms"),
            "unattributed_5xx": view.get("unattributed_5xx"),
            "health": health,
        })
        if self._resources_on:
            step["resources"] = (window.get("resources") or {}).get("tasks")
            step["resource_read_ms"] = _read_costs(polls)
        if not window.get("failed"):
            step["pools"] = dict((c, {k: s.get(k) for k in (
                "requests", "errors_5xx", "error_rate", "p50_ms", "p95_ms", "p99_ms")})
                for c, s in window["pools"].items())
            step["unattributed"] = {k: window["unattributed"].get(k) for k in (
                "requests", "errors_5xx", "no_upstream", "no_upstream_5xx")}
            step["malformed"] = window.get("malformed")
            step["end_position"] = window.get("position")
        return verdict

    def _watch(self, watch, attribution, thresholds):
        """After the last step: keep judging the new colour at 100 % for watch_seconds while the previous
        colour still runs. Every poll judges the last watch_window_seconds of the log on the abort lines;
        the end judges the whole watch on the pass lines (gates_mod.evaluate_watch)."""
        a = self._args
        gates = self._gates
        watch["position"] = self._fill_positions(watch.get("position"))
        first = watch["position"]
        t0 = time.monotonic()
        watch["started_epoch"] = round(time.time(), 3)
        watch["started"] = _now_iso(watch["started_epoch"])
        watch_end = t0 + a["watch_seconds"]
        window_seconds = a["watch_window_seconds"]
        display.display("  watch: %s at 100%% for %gs (abort lines on the last %gs); %s still runs"
                        % (a["to_color"], a["watch_seconds"], window_seconds, a["from_color"]))
        marks = []  # (monotonic time, log position after that read), pruned to one before the window
        polls = []
        watch["polls"] = polls
        view, whole_view, health, window = {}, None, [], {}
        while True:
            self._check_controller()
            self._renew_lease()
            poll_start = time.monotonic()
            start = gates_mod.rolling_start(marks, poll_start, window_seconds, first)
            poll_resources = {}
            window, health, view, decision = self._read_window(start, attribution, thresholds)
            now = time.monotonic()
            if decision is None:
                marks.append((now, window.get("position")))
                while len(marks) > 1 and marks[1][0] <= now - window_seconds:
                    marks.pop(0)
                whole_view = None
                if now >= watch_end:
                    whole, _health, whole_view, failed = self._read_window(first, attribution, thresholds, probe=False)
                    if failed:
                        raise AnsibleActionFail("cannot read the access log %s for the whole watch: %s"
                                                % (a["log_path"], whole.get("msg")))
                decision = gates_mod.evaluate_watch(view, gates, health=health, whole=whole_view)
                decision = self._resource_decision(window, decision, poll_resources)
            poll = dict(poll_resources, **{"t": round(now - t0, 3), "verdict": decision["verdict"],
                                           "requests": view.get("requests"), "errors_5xx": view.get("errors_5xx"),
                                           "error_rate": view.get("error_rate"), "p95_ms": view.get("p95_ms")})
            if health:
                poll["health_ok"] = all(h["ok"] for h in health)
            polls.append(poll)
            display.vv("  watch t=%.1fs: last %gs %s requests, %s 5xx, p95 %s -> %s" % (
                poll["t"], window_seconds, poll["requests"], poll["errors_5xx"], _ms(poll["p95_ms"]),
                poll["verdict"]))
            verdict = decision["verdict"]
            if verdict in (gates_mod.PASS, gates_mod.FAIL, gates_mod.ABORT):
                break
            sleep_for = min(a["poll_seconds"] - (time.monotonic() - poll_start), watch_end - time.monotonic())
            if sleep_for > 0:
                time.sleep(sleep_for)
        ended = time.time()
        whole_judged = whole_view is not None and verdict != gates_mod.ABORT
        judged = whole_view if whole_judged else view
        watch.update({
            "verdict": verdict, "reasons": decision["reasons"], "breaches": decision["breaches"],
            "ended_epoch": round(ended, 3), "ended": _now_iso(ended),
            "seconds": round(ended - watch["started_epoch"], 3),
            "window_seconds": window_seconds, "judged": "whole watch" if whole_judged else "last %gs" % window_seconds,
            "requests": judged.get("requests"), "errors_5xx": judged.get("errors_5xx"),
            "error_rate": judged.get("error_rate"), "p50_ms": judged.get("p50_ms"),
            "p95_ms": judged.get("p95_ms"), "p99_ms": judged.get("p99_ms"),
            "health": health,
        })
        if self._resources_on:
            watch["resources"] = (window.get("resources") or {}).get("tasks")
            watch["resource_read_ms"] = _read_costs(polls)
        if not window.get("failed"):
            watch["end_position"] = window.get("position")
        return verdict

    def _show_watch(self, watch):
        display.display(
            "  watch: %s 100%%  requests %-6s error rate %-7s p95 %-8s -> %s (%.1fs)%s" % (
                self._args["to_color"], watch.get("requests"), _pct(watch.get("error_rate")),
                _ms(watch.get("p95_ms")), watch.get("verdict"), watch.get("seconds") or 0.0,
                (": " + "; ".join(watch["reasons"])) if watch.get("reasons") else ""))

    def _read_window(self, positions, attribution, thresholds, probe=True):
        """traffic_window on every load balancer, each from its position in ``positions`` (the task's host with
        the health probes unless ``probe`` is false). Returns (window, health, view, abort): ``abort`` is the
        decision when a log cannot be read (else None), ``view`` the new colour's numbers. With peers the window
        is all their windows added up; its ``position`` is again one per load balancer."""
        a = self._args
        windows = []
        for host in self._hosts:
            args = dict(self._probe_args() if probe and host == self._me else {}, log_path=a["log_path"],
                        pools=attribution, position=positions.get(host), latency_thresholds_ms=thresholds)
            if self._peers:
                args["latency_histogram"] = True
            if a.get("log_match"):
                args["match"] = a["log_match"]
            window = self._run(WINDOW_MODULE, args, host)
            if window.get("failed"):
                where = "%s: " % host if self._peers else ""
                return window, [], {}, {"verdict": gates_mod.ABORT, "breaches": [
                    {"metric": "traffic_window", "value": window.get("msg"), "op": "failed", "threshold": a["log_path"]}],
                    "reasons": ["cannot read the access log: %s%s" % (where, window.get("msg"))]}
            windows.append(window)
        first = windows[0]
        window = merge_windows(windows, thresholds) if self._peers else dict(first)
        for key in ("health", "resources"):
            if key in first:
                window[key] = first[key]
        window["position"] = dict((host, w.get("position")) for host, w in zip(self._hosts, windows))
        view = candidate_view(window, a["to_color"], a["count_unattributed_5xx"], thresholds)
        return window, window.get("health") or [], view, None

    def _fill_positions(self, positions):
        """Positions for every load balancer: those whose log did not exist at the last read start at its end now."""
        positions = dict(positions or {})
        for host in self._hosts:
            if positions.get(host) is None:
                mark = self._run(WINDOW_MODULE, {"log_path": self._args["log_path"], "from_end": True}, host)
                if mark.get("failed"):
                    raise AnsibleActionFail("cannot read the access log %s%s: %s" % (
                        self._args["log_path"], " on %s" % host if self._peers else "", mark.get("msg")))
                positions[host] = mark.get("position")
        return positions

    @staticmethod
    def _set_problem(set_res, shares):
        """Why a load balancer does not carry the step (None when it does)."""
        if set_res.get("failed"):
            return "nginx_upstream failed: %s" % set_res.get("msg")
        got = set_res.get("shares")
        if isinstance(got, dict):
            got = dict((c, int(got.get(c) or 0)) for c in shares)
            if got != shares:
                return "nginx_upstream reports shares %r, expected %r" % (got, shares)
        return None

    def _check_peers(self):
        """Before any traffic moves: every peer answers, has the app with all traffic on from_color (the same
        split as this load balancer), and its access log is readable. Returns their log positions; raises
        AnsibleActionFail (nothing changed) naming each peer that is not ready."""
        a = self._args
        problems, positions = [], {}
        state_args = dict((k, a[k]) for k in ("conf_path", "nginx_bin", "nginx_conf", "nginx_prefix", "nginx_pid")
                          if a.get(k) is not None)
        state_args["app"] = a["app"]
        for host in self._peers:
            state = self._run(UPSTREAM_MODULE, state_args, host)
            if state.get("failed"):
                problems.append("%s: cannot read its split: %s" % (host, state.get("msg")))
                continue
            shares = dict((c, int(v or 0)) for c, v in (state.get("shares") or {}).items() if int(v or 0))
            if shares != {a["from_color"]: 100}:
                problems.append("%s sends %s, not all to %s like %s" % (
                    host, ", ".join("%s %d %%" % kv for kv in sorted(shares.items())) or "nothing",
                    a["from_color"], self._me))
                continue
            mark = self._run(WINDOW_MODULE, {"log_path": a["log_path"], "from_end": True}, host)
            if mark.get("failed"):
                problems.append("%s: cannot read the access log %s: %s" % (host, a["log_path"], mark.get("msg")))
                continue
            positions[host] = mark.get("position")
        if problems:
            raise AnsibleActionFail(
                "release_cutover %s: the load balancers are not all ready to be switched together, no traffic was "
                "moved: %s. All of them must carry the same split before a release (playbooks/rollback.yml puts "
                "every one back on the live release)." % (a["app"], "; ".join(problems)))
        return positions

    def _show(self, step):
        a = self._args
        display.display(
            "  step %d/%d: %s %3d%%  requests %-6s error rate %-7s p95 %-8s%s -> %s (%.1fs)%s" % (
                step["step"], step["steps"], a["to_color"], step["share"],
                step.get("requests"), _pct(step.get("error_rate")), _ms(step.get("p95_ms")),
                self._peak_resources(step), step.get("verdict"), step.get("seconds") or 0.0,
                (": " + "; ".join(step["reasons"])) if step.get("reasons") else ""))

    def _peak_resources(self, step):
        """' cpu 12% mem 40%': the highest of the step's polls (empty when the resource lines are off)."""
        if not self._resources_on:
            return ""
        out = ""
        for metric, label in (("cpu_percent", "cpu"), ("memory_percent", "mem")):
            values = [p[metric] for p in step.get("polls") or [] if p.get(metric) is not None]
            out += " %s %s" % (label, ("%.0f%%" % max(values)) if values else "n/a")
        return out

    def _revert_and_fail(self, out, step, why):
        a = self._args
        from_c = a["from_color"]
        shares = self._shares(0)
        t = time.time()
        # every load balancer, also after one failed (each one put back is traffic back)
        failed = [(host, res) for host, res in self._on_all(UPSTREAM_MODULE, lambda host: self._nginx_args(shares))
                  if res.get("failed")]
        res = {"msg": "; ".join("%s%s" % ("%s: " % host if self._peers else "", r.get("msg")) for host, r in failed)}
        revert = {"event": "revert", "time": _now_iso(t), "time_epoch": round(t, 3),
                  "shares": shares, "ok": not failed, "after": step.get("event"),
                  "seconds": round(time.time() - t, 3)}
        if self._peers:
            revert["load_balancers"] = list(self._hosts)
        out["timeline"].append(revert)
        out["failed"] = True
        out["changed"] = True
        out["failed_step"] = step.get("step")
        out["breaches"] = step.get("breaches") or []
        thresholds = dict((k, self._gates[k]) for k in model.JUDGING_GATES)
        out["thresholds"] = thresholds
        if step.get("event") == "watch":
            out["failed_phase"] = "watch"
            where = ("the watch after the last step (%s at 100%%, %.0fs in; numbers of the %s)"
                     % (a["to_color"], step.get("seconds") or 0.0, step.get("judged") or "watch"))
        else:
            out["failed_phase"] = "step"
            where = "step %d/%d (%s at %d%%)" % (step["step"], step["steps"], a["to_color"], step["share"])
        head = ("release_cutover %s: %s %s: %s. Numbers: %s requests, "
                "error rate %s, p95 %s. Thresholds: pass error rate <= %s and p95 <= %s with >= %d "
                "requests; abort at error rate >= %s or p95 >= %s."
                % (a["app"], where,
                   step.get("verdict"), why, step.get("requests"), _pct(step.get("error_rate")),
                   _ms(step.get("p95_ms")), _pct(thresholds["max_error_rate"]),
                   _ms(thresholds["max_p95_ms"]), thresholds["min_requests"],
                   _pct(thresholds["abort_error_rate"]), _ms(thresholds["abort_p95_ms"])))
        if revert["ok"]:
            self._release_lease()
            out["reverted"] = True
            out["shares"] = shares
            out["msg"] = head + " Traffic is back on %s (100 %%)." % from_c
            display.display("  reverted: %s 100%% (%.2fs)" % (from_c, revert["seconds"]))
        else:
            out["reverted"] = False
            out["msg"] = head + (" REVERT FAILED, traffic is NOT back on %s: %s"
                                 % (from_c, res.get("msg")))
            display.error("release_cutover %s: revert to %s failed: %s"
                          % (a["app"], from_c, res.get("msg")))
        return out
