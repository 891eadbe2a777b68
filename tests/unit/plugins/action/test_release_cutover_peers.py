"""The cutover's orchestration over several load balancers (release_cutover with ``peers``), with the module runs
replaced by a stand-in that answers as nginx_upstream, traffic_window and release_record would. What is checked is
the order of the calls and the decisions: every step on every load balancer, all put back when one cannot carry
a step, the gates on the windows added up, the lease copied to each peer. The real thing runs on the lab
(tests/lab/test_lb_pair.py)."""
import os

from ansible_collections.greenflow.platform.plugins.action import release_cutover as rc
from ansible_collections.greenflow.platform.plugins.module_utils import _cutover_gates as gates_mod
from ansible_collections.greenflow.platform.plugins.module_utils._traffic_stats import TrafficStats

POOLS = {"blue": ["10.0.0.1:8001"], "green": ["10.0.0.2:8002"]}


class FakeLBs:
    """Answers the cutover's module runs per load balancer; ``refuse`` = (host, share): that host's nginx
    refuses the step with that share of green."""

    def __init__(self, hosts, refuse=None, green_latency_ms=None):
        self.calls = []
        self.shares = dict((h, {"blue": 100, "green": 0}) for h in hosts)
        self.offsets = dict((h, 0) for h in hosts)
        self.refuse = refuse
        self.latency = green_latency_ms or {}
        self.leases = {}
        self.logs = {}

    def __call__(self, module, args, host):
        self.calls.append((host, module.split(".")[-1], dict(args)))
        if module == rc.UPSTREAM_MODULE:
            if "shares" not in args:
                return {"shares": dict(self.shares[host]), "pools": POOLS}
            if self.refuse == (host, args["shares"].get("green")):
                return {"failed": True, "msg": "nginx -t: [emerg] unexpected end of file"}
            self.shares[host] = dict({"blue": 0, "green": 0}, **args["shares"])
            return {"changed": True, "shares": dict(self.shares[host])}
        if module == rc.WINDOW_MODULE:
            if args.get("from_end"):
                return {"position": {"inode": 1, "offset": self.offsets[host]}, "health": [{"url": "u", "ok": True}]}
            # 30 more requests in this load balancer's log since the last read, split as its shares say; the
            # window is the log from the position asked for
            green = self.shares[host]["green"] * 30 // 100
            slow = self.latency.get(host, 10) / 1000.0
            self.logs.setdefault(host, []).extend(
                ['{"msec":"1700000000.0","status":"200","upstream_addr":"10.0.0.2:8002",'
                 '"upstream_status":"200","upstream_response_time":"%.3f"}' % slow] * green
                + ['{"msec":"1700000000.0","status":"200","upstream_addr":"10.0.0.1:8001",'
                   '"upstream_status":"200","upstream_response_time":"0.010"}'] * (30 - green))
            self.offsets[host] = len(self.logs[host])
            stats = TrafficStats(pools=args["pools"])
            stats.add_lines(self.logs[host][(args.get("position") or {}).get("offset", 0):])
            out = stats.result(args.get("latency_thresholds_ms") or (), args.get("latency_histogram", False))
            out.update(position={"inode": 1, "offset": self.offsets[host]}, health=[{"url": "u", "ok": True}])
            return out
        if module == rc.RECORD_MODULE:
            self.leases.setdefault(host, []).append((args["action"], args.get("path"), args.get("mirror_of")))
            entry = {"id": 5, "action": "deploy", "outcome": "in_progress", "version": "2",
                     "lease": {"expires_epoch": 4e9}}
            return {"entry": entry}
        raise AssertionError("unexpected module %s" % module)


def cutover(fake, peers, **over):
    action = rc.ActionModule.__new__(rc.ActionModule)
    args = {"app": "demo", "from_color": "blue", "to_color": "green", "pools": POOLS, "count_unattributed_5xx": True,
            "log_match": None, "health_urls": ["http://10.0.0.2:8002/health"], "health_timeout": 2.0, "health_validate_certs": True,
            "log_path": "/var/log/nginx/x.json", "record_entry": 5, "record_path": None, "lease_ttl": 10.0,
            "peers": peers, "validate_only": False, "resource_urls": [], "resource_service": None,
            "resource_timeout": 2.0, "max_wait_seconds": 5, "watch_seconds": 0, "watch_window_seconds": 10,
            "poll_seconds": 0.01, "steps": [10, 50, 100], "step_seconds": 0.05, "min_requests": 20}
    for key in rc.ARGUMENT_SPEC:
        args.setdefault(key, rc.ARGUMENT_SPEC[key].get("default"))
    args.update(over)
    gates, steps, dwells = rc.check_options(args)
    action._args, action._gates, action._dwells = args, gates, dwells
    action._controller_pid = os.getppid()
    action._holder = "ctl:1"
    action._lease_renewed, action._lease_expires, action._lease_entry = 0.0, {}, None
    action._resources_on = False
    action._me = "lb-1"
    action._peers = list(peers)
    action._hosts = ["lb-1"] + list(peers)
    action._run = lambda module, module_args, host=None: fake(module, module_args, host or "lb-1")
    return action._cutover(steps)


