# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The release record of one app: which release is live, where a rollback goes, the deploy history.

Pure logic on a plain dict (the JSON file the ``release_record`` module keeps on the load balancer):

    {"schema": 1, "app": "demo", "releases": [entry, ...]}   # oldest first

An entry is one deploy, rollback or retire attempt:

    id, action ("deploy" | "rollback" | "retire"), version, image, color, previous_color, outcome
    ("in_progress" | "succeeded" | "failed"), started_at, finished_at, user, reason, timeline,
    restores (rollback only: the id of the deploy it put back).

What is live is worked out by replaying the succeeded entries as a stack: a deploy pushes itself, a
rollback pops the top. The top is the live release, the one under it is where the next rollback goes,
so a second rollback goes one release further back, and a deploy after a rollback never makes the
rolled-back release a rollback target again. A retire entry (retire.yml: the previous colour scaled to 0
after it has been idle long enough) changes nothing on that stack: the release under the live one stays the
rollback target, its colour is only scaled up again first.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
from datetime import datetime, timezone

from ansible_collections.greenflow.platform.plugins.module_utils import _release_lease as lease_mod
from ansible_collections.greenflow.platform.plugins.module_utils import _release_model as model

SCHEMA = 1
ACTIONS = ("deploy", "rollback", "retire")
OUTCOMES = ("in_progress", "succeeded", "failed")
COLORS = model.COLOURS
REASON_WIDTH = 100


class ReleaseRecordError(Exception):
    """The record is unreadable, or the change asked for does not fit it."""


def empty_record(app):
    return {"schema": SCHEMA, "app": app, "releases": []}


def parse_record(text, app):
    """The record from the file's text (empty text: a new record). Raises ReleaseRecordError."""
    if not text or not text.strip():
        return empty_record(app)
    try:
        record = json.loads(text)
    except ValueError as exc:
        raise ReleaseRecordError("the release record is not valid JSON: %s" % exc)
    if not isinstance(record, dict) or not isinstance(record.get("releases"), list):
        raise ReleaseRecordError("the release record has no 'releases' list")
    if record.get("app") not in (None, app):
        raise ReleaseRecordError("the release record belongs to app %r, not %r" % (record.get("app"), app))
    for entry in record["releases"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), int):
            raise ReleaseRecordError("the release record holds an entry without an integer id: %r" % (entry,))
        if entry.get("action") not in ACTIONS or entry.get("outcome") not in OUTCOMES:
            raise ReleaseRecordError("entry %s has an unknown action or outcome" % entry["id"])
    record.setdefault("schema", SCHEMA)
    record["app"] = app
    return record


def dump_record(record):
    return json.dumps(record, indent=2, sort_keys=True) + "\n"


def _by_id(record):
    return dict((entry["id"], entry) for entry in record["releases"])


def entry(record, entry_id):
    """Entry ``entry_id``; raises ReleaseRecordError when the record has none."""
    found = _by_id(record).get(entry_id)
    if found is None:
        raise ReleaseRecordError("the release record has no entry %r" % (entry_id,))
    return found


def live_stack(record):
    """The ids of the deploys that rollbacks can walk back through, the live one last."""
    stack = []
    for entry in record["releases"]:
        if entry["outcome"] != "succeeded":
            continue
        if entry["action"] == "deploy":
            stack.append(entry["id"])
        elif entry["action"] == "rollback" and stack:
            stack.pop()
    return stack


def live_release(record):
    """The deploy entry serving traffic now, or None before the first successful deploy."""
    stack = live_stack(record)
    return _by_id(record)[stack[-1]] if stack else None


def rollback_target(record):
    """The deploy entry a rollback puts back, or None when there is nothing to go back to."""
    stack = live_stack(record)
    return _by_id(record)[stack[-2]] if len(stack) >= 2 else None


def in_progress(record, now, stale_after):
    """The newest entry still in progress that showed life (start, lease renewal) in the last
    ``stale_after`` seconds, or None."""
    for candidate in reversed(record["releases"]):
        if candidate["outcome"] == "in_progress" and now - model.last_seen(candidate) < stale_after:
            return candidate
    return None


def open_entry(record):
    """The newest entry still in progress, however old (rollback.yml's view: any open entry counts)."""
    return in_progress(record, now=0, stale_after=float("inf"))


def plan(record, nginx_shares, now, stale_after):
    """The release model's plan (model.reconcile) for this record and nginx's split, with the app's
    swarm service per colour (``services``)."""
    out = model.reconcile(live_release(record), rollback_target(record), open_entry(record), nginx_shares,
                          now, stale_after)
    out["services"] = dict((colour, model.service_name(record["app"], colour)) for colour in COLORS)
    return out


