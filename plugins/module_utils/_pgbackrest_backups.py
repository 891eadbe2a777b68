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

Retention (``repoN-retention-full-type=time``, as pgBackRest applies it, per repository): a full backup stays while
it finished within the window; of the full backups that finished before the window, the newest one
stays (it covers the window's start), older ones go; a differential or incremental goes with the full
backup it depends on. The safety rule: an expire that would leave fewer than ``min_verified``
verified backups (default 1) does not run.

Several repositories (repo1, and repo2 when configured): pgBackRest pushes WAL to each, but a backup
run writes to one (``--repo``); the wrapper runs check, backup, verify and the safe expire once per
repository, with that repository's own report (``info --repo=N``) and retention, and the run fails
when any repository failed, naming it.

Python 3.6+ standard library only.
"""

from __future__ import absolute_import, division, print_function

import calendar
import datetime
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


def to_withdraw(entry, verify, annotation=VERIFIED_ANNOTATION):
    """Labels that carry the annotation but that ``pgbackrest verify`` reported and did not find valid
    (damaged since): the wrapper removes their annotation."""
    return [b['label'] for b in _backups(entry)
            if annotation in (b.get('annotation') or {}) and b['label'] in verify['backups']
            and verify['backups'][b['label']] != 'valid']


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


# --- Restore: which backup set serves a target ------------------------------------------------------------

LABEL_RE = re.compile(r'^[0-9]{8}-[0-9]{6}F(_[0-9]{8}-[0-9]{6}[DI])?$')
LSN_RE = re.compile(r'^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$')
PG_TIME_RE = re.compile(r'^\s*(\d{4})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2}):(\d{2})(\.\d+)?\s*'
                        r'(Z|[+-]\d{2}(?::?\d{2})?)\s*$')


def parse_lsn(text):
    """'16/B374D848' -> integer position; raises PgBackRestReportError on anything else."""
    match = LSN_RE.match(str(text or '').strip())
    if not match:
        raise PgBackRestReportError('not an LSN (like 0/3000028): %r' % (text,))
    return (int(match.group(1), 16) << 32) + int(match.group(2), 16)


def parse_pg_time(text):
    """A PostgreSQL timestamp with its offset ('2026-11-22 04:37:26.5+00', '...T...Z', '+05:30') ->
    epoch seconds (float). A time without an offset is refused: it would depend on the server's zone."""
    match = PG_TIME_RE.match(str(text or ''))
    if not match:
        raise PgBackRestReportError('restore_target_time must look like 2026-11-22 04:37:26+00 (with the offset), '
                                    'got %r' % (text,))
    year, month, day, hour, minute, second = (int(match.group(i)) for i in range(1, 7))
    fraction = float(match.group(7) or 0)
    zone = match.group(8)
    offset = 0
    if zone != 'Z':
        digits = zone[1:].replace(':', '')
        offset = int(digits[:2]) * 3600 + (int(digits[2:4]) * 60 if len(digits) > 2 else 0)
        offset = -offset if zone[0] == '-' else offset
    try:
        datetime.datetime(year, month, day, hour, minute, second)
        epoch = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
    except ValueError as err:
        raise PgBackRestReportError('restore_target_time %r: %s' % (text, err))
    return epoch + fraction - offset


def restore_set(info, stanza, label='latest', target_time=None, target_lsn=None, allow_unverified=False,
                annotation=VERIFIED_ANNOTATION):
    """The backup set a restore starts from. Returns {'set': label, 'type': full|diff|incr, 'stop': epoch,
    'stop_lsn': lsn, 'verified': bool, 'why': text}; raises PgBackRestReportError when none can serve.

    label: 'latest' or a backup label (20261122-043356F, 20261122-043356F_20261123-010000D).
    target_time (a PostgreSQL timestamp with offset) / target_lsn (0/3000028), at most one: the newest
    verified backup that was consistent before the target (its stop time before the time, its stop LSN
    at or before the LSN): recovery only goes forward, a later backup cannot serve.
    A named backup must exist and serve the target; it must be verified unless allow_unverified."""
    if target_time and target_lsn:
        raise PgBackRestReportError('give restore_target_time or restore_target_lsn, not both')
    label = label or 'latest'
    if label != 'latest' and not LABEL_RE.match(str(label)):
        raise PgBackRestReportError('restore_backup is latest or a pgBackRest backup label like 20261122-043356F '
                                    'or 20261122-043356F_20261123-010000D, got %r' % (label,))
    when = parse_pg_time(target_time) if target_time else None
    lsn = parse_lsn(target_lsn) if target_lsn else None
    entry = stanza_info(info, stanza)
    backups = _backups(entry)
    checks = backup_checks(entry, annotation)

    def serves(backup):
        if when is not None:
            return _stop_time(backup) < when
        if lsn is not None:
            return parse_lsn((backup.get('lsn') or {}).get('stop')) <= lsn
        return True

    def result(backup, why):
        return {'set': backup['label'], 'type': backup['type'], 'stop': _stop_time(backup),
                'stop_lsn': (backup.get('lsn') or {}).get('stop'), 'verified': checks[backup['label']]['verified'],
                'why': why}

    target = ('time %s' % target_time if when is not None else
              'LSN %s' % target_lsn if lsn is not None else 'the end of the archive')
    if label != 'latest':
        named = [b for b in backups if b['label'] == label]
        if not named:
            raise PgBackRestReportError('backup %s is not in the repository (backups: %s)'
                                        % (label, ', '.join(b['label'] for b in backups) or 'none'))
        backup = named[0]
        if not checks[label]['verified'] and not allow_unverified:
            raise PgBackRestReportError('backup %s is not verified (%s); restore_allow_unverified=true to use it '
                                        'anyway' % (label, '; '.join(checks[label]['reasons'])))
        if not serves(backup):
            raise PgBackRestReportError('backup %s was consistent only after %s: recovery cannot go back to it'
                                        % (label, target))
        return result(backup, 'named backup %s, replayed to %s' % (label, target))
    usable = [b for b in backups if serves(b) and (checks[b['label']]['verified'] or allow_unverified)]
    if not usable:
        raise PgBackRestReportError('no %sbackup was consistent before %s (backups: %s); nothing was changed'
                                    % ('' if allow_unverified else 'verified ', target,
                                       ', '.join('%s%s' % (b['label'], '' if checks[b['label']]['verified']
                                                           else ' (not verified)') for b in backups) or 'none'))
    backup = max(usable, key=_stop_time)
    return result(backup, 'newest %sbackup consistent before %s' % ('' if allow_unverified else 'verified ', target))


# --- WAL archiving health (pg_stat_archiver on the primary) -----------------------------------------------

def archiver_health(row):
    """A pg_stat_archiver row (with the epoch columns last_archived_time, last_failed_time, now and the
    settings archive_mode) -> {'ok': bool, 'reasons': [...], 'failed_count': n, 'archived_count': n,
    'last_archived_time': epoch|None, 'last_failed_time': epoch|None, 'last_failed_wal': name|None}.

    Not ok when the row could not be read, archive_mode is off, or the newest attempt failed (the last
    failure is newer than the last success): PostgreSQL keeps the WAL and retries, but nothing after
    the last archived segment can be restored until it works again."""
    if not isinstance(row, dict) or row.get('error'):
        why = row.get('error') if isinstance(row, dict) else 'no answer'
        return {'ok': False, 'reasons': ['pg_stat_archiver could not be read on the primary: %s' % why],
                'failed_count': None, 'archived_count': None, 'last_archived_time': None,
                'last_failed_time': None, 'last_failed_wal': None}

    def number(key):
        value = row.get(key)
        return None if value in (None, '') else float(value)

    health = {'failed_count': int(row.get('failed_count') or 0), 'archived_count': int(row.get('archived_count') or 0),
              'last_archived_time': number('last_archived_time'), 'last_failed_time': number('last_failed_time'),
              'last_archived_wal': row.get('last_archived_wal'), 'last_failed_wal': row.get('last_failed_wal')}
    reasons = []
    if str(row.get('archive_mode', 'on')) not in ('on', 'always'):
        reasons.append('archive_mode is %s on the primary: no WAL is archived' % row.get('archive_mode'))
    failed, archived = health['last_failed_time'], health['last_archived_time']
    if failed is not None and (archived is None or failed > archived):
        reasons.append('WAL archiving fails on the primary: the newest attempt (%s) failed after the last success '
                       '(%s); failed_count %d' % (health['last_failed_wal'], health['last_archived_wal'] or 'none',
                                                  health['failed_count']))
    health.update(ok=not reasons, reasons=reasons)
    return health


# --- Several repositories (repo1 and an optional repo2) ----------------------------------------------------

REPO_OPTION_RE = re.compile(r'^repo([1-9][0-9]{0,2})-')
# What the status file keeps per repository (the top-level keys of the same names are repo1's).
REPO_STATUS_KEYS = ('check', 'backup', 'verify', 'expire', 'verified', 'newest_verified', 'last_backup')
# pgbackrest info's per-repository status codes that are not a problem: ok, and no valid backup yet.
REPO_STATUS_FINE = (0, 2)


def configured_repos(options):
    """Repository keys configured by the global options of pgbackrest.conf (a list of (option, value)
    pairs or a dict): [1] or [1, 2], ascending. pgBackRest pushes WAL to each of them; a backup run
    writes to one (``--repo``)."""
    items = options.items() if isinstance(options, dict) else options
    keys = set()
    for option, _value in items or []:
        match = REPO_OPTION_RE.match(str(option))
        if match:
            keys.add(int(match.group(1)))
    return sorted(keys)


def repo_retention_days(options, repo, default=None):
    """Time retention (days) of repository ``repo`` from the global options of pgbackrest.conf
    (``repoN-retention-full`` with ``repoN-retention-full-type=time``, as _pgbackrest_config writes it);
    ``default`` when the option is missing. A count-based retention is refused: the safe expire plans
    by time."""
    options = dict(options.items() if isinstance(options, dict) else options or [])
    kind = options.get('repo%d-retention-full-type' % repo, 'time')
    if kind != 'time':
        raise PgBackRestReportError('repo%d-retention-full-type is %s: greenflow-pgbackrest expires by time only'
                                    % (repo, kind))
    value = options.get('repo%d-retention-full' % repo, default)
    return _at_least_one(value, 'repo%d-retention-full' % repo, ' (0 would remove every backup)')


def limit_to_repo(options, repo):
    """The global options without those of the other repositories: a configuration in which ``pgbackrest
    check`` proves archiving into ``repo`` alone (pgBackRest's check covers every configured repository,
    and takes no --repo)."""
    kept = []
    for option, value in (options.items() if isinstance(options, dict) else options or []):
        match = REPO_OPTION_RE.match(str(option))
        if match and int(match.group(1)) != repo:
            continue
        kept.append((option, value))
    return kept


def repo_problem(entry, repo):
    """The problem pgbackrest info reports for repository ``repo`` in a stanza entry (its ``repo`` list of
    {key, status: {code, message}}), or None. An unreadable repository still gives a report (code 99,
    exit 0), so this is how the wrapper tells it from an empty one."""
    for item in entry.get('repo') or []:
        if isinstance(item, dict) and item.get('key') == repo:
            state = item.get('status') or {}
            if state.get('code') in REPO_STATUS_FINE:
                return None
            return 'pgbackrest info reports repo%d as %s (code %s)' % (repo, state.get('message'), state.get('code'))
    return None


def run_outcome(repo_errors):
    """{repo key: error text or None} of one run -> (result, error, failed repo keys): the run fails when
    any repository failed, and the error names each failed repository (``repo2: ...``)."""
    failed = sorted(key for key, error in repo_errors.items() if error)
    if not failed:
        return 'ok', None, []
    return 'failed', '; '.join('repo%d: %s' % (key, repo_errors[key]) for key in failed), failed


# --- Metrics for node-exporter's textfile collector -------------------------------------------------------

METRICS = (
    ('greenflow_backup_last_run_ok', 'gauge', '1 when the last run of greenflow-pgbackrest succeeded'),
    ('greenflow_backup_last_run_timestamp_seconds', 'gauge', 'When the last run finished'),
    ('greenflow_backup_last_success_timestamp_seconds', 'gauge', 'When the last verified backup run finished'),
    ('greenflow_backup_last_backup_ok', 'gauge', '1 when the last backup run succeeded (backup, check, verify)'),
    ('greenflow_backup_last_verified_backup_timestamp_seconds', 'gauge',
     'Stop time of the newest verified backup (its age is the data at risk without WAL)'),
    ('greenflow_backup_verified_backups', 'gauge', 'Backups that count as verified'),
    ('greenflow_backup_archive_check_ok', 'gauge', '1 when the last pgbackrest check archived a WAL segment'),
    ('greenflow_backup_archiver_ok', 'gauge', '1 when pg_stat_archiver on the primary showed working archiving'),
    ('greenflow_backup_archiver_failed_count', 'counter', 'pg_stat_archiver.failed_count on the primary'),
    ('greenflow_backup_archiver_last_archived_timestamp_seconds', 'gauge', 'pg_stat_archiver.last_archived_time'),
    ('greenflow_backup_restore_test_ok', 'gauge', '1 when the last restore test succeeded'),
    ('greenflow_backup_restore_test_timestamp_seconds', 'gauge', 'When the last restore test finished'),
    ('greenflow_backup_restore_test_duration_seconds', 'gauge', 'How long the last restore test took'),
)

REPO_METRICS = (
    ('greenflow_backup_repo_last_run_ok', 'gauge',
     '1 when the last run of greenflow-pgbackrest succeeded for this repository'),
    ('greenflow_backup_repo_last_backup_ok', 'gauge',
     '1 when the last backup into this repository succeeded (check, backup, verify)'),
    ('greenflow_backup_repo_last_verified_backup_timestamp_seconds', 'gauge',
     'Stop time of the newest verified backup in this repository'),
    ('greenflow_backup_repo_verified_backups', 'gauge', 'Backups in this repository that count as verified'),
    ('greenflow_backup_repo_archive_check_ok', 'gauge',
     '1 when the last pgbackrest check archived a WAL segment into this repository'),
)


def prometheus_text(status):
    """The status document of greenflow-pgbackrest -> text for node-exporter's textfile collector. A
    metric whose value is unknown is left out (an alert on absent() sees it)."""
    stanza = str(status.get('stanza') or 'main').replace('\\', '\\\\').replace('"', '\\"')
    archiver = status.get('archiver') or {}
    restore = status.get('restore_test') or {}
    last_backup = status.get('last_backup') or {}
    newest_verified = status.get('newest_verified') or {}

    def flag(value):
        return None if value is None else (1 if value else 0)

    values = {
        'greenflow_backup_last_run_ok': flag(status.get('result') == 'ok') if status.get('result') else None,
        'greenflow_backup_last_run_timestamp_seconds': status.get('finished_epoch'),
        'greenflow_backup_last_success_timestamp_seconds': (status.get('last_success') or {}).get('finished_epoch'),
        'greenflow_backup_last_backup_ok': flag(last_backup.get('result') == 'ok') if last_backup.get('result') else None,
        'greenflow_backup_last_verified_backup_timestamp_seconds': newest_verified.get('stop'),
        'greenflow_backup_verified_backups': len(status['verified']) if isinstance(status.get('verified'), list) else None,
        'greenflow_backup_archive_check_ok': (flag((status.get('check') or {}).get('exit') == 0)
                                              if status.get('check') else None),
        'greenflow_backup_archiver_ok': flag(archiver.get('ok')) if archiver else None,
        'greenflow_backup_archiver_failed_count': archiver.get('failed_count'),
        'greenflow_backup_archiver_last_archived_timestamp_seconds': archiver.get('last_archived_time'),
        'greenflow_backup_restore_test_ok': flag(restore.get('result') == 'ok') if restore.get('result') else None,
        'greenflow_backup_restore_test_timestamp_seconds': restore.get('finished_epoch'),
        'greenflow_backup_restore_test_duration_seconds': restore.get('duration_s'),
    }

    def number(value):
        return ('%d' % value) if float(value) == int(value) else ('%.3f' % float(value))

    lines = []
    for name, kind, text in METRICS:
        value = values.get(name)
        if value is None:
            continue
        lines += ['# HELP %s %s' % (name, text), '# TYPE %s %s' % (name, kind),
                  '%s{stanza="%s"} %s' % (name, stanza, number(value))]
    # Per repository (label repo="1", "2"): the metrics above stay as they were (repo1's backups, the
    # whole run); these add every configured repository, repo1 included, for the same queries on all.
    repos = status.get('repos') if isinstance(status.get('repos'), dict) else {}
    samples = dict((name, []) for name, _kind, _text in REPO_METRICS)
    for key in sorted(repos, key=lambda k: int(k) if str(k).isdigit() else 0):
        repo = repos[key] or {}
        last = repo.get('last_backup') or {}
        newest = repo.get('newest_verified') or {}
        repo_values = {
            'greenflow_backup_repo_last_run_ok': flag(repo.get('result') == 'ok') if repo.get('result') else None,
            'greenflow_backup_repo_last_backup_ok': flag(last.get('result') == 'ok') if last.get('result') else None,
            'greenflow_backup_repo_last_verified_backup_timestamp_seconds': newest.get('stop'),
            'greenflow_backup_repo_verified_backups': (len(repo['verified']) if isinstance(repo.get('verified'), list)
                                                       else None),
            'greenflow_backup_repo_archive_check_ok': (flag((repo.get('check') or {}).get('exit') == 0)
                                                       if repo.get('check') else None),
        }
        for name, value in repo_values.items():
            if value is not None:
                samples[name].append('%s{stanza="%s",repo="%s"} %s' % (name, stanza, key, number(value)))
    for name, kind, text in REPO_METRICS:
        if samples[name]:
            lines += ['# HELP %s %s' % (name, text), '# TYPE %s %s' % (name, kind)] + samples[name]
    return '\n'.join(lines) + '\n'
