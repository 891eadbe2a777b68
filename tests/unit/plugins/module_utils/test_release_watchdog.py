"""The watchdog's pass over release records in a temporary directory (the nginx switch is a stand-in)."""
import json

from ansible_collections.greenflow.platform.plugins.module_utils import _release_lease as lease_mod
from ansible_collections.greenflow.platform.plugins.module_utils import _release_watchdog as wd

T0 = 1_800_000_000.0


def _write_record(directory, app="demo", ttl=10, state=None):
    entry = {"id": 3, "action": "deploy", "outcome": "in_progress", "color": "green", "previous_color": "blue",
             "version": "2", "started_epoch": T0}
    lease_mod.grant(entry, "ctl:1", "blue", "green", ttl, T0)
    if state:
        entry["lease"]["state"] = state
    live = {"id": 2, "action": "deploy", "outcome": "succeeded", "color": "blue", "version": "1"}
    path = directory / ("%s.json" % app)
    path.write_text(json.dumps({"schema": 1, "app": app, "releases": [live, entry]}))
    return path


class Switch:
    def __init__(self, fail=None):
        self.calls, self.fail = [], fail

    def __call__(self, app, lease):
        self.calls.append((app, lease["from_color"]))
        if self.fail:
            raise RuntimeError(self.fail)
        return "100 %% on %s" % lease["from_color"]


def _pass(directory, at, switch):
    logs = []
    return wd.scan(str(directory), lambda: at, switch, logs.append), logs


def test_a_live_lease_is_left_alone(tmp_path):
    path = _write_record(tmp_path)
    before = path.read_text()
    switch = Switch()
    acted, _ = _pass(tmp_path, T0 + 9, switch)
    assert acted == [] and switch.calls == []
    assert path.read_text() == before


def test_an_expired_lease_puts_traffic_back_and_fails_the_entry(tmp_path):
    path = _write_record(tmp_path)
    switch = Switch()
    acted, logs = _pass(tmp_path, T0 + 11, switch)
    assert switch.calls == [("demo", "blue")]
    assert [(app, entry_id) for app, entry_id, _ in acted] == [("demo", 3)]
    entry = json.loads(path.read_text())["releases"][-1]
    assert entry["outcome"] == "failed"
    assert entry["lease"]["state"] == "lost"
    assert "controller lost" in entry["reason"] and "100 % on blue" in entry["reason"]
    assert any("controller lost" in line for line in logs)
    # a second pass finds nothing more to do
    again, _ = _pass(tmp_path, T0 + 12, switch)
    assert again == [] and len(switch.calls) == 1


def test_a_failed_put_back_leaves_the_entry_and_is_tried_again(tmp_path):
    path = _write_record(tmp_path)
    acted, logs = _pass(tmp_path, T0 + 11, Switch(fail="nginx -t failed"))
    assert "put-back failed" in acted[0][2]
    assert json.loads(path.read_text())["releases"][-1]["outcome"] == "in_progress"
    assert any("next pass tries again" in line for line in logs)
    switch = Switch()
    _pass(tmp_path, T0 + 12, switch)
    assert switch.calls == [("demo", "blue")]
    assert json.loads(path.read_text())["releases"][-1]["outcome"] == "failed"


def test_a_finished_lease_is_never_taken_over(tmp_path):
    _write_record(tmp_path, state="done")
    switch = Switch()
    assert _pass(tmp_path, T0 + 100, switch)[0] == [] and switch.calls == []


def test_an_unreadable_record_is_logged_and_the_others_still_served(tmp_path):
    (tmp_path / "broken.json").write_text("{not json")
    _write_record(tmp_path, app="shop")
    switch = Switch()
    acted, logs = _pass(tmp_path, T0 + 11, switch)
    assert switch.calls == [("shop", "blue")]
    assert any("broken.json" in line for line in logs)


def test_a_lease_copy_on_a_second_load_balancer_is_served_like_a_record(tmp_path):
    """On lb-2 the cutover's lease lives in a copy of lb-1's entry, under peers/: its watchdog reads that
    directory as it reads the records' (greenflow_release_watchdog.py scans both)."""
    from ansible_collections.greenflow.platform.plugins.module_utils import _release_model as model
    from ansible_collections.greenflow.platform.plugins.module_utils import _release_record as rr
    assert wd.PEER_SUBDIR == model.PEER_SUBDIR == "peers"
    assert model.peer_record_path("demo") == "/var/lib/greenflow/releases/peers/demo.json"
    assert model.peer_record_path("demo", "/srv/rec/demo.json") == "/srv/rec/peers/demo.json"
    primary = {"id": 7, "action": "deploy", "outcome": "in_progress", "version": "2", "color": "green",
               "previous_color": "blue", "env": {"A": "1"}, "backup": {"label": "x"}}
    peers = tmp_path / "peers"
    peers.mkdir()
    record = rr.empty_record("demo")
    copy = rr.mirror(record, primary, "lb-1")
    assert copy == {"id": 7, "action": "deploy", "outcome": "in_progress", "version": "2", "color": "green",
                    "previous_color": "blue", "mirror_of": "lb-1"}
    lease_mod.grant(copy, "ctl:1", "blue", "green", 10, T0)
    (peers / "demo.json").write_text(rr.dump_record(record))
    switch = Switch()
    acted, _ = _pass(peers, T0 + 11, switch)
    assert switch.calls == [("demo", "blue")] and [a[:2] for a in acted] == [("demo", 7)]
    assert json.loads((peers / "demo.json").read_text())["releases"][-1]["outcome"] == "failed"


def test_a_copy_replaces_an_older_one_with_the_same_id_and_needs_an_entry_in_progress():
    import pytest
    from ansible_collections.greenflow.platform.plugins.module_utils import _release_record as rr
    record = rr.empty_record("demo")
    rr.mirror(record, {"id": 1, "action": "deploy", "outcome": "in_progress", "version": "1"}, "lb-1")
    rr.mirror(record, {"id": 1, "action": "deploy", "outcome": "in_progress", "version": "9"}, "lb-1")
    assert [(e["id"], e["version"]) for e in record["releases"]] == [(1, "9")]
    with pytest.raises(rr.ReleaseRecordError, match="not an entry in progress"):
        rr.mirror(record, {"id": 2, "action": "deploy", "outcome": "succeeded"}, "lb-1")
    with pytest.raises(rr.ReleaseRecordError, match="integer id"):
        rr.mirror(record, {"action": "deploy"}, "lb-1")