def begin(record, action, fields, now, stale_after, force=False, expect_live=None):
    """Append a new in-progress entry and return it. Refuses while another one is in progress, and
    (compare-and-set) when ``expect_live`` is given and the live entry's id is another (0: none live):
    the caller planned against a state that another run has changed since it read it."""
    if action not in ACTIONS:
        raise ReleaseRecordError("action must be one of %s, got %r" % (", ".join(ACTIONS), action))
    color = fields.get("color")
    if color not in COLORS:
        raise ReleaseRecordError("color must be blue or green, got %r" % (color,))
    fields = dict(fields)
    if action == "deploy":
        try:  # the record keeps env in clear: never a secret (the model's rule)
            model.check_release_env(fields.get("env"))
        except model.ReleaseModelError as exc:
            raise ReleaseRecordError(str(exc))
    elif fields.get("env"):
        # A rollback puts back a deploy recorded earlier, maybe before the rule: it is never refused (it
        # runs in an incident), and its own entry keeps the environment without the secret-looking keys.
        fields["env"] = dict((k, v) for k, v in fields["env"].items() if not model.looks_secret(k))
    if expect_live is not None:
        live = live_release(record)
        if (live["id"] if live else 0) != expect_live:
            now_live = "entry %s, version %s on %s" % (live["id"], live.get("version"), live.get("color")) if live else "none"
            raise ReleaseRecordError(
                "the live release changed since this run read the record (it planned against entry %s, the "
                "record now has %s): another deploy or rollback finished in between. Nothing was changed; "
                "run again to plan against the new state" % (expect_live or "none", now_live))
    running = in_progress(record, now, stale_after)
    if running and not force:
        raise ReleaseRecordError(
            "another %s (entry %s, version %s, by %s, started %s) is still in progress; wait for it, or "
            "pass force after making sure it is dead. Nothing was changed" % (
                running["action"], running["id"], running.get("version"), running.get("user"),
                running.get("started_at")))
    for entry in record["releases"]:  # stale or forced: close what was left open
        if entry["outcome"] == "in_progress":
            entry["outcome"] = "failed"
            entry["reason"] = "abandoned: never finished (superseded by entry %d)" % (_next_id(record),)
            lease = entry.get("lease")
            if lease and lease.get("state") == lease_mod.HELD:  # its cutover, if it still runs, must stop
                lease["state"] = lease_mod.LOST
                lease["lost_epoch"] = now
                lease["lost_to"] = "entry %d" % (_next_id(record),)
    entry = dict(fields)
    entry.update({
        "id": _next_id(record),
        "action": action,
        "outcome": "in_progress",
        "started_epoch": now,
    })
    record["releases"].append(entry)
    return entry


def finished_epoch(entry):
    """When an entry was closed, in seconds since the epoch (None while open or when unknown). Entries
    written before finished_epoch was kept have only finished_at (ISO 8601, UTC)."""
    if entry.get("finished_epoch") is not None:
        return float(entry["finished_epoch"])
    text = entry.get("finished_at")
    if not text:
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp()
    except ValueError:
        return None


def retire_plan(record, now, keep_seconds):
    """Whether retire.yml should scale the previous colour down now. Returns a dict: retire (bool), color
    and version (the previous colour and what it holds), idle_seconds (since traffic left it: when the live
    release finished), live (the live entry's id) and message (for the operator).

    Never the live colour; never while any entry is open (a deploy or rollback runs, or an interrupted one
    waits for rollback.yml); never twice for the same live release; only after ``keep_seconds`` idle."""
    live = live_release(record)
    out = {"retire": False, "color": None, "version": None, "idle_seconds": None,
           "live": live["id"] if live else None}
    running = open_entry(record)
    if running:
        out["message"] = ("entry %s (%s of %s) is in progress: nothing is retired while a release runs"
                          % (running["id"], running["action"], running.get("version")))
        return out
    if not live:
        out["message"] = "no release is live: nothing to retire"
        return out
    previous = rollback_target(record)
    colour = model.other(live["color"])
    out["color"] = colour
    out["version"] = previous.get("version") if previous and previous.get("color") == colour else None
    for entry in record["releases"]:
        if entry["id"] > live["id"] and entry["action"] == "retire" and entry["outcome"] == "succeeded":
            out["message"] = ("%s was retired already (entry %s), after %s went live"
                              % (colour, entry["id"], live.get("version")))
            return out
    since = finished_epoch(live)
    if since is None:
        out["message"] = "the live release (entry %s) has no finish time: cannot tell how long %s is idle" % (
            live["id"], colour)
        return out
    idle = max(0.0, now - since)
    out["idle_seconds"] = round(idle, 1)
    held = ("%s (release %s)" % (colour, out["version"])) if out["version"] else colour
    if idle < keep_seconds:
        out["message"] = ("%s is idle for %.1f h, kept for %.1f h: not yet retired"
                          % (held, idle / 3600.0, keep_seconds / 3600.0))
        return out
    out["retire"] = True
    out["message"] = ("%s is idle for %.1f h (kept for %.1f h): scaled to 0; the instant rollback to it is gone "
                      "(rollback.yml scales it up again first)" % (held, idle / 3600.0, keep_seconds / 3600.0))
    return out


