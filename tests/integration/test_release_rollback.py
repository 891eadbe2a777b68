"""greenflow.platform.release_rollback run by Ansible on this machine against a real nginx on 127.0.0.1,
real backends and a record in a temp dir: the instant switch under load, the slow path when the target
colour does not answer, refusals that change nothing, an interrupted deploy taken over, nginx refusing."""
import json
import os
import time

import pytest

import nginx_fixture as nf
from ansible_collections.greenflow.platform.plugins.module_utils import _release_lease as lease_mod

pytestmark = pytest.mark.integration

MODULE = "greenflow.platform.release_rollback"


def _entry(entry_id, version, color, outcome="succeeded", started=None):
    started = started or time.time() - 3600
    return {"id": entry_id, "action": "deploy", "outcome": outcome, "version": version, "color": color,
            "image": "demo:%s" % version, "env": {"DEMO_VERSION": version}, "user": "ann",
            "previous_color": "green" if color == "blue" else "blue",
            "started_epoch": started, "started_at": lease_mod.iso_utc(started)}


def _write(path, entries):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"schema": 1, "app": "demo", "releases": entries}, f)


def _read(path):
    with open(path) as f:
        return json.load(f)["releases"]


def _split(lab):
    return nf.run_module(lab.module_args())["shares"]


def _rollback(lab, path, check=False, **extra):
    # the release metrics beside the record (never the machine's own node exporter directory)
    extra.setdefault("metrics_dir", os.path.join(os.path.dirname(str(path)), "node-exporter"))
    args = lab.module_args(path=str(path), user="ci", **extra)
    return nf.run_ansible(args, module=MODULE, check=check)


@pytest.fixture
def two_releases(nginx_lab, tmp_path):
    """1 on blue, then 2 on green, live with 100 %: a rollback goes to 1 on blue."""
    assert nf.run_module(nginx_lab.module_args(shares={"green": 100})).get("changed")
    path = str(tmp_path / "releases" / "demo.json")
    _write(path, [_entry(1, "1", "blue"), _entry(2, "2", "green")])
    return nginx_lab, path


def test_instant_switch_under_load(two_releases):
    lab, path = two_releases
    # fresh connections: a reload closes idle keep-alive ones (issue 16's subject)
    load = nf.Load(lab.url, threads=4, keepalive=False, pause=0.01, max_requests=20000, max_seconds=40).start()
    time.sleep(1)
    result = _rollback(lab, path)
    time.sleep(1)
    during = load.stop()
    assert result.get("changed") and result["switched"], result
    assert result["instant_blocker"] == "" and result["probe"]["problems"] == []
    assert sorted(result["probe"]["servers"]) == sorted(lab.pools["blue"])
    assert (result["target"]["version"], result["from_color"], result["restore_live"]) == ("1", "green", False)
    assert result["target"]["env"] == {"DEMO_VERSION": "1"}   # the slow path would redeploy it exactly
    assert _split(lab) == {"blue": 100, "green": 0}
    assert during.failed == 0, during.summary()
    assert during.by_pool["green"] and during.by_pool["blue"], during.summary()   # the load saw the switch
    rollback = _read(path)[-1]
    assert (rollback["action"], rollback["version"], rollback["color"], rollback["restores"]) == ("rollback", "1", "blue", 1)
    assert rollback["outcome"] == "succeeded" and "instant switch" in rollback["reason"]
    # no textfile directory: no metrics; with one, the rollback is in them
    assert result["metrics_path"] == ""
    print("\n[instant rollback] on the load balancer %.3f s (probe %.3f s, switch %.3f s); load: %s" % (
        result["timings"]["total_seconds"], result["timings"]["probe_seconds"], result["timings"]["switch_seconds"],
        during.summary()))


def test_a_colour_that_does_not_answer_takes_the_slow_path_holding_the_lock(two_releases):
    lab, path = two_releases
    lab.backends["blue"][1].set_faults(healthy=False)
    result = _rollback(lab, path)
    assert result.get("changed") and not result["switched"], result
    assert "do not all answer /health" in result["instant_blocker"] and "HTTP 503" in result["instant_blocker"]
    assert _split(lab) == {"blue": 0, "green": 100}      # nothing moved
    entry = _read(path)[-1]
    assert entry["action"] == "rollback" and entry["outcome"] == "in_progress"   # the slow path's lock
    assert result["entry"]["id"] == entry["id"]
    again = _rollback(lab, path)
    assert again.get("failed") and "release_force=true" in again["msg"], again