def switches(fake):
    return [(host, args["shares"]["green"]) for host, module, args in fake.calls
            if module == "nginx_upstream" and "shares" in args]


def test_every_step_is_set_on_every_load_balancer_and_the_lease_copied_to_the_peer():
    fake = FakeLBs(["lb-1", "lb-2"])
    out = cutover(fake, ["lb-2"])
    assert not out.get("failed"), out.get("msg")
    assert switches(fake) == [("lb-1", 10), ("lb-2", 10), ("lb-1", 50), ("lb-2", 50), ("lb-1", 100), ("lb-2", 100)]
    assert fake.shares == {"lb-1": {"blue": 0, "green": 100}, "lb-2": {"blue": 0, "green": 100}}
    assert fake.leases["lb-1"][0] == ("lease", None, None)
    assert fake.leases["lb-2"][0] == ("lease", "/var/lib/greenflow/releases/peers/demo.json", "lb-1")
    assert [a for a, _, _ in fake.leases["lb-2"]][-1] == "release"
    # each window is both logs: 30 + 30 requests a read
    steps = [e for e in out["timeline"] if e.get("event") == "step"]
    assert all(s["requests"] % 2 == 0 and s["requests"] > 0 for s in steps), steps
    assert set(steps[0]["position"]) == {"lb-1", "lb-2"}


def test_a_peer_that_refuses_a_step_puts_every_load_balancer_back():
    fake = FakeLBs(["lb-1", "lb-2"], refuse=("lb-2", 50))
    out = cutover(fake, ["lb-2"])
    assert out["failed"] and out["reverted"] and out["failed_step"] == 2
    assert "lb-2: nginx_upstream failed" in out["msg"], out["msg"]
    assert switches(fake) == [("lb-1", 10), ("lb-2", 10), ("lb-1", 50), ("lb-2", 50), ("lb-1", 0), ("lb-2", 0)]
    assert fake.shares == {"lb-1": {"blue": 100, "green": 0}, "lb-2": {"blue": 100, "green": 0}}
    revert = [e for e in out["timeline"] if e.get("event") == "revert"][0]
    assert revert["ok"] and revert["load_balancers"] == ["lb-1", "lb-2"]


def test_a_peer_on_another_split_is_refused_before_any_switch():
    fake = FakeLBs(["lb-1", "lb-2"])
    fake.shares["lb-2"] = {"blue": 90, "green": 10}
    try:
        cutover(fake, ["lb-2"])
        raise AssertionError("not refused")
    except rc.AnsibleActionFail as exc:
        assert "lb-2 sends blue 90 %, green 10 %, not all to blue like lb-1" in str(exc)
        assert "no traffic was moved" in str(exc)
    assert switches(fake) == [] and "lb-1" not in fake.leases


def test_the_gates_judge_the_traffic_of_both_load_balancers():
    # green is slow only behind lb-2: the p95 of all the traffic breaks the abort line, lb-1's alone would not
    fake = FakeLBs(["lb-1", "lb-2"], green_latency_ms={"lb-1": 10, "lb-2": 5000})
    out = cutover(fake, ["lb-2"], steps=[50, 100], abort_min_failures=1)
    assert out["failed"] and out["failed_step"] == 1, out.get("msg")
    assert fake.shares["lb-1"]["green"] == 0 and fake.shares["lb-2"]["green"] == 0
    step = [e for e in out["timeline"] if e.get("event") == "step"][0]
    assert step["verdict"] in (gates_mod.ABORT, gates_mod.FAIL) and step["p95_ms"] == 5000.0, step


def test_one_load_balancer_alone_runs_as_before():
    fake = FakeLBs(["lb-1"])
    out = cutover(fake, [])
    assert not out.get("failed"), out.get("msg")
    assert switches(fake) == [("lb-1", 10), ("lb-1", 50), ("lb-1", 100)]
    assert all("latency_histogram" not in args for _, module, args in fake.calls if module == "traffic_window")
