"""The release record: what is live, where a rollback goes, the lock, the history."""
import pytest

from ansible_collections.greenflow.platform.plugins.module_utils import _release_record as rr

NOW = 1_800_000_000.0


def _deploy(record, version, color, outcome="succeeded", now=NOW):
    entry = rr.begin(record, "deploy", {"version": version, "color": color}, now, 3600)
    rr.finish(record, entry["id"], outcome, {})
    return entry


def _rollback(record, now=NOW):
    target = rr.rollback_target(record)
    entry = rr.begin(record, "rollback", {"version": target["version"], "color": target["color"],
                                          "restores": target["id"]}, now, 3600)
    rr.finish(record, entry["id"], "succeeded", {})
    return target


def test_empty_record_has_nothing_live_and_nowhere_to_go():
    record = rr.parse_record("", "demo")
    assert rr.live_release(record) is None
    assert rr.rollback_target(record) is None


def test_live_is_the_newest_successful_deploy_and_rollback_goes_to_the_one_before():
    record = rr.empty_record("demo")
    _deploy(record, "1", "blue")
    _deploy(record, "2", "green")
    assert rr.live_release(record)["version"] == "2"
    assert rr.rollback_target(record)["version"] == "1"


def test_a_failed_deploy_changes_neither_live_nor_rollback_target():
    record = rr.empty_record("demo")
    _deploy(record, "1", "blue")
    _deploy(record, "2", "green")
    _deploy(record, "3", "blue", outcome="failed")
    assert rr.live_release(record)["version"] == "2"
    assert rr.rollback_target(record)["version"] == "1"


def test_a_second_rollback_goes_one_further_back():
    record = rr.empty_record("demo")
    for version, color in (("1", "blue"), ("2", "green"), ("3", "blue")):
        _deploy(record, version, color)
    assert _rollback(record)["version"] == "2"
    assert rr.live_release(record)["version"] == "2"
    assert _rollback(record)["version"] == "1"
    assert rr.live_release(record)["version"] == "1"
    assert rr.rollback_target(record) is None


def test_a_rolled_back_release_is_never_a_rollback_target_again():
    record = rr.empty_record("demo")
    _deploy(record, "1", "blue")
    _deploy(record, "2", "green")
    _rollback(record)
    _deploy(record, "3", "green")
    assert rr.rollback_target(record)["version"] == "1"


def test_an_entry_in_progress_is_the_lock():
    record = rr.empty_record("demo")
    rr.begin(record, "deploy", {"version": "1", "color": "blue", "user": "ann"}, NOW, 3600)
    with pytest.raises(rr.ReleaseRecordError, match="still in progress"):
        rr.begin(record, "deploy", {"version": "2", "color": "green"}, NOW + 10, 3600)


def test_a_stale_or_forced_lock_is_closed_as_failed():
    record = rr.empty_record("demo")
    first = rr.begin(record, "deploy", {"version": "1", "color": "blue"}, NOW, 3600)
    second = rr.begin(record, "deploy", {"version": "2", "color": "green"}, NOW + 3601, 3600)
    assert first["outcome"] == "failed" and "abandoned" in first["reason"]
    third = rr.begin(record, "deploy", {"version": "3", "color": "blue"}, NOW + 3602, 3600, force=True)
    assert second["outcome"] == "failed" and third["outcome"] == "in_progress"


def test_finish_refuses_unknown_or_closed_entries():
    record = rr.empty_record("demo")
    entry = _deploy(record, "1", "blue")
    with pytest.raises(rr.ReleaseRecordError, match="already closed"):
        rr.finish(record, entry["id"], "failed", {})
    with pytest.raises(rr.ReleaseRecordError, match="already closed"):
        rr.finish(record, entry["id"], "succeeded", {})
    with pytest.raises(rr.ReleaseRecordError, match="no entry"):
        rr.finish(record, 99, "failed", {})


def test_a_rollback_that_does_not_restore_the_release_under_live_is_refused():
    record = rr.empty_record("demo")
    _deploy(record, "1", "blue")
    _deploy(record, "2", "green")
    entry = rr.begin(record, "rollback", {"version": "2", "color": "green", "restores": 2}, NOW, 3600)
    with pytest.raises(rr.ReleaseRecordError, match="restores deploy 2"):
        rr.finish(record, entry["id"], "succeeded", {})


