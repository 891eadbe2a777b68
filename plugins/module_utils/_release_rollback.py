# -*- coding: utf-8 -*-
# Copyright: greenflow platform engineers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The rollback's decisions, for greenflow.platform.release_rollback (which does the I/O).

- ``refusal``: why a rollback cannot start at all (nothing to go back to; a run still in progress and
  no force), as the sentence the operator reads, or None.
- ``instant_blocker``: whether the previous release can get all traffic in one nginx switch, without
  asking the swarm: by the record, its colour still holds exactly that release (no later entry put
  something else there), and nginx has servers for that colour. Returns why not, or None. The servers
  are then probed from the load balancer (``probe``): a colour scaled down or moved since answers
  nothing there, and the playbook takes the slow path (swarm status, scale up or redeploy, switch).
- ``probe``: every server's health path, in parallel, through a ``fetch`` the caller gives.
- ``claim``: rollback.yml taking over an entry left open by a run that died (release_force=true): the
  entry stays the lock, now this run's, and a cutover lease on it is lost, so the watchdog leaves it
  alone and a controller that comes back cannot renew.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.greenflow.platform.plugins.module_utils import _release_lease as lease_mod
from ansible_collections.greenflow.platform.plugins.module_utils import _release_model as model
from ansible_collections.greenflow.platform.plugins.module_utils import _release_record as rr
from ansible_collections.greenflow.platform.plugins.module_utils._health_probe import failure_reason, probe_urls


def shares_text(shares):
    return ", ".join("%s %s %%" % kv for kv in sorted((shares or {}).items())) or "no split"


def refusal(plan, shares, history_lines, force):
    """The message refusing the rollback (nothing is changed), or None when it may go ahead."""
    rollback, live, open_entry = plan["rollback"], plan["live"], plan["open_entry"]
    if not rollback["possible"]:
        if not live:
            has = "no live release"
        else:
            has = "only one live release (%s on %s)" % (live.get("version"), live.get("color"))
        return ("Nothing to roll back to: the record of this app has %s and nginx sends %s. Nothing was "
                "changed. History (newest first): %s" % (has, shares_text(shares), " / ".join(history_lines)))
    if rollback["needs_force"] and not force:
        return ("%s %s (entry %s, by %s, started %s) is still in progress. If it was interrupted (no "
                "ansible-playbook of it runs any more), run again with -e release_force=true: traffic goes "
                "back to the live release %s on %s and that entry is closed as failed. Nothing was changed."
                % (open_entry.get("action"), open_entry.get("version"), open_entry.get("id"),
                   open_entry.get("user") or "?", open_entry.get("started_at") or "?",
                   live.get("version"), live.get("color")))
    return None


def colour_holder(record, colour):
    """The newest entry that may have changed ``colour``'s service (any outcome; an instant rollback only
    switched nginx, and a retire only scaled the colour to 0 - its release is still the same - so neither
    counts), or None."""
    for entry in reversed(record["releases"]):
        if entry.get("color") == colour and not entry.get("instant") and entry.get("action") != "retire":
            return entry
    return None


def _public_env(entry):
    # a rollback entry keeps its env without secret-looking keys (_release_record.begin): compare alike
    return dict((k, v) for k, v in (entry.get("env") or {}).items() if not model.looks_secret(k))


def same_release(one, other):
    """Both entries run the same image with the same environment."""
    return one.get("image") == other.get("image") and _public_env(one) == _public_env(other)


def _describe(entry):
    return "entry %s, %s %s, %s" % (entry.get("id"), entry.get("action"), entry.get("version"), entry.get("outcome"))


def instant_blocker(record, target, pools):
    """Why the target release cannot get all traffic in one switch now, or None when it can (the
    servers still to be probed: ``pools[target colour]``)."""
    colour = target.get("color")
    holder = colour_holder(record, colour)
    if holder is None:
        return "the record has no entry on %s" % colour
    if holder["id"] != target["id"]:
        if not same_release(holder, target):
            return "%s holds another release since (%s)" % (colour, _describe(holder))
        if holder["outcome"] == "in_progress":
            return "%s is being changed by %s" % (colour, _describe(holder))
        if holder["outcome"] == "failed" and holder.get("action") == "rollback":
            return "a rollback that put %s there failed (%s): its service may be half updated" % (
                target.get("version"), _describe(holder))
    if not (pools or {}).get(colour):
        return "nginx has no server for %s" % colour
    return None


def probe(servers, path, timeout, fetch):
    """GET http://<server><path> on every server at once; ``fetch(url, timeout)`` returns the HTTP
    status or raises. Returns the problems, one ``"server: why"`` each (empty: all answered 2xx)."""
    results = probe_urls(["http://%s%s" % (server, path) for server in servers], timeout, fetch)
    return ["%s: %s" % (server, failure_reason(result))
            for server, result in zip(servers, results) if not result["ok"]]


def claim(entry, user, now, detail):
    """rollback.yml (release_force=true) takes over the open ``entry`` of a run that died: the entry
    stays in progress as this run's lock (fresh, so it is not stale), and its cutover lease, if any, is
    lost: the watchdog leaves it alone, a renewal is refused."""
    entry["claimed_by"] = {"user": user, "epoch": now, "at": lease_mod.iso_utc(now), "detail": detail}
    lease = entry.get("lease")
    if lease and lease.get("state") == lease_mod.HELD:
        lease["state"] = lease_mod.LOST
        lease["lost_epoch"] = now
        lease["lost_to"] = "rollback.yml (release_force=true, by %s)" % user
    return entry


def begin_fields(target, live, user, now, iso):
    """The fields of a rollback entry that puts ``target`` back while ``live`` is live."""
    return {
        "version": target.get("version"), "image": target.get("image"), "color": target["color"],
        "previous_color": live["color"], "restores": target["id"], "env": target.get("env") or {},
        "user": user, "started_at": iso,
    }


def open_rollback(record, plan, user, now, force, stale_after):
    """Take the lock for this rollback under the record's file lock; return the entry this run closes.

    - Rollback to the release under the live one: a new rollback entry (``_release_record.begin``;
      with force, an open entry is closed as abandoned).
    - Restore the live release (an entry left open, or nginx not at 100 % on it): the open entry is
      claimed and is the one this run closes, as failed ("interrupted"). With no open entry (record and
      nginx disagree), None: the switch holds the record's file lock, which is the lock then.
    """
    rollback = plan["rollback"]
    if rollback["restore_live"]:
        if not rollback["closes"]:
            return None
        entry = rr.entry(record, rollback["closes"])
        return claim(entry, user, now, "puts traffic back on the live release %s (%s)" % (
            plan["live"].get("version"), plan["live"].get("color")))
    fields = begin_fields(rollback["target"], plan["live"], user, now, lease_mod.iso_utc(now))
    return rr.begin(record, "rollback", fields, now, stale_after, force=force, expect_live=plan["live"]["id"])