def _next_id(record):
    return max([entry["id"] for entry in record["releases"]] or [0]) + 1


MIRRORED = ("id", "action", "version", "image", "color", "previous_color", "user", "started_at")


def mirror(record, source, primary):
    """On a second (third, ...) load balancer: a copy of the primary's in-progress entry ``source``, put in
    this load balancer's lease record, where the cutover's lease on it lives and its watchdog finds it. The
    primary's record (``primary`` names its host) stays the one place of truth; a copy holds only what
    the watchdog and an operator reading it need. An older copy with the same id (a record started over)
    is replaced. Returns the copy."""
    if not isinstance(source, dict) or not isinstance(source.get("id"), int):
        raise ReleaseRecordError("mirror needs the primary's entry with its integer id, got %r" % (source,))
    if source.get("outcome") != "in_progress" or source.get("action") not in ACTIONS:
        raise ReleaseRecordError("mirror: entry %s of the primary is not an entry in progress" % source["id"])
    copy = dict((key, source.get(key)) for key in MIRRORED if source.get(key) is not None)
    copy.update(outcome="in_progress", mirror_of=primary)
    record["releases"] = [e for e in record["releases"] if e["id"] != copy["id"]] + [copy]
    return copy


def finish(record, entry_id, outcome, fields):
    """Close entry ``entry_id`` with ``outcome`` and extra fields; return it."""
    if outcome not in ("succeeded", "failed"):
        raise ReleaseRecordError("outcome must be succeeded or failed, got %r" % (outcome,))
    entry = _by_id(record).get(entry_id)
    if entry is None:
        raise ReleaseRecordError("the release record has no entry %r" % (entry_id,))
    if entry["outcome"] == "failed" and outcome == "failed":
        # Closed already - by the load balancer's watchdog (the run's lease ran out) or by a forced run. Its
        # reason stays first; the run's own reason and timeline are kept beside it.
        if fields.get("reason") and fields["reason"] != entry.get("reason"):
            entry["run_reason"] = fields["reason"]
        if fields.get("timeline") and not entry.get("timeline"):
            entry["timeline"] = fields["timeline"]
        return entry
    if entry["outcome"] != "in_progress":
        raise ReleaseRecordError("entry %s is already closed (%s)" % (entry_id, entry["outcome"]))
    if outcome == "succeeded" and entry["action"] == "rollback":
        stack = live_stack(record)
        if entry.get("restores") is not None and (len(stack) < 2 or stack[-2] != entry["restores"]):
            raise ReleaseRecordError(
                "rollback entry %s restores deploy %s, but the release under the live one is %s"
                % (entry_id, entry["restores"], stack[-2] if len(stack) >= 2 else "none"))
    entry.update(fields)
    entry["outcome"] = outcome
    return entry


def prune(record, keep):
    """Drop the oldest entries beyond ``keep``, never one the live stack still needs."""
    needed = set(live_stack(record))
    excess = len(record["releases"]) - keep
    if excess <= 0:
        return 0
    kept, dropped = [], 0
    for entry in record["releases"]:
        if dropped < excess and entry["id"] not in needed and entry["outcome"] != "in_progress":
            dropped += 1
            continue
        kept.append(entry)
    record["releases"] = kept
    return dropped


def history(record, limit):
    """The newest ``limit`` entries, newest first."""
    return list(reversed(record["releases"]))[:limit]


def history_table(entries, live_id=None):
    """A plain-text table of entries (as ``history`` returns them), one line each."""
    columns = ("id", "action", "version", "color", "outcome", "started_at", "user", "reason")
    rows = []
    for entry in entries:
        row = [str(entry.get(col) if entry.get(col) is not None else "-") for col in columns]
        row[-1] = " ".join(row[-1].split())  # the reason on one line, cut short (history has it all)
        if len(row[-1]) > REASON_WIDTH:
            row[-1] = row[-1][:REASON_WIDTH - 3] + "..."
        if entry["id"] == live_id:
            row[4] += " (live)"
        rows.append(row)
    widths = [max([len(col)] + [len(row[i]) for row in rows]) for i, col in enumerate(columns)]
    lines = ["  ".join(col.upper().ljust(widths[i]) for i, col in enumerate(columns)).rstrip()]
    for row in rows:
        lines.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
    return lines
