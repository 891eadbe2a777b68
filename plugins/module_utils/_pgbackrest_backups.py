# -*- coding: utf-8 -*-
# Copyright: greenflow.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure logic over pgBackRest's own reports (no I/O): which backups count as verified, and whether an
expire may run.

Inputs are what pgBackRest prints: ``pgbackrest info --output=json`` (a list of stanzas, each with
``backup`` entries: label, type full/diff/incr, prior, reference, timestamp start/stop, archive
start/stop, error, annotation; and ``archive`` entries: id, min, max, database) and
``pgbackrest verify --output=text`` (a ``backup: <label>, status: <status>`` line per backup).

A backup counts as verified when all of these hold:
- it carries the annotation ``greenflow-verified`` (set by the greenflow wrapper, with
  ``pgbackrest annotate``, only after ``pgbackrest verify`` reported it valid and its WAL archived);
- pgBackRest recorded no error for it (``error`` is not true);
- the last WAL segment it needs (``archive.stop``) is inside the stanza's archive (``min``..``max`` of
  the archive id of its database): the backup can be restored to a consistent state;
- for a differential or incremental backup, every backup it references counts as verified too.

Retention (``repo1-retention-full-type=time``, as pgBackRest applies it): a full backup stays while
it finished within the window; of the full backups that finished before the window, the newest one
stays (it covers the window's start), older ones go; a differential or incremental goes with the full
backup it depends on. The safety rule: an expire that would leave fewer than ``min_verified``
verified backups (default 1) does not run.

Python 3.6+ standard library only.
"""

from __future__ import absolute_import, division, print_function

import re

__metaclass__ = type

VERIFIED_ANNOTATION = 'greenflow-verified'
SEGMENT_RE = re.compile(r'^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$')
VERIFY_BACKUP_RE = re.compile(r'^\s*backup:\s*(\S+),\s*status:\s*([A-Za-z ]+?)\s*(?:,|$)')
VERIFY_ARCHIVE_RE = re.compile(r'^\s*archiveId:\s*(\S+),\s*total WAL checked:\s*(\d+),\s*total valid WAL:\s*(\d+)')
DAY = 86400


class PgBackRestReportError(ValueError):
    """A pgBackRest report that cannot be read (or a stanza missing from it)."""


def _segment_key(name):
    """WAL segment name -> (timeline, log, segment) for ordering; raises on a malformed name."""
    match = SEGMENT_RE.match(str(name or ''))
    if not match:
        raise PgBackRestReportError('not a WAL segment name: %r' % (name,))
    return tuple(int(part, 16) for part in match.groups())


def _position(name):
    """Segment name -> position on the WAL stream, timeline aside (log, segment)."""
    return _segment_key(name)[1:]


def stanza_info(info, stanza):
    """The entry of ``stanza`` in a parsed ``pgbackrest info --output=json`` (a list of stanzas)."""
    if not isinstance(info, list):
        raise PgBackRestReportError('pgbackrest info --output=json must be a list of stanzas')
    for entry in info:
        if isinstance(entry, dict) and entry.get('name') == stanza:
            return entry
    raise PgBackRestReportError('stanza %r is not in the pgbackrest info report (stanzas: %s)'
                                % (stanza, ', '.join(sorted(str(e.get('name')) for e in info if isinstance(e, dict)))
                                   or 'none'))


def _backups(entry):
    backups = entry.get('backup') or []
    for backup in backups:
        kind = backup.get('type') if isinstance(backup, dict) else None
        if not isinstance(backup, dict) or not backup.get('label') or kind not in ('full', 'diff', 'incr'):
            raise PgBackRestReportError('a backup entry without a label or with an unknown type: %r' % (backup,))
    return backups


def _archive_ranges(entry):
    """{(db id, repo key): (min position, max position)} of the stanza's WAL archive."""
    ranges = {}
    for archive in entry.get('archive') or []:
        database = archive.get('database') or {}
        if not archive.get('min') or not archive.get('max'):
            continue
        ranges[(database.get('id'), database.get('repo-key'))] = (_segment_key(archive['min']),
                                                                  _segment_key(archive['max']))
    return ranges


def parse_verify_text(text):
    """``pgbackrest verify --output=text`` -> {'status': str|None, 'backups': {label: status},
    'archives': {archive id: {'checked': n, 'valid': n}}}."""
    result = {'status': None, 'backups': {}, 'archives': {}}
    for line in (text or '').splitlines():
        match = VERIFY_BACKUP_RE.match(line)
        if match:
            result['backups'][match.group(1)] = match.group(2).strip()
            continue
        match = VERIFY_ARCHIVE_RE.match(line)
        if match:
            result['archives'][match.group(1)] = {'checked': int(match.group(2)), 'valid': int(match.group(3))}
            continue
        stripped = line.strip()
        if stripped.startswith('status:') and result['status'] is None:
            result['status'] = stripped.split(':', 1)[1].strip()
    return result


def wal_archived(entry, backup):
    """True when the last WAL segment ``backup`` needs lies in the stanza's archive."""
    archive = backup.get('archive') or {}
    if not archive.get('start') or not archive.get('stop'):
        return False
    database = backup.get('database') or {}
    bounds = _archive_ranges(entry).get((database.get('id'), database.get('repo-key')))
    if not bounds:
        return False
    low, high = bounds
    start, stop = _segment_key(archive['start']), _segment_key(archive['stop'])
    # The archive may have moved to a later timeline since; positions must lie in range, and the
    # backup's timeline may not be newer than the archive's newest.
    return (low[1:] <= start[1:] and stop[1:] <= high[1:] and stop[0] <= high[0])


def backup_checks(entry, annotation=VERIFIED_ANNOTATION):
    """{label: {'verified': bool, 'reasons': [why not, ...]}} for every backup of the stanza."""
    backups = _backups(entry)
    by_label = dict((b['label'], b) for b in backups)
    result = {}
    for backup in backups:
        reasons = []
        if annotation not in (backup.get('annotation') or {}):
            reasons.append('not verified yet (no %s annotation)' % annotation)
        if backup.get('error') is True:
            reasons.append('pgBackRest found errors in it (page checksums)')
        if not wal_archived(entry, backup):
            reasons.append('the WAL it needs (%s..%s) is not all in the archive'
                           % ((backup.get('archive') or {}).get('start'), (backup.get('archive') or {}).get('stop')))
        result[backup['label']] = {'verified': not reasons, 'reasons': reasons}
    # A diff/incr is only as good as the backups it is built on.
    for backup in backups:
        for ref in backup.get('reference') or []:
            if ref not in by_label:
                result[backup['label']]['reasons'].append('it depends on %s, which is gone' % ref)
                result[backup['label']]['verified'] = False
            elif not result[ref]['verified'] and ref != backup['label']:
                result[backup['label']]['reasons'].append('it depends on %s, which is not verified' % ref)
                result[backup['label']]['verified'] = False
    return result


def verified_labels(entry, annotation=VERIFIED_ANNOTATION):
    """Labels of the verified backups, oldest first (the order of pgBackRest's report)."""
    checks = backup_checks(entry, annotation)
    return [b['label'] for b in _backups(entry) if checks[b['label']]['verified']]


def to_annotate(entry, verify, annotation=VERIFIED_ANNOTATION):
    """Labels ``pgbackrest verify`` found valid that are not annotated yet and whose WAL is archived
    (the wrapper annotates these). ``verify`` is parse_verify_text's result."""
    labels = []
    for backup in _backups(entry):
        if annotation in (backup.get('annotation') or {}):
            continue
        if verify['backups'].get(backup['label']) != 'valid':
            continue
        if backup.get('error') is True or not wal_archived(entry, backup):
            continue
        labels.append(backup['label'])
    return labels


def _stop_time(backup):
    try:
        return int((backup.get('timestamp') or {})['stop'])
    except (KeyError, TypeError, ValueError):
        raise PgBackRestReportError('backup %s has no stop timestamp' % backup.get('label'))


def _at_least_one(value, name, why=''):
    """``value`` as a whole number >= 1, else PgBackRestReportError naming ``name``."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise PgBackRestReportError('%s must be a whole number, got %r' % (name, value))
    if number < 1:
        raise PgBackRestReportError('%s must be at least 1%s' % (name, why))
    return number


def expire_candidates(entry, retention_days, now):
    """Labels time-based retention of full backups would remove (with their dependants), given the
    time ``now`` (epoch seconds)."""
    days = _at_least_one(retention_days, 'retention_days', ' (0 would remove every backup)')
    backups = _backups(entry)
    fulls = [b for b in backups if b['type'] == 'full']
    cutoff = int(now) - days * DAY
    old = sorted((b for b in fulls if _stop_time(b) < cutoff), key=_stop_time)
    # The newest full backup from before the window stays: it covers the window's start.
    gone_fulls = set(b['label'] for b in old[:-1])
    removed = []
    for backup in backups:
        roots = [backup['label']] + list(backup.get('reference') or [])
        if any(label in gone_fulls for label in roots):
            removed.append(backup['label'])
    return removed


def expire_plan(info, stanza, retention_days, now, min_verified=1, annotation=VERIFIED_ANNOTATION):
    """Decide whether the expire may run. Returns a dict:
    allowed (bool), reason (str), remove (labels retention would remove), keep (labels left),
    verified_before / verified_after (verified labels now and after the expire)."""
    min_verified = _at_least_one(min_verified, 'min_verified')
    entry = stanza_info(info, stanza)
    backups = _backups(entry)
    remove = expire_candidates(entry, retention_days, now)
    verified = verified_labels(entry, annotation)
    keep = [b['label'] for b in backups if b['label'] not in remove]
    verified_after = [label for label in verified if label not in remove]
    plan = {'stanza': stanza, 'remove': remove, 'keep': keep, 'verified_before': verified,
            'verified_after': verified_after, 'min_verified': min_verified}
    if not remove:
        plan.update(allowed=True, reason='nothing to expire')
    elif len(verified_after) < min_verified:
        plan.update(allowed=False, reason=(
            'expire refused: it would remove %s and leave %d verified backup(s), fewer than %d; verify the newer '
            'backups first (nothing was removed)' % (', '.join(remove), len(verified_after), min_verified)))
    else:
        plan.update(allowed=True, reason='expire removes %s; %d verified backup(s) stay (newest %s)'
                    % (', '.join(remove), len(verified_after), verified_after[-1]))
    return plan
