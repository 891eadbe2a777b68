"""The cutover's lease and the load balancer's watchdog together, on a real nginx on 127.0.0.1: the
release_cutover action (in a real ansible-playbook) holds a lease on its release entry; a controller
that is interrupted (SIGINT, as Ctrl-C) or killed (SIGKILL) stops renewing it, and the watchdog program
(as the nginx_lb role runs it) puts all traffic back on the from-colour once the lease runs out, with no
failed request; a cutover that ends by itself releases its lease and the watchdog leaves it alone."""
import json
import os
import signal
import subprocess
import sys
import time

import nginx_fixture
import pytest
from test_release_cutover import REPO_ROOT, base_args, current_shares, run_cutover, start_cutover, steps_of, wait_until

pytestmark = pytest.mark.integration

WATCHDOG = os.path.join(REPO_ROOT, "roles", "nginx_lb", "files", "greenflow_release_watchdog.py")
# The default lease (seconds): the tests wait for it to run out. The cutover renews a third of it apart,
# each renewal a module run; on a busy 2-core CI machine one took over a second, and a 3 s lease ran out
# between two of them (the watchdog then did its job, but this test wants a healthy cutover).
TTL = 10.0


@pytest.fixture
def records(tmp_path):
    """A records directory with blue live and a deploy of green in progress (entry 2), and the watchdog
    watching it for the whole test."""
    directory = tmp_path / "records"
    directory.mkdir()
    now = time.time()
    record = {"schema": 1, "app": "demo", "releases": [
        {"id": 1, "action": "deploy", "outcome": "succeeded", "version": "1", "color": "blue",
         "started_epoch": now - 600},
        {"id": 2, "action": "deploy", "outcome": "in_progress", "version": "2", "color": "green",
         "previous_color": "blue", "started_epoch": now}]}
    (directory / "demo.json").write_text(json.dumps(record))
    log = open(str(tmp_path / "watchdog.log"), "w")
    proc = subprocess.Popen([sys.executable, WATCHDOG, "--records", str(directory), "--interval", "0.2",
                             "--lib", nginx_fixture.COLLECTIONS], stdout=log, stderr=subprocess.STDOUT)
    yield directory
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=10)
    log.close()


def _entry(records):
    return json.loads((records / "demo.json").read_text())["releases"][-1]


def _lease_args(lab, records, **extra):
    return base_args(lab, record_entry=2, record_path=str(records / "demo.json"), lease_ttl=TTL, **extra)


@pytest.mark.parametrize("sig, at_share", [(signal.SIGINT, 10), (signal.SIGKILL, 50)],
                         ids=["sigint-at-step-1", "sigkill-at-step-2"])
def test_lost_controller_traffic_goes_back_when_the_lease_runs_out(nginx_lab, records, tmp_path, sig, at_share):
    lab = nginx_lab
    load = nginx_fixture.Load(lab.url, threads=2, keepalive=False, max_requests=30000, max_seconds=90,
                              pause=0.01).start()
    args = _lease_args(lab, records, steps=[10, 50, 100], step_seconds=4, poll_seconds=1, min_requests=5,
                       max_wait_seconds=0)
    proc = start_cutover(tmp_path, args)
    try:
        assert wait_until(lambda: current_shares(lab).get("green") == at_share, timeout=60), \
            "the cutover never reached green %d %%" % at_share
        assert _entry(records)["lease"]["state"] == "held"
        os.killpg(proc.pid, sig)
        lost_at = time.time()
        proc.wait(timeout=30)
        assert wait_until(lambda: current_shares(lab) == {"blue": 100, "green": 0}, timeout=TTL + 15, interval=0.1)
        back_after = time.time() - lost_at
        time.sleep(1)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        during = load.stop()
    print("\n[%s at green %d %%] traffic back on blue %.1f s after the signal (lease %g s); load: %s"
          % (signal.Signals(sig).name, at_share, back_after, TTL, during.summary()))
    assert during.failed == 0, during.summary()
    entry = _entry(records)
    assert entry["outcome"] == "failed" and entry["lease"]["state"] == "lost"
    assert entry["reason"].startswith("controller lost"), entry["reason"]
    # and it stays there: nobody moves it on
    time.sleep(2)
    assert current_shares(lab) == {"blue": 100, "green": 0}


def test_a_cutover_that_ends_by_itself_releases_its_lease(nginx_lab, records, tmp_path):
    lab = nginx_lab
    load = nginx_fixture.Load(lab.url, threads=2, keepalive=False, max_requests=20000, max_seconds=60,
                              pause=0.01).start()
    try:
        result, _ = run_cutover(tmp_path, _lease_args(lab, records, steps=[50, 100], step_seconds=4,
                                                     poll_seconds=1, min_requests=5, max_wait_seconds=0))
    finally:
        load.stop()
    assert not result.get("failed"), result.get("msg")
    assert [s["verdict"] for s in steps_of(result)] == ["pass", "pass"]
    # longer than the lease: the watchdog must leave a finished cutover alone
    time.sleep(TTL + 2)
    assert current_shares(lab) == {"blue": 0, "green": 100}
    entry = _entry(records)
    assert entry["lease"]["state"] == "done"
    assert entry["outcome"] == "in_progress"   # the playbook closes it (release_record finish)


def test_a_cutover_whose_lease_was_lost_stops_without_touching_nginx(nginx_lab, records, tmp_path):
    lab = nginx_lab
    # another holder's lease, already lost to the watchdog: this cutover may not take it
    data = json.loads((records / "demo.json").read_text())
    data["releases"][-1]["lease"] = {"holder": "gone:1", "state": "lost", "from_color": "blue",
                                     "to_color": "green", "ttl": TTL, "expires_epoch": time.time() - 5,
                                     "renewed_epoch": time.time() - 8}
    (records / "demo.json").write_text(json.dumps(data))
    result, _ = run_cutover(tmp_path, _lease_args(lab, records, steps=[50, 100], step_seconds=2,
                                                 poll_seconds=1, min_requests=1, max_wait_seconds=0))
    assert result.get("failed")
    assert "no traffic was moved" in result["msg"] and "watchdog put traffic back" in result["msg"]
    assert current_shares(lab) == {"blue": 100, "green": 0}
