"""The rollback's decisions: refusals, the instant-switch rule, the probe, taking over an open entry."""
import time

import pytest

from ansible_collections.greenflow.platform.plugins.module_utils import _release_lease as lease_mod
from ansible_collections.greenflow.platform.plugins.module_utils import _release_record as rr
from ansible_collections.greenflow.platform.plugins.module_utils import _release_rollback as rb

NOW = 1_800_000_000.0
STALE = 7200
POOLS = {"blue": ["10.0.0.11:8081", "10.0.0.12:8081"], "green": ["10.0.0.11:8082"]}


def _deploy(record, version, color, outcome="succeeded", image=None, env=None, now=NOW):
    entry = rr.begin(record, "deploy", {"version": version, "color": color, "user": "ann",
                                        "image": image or "demo:%s" % version, "env": env or {}}, now, STALE)
    if outcome:
        rr.finish(record, entry["id"], outcome, {})
    return entry


def _two():
    record = rr.empty_record("demo")
    _deploy(record, "1", "blue")
    _deploy(record, "2", "green")
    return record


def _plan(record, shares, now=NOW):
    return rr.plan(record, shares, now, STALE)


# ----------------------------------------------------------------- refusals


def test_nothing_to_roll_back_to_is_refused_with_the_history():
    record = rr.empty_record("demo")
    _deploy(record, "1", "blue")
    text = rb.refusal(_plan(record, {"blue": 100}), {"blue": 100}, ["LINE-A", "LINE-B"], force=False)
    assert text.startswith("Nothing to roll back to") and "only one live release (1 on blue)" in text
    assert "LINE-A / LINE-B" in text and "Nothing was changed" in text
    empty = rb.refusal(_plan(rr.empty_record("demo"), {}), {}, [], force=True)
    assert "no live release" in empty and "no split" in empty


def test_an_open_entry_needs_force():
    record = _two()
    _deploy(record, "3", "blue", outcome=None)
    plan = _plan(record, {"blue": 5, "green": 95}, NOW + 30)
    text = rb.refusal(plan, {}, [], force=False)
    assert "deploy 3 (entry 3, by ann" in text and "release_force=true" in text
    assert "live release 2 on green" in text and "Nothing was changed" in text
    assert rb.refusal(plan, {}, [], force=True) is None


def test_a_normal_rollback_is_not_refused():
    assert rb.refusal(_plan(_two(), {"green": 100}), {"green": 100}, [], force=False) is None


# ----------------------------------------------------------------- the instant-switch rule


def test_the_colour_still_holds_the_target():
    record = _two()
    target = _plan(record, {"green": 100})["rollback"]["target"]
    assert rb.instant_blocker(record, target, POOLS) is None


def test_a_failed_release_on_the_target_colour_blocks():
    record = _two()
    _deploy(record, "3", "blue", outcome="failed")  # 3 went to blue and failed: blue runs 3 (or nothing)
    target = _plan(record, {"green": 100})["rollback"]["target"]
    assert target["version"] == "1"
    why = rb.instant_blocker(record, target, POOLS)
    assert why == "blue holds another release since (entry 3, deploy 3, failed)"


def test_a_rollback_that_put_the_same_release_back_keeps_it_instant():
    record = _two()                                  # 1 on blue, 2 on green (live)
    back = rr.begin(record, "rollback", rb.begin_fields(rr.rollback_target(record), rr.live_release(record), "bo",
                                                          NOW, "t"), NOW, STALE)
    rr.finish(record, back["id"], "succeeded", {})   # back on 1 (blue): blue's newest entry is that rollback
    _deploy(record, "3", "green")                    # 3 on green is live, 1 on blue under it
    target = _plan(record, {"green": 100})["rollback"]["target"]
    assert (target["version"], target["color"]) == ("1", "blue")
    assert rb.colour_holder(record, "blue") is back
    assert rb.instant_blocker(record, target, POOLS) is None


def test_same_image_other_environment_blocks_and_secret_keys_do_not_count():
    record = _two()
    _deploy(record, "3", "blue", image="demo:1", env={"DEMO_VERSION": "3"}, outcome="failed")
    target = _plan(record, {"green": 100})["rollback"]["target"]
    assert "blue holds another release" in rb.instant_blocker(record, target, POOLS)
    one = {"image": "x", "env": {"A": "1", "DB_PASSWORD": "p"}}
    assert rb.same_release(one, {"image": "x", "env": {"A": "1"}})
    assert not rb.same_release(one, {"image": "y", "env": {"A": "1"}})


def test_an_earlier_rollback_onto_the_colour_that_failed_blocks():
    record = _two()
    _deploy(record, "3", "blue", outcome="failed")
    back = rr.begin(record, "rollback", {"version": "1", "image": "demo:1", "env": {}, "color": "blue",
                                         "restores": 1}, NOW, STALE)
    rr.finish(record, back["id"], "failed", {"reason": "redeploy timed out"})
    target = _plan(record, {"green": 100})["rollback"]["target"]
    assert "may be half updated" in rb.instant_blocker(record, target, POOLS)


