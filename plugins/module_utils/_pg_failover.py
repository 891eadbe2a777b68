# -*- coding: utf-8 -*-
# Copyright: greenflow.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure logic of a fenced PostgreSQL failover (no I/O): LSN arithmetic, reading pg_controldata and
pg_waldump output, and the decision whether the replica may be promoted.

Used by the filter plugins of plugins/filter/ (called from playbooks/failover.yml) and by the unit
tests. Python 3.6+ standard library only.
"""

from __future__ import absolute_import, division, print_function

import re

__metaclass__ = type

LSN_RE = re.compile(r'^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$')
WALDUMP_AT_RE = re.compile(r'\bat ([0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8})\b')
WALDUMP_MISSING_RE = re.compile(r'could not find file "(?:[^"]*/)?([0-9A-F]{24})"')
DEFAULT_SEGMENT_SIZE = 16 * 1024 * 1024
# What failover.yml allows by default between the old primary's last WAL position and what the replica
# received: 1 MiB, the same order as Patroni's maximum_lag_on_failover default.
DEFAULT_MAX_LAG_BYTES = 1024 * 1024


class FailoverLogicError(ValueError):
    """Bad input to the failover logic (a clear message, never a traceback for the operator)."""


def parse_lsn(lsn):
    """'16/B374D848' -> integer byte position."""
    match = LSN_RE.match(str(lsn).strip())
    if not match:
        raise FailoverLogicError('not an LSN: %r (expected like 0/3000028)' % (lsn,))
    return (int(match.group(1), 16) << 32) | int(match.group(2), 16)


def format_lsn(position):
    """Integer byte position -> '16/B374D848'."""
    if position < 0:
        raise FailoverLogicError('an LSN is never negative: %r' % (position,))
    return '%X/%X' % (position >> 32, position & 0xFFFFFFFF)


def lsn_diff(first, second):
    """Bytes of WAL from `second` to `first` (negative when `first` is behind), as pg_wal_lsn_diff()."""
    return parse_lsn(first) - parse_lsn(second)


def newest_lsn(lsns):
    """The furthest of several LSNs (empty and None values skipped); None when there is none."""
    known = [str(lsn).strip() for lsn in lsns if lsn is not None and str(lsn).strip()]
    if not known:
        return None
    return format_lsn(max(parse_lsn(lsn) for lsn in known))


def parse_controldata(text):
    """pg_controldata's output -> the fields failover needs (strings; missing fields are None).

    Keys: state, checkpoint_lsn, redo_lsn, timeline, segment_size (int)."""
    fields = {}
    for line in (text or '').splitlines():
        name, sep, value = line.partition(':')
        if sep:
            fields[name.strip()] = value.strip()
    segment_size = fields.get('Bytes per WAL segment')
    timeline = fields.get("Latest checkpoint's TimeLineID")
    return {
        'state': fields.get('Database cluster state'),
        'checkpoint_lsn': fields.get('Latest checkpoint location'),
        'redo_lsn': fields.get("Latest checkpoint's REDO location"),
        'timeline': int(timeline) if timeline and timeline.isdigit() else None,
        'segment_size': int(segment_size) if segment_size and segment_size.isdigit() else DEFAULT_SEGMENT_SIZE,
    }


def segment_start(name, segment_size=DEFAULT_SEGMENT_SIZE):
    """WAL segment file name -> the LSN where that segment starts."""
    if not re.match(r'^[0-9A-F]{24}$', name or ''):
        raise FailoverLogicError('not a WAL segment name: %r' % (name,))
    log, seg = int(name[8:16], 16), int(name[16:24], 16)
    return format_lsn((log << 32) + seg * int(segment_size))


def waldump_end(output, segment_size=DEFAULT_SEGMENT_SIZE):
    """The end of the valid WAL from `pg_waldump -q` output (it reads from the last checkpoint's REDO
    until the first record it cannot read, and names where that was). WAL that ends exactly at a
    segment boundary makes pg_waldump look for the next segment file, which does not exist: the end is
    where that segment would start. None when the output tells neither."""
    text = output or ''
    found = WALDUMP_AT_RE.findall(text)
    if found:
        return format_lsn(parse_lsn(found[-1]))
    missing = WALDUMP_MISSING_RE.findall(text)
    if missing:
        return segment_start(missing[-1], segment_size)
    return None


def _as_int(value, name):
    try:
        return int(value)
    except (TypeError, ValueError):
        raise FailoverLogicError('%s must be a whole number of bytes (got %r)' % (name, value))


def failover_gate(old_primary, new_primary, fenced, fence_error=None, old_primary_is_dead=False,
                  old_primary_lsn=None, replica_lsns=(), max_lag_bytes=DEFAULT_MAX_LAG_BYTES,
                  stage='promotion'):
    """May `new_primary` be promoted? Returns a dict:

    allowed (bool), refusals (list of messages, empty when allowed), lag_bytes (int or None: WAL of
    the old primary that the replica never received), old_primary_lsn, replica_lsn, notes (list).

    fenced: the old primary is known to be down and cannot come back as a primary (unit stopped and
    masked, standby.signal written). None at stage 'before fence' (not fenced yet: only the lag is
    judged, with the LSN the running primary reported). The old primary's LSN and the replica's are
    LSN strings or None (unknown). A lag above max_lag_bytes refuses the promotion; an unknown lag
    refuses it unless the operator stated that the old primary is dead.
    """
    max_lag = _as_int(max_lag_bytes, 'failover_max_lag_bytes')
    if max_lag < 0:
        raise FailoverLogicError('failover_max_lag_bytes must be 0 or more (got %d)' % max_lag)
    refusals = []
    notes = []
    replica_lsn = newest_lsn(replica_lsns)
    old_lsn = newest_lsn([old_primary_lsn])
    lag = None
    if old_lsn is not None and replica_lsn is not None:
        lag = max(0, lsn_diff(old_lsn, replica_lsn))

    if stage != 'before fence' and not fenced:
        why = ': %s' % fence_error if fence_error else ''
        if old_primary_is_dead:
            notes.append('%s was not fenced%s; promoting anyway because failover_old_primary_is_dead=true '
                         '(make sure it never starts again as a primary)' % (old_primary, why))
        else:
            refusals.append(
                '%s (the old primary) could not be fenced%s. If it is only cut off from this controller it may '
                'still take writes, and promoting %s would make two primaries. %s was NOT promoted. Make sure '
                'the old primary is down for good (power it off or cut it off the network), then run again '
                'with -e failover_old_primary_is_dead=true' % (old_primary, why, new_primary, new_primary))

    if lag is not None and lag > max_lag:
        refusals.append(
            '%s lags %d bytes of WAL behind the old primary %s (old primary at %s, replica at %s), more '
            'than failover_max_lag_bytes=%d: promoting it would lose them. %s was NOT promoted. To accept '
            'the loss, run again with -e failover_max_lag_bytes=%d or more'
            % (new_primary, lag, old_primary, old_lsn, replica_lsn, max_lag, new_primary, lag))
    elif lag is None and stage != 'before fence':
        if old_primary_is_dead:
            notes.append('the lag is unknown (the WAL position of %s could not be read): '
                         'failover_max_lag_bytes could not be checked' % old_primary)
        else:
            refusals.append(
                'the lag of %s is unknown (the WAL position of %s could not be read), so '
                'failover_max_lag_bytes=%d cannot be checked. %s was NOT promoted. Run again with '
                '-e failover_old_primary_is_dead=true to promote without knowing what is lost'
                % (new_primary, old_primary, max_lag, new_primary))

    return {
        'allowed': not refusals,
        'refusals': refusals,
        'notes': notes,
        'lag_bytes': lag,
        'old_primary_lsn': old_lsn,
        'replica_lsn': replica_lsn,
        'max_lag_bytes': max_lag,
        'stage': stage,
    }
