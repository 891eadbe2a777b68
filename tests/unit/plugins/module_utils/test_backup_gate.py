"""The release's backup gate: which backup status lets a release go on, and what a refusal says."""
import json

import pytest

from ansible_collections.greenflow.platform.plugins.module_utils import _backup_gate as gate

NOW = 1_800_000_000  # 2027-01-15T08:00:00Z
HOUR = 3600


def status(newest_age_h=2.0, last_result="ok", action="backup", error=None, newest=True):
    doc = {"action": action, "result": "ok", "stanza": "main",
           "last_backup": {"result": last_result, "type": "diff", "started": "2027-01-15T06:00:00Z"}}
    if newest:
        doc["newest_verified"] = {"label": "20270115-060000F_20270115-060000D", "type": "diff",
                                  "stop": NOW - int(newest_age_h * HOUR)}
    if error:
        doc["result"] = "failed"
        doc["error"] = error
    return doc


def test_a_fresh_verified_backup_lets_the_release_go_on():
    result = gate.evaluate(status(newest_age_h=2), NOW, 26)
    assert result["ok"] is True
    assert result["newest_verified"]["label"] == "20270115-060000F_20270115-060000D"
    assert result["newest_verified"]["age_hours"] == 2.0
    assert result["newest_verified"]["stop_at"] == "2027-01-15T06:00:00Z"
    assert "2.0 h ago (limit 26 h)" in result["reason"]


def test_a_backup_older_than_the_limit_refuses_and_says_how_old():
    result = gate.evaluate(status(newest_age_h=30), NOW, 26)
    assert result["ok"] is False
    assert "30.0 h ago: older than 26 h" in result["reason"]
    assert result["newest_verified"]["age_hours"] == 30.0


def test_the_limit_itself_still_passes_and_just_past_it_refuses():
    assert gate.evaluate(status(newest_age_h=26), NOW, 26)["ok"] is True
    assert gate.evaluate(status(newest_age_h=26.01), NOW, 26)["ok"] is False


def test_a_failed_last_backup_run_refuses_even_with_a_fresh_backup():
    result = gate.evaluate(status(newest_age_h=1, last_result="failed", error="pgbackrest check failed: boom"),
                           NOW, 26)
    assert result["ok"] is False
    assert result["reason"] == ("the last backup run (diff, started 2027-01-15T06:00:00Z) failed: "
                                "pgbackrest check failed: boom")


def test_a_failed_backup_followed_by_a_verify_run_names_no_stale_error():
    # The last run was a verify; its error is not the backup's, so none is quoted.
    doc = status(last_result="failed", action="verify", error="verify: something else")
    result = gate.evaluate(doc, NOW, 26)
    assert result["ok"] is False
    assert result["reason"].endswith("failed")


def test_no_status_and_no_verified_backup_refuse():
    assert gate.evaluate(None, NOW, 26)["reason"].startswith("there is no backup status")
    result = gate.evaluate(status(newest=False), NOW, 26)
    assert result == {"ok": False, "reason": "the repository has no verified backup", "newest_verified": None,
                      "last_backup": status()["last_backup"], "max_age_hours": 26.0}


def test_a_backup_from_the_future_refuses_but_a_small_skew_passes():
    assert gate.evaluate(status(newest_age_h=-0.05), NOW, 26)["ok"] is True  # 3 minutes ahead
    result = gate.evaluate(status(newest_age_h=-1), NOW, 26)
    assert result["ok"] is False
    assert "check the clocks" in result["reason"]


@pytest.mark.parametrize("limit", [0, -1, "x", None, True])
def test_a_bad_limit_is_an_error(limit):
    with pytest.raises(gate.BackupGateError, match="max_age_hours"):
        gate.evaluate(status(), NOW, limit)


def test_a_limit_given_as_text_is_read():
    assert gate.evaluate(status(newest_age_h=3), NOW, "2.5")["ok"] is False


def test_a_newest_backup_without_a_stop_time_is_an_error():
    doc = status()
    del doc["newest_verified"]["stop"]
    with pytest.raises(gate.BackupGateError, match="without a stop time"):
        gate.evaluate(doc, NOW, 26)


def test_parse_status_accepts_an_object_only():
    assert gate.parse_status(json.dumps(status()))["stanza"] == "main"
    with pytest.raises(gate.BackupGateError, match="not JSON"):
        gate.parse_status("{half")
    with pytest.raises(gate.BackupGateError, match="not a JSON object"):
        gate.parse_status("[1, 2]")
