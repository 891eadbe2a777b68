"""The load balancer's release watchdog (roles/nginx_lb/files/greenflow_release_watchdog.py) against a
real nginx on 127.0.0.1: a cutover whose lease ran out gets all traffic put back on its from-colour, with
nginx_upstream's own switching code, and its record entry closed as failed ("controller lost").

The program runs as the nginx_lb role runs it (python3 on the file, --lib pointing at a tree that holds
the collection's module_utils: here the checkout's collections/ folder)."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

import nginx_fixture as nf
from ansible_collections.greenflow.platform.plugins.module_utils import _release_lease as lease_mod

pytestmark = pytest.mark.integration

WATCHDOG = os.path.join(nf.REPO_ROOT, "roles", "nginx_lb", "files", "greenflow_release_watchdog.py")


def _record(records_dir, lab, granted_at, ttl):
    """A record with blue live and a deploy of green in progress whose cutover holds a lease."""
    entry = {"id": 2, "action": "deploy", "outcome": "in_progress", "version": "2", "color": "green",
             "previous_color": "blue", "started_epoch": granted_at, "started_at": lease_mod.iso_utc(granted_at)}
    lease_mod.grant(entry, "controller:4242", "blue", "green", ttl, granted_at)
    nginx = lab.module_args()
    nginx.pop("app")
    entry["lease"]["nginx"] = nginx
    live = {"id": 1, "action": "deploy", "outcome": "succeeded", "version": "1", "color": "blue",
            "started_epoch": granted_at - 3600}
    path = os.path.join(records_dir, "%s.json" % lab.app)
    with open(path, "w") as f:
        json.dump({"schema": 1, "app": lab.app, "releases": [live, entry]}, f)
    return path


def _watchdog(records_dir, *extra):
    return [sys.executable, WATCHDOG, "--records", records_dir, "--lib", nf.COLLECTIONS] + list(extra)


def _split(lab):
    return nf.run_module(lab.module_args())["shares"]


@pytest.fixture
def canary(nginx_lab, tmp_path):
    """nginx at blue 75 / green 25, as a cutover leaves it when its controller dies at that step."""
    res = nf.run_module(nginx_lab.module_args(shares={"blue": 75, "green": 25}))
    assert res.get("changed"), res
    records = tmp_path / "records"
    records.mkdir()
    return nginx_lab, str(records)


def test_a_live_lease_is_left_alone(canary):
    lab, records = canary
    path = _record(records, lab, time.time(), ttl=60)
    before = open(path).read()
    proc = subprocess.run(_watchdog(records, "--once"), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _split(lab) == {"blue": 75, "green": 25}
    assert open(path).read() == before


def test_an_expired_lease_puts_all_traffic_back_under_load_and_records_why(canary):
    lab, records = canary
    path = _record(records, lab, time.time() - 30, ttl=10)
    # fresh connections: a reload closes idle keep-alive ones (that is issue 16's subject, not this one's)
    load = nf.Load(lab.url, threads=4, keepalive=False, max_requests=4000, max_seconds=30).start()
    time.sleep(1)
    proc = subprocess.run(_watchdog(records, "--once"), capture_output=True, text=True, timeout=60)
    time.sleep(1)
    during = load.stop()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "controller lost" in proc.stdout
    assert _split(lab) == {"blue": 100, "green": 0}
    assert during.failed == 0, during.summary()
    after = nf.fire(lab.url, 200, keepalive=False)
    assert after.by_pool == {"blue": 200}, after.summary()
    entry = json.load(open(path))["releases"][-1]
    assert entry["outcome"] == "failed"
    assert entry["lease"]["state"] == "lost"
    assert entry["reason"].startswith("controller lost") and "blue 100 %" in entry["reason"]
    # the controller that comes back cannot renew: the watchdog's word stands
    with pytest.raises(lease_mod.LeaseError, match="watchdog put traffic back on blue"):
        lease_mod.renew(entry, "controller:4242", time.time())


def test_a_put_back_nginx_refuses_leaves_the_record_open_and_says_so(canary):
    lab, records = canary
    path = _record(records, lab, time.time() - 30, ttl=10)
    broken = dict(json.load(open(path)))
    broken["releases"][-1]["lease"]["nginx"]["nginx_bin"] = "/nonexistent/nginx"
    with open(path, "w") as f:
        json.dump(broken, f)
    proc = subprocess.run(_watchdog(records, "--once"), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "next pass tries again" in proc.stdout
    assert _split(lab) == {"blue": 75, "green": 25}
    assert json.load(open(path))["releases"][-1]["outcome"] == "in_progress"


def test_the_service_puts_traffic_back_once_the_lease_runs_out(canary):
    lab, records = canary
    granted = time.time()
    _record(records, lab, granted, ttl=lease_mod.MIN_TTL)
    proc = subprocess.Popen(_watchdog(records, "--interval", "0.2"), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + lease_mod.MIN_TTL + 20
        while time.time() < deadline and _split(lab) != {"blue": 100, "green": 0}:
            time.sleep(0.2)
        recovered = time.time() - granted
        assert _split(lab) == {"blue": 100, "green": 0}
        # never before the lease ran out
        assert recovered >= lease_mod.MIN_TTL
        print("watchdog: traffic back on blue %.2f s after the last renewal (ttl %g s)" % (recovered, lease_mod.MIN_TTL))
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0, out
    assert "controller lost" in out