@pytest.mark.parametrize("text, message", [
    ("{not json", "not valid JSON"),
    ('{"app": "demo"}', "no 'releases' list"),
    ('{"app": "other", "releases": []}', "belongs to app"),
    ('{"releases": [{"id": "x"}]}', "integer id"),
    ('{"releases": [{"id": 1, "action": "party", "outcome": "succeeded"}]}', "unknown action"),
])
def test_a_damaged_record_is_refused_with_the_reason(text, message):
    with pytest.raises(rr.ReleaseRecordError, match=message):
        rr.parse_record(text, "demo")


def test_a_record_survives_dump_and_parse():
    record = rr.empty_record("demo")
    _deploy(record, "1", "blue")
    assert rr.parse_record(rr.dump_record(record), "demo") == record


def test_prune_keeps_what_rollbacks_need():
    record = rr.empty_record("demo")
    _deploy(record, "1", "blue")
    for i in range(20):
        _deploy(record, "bad%d" % i, "green", outcome="failed")
    _deploy(record, "2", "green")
    dropped = rr.prune(record, 5)
    assert dropped == 17
    assert rr.rollback_target(record)["version"] == "1"
    assert rr.live_release(record)["version"] == "2"


def test_history_is_newest_first_and_the_table_marks_live():
    record = rr.empty_record("demo")
    _deploy(record, "1", "blue")
    _deploy(record, "2", "green")
    entries = rr.history(record, 10)
    assert [e["version"] for e in entries] == ["2", "1"]
    table = rr.history_table(entries, rr.live_release(record)["id"])
    assert table[0].startswith("ID") and "succeeded (live)" in table[1] and "(live)" not in table[2]


def test_history_table_cuts_long_reasons_to_one_short_line():
    from ansible_collections.greenflow.platform.plugins.module_utils import _release_record as rr_mod
    entry = {"id": 1, "action": "deploy", "version": "2", "color": "green", "outcome": "failed",
             "reason": "line one\nline two " + "x" * 300}
    lines = rr_mod.history_table([entry])
    assert len(lines) == 2 and "\n" not in lines[1]
    assert lines[1].endswith("...") and "line one line two" in lines[1]
    assert len(lines[1].split("line one", 1)[1]) < rr_mod.REASON_WIDTH


def test_begin_is_compare_and_set_on_the_live_entry():
    record = {"releases": [{"id": 1, "action": "deploy", "outcome": "succeeded", "color": "blue", "version": "1"}]}
    fields = {"version": "2", "color": "green", "previous_color": "blue"}
    with pytest.raises(rr.ReleaseRecordError, match="live release changed since this run read the record"):
        rr.begin(record, "deploy", fields, 1_800_000_000.0, 7200, expect_live=0)       # planned as a first release
    assert len(record["releases"]) == 1                                   # nothing changed
    assert rr.begin(record, "deploy", fields, 1_800_000_000.0, 7200, expect_live=1)["id"] == 2


# -- retire.yml: the previous colour scaled down by age ------------------------------------------------
HOUR = 3600.0


def _deploy_at(record, version, color, finished):
    entry = rr.begin(record, "deploy", {"version": version, "color": color}, finished - 60, 3600)
    rr.finish(record, entry["id"], "succeeded", {"finished_epoch": finished})
    return entry


def _retire(record, now, keep=72 * HOUR):
    decision = rr.retire_plan(record, now, keep)
    assert decision["retire"], decision
    entry = rr.begin(record, "retire", {"version": decision["version"], "color": decision["color"]}, now, 3600)
    rr.finish(record, entry["id"], "succeeded", {"finished_epoch": now})
    return entry


