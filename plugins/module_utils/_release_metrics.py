# -*- coding: utf-8 -*-
# Copyright: greenflow platform engineers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The release record of one app as Prometheus metrics, for node exporter's textfile collector.

``render(record)`` is pure: the text of ``greenflow_release_<app>.prom`` from the record as
``_release_record`` keeps it. ``write(directory, record)`` puts it in place atomically (a temp file
renamed over the old one), and only when the directory exists: no node exporter, no file. Every writer of
the record calls it after its own write (``_release_store.RecordUpdate``, the load balancer's watchdog).

The metrics (every one has the label ``app``):

- ``greenflow_release_info{role, version, color} 1``: the live release (``role="live"``) and the one a
  rollback puts back (``role="rollback_target"``), while there is one;
- ``greenflow_release_live_since_timestamp_seconds``: when the live release got all traffic (the newest
  successful deploy or rollback);
- ``greenflow_release_last_result{result}``: one series per result, 1 for the result of the newest
  finished deploy or rollback, 0 for the others (a state set). Results (``last_result``): ``ok`` (a deploy
  went live), ``aborted`` (a deploy failed: a gate broke during the steps, never healthy, interrupted and
  put back), ``rolled_back`` (traffic went back to the previous release after the new one had it all: the
  watch after 100 % broke, or rollback.yml), ``rollback_failed``;
- ``greenflow_release_last_result_automatic``: 1 when the platform put traffic back by itself (the
  cutover's watch after 100 %, or the load balancer's watchdog after a lost controller), 0 otherwise;
- ``greenflow_release_last_result_timestamp_seconds``: when that entry was closed;
- ``greenflow_release_last_result_info{action, version, color, result} 1``: what that entry was;
- ``greenflow_release_in_progress``: 1 while an entry is open (a deploy, rollback or retire runs, or one
  was interrupted), with ``greenflow_release_in_progress_since_timestamp_seconds``.

Before the first deploy only ``greenflow_release_in_progress`` is written (a record without releases).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ansible_collections.greenflow.platform.plugins.module_utils import _release_record as rr
from ansible_collections.greenflow.platform.plugins.module_utils._atomic_file import atomic_write, read_snapshot

RESULTS = ("ok", "aborted", "rolled_back", "rollback_failed")
# How the playbooks and the watchdog start the reason of an entry closed after traffic was put back by the
# platform itself (deploy.yml's rescue, _release_lease.mark_lost).
AUTOMATIC_ROLLBACK = "automatic rollback"
CONTROLLER_LOST = "controller lost"

METRICS = (
    ("greenflow_release_info", "The live release (role live) and where a rollback goes (role rollback_target)"),
    ("greenflow_release_live_since_timestamp_seconds", "When the live release got all traffic"),
    ("greenflow_release_last_result",
     "Result of the newest finished deploy or rollback (1 for its result): ok, aborted, rolled_back, rollback_failed"),
    ("greenflow_release_last_result_automatic",
     "1 when the platform put traffic back by itself (the watch after 100 %, or the load balancer's watchdog)"),
    ("greenflow_release_last_result_timestamp_seconds", "When the newest finished deploy or rollback ended"),
    ("greenflow_release_last_result_info", "The newest finished deploy or rollback: action, version, colour, result"),
    ("greenflow_release_in_progress", "1 while a deploy, rollback or retire of the app is open in the record"),
    ("greenflow_release_in_progress_since_timestamp_seconds", "When the open entry started"),
)


def textfile_name(app):
    """The file's name in the textfile directory (node exporter reads *.prom)."""
    return "greenflow_release_%s.prom" % app


def _label(value):
    """A label value in the exposition format: backslash, double quote and newline escaped."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(pairs):
    return "{%s}" % ",".join('%s="%s"' % (name, _label(value)) for name, value in pairs)


def _number(value):
    value = float(value)
    return "%d" % value if value == int(value) else "%.3f" % value


def _reason(entry):
    return " ".join(str(entry.get("reason") or "").split()).lower()


def automatic(entry):
    """True when traffic was put back by the platform itself: the cutover's watch after 100 % (deploy.yml
    records "automatic rollback after 100 % ...") or the load balancer's watchdog ("controller lost ...")."""
    if entry.get("action") != "deploy" or entry.get("outcome") != "failed":
        return False
    return _reason(entry).startswith((AUTOMATIC_ROLLBACK, CONTROLLER_LOST))


