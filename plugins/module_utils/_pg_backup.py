# -*- coding: utf-8 -*-
# Copyright: greenflow.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure logic of the PostgreSQL backup store (no I/O): WAL segment names and LSNs, backup ids,
retention (which backups and WAL segments may go), WAL continuity and the status document.

Used by the role's host script (roles/pg_backup/files/greenflow-pg-backup, which gets a copy of this
file) and by the unit tests. Python 3.6+ standard library only.
"""

from __future__ import absolute_import, division, print_function

import datetime
import re

__metaclass__ = type

SEGMENT_RE = re.compile(r'^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$')
HISTORY_RE = re.compile(r'^([0-9A-F]{8})\.history$')
BACKUP_ID_RE = re.compile(r'^[0-9]{8}T[0-9]{6}Z$')
DEFAULT_SEGMENT_SIZE = 16 * 1024 * 1024


class BackupLogicError(ValueError):
    """Bad input to the backup logic (a clear message, never a traceback for the operator)."""


def parse_lsn(lsn):
    """'16/B374D848' -> integer byte position."""
    match = re.match(r'^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$', str(lsn).strip())
    if not match:
        raise BackupLogicError('not an LSN: %r (expected like 0/3000028)' % (lsn,))
    return (int(match.group(1), 16) << 32) | int(match.group(2), 16)


def format_lsn(position):
    return '%X/%X' % (position >> 32, position & 0xFFFFFFFF)


def backups_ending_by_lsn(backups, target_lsn):
    """The backups a recovery to `target_lsn` can start from: those that were consistent (their
    stop_lsn) at or before the target. Recovery from a later backup cannot go back to the target."""
    target = parse_lsn(target_lsn)
    return [b for b in backups if b.get('stop_lsn') and parse_lsn(b['stop_lsn']) <= target]


def segments_per_xlogid(segment_size=DEFAULT_SEGMENT_SIZE):
    return 0x100000000 // segment_size


def segment_name(timeline, lsn, segment_size=DEFAULT_SEGMENT_SIZE):
    """Name of the WAL segment file holding `lsn` (a string or an int) on `timeline`."""
    position = parse_lsn(lsn) if not isinstance(lsn, int) else lsn
    number = position // segment_size
    per_id = segments_per_xlogid(segment_size)
    return '%08X%08X%08X' % (int(timeline), number // per_id, number % per_id)


def parse_segment(name):
    """'000000020000000100000003' -> (timeline, number) with number the absolute segment number
    (for the default 16 MB segments). None for anything that is not a plain segment name."""
    match = SEGMENT_RE.match(name)
    if not match:
        return None
    tli, log, seg = (int(part, 16) for part in match.groups())
    return tli, log * segments_per_xlogid() + seg


def segment_number(name):
    parsed = parse_segment(name)
    return None if parsed is None else parsed[1]


def wal_file_base(filename):
    """Archive file name -> WAL file name: strips our suffixes (.gz, .gz.enc)."""
    for suffix in ('.gz.enc', '.gz'):
        if filename.endswith(suffix):
            return filename[:-len(suffix)]
    return filename


def new_backup_id(now):
    """A backup id from a UTC datetime: 20240131T020000Z (sorts like time)."""
    return now.strftime('%Y%m%dT%H%M%SZ')


def backup_id_time(backup_id):
    if not BACKUP_ID_RE.match(backup_id or ''):
        raise BackupLogicError('not a backup id: %r (expected like 20240131T020000Z)' % (backup_id,))
    return datetime.datetime.strptime(backup_id, '%Y%m%dT%H%M%SZ').replace(tzinfo=UTC)


class _Utc(datetime.tzinfo):
    def utcoffset(self, dt):
        return datetime.timedelta(0)

    def dst(self, dt):
        return datetime.timedelta(0)

    def tzname(self, dt):
        return 'UTC'


UTC = _Utc()


def parse_backup_label(text):
    """Start LSN, start segment and timeline from a backup_label file."""
    result = {}
    for line in text.splitlines():
        key, _sep, value = line.partition(': ')
        if key == 'START WAL LOCATION':
            match = re.match(r'^([0-9A-F]+/[0-9A-F]+) \(file ([0-9A-F]{24})\)$', value.strip())
            if not match:
                raise BackupLogicError('backup_label: unreadable START WAL LOCATION %r' % value)
            result['start_lsn'], result['start_wal'] = match.groups()
        elif key == 'START TIMELINE':
            result['timeline'] = int(value)
        elif key == 'START TIME':
            result['label_start_time'] = value.strip()
    for needed in ('start_lsn', 'start_wal', 'timeline'):
        if needed not in result:
            raise BackupLogicError('backup_label: %s missing' % needed)
    return result


def manifest_wal_range(manifest):
    """(timeline, start LSN, end LSN) of the last WAL range of a parsed backup_manifest."""
    ranges = manifest.get('WAL-Ranges') or []
    if not ranges:
        raise BackupLogicError('backup_manifest has no WAL-Ranges')
    last = ranges[-1]
    return int(last['Timeline']), last['Start-LSN'], last['End-LSN']


def retention_plan(backups, wal_files, now, retention_days, partial_max_age_hours=24):
    """Decide what the store keeps.

    backups: list of dicts {id, stop_time (aware datetime), verified (bool), start_wal (segment name),
    partial (bool, optional)}. wal_files: archived WAL file names (segments, .history, .partial, .backup
    files, without our .gz/.enc suffixes). now: aware datetime. retention_days: int >= 0.

    Rules (a recovery window of `retention_days`):
      * every complete backup that ended inside the window is kept;
      * the newest verified backup is always kept, however old (and so is the WAL it needs);
      * the newest verified backup that ended before the window starts is kept too: it is what a
        restore to the very start of the window begins from;
      * other complete backups outside the window go; unfinished (partial) backups go once older than
        `partial_max_age_hours` (a running backup is younger than that);
      * WAL segments older than the start segment of the oldest kept backup go; timeline history files
        are kept (tiny, and recovery needs them). Without any kept backup no WAL is deleted.
    Returns {keep: [ids], delete: [ids], delete_wal: [names], keep_reasons: {id: reason},
    oldest_needed_wal: name or None}.
    """
    if int(retention_days) < 0:
        raise BackupLogicError('retention_days must be >= 0 (got %r)' % (retention_days,))
    window_start = now - datetime.timedelta(days=int(retention_days))
    complete = sorted((b for b in backups if not b.get('partial')), key=lambda b: b['stop_time'])
    partial = [b for b in backups if b.get('partial')]
    verified = [b for b in complete if b.get('verified')]
    reasons = {}
    for backup in complete:
        if backup['stop_time'] >= window_start:
            reasons[backup['id']] = 'inside the %d-day window' % int(retention_days)
    if verified:
        reasons.setdefault(verified[-1]['id'], 'newest verified backup')
        before_window = [b for b in verified if b['stop_time'] < window_start]
        if before_window:
            reasons.setdefault(before_window[-1]['id'], 'base of the window start')
    keep = [b for b in complete if b['id'] in reasons]
    delete = [b['id'] for b in complete if b['id'] not in reasons]
    for backup in partial:
        age = now - backup['stop_time']
        if age > datetime.timedelta(hours=partial_max_age_hours):
            delete.append(backup['id'])
    oldest_needed = None
    delete_wal = []
    starts = [segment_number(b['start_wal']) for b in keep if segment_number(b.get('start_wal', '')) is not None]
    if starts:
        cutoff = min(starts)
        oldest_needed = min((b['start_wal'] for b in keep), key=segment_number)
        for name in wal_files:
            base = name.split('.', 1)[0]
            number = segment_number(base)
            if number is None:
                continue  # .history files and anything unknown stay
            if number < cutoff:
                delete_wal.append(name)
    return {
        'keep': [b['id'] for b in keep],
        'delete': sorted(delete),
        'delete_wal': sorted(delete_wal),
        'keep_reasons': reasons,
        'oldest_needed_wal': oldest_needed,
    }


def wal_gaps(wal_files, from_segment=None):
    """Missing segments in the archive: per timeline, every segment between the first one (or
    `from_segment`, when it is on that timeline or the archive reaches past it) and the last one must
    be there. Returns a list of missing segment names (empty: continuous)."""
    by_tli = {}
    for name in wal_files:
        parsed = parse_segment(name.split('.', 1)[0])
        if parsed is not None and '.' not in name:
            by_tli.setdefault(parsed[0], set()).add(parsed[1])
    floor = segment_number(from_segment) if from_segment else None
    missing = []
    per_id = segments_per_xlogid()
    for tli, numbers in sorted(by_tli.items()):
        wanted = [n for n in numbers if floor is None or n >= floor]
        if not wanted:
            continue
        low = min(wanted)
        if floor is not None and from_segment and parse_segment(from_segment)[0] == tli:
            low = min(low, floor)
        for number in range(low, max(wanted) + 1):
            if number not in numbers:
                missing.append('%08X%08X%08X' % (tli, number // per_id, number % per_id))
    return missing


def human_size(size):
    size = float(size)
    for unit in ('B', 'kB', 'MB', 'GB', 'TB'):
        if size < 1024 or unit == 'TB':
            return ('%d %s' % (size, unit)) if unit == 'B' else ('%.1f %s' % (size, unit))
        size /= 1024.0
    return '%d B' % size  # pragma: no cover


def status_document(previous, run):
    """Merge one run into the status document monitoring reads.

    previous: the last document (dict, may be empty). run: {action, result ('ok'|'failed'), started,
    finished (ISO strings), duration_s, backup_id, size_bytes, verify, verify_restore, retention, error}.
    The document keeps `last_success` (time, id, size, duration of the last good backup) across failures.
    """
    doc = dict(previous or {})
    doc['schema'] = 1
    doc['last_run'] = dict(run)
    doc['result'] = run.get('result')
    if run.get('action') == 'backup':
        if run.get('result') == 'ok':
            doc['last_success'] = {
                'finished': run.get('finished'),
                'backup_id': run.get('backup_id'),
                'size_bytes': run.get('size_bytes'),
                'duration_s': run.get('duration_s'),
            }
        doc['last_backup_result'] = run.get('result')
    if run.get('verify_restore') is not None:
        doc['last_verify_restore'] = dict(run['verify_restore'], at=run.get('finished'))
    if run.get('verify') is not None:
        doc['last_verify'] = dict(run['verify'], at=run.get('finished'))
    return doc


def recovery_settings(restore_command, target_time=None, target_lsn=None, target_action='promote'):
    """postgresql.conf lines for a restore: replay archived WAL, optionally stop at a time or LSN."""
    if target_time and target_lsn:
        raise BackupLogicError('give restore_target_time or restore_target_lsn, not both')
    settings = [('restore_command', restore_command), ('recovery_target_timeline', 'latest')]
    if target_time:
        settings.append(('recovery_target_time', str(target_time)))
    if target_lsn:
        settings.append(('recovery_target_lsn', format_lsn(parse_lsn(target_lsn))))
    if target_time or target_lsn:
        settings.append(('recovery_target_inclusive', 'off'))
        settings.append(('recovery_target_action', target_action))
    return ''.join("%s = '%s'\n" % (name, value.replace("'", "''")) for name, value in settings)
