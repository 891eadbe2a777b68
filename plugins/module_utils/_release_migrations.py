# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Database migrations in the release record: run a version's migration once, and tell a rollback which
migrations it crosses. Pure logic on the record's dict (``_release_record``).

A deploy entry with a migration carries it as ``migration``:

    status      "planned" | "running" | "succeeded" | "failed" | "skipped"
    command     the command run (a list)
    reversible  False when the release said the previous release cannot run on the migrated schema
                (release_migrate_reversible: false); rollback.yml then refuses to cross it without
                rollback_accept_schema
    restore_point  {"lsn": the primary's WAL position just before, "backup": the newest verified backup's
                label, ...}: where restore.yml goes back to (restore_target_lsn)
    started_at, finished_at, seconds, exit_code, output (its end), job (the swarm job's name),
    started     False when the job's command never started (swarm rejected it): nothing of it ran
    ran_in      with "skipped": the entry whose migration of this version ran already

"Running" stays in the record when the controller died during the migration: nobody knows how far it got,
so it counts like a failed one.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

PLANNED = "planned"
RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
SKIPPED = "skipped"
STATUSES = (PLANNED, RUNNING, SUCCEEDED, FAILED, SKIPPED)


class MigrationError(Exception):
    """A migration may not run, or a rollback may not cross one (the message says why and what to do)."""


def touched(migration):
    """True when this migration ran, or may have: running, succeeded, or failed after its command started (a
    job swarm rejected - no such image, say - never ran, ``started`` false)."""
    status = migration.get("status")
    return status in (RUNNING, SUCCEEDED) or (status == FAILED and migration.get("started", True) is not False)


def previous_run(record, version):
    """The newest entry whose migration of ``version`` ran (or may have), or None."""
    version = str(version)
    for entry in reversed(record["releases"]):
        if entry.get("action") == "deploy" and str(entry.get("version")) == version and touched(entry.get("migration") or {}):
            return entry
    return None


def _when(entry):
    migration = entry.get("migration") or {}
    return migration.get("finished_at") or migration.get("started_at") or entry.get("started_at") or "?"


def decide(record, version, rerun=False):
    """Whether a deploy of ``version`` runs its migration: a dict with ``run`` (bool), ``previous`` (the id of the
    entry whose migration of this version ran, or None) and ``message`` (for the operator). Raises
    MigrationError when the previous run failed or never ended and ``rerun`` is not set: it may have been
    partly applied, and only the operator can tell."""
    before = previous_run(record, version)
    if before is None:
        return {"run": True, "previous": None, "message": "the migration of version %s has not run yet" % version}
    status = before["migration"]["status"]
    where = "entry %s, %s" % (before["id"], _when(before))
    if rerun:
        return {"run": True, "previous": before["id"],
                "message": "the migration of version %s ran before (%s, %s); run again: release_migrate_rerun=true"
                           % (version, where, status)}
    if status == SUCCEEDED:
        return {"run": False, "previous": before["id"],
                "message": "the migration of version %s ran already (%s): not run again "
                           "(-e release_migrate_rerun=true runs it again)" % (version, where)}
    what = "failed" if status == FAILED else "started and never ended (its controller was lost)"
    raise MigrationError(
        "the migration of version %s %s (%s); it may have been partly applied. Check the schema, then deploy "
        "again with -e release_migrate_rerun=true (a migration safe to run again), or release a version "
        "that fixes it. Nothing was changed" % (version, what, where))


def crossed(record, target_id):
    """The migrations a rollback to deploy ``target_id`` crosses: every entry after it whose migration ran (or
    may have), newest first, as dicts of entry, version, status, reversible, lsn, backup, finished_at."""
    out = []
    for entry in reversed(record["releases"]):
        migration = entry.get("migration") or {}
        if entry["id"] <= target_id or not touched(migration):
            continue
        restore = migration.get("restore_point") or {}
        out.append({"entry": entry["id"], "version": entry.get("version"), "status": migration["status"],
                    "reversible": migration.get("reversible", True) is not False,
                    "lsn": restore.get("lsn"), "backup": restore.get("backup"),
                    "finished_at": migration.get("finished_at")})
    return out


def describe(migrations):
    """One line per crossed migration, for the operator."""
    return ["version %s (entry %s): %s%s%s" % (
        m["version"], m["entry"], m["status"], "" if m["reversible"] else ", NOT reversible",
        ("; the schema before it: restore.yml -e restore_target_lsn=%s" % m["lsn"]) if m["lsn"] else "")
        for m in migrations]


def rollback_refusal(migrations, target_version, accept_schema, restore_live=False):
    """The message refusing a rollback across a migration marked not reversible, or None. Never after an
    interrupted deploy (``restore_live``): the live release ran beside that migration all along."""
    if accept_schema or restore_live:
        return None
    blocking = [m for m in migrations if not m["reversible"]]
    if not blocking:
        return None
    return ("Rollback to %s refused: it crosses %s marked not reversible (release_migrate_reversible: false): %s. "
            "The release it puts back may not run on the schema as it is now. Either go back with the data too "
            "(playbooks/restore.yml -e restore_target_lsn=<the LSN above>, then roll back), or roll back anyway "
            "with -e rollback_accept_schema=true. Nothing was changed."
            % (target_version, "a migration" if len(blocking) == 1 else "%d migrations" % len(blocking),
               " / ".join(describe(blocking))))


def planned(decision, command, reversible=True):
    """The ``migration`` a new deploy entry starts with, from ``decide``'s decision."""
    migration = {"status": PLANNED if decision["run"] else SKIPPED, "command": list(command or []),
                 "reversible": bool(reversible)}
    if not decision["run"]:
        migration["ran_in"] = decision["previous"]
    return migration


def update(entry, fields):
    """Lay ``fields`` over the deploy entry's migration (status, times, output, restore point); returns it."""
    if entry.get("action") != "deploy":
        raise MigrationError("entry %s is a %s: only a deploy runs a migration" % (entry.get("id"), entry.get("action")))
    status = fields.get("status")
    if status is not None and status not in STATUSES:
        raise MigrationError("a migration's status is one of %s, got %r" % (", ".join(STATUSES), status))
    migration = dict(entry.get("migration") or {})
    migration.update(fields)
    entry["migration"] = migration
    return migration
