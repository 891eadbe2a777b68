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
