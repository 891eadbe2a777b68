# -*- coding: utf-8 -*-
# Copyright: greenflow platform engineers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The cutover's lease on a load balancer: pure logic on a release entry, without I/O.

While a cutover moves traffic, the controller that runs it holds a lease in the release's in-progress
entry of the record on the load balancer, and renews it at its polls. A lease that runs out means the
controller is gone (killed, Ctrl-C, network lost): the load balancer's watchdog
(greenflow-release-watchdog, installed by the nginx_lb role) puts all traffic back on the colour the
cutover came from, and closes the entry as failed with "controller lost".

A lease is a dict in ``entry["lease"]``::

    holder            who runs the cutover ("<controller host>:<pid>")
    from_color        where traffic goes back to when the lease runs out
    to_color          the colour being released
    ttl               seconds a renewal is good for
    expires_epoch     when it runs out (the load balancer's clock: the watchdog and renewals both use it)
    state             "held", "done" (the cutover ended and said so) or "lost" (the watchdog took over)

Expiry is absolute: once ``expires_epoch`` has passed, no renewal brings the lease back, so the watchdog
that saw it expire is the only one that acts.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime

DEFAULT_TTL = 10.0
# a renewal is one module run on the load balancer (about a second over SSH, more on a busy host),
# and the cutover renews every third of the ttl: below this, a slow module run loses the lease
MIN_TTL = 5.0
MAX_TTL = 300.0
HELD = "held"
DONE = "done"
LOST = "lost"


def iso_utc(epoch):
    """The record's time format (as release_record writes started_at / finished_at)."""
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class LeaseError(Exception):
    """The lease cannot be taken or renewed; the message says why, for the operator."""


def check_ttl(ttl):
    try:
        ttl = float(ttl)
    except (TypeError, ValueError):
        raise LeaseError("lease ttl must be a number of seconds, got %r" % (ttl,))
    if not MIN_TTL <= ttl <= MAX_TTL:
        raise LeaseError("lease ttl must be between %g and %g seconds, got %g" % (MIN_TTL, MAX_TTL, ttl))
    return ttl


def _open_entry(entry):
    if entry.get("outcome") != "in_progress":
        raise LeaseError("entry %s is closed (%s): its cutover holds no lease any more"
                         % (entry.get("id"), entry.get("outcome")))


def grant(entry, holder, from_color, to_color, ttl, now):
    """Take the lease on an in-progress entry (again, for the same holder). Returns the lease."""
    _open_entry(entry)
    ttl = check_ttl(ttl)
    if not holder:
        raise LeaseError("a lease needs a holder")
    lease = entry.get("lease")
    if lease and lease.get("state") == LOST:
        raise LeaseError(_lost_text(lease))
    if lease and lease.get("state") == HELD and lease.get("holder") != holder and now <= lease["expires_epoch"]:
        raise LeaseError("the lease of entry %s is held by %s until %.0f"
                         % (entry.get("id"), lease["holder"], lease["expires_epoch"]))
    lease = {"holder": holder, "from_color": from_color, "to_color": to_color, "ttl": ttl,
             "granted_epoch": now, "renewed_epoch": now, "expires_epoch": now + ttl, "state": HELD}
    entry["lease"] = lease
    return lease


def renew(entry, holder, now):
    """Extend the holder's lease by its ttl. Raises LeaseError when it is not the holder's any more."""
    lease = _held_by(entry, holder)
    if now > lease["expires_epoch"]:
        raise LeaseError("the lease of entry %s ran out %.1f s ago: the load balancer's watchdog puts traffic "
                         "back on %s" % (entry.get("id"), now - lease["expires_epoch"], lease["from_color"]))
    lease["renewed_epoch"] = now
    lease["expires_epoch"] = now + lease["ttl"]
    return lease


def finish(entry, holder, now):
    """The cutover ended by itself (live at 100 %, or put back): the watchdog has nothing to guard."""
    lease = _held_by(entry, holder)
    lease["state"] = DONE
    lease["renewed_epoch"] = now
    return lease


def _held_by(entry, holder):
    lease = entry.get("lease")
    if not lease:
        raise LeaseError("entry %s holds no lease" % (entry.get("id"),))
    if lease.get("state") == LOST:
        raise LeaseError(_lost_text(lease))
    if lease.get("holder") != holder:
        raise LeaseError("the lease of entry %s is held by %s, not %s" % (entry.get("id"), lease.get("holder"), holder))
    if lease.get("state") != HELD:
        raise LeaseError("the lease of entry %s is %s" % (entry.get("id"), lease.get("state")))
    return lease


def _lost_text(lease):
    if lease.get("lost_to"):
        return "the lease was taken over by %s: this run no longer owns the release" % lease["lost_to"]
    return ("the lease ran out at %.0f and the load balancer's watchdog put traffic back on %s"
            % (lease.get("expires_epoch", 0), lease.get("from_color")))


def expired(record, now):
    """The in-progress entries whose lease ran out and that the watchdog has not taken over yet."""
    return [entry for entry in record.get("releases", [])
            if entry.get("outcome") == "in_progress" and (entry.get("lease") or {}).get("state") == HELD
            and now > entry["lease"]["expires_epoch"]]


def mark_lost(entry, now, detail):
    """After the watchdog put traffic back: the lease is lost and the entry failed, with why."""
    lease = entry["lease"]
    lease["state"] = LOST
    lease["lost_epoch"] = now
    entry["outcome"] = "failed"
    entry["finished_at"] = iso_utc(now)
    entry["reason"] = ("controller lost: its lease ran out %.1f s before the watchdog acted (last renewal %.1f s "
                       "earlier); %s" % (now - lease["expires_epoch"], now - lease["renewed_epoch"], detail))
    return entry


def alive(entry, now):
    """True while a lease on the entry is held and has not run out (the entry's run is alive)."""
    lease = entry.get("lease") or {}
    return lease.get("state") == HELD and now <= lease.get("expires_epoch", 0)
