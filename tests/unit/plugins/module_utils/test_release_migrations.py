"""Migrations in the release record: a version's migration runs once; rollbacks are told what they cross."""
import pytest

from ansible_collections.greenflow.platform.plugins.module_utils import _release_migrations as mig


def _deploy(ident, version, status=None, reversible=True, lsn=None, outcome="succeeded"):
    entry = {"id": ident, "action": "deploy", "version": version, "outcome": outcome,
             "started_at": "2026-12-02T10:%02d:00Z" % ident}
    if status:
        entry["migration"] = {"status": status, "reversible": reversible, "finished_at": "2026-12-02T10:%02d:30Z" % ident}
        if lsn:
            entry["migration"]["restore_point"] = {"lsn": lsn, "backup": "20261202-100000F"}
    return entry


def _record(*entries):
    return {"schema": 1, "app": "demo", "releases": list(entries)}


def test_a_version_never_migrated_runs_its_migration():
    decision = mig.decide(_record(_deploy(1, "1", "succeeded")), "2")
    assert decision["run"] is True and decision["previous"] is None


def test_a_version_migrated_before_is_skipped():
    record = _record(_deploy(1, "1"), _deploy(2, "2", "succeeded"), {"id": 3, "action": "rollback", "version": "1",
                                                                       "outcome": "succeeded"})
    decision = mig.decide(record, "2")
    assert decision == {"run": False, "previous": 2, "message": decision["message"]}
    assert "ran already (entry 2" in decision["message"] and "release_migrate_rerun=true" in decision["message"]
    assert mig.planned(decision, ["migrate"]) == {"status": "skipped", "command": ["migrate"], "reversible": True,
                                                  "ran_in": 2}


def test_a_skipped_migration_does_not_count_as_a_run():
    record = _record(_deploy(2, "2", "succeeded"), _deploy(4, "2", "skipped"))
    assert mig.decide(record, "2")["previous"] == 2


@pytest.mark.parametrize("status, words", [("failed", "failed"), ("running", "never ended")])
def test_after_a_failed_or_lost_migration_the_deploy_is_refused_without_rerun(status, words):
    record = _record(_deploy(1, "1"), _deploy(2, "2", status, outcome="failed"))
    with pytest.raises(mig.MigrationError) as err:
        mig.decide(record, "2")
    assert words in str(err.value) and "release_migrate_rerun=true" in str(err.value)
    assert "Nothing was changed" in str(err.value)
    decision = mig.decide(record, "2", rerun=True)
    assert decision["run"] is True and decision["previous"] == 2
    assert mig.planned(decision, ["m"], reversible=False) == {"status": "planned", "command": ["m"], "reversible": False}


def test_versions_compare_as_text():
    assert mig.decide(_record(_deploy(1, 2, "succeeded")), "2")["run"] is False


def test_a_rollback_crosses_the_migrations_after_its_target_newest_first():
    record = _record(_deploy(1, "1", "succeeded", lsn="0/1000000"), _deploy(2, "2", "succeeded", lsn="0/2000000"),
                     _deploy(3, "3", "failed", reversible=False, lsn="0/3000000", outcome="failed"),
                     _deploy(4, "3", "skipped"), _deploy(5, "4"))
    crossed = mig.crossed(record, 1)
    assert [(m["entry"], m["status"], m["reversible"], m["lsn"]) for m in crossed] == [
        (3, "failed", False, "0/3000000"), (2, "succeeded", True, "0/2000000")]
    assert mig.crossed(record, 3) == []
    lines = mig.describe(crossed)
    assert lines[0] == ("version 3 (entry 3): failed, NOT reversible; the schema before it: "
                        "restore.yml -e restore_target_lsn=0/3000000")


def test_a_rollback_across_an_irreversible_migration_is_refused_unless_accepted():
    crossed = mig.crossed(_record(_deploy(1, "1"), _deploy(2, "2", "succeeded", reversible=False, lsn="0/2A")), 1)
    refused = mig.rollback_refusal(crossed, "1", accept_schema=False)
    assert "Rollback to 1 refused" in refused and "rollback_accept_schema=true" in refused
    assert "restore_target_lsn=0/2A" in refused and "Nothing was changed" in refused
    assert mig.rollback_refusal(crossed, "1", accept_schema=True) is None
    # after an interrupted deploy the live release ran beside that migration all along
    assert mig.rollback_refusal(crossed, "1", accept_schema=False, restore_live=True) is None


def test_reversible_migrations_only_tell():
    crossed = mig.crossed(_record(_deploy(1, "1"), _deploy(2, "2", "succeeded")), 1)
    assert len(crossed) == 1 and mig.rollback_refusal(crossed, "1", accept_schema=False) is None


def test_update_lays_fields_over_a_deploys_migration():
    entry = _deploy(2, "2")
    entry["migration"] = {"status": "planned", "command": ["m"]}
    mig.update(entry, {"status": "running", "restore_point": {"lsn": "0/1"}})
    assert entry["migration"] == {"status": "running", "command": ["m"], "restore_point": {"lsn": "0/1"}}
    with pytest.raises(mig.MigrationError):
        mig.update(entry, {"status": "done"})
    with pytest.raises(mig.MigrationError):
        mig.update({"id": 3, "action": "rollback"}, {"status": "running"})


def test_a_migration_swarm_never_started_does_not_count():
    rejected = _deploy(2, "2", "failed", outcome="failed")
    rejected["migration"]["started"] = False  # e.g. no such image on the nodes
    record = _record(_deploy(1, "1"), rejected)
    assert mig.decide(record, "2")["run"] is True
    assert mig.crossed(record, 1) == []
    rejected["migration"]["started"] = True
    with pytest.raises(mig.MigrationError):
        mig.decide(record, "2")
