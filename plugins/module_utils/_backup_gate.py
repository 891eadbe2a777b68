# -*- coding: utf-8 -*-
# Copyright: greenflow platform engineers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The release's backup gate, as pure logic: does the backup status (the JSON document the
greenflow-pgbackrest wrapper writes on the repository host after every run) allow a release now?

A release may go on when the newest verified backup finished no more than ``max_age_hours`` ago and the
last backup run did not fail. Everything else - no status, no verified backup, a failed last backup run,
an old backup - is a refusal with a reason an operator can act on. Used by the backup_gate module
(deploy.yml) and unit tested in tests/unit/plugins/module_utils/test_backup_gate.py.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import json

# A backup stopping this far in the future (clock skew between hosts) still counts as fresh.
FUTURE_SLACK_SECONDS = 300


class BackupGateError(Exception):
    """The gate was asked something it cannot answer (bad settings, an unreadable status)."""


def parse_status(text):
    """The status file's text -> its document (a dict). Raises BackupGateError when it is not one."""
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise BackupGateError("the backup status is not JSON (%s)" % exc)
    if not isinstance(doc, dict):
        raise BackupGateError("the backup status is not a JSON object")
    return doc


def iso(epoch):
    return datetime.datetime.fromtimestamp(int(epoch), datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _number(value):
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(str(value))
    except (TypeError, ValueError):
        return None


def evaluate(status, now, max_age_hours):
    """Decide on ``status`` (a dict, or None when there is no status file) at ``now`` (epoch seconds).

    Returns a dict: ``ok`` (bool), ``reason`` (one sentence, set when refused; a summary otherwise),
    ``newest_verified`` (label, type, stop, stop_at, age_hours, or None), ``last_backup`` (what the status
    says of the last backup run, or None)."""
    limit = _number(max_age_hours)
    if limit is None or limit <= 0:
        raise BackupGateError("max_age_hours must be a number above 0, got %r" % (max_age_hours,))
    result = {"ok": False, "reason": "", "newest_verified": None, "last_backup": None, "max_age_hours": limit}
    if status is None:
        result["reason"] = "there is no backup status on the repository host: no backup has run there yet"
        return result
    last = status.get("last_backup") if isinstance(status.get("last_backup"), dict) else None
    result["last_backup"] = last
    newest = status.get("newest_verified") if isinstance(status.get("newest_verified"), dict) else None
    if newest:
        stop = _number(newest.get("stop"))
        if stop is None:
            raise BackupGateError("the backup status names newest verified backup %r without a stop time"
                                  % (newest.get("label"),))
        age_hours = max(0.0, (now - stop) / 3600.0)
        result["newest_verified"] = {
            "label": newest.get("label"), "type": newest.get("type"), "stop": int(stop), "stop_at": iso(stop),
            "age_hours": round(age_hours, 2),
        }
    if last and last.get("result") == "failed":
        error = status.get("error") if status.get("action") == "backup" else None
        result["reason"] = "the last backup run (%s, started %s) failed%s" % (
            last.get("type") or "unknown type", last.get("started") or "at an unknown time",
            ": %s" % error if error else "")
        return result
    if not newest:
        result["reason"] = "the repository has no verified backup"
        return result
    if stop > now + FUTURE_SLACK_SECONDS:
        result["reason"] = ("the newest verified backup %s stopped at %s, in the future of this host's clock "
                            "(%s): check the clocks" % (newest.get("label"), iso(stop), iso(now)))
        return result
    if age_hours > limit:
        result["reason"] = "the newest verified backup %s finished %s, %.1f h ago: older than %g h" % (
            newest.get("label"), iso(stop), age_hours, limit)
        return result
    result["ok"] = True
    result["reason"] = "the newest verified backup %s finished %s, %.1f h ago (limit %g h)" % (
        newest.get("label"), iso(stop), age_hours, limit)
    return result