def test_a_failed_release_on_the_target_colour_takes_the_slow_path(two_releases):
    lab, path = two_releases
    entries = _read(path) + [_entry(3, "3", "blue", outcome="failed")]
    _write(path, entries)
    result = _rollback(lab, path)
    assert not result["switched"] and "blue holds another release since (entry 3" in result["instant_blocker"]
    assert "probe" not in result      # decided from the record alone
    assert _split(lab) == {"blue": 0, "green": 100}


def test_nothing_to_roll_back_to_changes_nothing(nginx_lab, tmp_path):
    path = str(tmp_path / "releases" / "demo.json")
    _write(path, [_entry(1, "1", "blue")])
    before = open(path).read()
    result = _rollback(nginx_lab, path)
    assert result.get("failed") and result["msg"].startswith("Nothing to roll back to"), result
    assert "only one live release (1 on blue)" in result["msg"]
    assert open(path).read() == before and _split(nginx_lab) == {"blue": 100, "green": 0}


def test_check_mode_plans_and_probes_but_changes_nothing(two_releases):
    lab, path = two_releases
    before = open(path).read()
    result = _rollback(lab, path, check=True)
    assert not result.get("changed") and not result["switched"] and result["instant_blocker"] == "", result
    assert open(path).read() == before and _split(lab) == {"blue": 0, "green": 100}


def test_an_interrupted_deploy_needs_force_then_is_taken_over(two_releases):
    lab, path = two_releases
    # a deploy of 3 to blue died at 25 % with its lease still running
    now = time.time()
    dead = _entry(3, "3", "blue", outcome="in_progress", started=now - 20)
    lease_mod.grant(dead, "controller:99", "green", "blue", 60, now - 5)
    _write(path, _read(path) + [dead])
    assert nf.run_module(lab.module_args(shares={"blue": 25, "green": 75})).get("changed")
    before = open(path).read()

    refused = _rollback(lab, path)
    assert refused.get("failed") and "deploy 3 (entry 3, by ann" in refused["msg"], refused
    assert "release_force=true" in refused["msg"]
    assert open(path).read() == before and _split(lab) == {"blue": 25, "green": 75}

    forced = _rollback(lab, path, force=True)
    assert forced["switched"] and forced["restore_live"], forced
    assert (forced["target"]["version"], forced["target"]["color"]) == ("2", "green")
    assert _split(lab) == {"blue": 0, "green": 100}
    entries = _read(path)
    assert len(entries) == 3                         # no new entry: the open one was the lock
    taken = entries[-1]
    assert taken["outcome"] == "failed" and taken["reason"].startswith("interrupted; traffic put back on 2 (green)")
    assert taken["claimed_by"]["user"] == "ci"
    assert taken["lease"]["state"] == "lost" and "rollback.yml" in taken["lease"]["lost_to"]


def test_nginx_refusing_the_switch_moves_nothing_and_records_it(two_releases):
    lab, path = two_releases
    bad = os.path.join(lab.vhost_dir, "broken.conf")
    with open(bad, "w") as f:
        f.write("server { listen 127.0.0.1:1; this_is_not_a_directive; }\n")
    try:
        result = _rollback(lab, path)
    finally:
        os.unlink(bad)
    assert result.get("failed") and "FAILED on nginx, traffic was not moved" in result["msg"], result
    assert "this_is_not_a_directive" in result["msg"]
    assert _split(lab) == {"blue": 0, "green": 100}
    entry = _read(path)[-1]
    assert entry["action"] == "rollback" and entry["outcome"] == "failed"
    assert "failed on nginx" in entry["reason"]
    # the lock is free again: the next rollback, nginx fixed, goes through
    assert _rollback(lab, path)["switched"]
    assert _split(lab) == {"blue": 100, "green": 0}


def test_the_release_metrics_follow_the_rollback(two_releases):
    lab, path = two_releases
    textfiles = os.path.join(os.path.dirname(path), "node-exporter")
    os.makedirs(textfiles)
    result = _rollback(lab, path)
    assert result["switched"] and result["metrics_path"] == os.path.join(textfiles, "greenflow_release_demo.prom")
    with open(result["metrics_path"]) as f:
        text = f.read()
    assert 'greenflow_release_info{app="demo",role="live",version="1",color="blue"} 1' in text
    assert 'greenflow_release_last_result{app="demo",result="rolled_back"} 1' in text
    assert 'greenflow_release_last_result_automatic{app="demo"} 0' in text
    assert 'greenflow_release_in_progress{app="demo"} 0' in text