def test_no_server_on_nginx_blocks():
    record = _two()
    target = _plan(record, {"green": 100})["rollback"]["target"]
    assert rb.instant_blocker(record, target, {"blue": [], "green": ["a:1"]}) == "nginx has no server for blue"
    assert rb.instant_blocker(record, target, {}) == "nginx has no server for blue"


def test_restoring_the_live_release_after_an_interrupted_deploy_is_instant():
    record = _two()
    _deploy(record, "3", "blue", outcome=None)
    plan = _plan(record, {"blue": 25, "green": 75}, NOW + 5)
    target = plan["rollback"]["target"]
    assert plan["rollback"]["restore_live"] and target["color"] == "green"
    assert rb.instant_blocker(record, target, POOLS) is None


# ----------------------------------------------------------------- the probe


def test_probe_names_each_server_that_fails_and_why():
    """(The parallel probe itself: test_health_probe.py.)"""
    answers = {"http://a:1/health": 200, "http://b:1/health": 503, "http://c:1/health": OSError("refused")}
    problems = rb.probe(["a:1", "b:1", "c:1"], "/health", 1.0,
                        lambda url, timeout: answers[url] if isinstance(answers[url], int) else _raise(answers[url]))
    assert problems == ["b:1: HTTP 503", "c:1: no answer (refused)"]


def _raise(exc):
    raise exc


def test_probe_counts_a_hung_server():
    def fetch(url, timeout):
        time.sleep(3)
        return 200

    assert rb.probe(["a:1"], "/health", 0.1, fetch) == ["a:1: no answer within 0.1 s"]


# ----------------------------------------------------------------- locks


def test_open_rollback_begins_a_rollback_entry_compare_and_set():
    record = _two()
    plan = _plan(record, {"green": 100})
    entry = rb.open_rollback(record, plan, "bo", NOW + 1, force=False, stale_after=STALE)
    assert (entry["action"], entry["version"], entry["color"], entry["restores"], entry["outcome"]) == (
        "rollback", "1", "blue", 1, "in_progress")
    assert entry["previous_color"] == "green" and entry["user"] == "bo"
    # a second run that planned on the same state is refused: the lock is held
    with pytest.raises(rr.ReleaseRecordError, match="still in progress"):
        rb.open_rollback(record, plan, "cy", NOW + 2, force=False, stale_after=STALE)


def test_open_rollback_refuses_when_the_live_release_changed_since_the_plan():
    record = _two()
    plan = _plan(record, {"green": 100})
    _deploy(record, "3", "blue")
    with pytest.raises(rr.ReleaseRecordError, match="live release changed"):
        rb.open_rollback(record, plan, "bo", NOW, force=False, stale_after=STALE)


def test_restoring_the_live_release_claims_the_open_entry_and_its_lease():
    record = _two()
    deploy = _deploy(record, "3", "blue", outcome=None)
    lease_mod.grant(deploy, "ctl-1", "green", "blue", 10, NOW)
    plan = _plan(record, {"blue": 5, "green": 95}, NOW + 2)
    entry = rb.open_rollback(record, plan, "bo", NOW + 3, force=True, stale_after=STALE)
    assert entry is deploy and entry["outcome"] == "in_progress"
    assert entry["claimed_by"]["user"] == "bo"
    # the watchdog leaves it alone even once the lease would have run out
    assert lease_mod.expired(record, NOW + 60) == []
    # the dead cutover, if it comes back, cannot renew
    with pytest.raises(lease_mod.LeaseError, match="taken over by rollback.yml"):
        lease_mod.renew(deploy, "ctl-1", NOW + 4)
    # the claim counts as life: the lock is not stale for a deploy a while later
    assert rr.in_progress(record, NOW + 3 + STALE - 1, STALE) is deploy


def test_restoring_without_an_open_entry_needs_no_entry():
    record = _two()
    plan = _plan(record, {"blue": 100, "green": 0})  # disagree: nothing open
    assert rb.open_rollback(record, plan, "bo", NOW, force=False, stale_after=STALE) is None


def test_a_forced_begin_takes_the_lease_of_the_entry_it_closes():
    record = _two()
    deploy = _deploy(record, "3", "blue", outcome=None)
    lease_mod.grant(deploy, "ctl-1", "green", "blue", 10, NOW)
    rr.begin(record, "deploy", {"version": "4", "color": "blue"}, NOW + 1, STALE, force=True)
    assert deploy["outcome"] == "failed" and deploy["lease"]["state"] == lease_mod.LOST
    with pytest.raises(lease_mod.LeaseError, match="taken over by entry 4"):
        lease_mod.renew(deploy, "ctl-1", NOW + 2)


def test_an_instant_rollback_that_failed_on_nginx_does_not_block_the_next():
    record = _two()
    back = rr.begin(record, "rollback", {"version": "1", "image": "demo:1", "env": {}, "color": "blue",
                                         "restores": 1}, NOW, STALE)
    back["instant"] = True                       # it only switched nginx (and nginx refused)
    rr.finish(record, back["id"], "failed", {"reason": "nginx -t failed"})
    target = _plan(record, {"green": 100})["rollback"]["target"]
    assert rb.colour_holder(record, "blue")["id"] == 1
    assert rb.instant_blocker(record, target, POOLS) is None