def test_the_previous_colour_is_retired_only_after_it_was_idle_long_enough():
    record = rr.empty_record("demo")
    _deploy_at(record, "1", "blue", NOW)
    _deploy_at(record, "2", "green", NOW + HOUR)
    young = rr.retire_plan(record, NOW + 10 * HOUR, 72 * HOUR)
    assert young["retire"] is False and young["color"] == "blue" and young["version"] == "1"
    assert young["idle_seconds"] == 9 * HOUR
    assert "blue (release 1) is idle for 9.0 h, kept for 72.0 h: not yet retired" == young["message"]
    old = rr.retire_plan(record, NOW + 73 * HOUR, 72 * HOUR)
    assert old["retire"] is True and old["color"] == "blue" and old["live"] == 2
    assert "the instant rollback to it is gone" in old["message"]
    # keep 0: at once
    assert rr.retire_plan(record, NOW + HOUR, 0)["retire"] is True


def test_never_the_live_colour_never_twice_never_while_a_release_runs():
    record = rr.empty_record("demo")
    assert rr.retire_plan(record, NOW, 0)["message"] == "no release is live: nothing to retire"
    _deploy_at(record, "1", "blue", NOW)
    first = rr.retire_plan(record, NOW + 100 * HOUR, 0)
    assert first["retire"] and first["color"] == "green" and first["version"] is None  # nothing ever ran there
    _deploy_at(record, "2", "green", NOW + HOUR)
    _retire(record, NOW + 80 * HOUR)
    again = rr.retire_plan(record, NOW + 90 * HOUR, 0)
    assert again["retire"] is False and "was retired already" in again["message"]
    running = rr.begin(record, "deploy", {"version": "3", "color": "blue"}, NOW + 91 * HOUR, 3600)
    busy = rr.retire_plan(record, NOW + 200 * HOUR, 0)
    assert busy["retire"] is False and "in progress" in busy["message"]
    rr.finish(record, running["id"], "succeeded", {"finished_epoch": NOW + 92 * HOUR})
    # a new live release (3 on blue): green, now the previous colour, can be retired in its turn
    later = rr.retire_plan(record, NOW + 200 * HOUR, 72 * HOUR)
    assert later["retire"] and later["color"] == "green" and later["version"] == "2"


def test_a_retire_entry_leaves_the_rollback_target_and_the_lock_rules_as_they_were():
    record = rr.empty_record("demo")
    _deploy_at(record, "1", "blue", NOW)
    _deploy_at(record, "2", "green", NOW + HOUR)
    _retire(record, NOW + 80 * HOUR)
    assert rr.live_release(record)["version"] == "2"
    assert rr.rollback_target(record)["version"] == "1"
    # an open retire entry is the lock: a deploy is refused while it runs
    entry = rr.begin(record, "retire", {"version": "1", "color": "blue"}, NOW + 81 * HOUR, 3600)
    with pytest.raises(rr.ReleaseRecordError) as err:
        rr.begin(record, "deploy", {"version": "3", "color": "blue"}, NOW + 81 * HOUR, 3600)
    assert "another retire" in str(err.value)
    rr.finish(record, entry["id"], "failed", {})
    assert rr.rollback_target(record)["version"] == "1"


def test_finished_epoch_falls_back_to_finished_at():
    assert rr.finished_epoch({"finished_epoch": 12.5}) == 12.5
    assert rr.finished_epoch({"finished_at": "1970-01-01T01:00:00Z"}) == 3600.0
    assert rr.finished_epoch({"finished_at": "yesterday"}) is None
    assert rr.finished_epoch({}) is None


def test_a_run_closing_as_failed_what_the_watchdog_closed_keeps_both_reasons():
    record = rr.empty_record("demo")
    entry = rr.begin(record, "deploy", {"version": "2", "color": "green"}, NOW, 3600)
    entry["outcome"], entry["reason"] = "failed", "controller lost: the lease ran out; traffic back on blue"
    closed = rr.finish(record, entry["id"], "failed", {"reason": "cutover: lease lost", "timeline": [{"event": "step"}],
                                                        "finished_epoch": NOW + 99})
    assert closed["outcome"] == "failed"
    assert closed["reason"] == "controller lost: the lease ran out; traffic back on blue"
    assert closed["run_reason"] == "cutover: lease lost" and closed["timeline"] == [{"event": "step"}]
    assert "finished_epoch" not in closed  # the watchdog's close stands
    with pytest.raises(rr.ReleaseRecordError, match="already closed"):  # it never succeeded
        rr.finish(record, entry["id"], "succeeded", {})