def result_of(entry):
    """The result of a closed deploy or rollback entry (one of RESULTS)."""
    if entry["action"] == "rollback":
        return "rolled_back" if entry["outcome"] == "succeeded" else "rollback_failed"
    if entry["outcome"] == "succeeded":
        return "ok"
    # after 100 % (the watch broke) the release had all traffic: going back is a rollback; a watchdog
    # put-back or any other failure stopped the release before it was live: an abort
    return "rolled_back" if _reason(entry).startswith(AUTOMATIC_ROLLBACK) else "aborted"


def last_result(record):
    """The newest closed deploy or rollback entry with its result: a dict (entry, result, automatic,
    finished), or None when there is none. Retire entries are not cutovers and are skipped; an entry a
    rollback.yml closed on behalf of an interrupted deploy is that deploy's result (aborted)."""
    closed = [e for e in record["releases"] if e.get("action") in ("deploy", "rollback")
              and e.get("outcome") in ("succeeded", "failed")]
    if not closed:
        return None
    # the order of closing, not of starting: a deploy interrupted and closed later by rollback.yml or the
    # watchdog ends after entries begun before it; entries without a finish time keep the record's order
    newest = max(enumerate(closed), key=lambda pair: (rr.finished_epoch(pair[1]) or 0.0, pair[0]))[1]
    return {"entry": newest, "result": result_of(newest), "automatic": automatic(newest),
            "finished": rr.finished_epoch(newest)}


def live_since(record):
    """When the live release got all traffic: the finish of the newest successful deploy or rollback."""
    times = [rr.finished_epoch(e) for e in record["releases"]
             if e.get("action") in ("deploy", "rollback") and e.get("outcome") == "succeeded"]
    times = [t for t in times if t is not None]
    return max(times) if times else None


def samples(record):
    """The metrics as (name, labels as a list of pairs, value), in the order they are written."""
    app = record["app"]
    out = []
    live, target = rr.live_release(record), rr.rollback_target(record)
    for role, entry in (("live", live), ("rollback_target", target)):
        if entry:
            out.append(("greenflow_release_info", [("app", app), ("role", role), ("version", entry.get("version")),
                                                   ("color", entry.get("color"))], 1))
    since = live_since(record) if live else None
    if since is not None:
        out.append(("greenflow_release_live_since_timestamp_seconds", [("app", app)], since))
    last = last_result(record)
    if last:
        entry = last["entry"]
        for result in RESULTS:
            out.append(("greenflow_release_last_result", [("app", app), ("result", result)],
                        1 if result == last["result"] else 0))
        out.append(("greenflow_release_last_result_automatic", [("app", app)], 1 if last["automatic"] else 0))
        if last["finished"] is not None:
            out.append(("greenflow_release_last_result_timestamp_seconds", [("app", app)], last["finished"]))
        out.append(("greenflow_release_last_result_info",
                    [("app", app), ("action", entry["action"]), ("version", entry.get("version")),
                     ("color", entry.get("color")), ("result", last["result"])], 1))
    running = rr.open_entry(record)
    out.append(("greenflow_release_in_progress", [("app", app)], 1 if running else 0))
    if running and running.get("started_epoch") is not None:
        out.append(("greenflow_release_in_progress_since_timestamp_seconds", [("app", app)], running["started_epoch"]))
    return out


def render(record):
    """The textfile's content: HELP and TYPE (all gauges) before each metric's samples."""
    helps = dict(METRICS)
    lines, seen = [], set()
    for name, labels, value in samples(record):
        if name not in seen:
            seen.add(name)
            lines += ["# HELP %s %s" % (name, helps[name]), "# TYPE %s gauge" % name]
        lines.append("%s%s %s" % (name, _labels(labels), _number(value)))
    return "\n".join(lines) + "\n"


def write(directory, record):
    """Write ``greenflow_release_<app>.prom`` into ``directory`` atomically (mode 0644, or as the file was).
    Returns its path, or None when ``directory`` is empty or does not exist (no textfile collector there).
    Raises AtomicFileError or OSError when it cannot be written."""
    if not directory or not os.path.isdir(directory):
        return None
    path = os.path.join(directory, textfile_name(record["app"]))
    atomic_write(path, render(record).encode("utf-8"), like=read_snapshot(path), default_mode=0o644)
    return path
