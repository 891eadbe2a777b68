# greenflow-pgbackrest — installed by greenflow.platform.pgbackrest on the repository host. pgBackRest
# does the work; this wrapper adds what pgBackRest leaves to the operator:
#
#   backup --type full|diff|incr   pgbackrest check, backup, then verify (below), then the safe expire
#   verify                         pgbackrest check (archiving works now), then pgbackrest verify;
#                                  every backup it finds valid whose WAL is archived
#                                  gets the annotation greenflow-verified (pgbackrest annotate)
#   expire [--dry-run]             time retention, but never down to fewer than --min-verified
#                                  verified backups (expire --set per full backup that may go)
#   status                         the status file (JSON)
#
# Every run writes the status file (result, action, the newest backup, verified backups, the expire
# decision) for monitoring. Exit status non-zero on any failure, with a message naming it. The logic
# (what counts as verified, what may expire) is _pgbackrest_backups.py next to this file, the
# collection's module_utils, unit tested there. Runs as the repository's owner (postgres).
import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time

LIB_DIR = os.environ.get('GREENFLOW_PGBACKREST_LIB', '/usr/local/lib/greenflow-pgbackrest')
sys.path.insert(0, LIB_DIR)
import _pgbackrest_backups as pbb  # noqa: E402


class Failure(Exception):
    pass


def log(message):
    sys.stderr.write('greenflow-pgbackrest: %s\n' % message)
    sys.stderr.flush()


def now_iso():
    return datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')


class PgBackRest:
    def __init__(self, args):
        self.base = [args.pgbackrest, '--config=%s' % args.config, '--stanza=%s' % args.stanza]
        self.timeout = args.timeout

    def run(self, *argv, **kwargs):
        cmd = self.base + list(argv)
        try:
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                                  timeout=kwargs.get('timeout', self.timeout), check=False)
        except subprocess.TimeoutExpired:
            raise Failure('%s timed out after %s s' % (' '.join(cmd[3:]), kwargs.get('timeout', self.timeout)))
        if proc.returncode != 0 and not kwargs.get('may_fail'):
            raise Failure('pgbackrest %s failed (exit %d): %s' % (' '.join(argv), proc.returncode,
                                                                  (proc.stderr or proc.stdout).strip()[-2000:]))
        return proc

    def info(self):
        proc = self.run('--output=json', 'info')
        try:
            return json.loads(proc.stdout)
        except ValueError:
            raise Failure('pgbackrest info printed no JSON: %r' % proc.stdout[:200])


def do_check(pgbr, status):
    """pgbackrest check: the database answers, and a WAL switch reaches the repository now. A stopped
    or failing archive_command makes backup and verify fail here (a backup without the WAL after it
    cannot be restored to any point in time)."""
    started = time.time()
    proc = pgbr.run('check', may_fail=True)
    status['check'] = {'finished': now_iso(), 'exit': proc.returncode, 'duration_s': round(time.time() - started, 1)}
    if proc.returncode != 0:
        status['check']['error'] = (proc.stderr or proc.stdout).strip()[-1000:]
        raise Failure('WAL archiving does not work (pgbackrest check failed): %s' % status['check']['error'])


def do_verify(pgbr, args, status, check=True):
    if check:
        do_check(pgbr, status)
    proc = pgbr.run('verify', '--output=text', '--verbose', may_fail=True)
    verify = pbb.parse_verify_text(proc.stdout)
    status['verify'] = {'finished': now_iso(), 'exit': proc.returncode, 'status': verify['status'],
                        'backups': verify['backups'], 'archives': verify['archives']}
    entry = pbb.stanza_info(pgbr.info(), args.stanza)
    annotated = []
    for label in pbb.to_annotate(entry, verify):
        pgbr.run('annotate', '--set=%s' % label, '--annotation=%s=%s' % (pbb.VERIFIED_ANNOTATION, now_iso()))
        annotated.append(label)
    status['verify']['annotated'] = annotated
    entry = pbb.stanza_info(pgbr.info(), args.stanza)
    status['verified'] = pbb.verified_labels(entry)
    bad = sorted(label for label, state in verify['backups'].items() if state != 'valid')
    if proc.returncode != 0 or verify['status'] != 'ok' or bad:
        raise Failure('pgbackrest verify found problems (exit %d, status %s%s): %s'
                      % (proc.returncode, verify['status'], ', not valid: ' + ', '.join(bad) if bad else '',
                         (proc.stderr or proc.stdout).strip()[-1000:]))
    return entry


def do_expire(pgbr, args, status, dry_run=False):
    plan = pbb.expire_plan(pgbr.info(), args.stanza, args.retention_days, args.now or time.time(),
                           min_verified=args.min_verified)
    status['expire'] = dict(plan, finished=now_iso(), dry_run=dry_run)
    log(plan['reason'])
    if not plan['allowed']:
        raise Failure(plan['reason'])
    if dry_run or not plan['remove']:
        return plan
    entry = pbb.stanza_info(pgbr.info(), args.stanza)
    fulls = [b['label'] for b in entry['backup'] if b['type'] == 'full' and b['label'] in plan['remove']]
    # One full backup at a time (its diff/incr backups go with it): pgBackRest removes exactly what the
    # plan names, never more than the safety rule allowed.
    for label in fulls:
        pgbr.run('expire', '--set=%s' % label)
    return plan


def newest_backup(entry):
    backups = entry.get('backup') or []
    if not backups:
        return None
    last = backups[-1]
    return {'label': last['label'], 'type': last['type'], 'stop': last['timestamp']['stop'],
            'size_bytes': (last.get('info') or {}).get('size'),
            'repo_size_bytes': ((last.get('info') or {}).get('repository') or {}).get('size')}


def write_status(path, status):
    if not path:
        return
    directory = os.path.dirname(path) or '.'
    fd, tmp = tempfile.mkstemp(prefix='.status-', dir=directory)
    with os.fdopen(fd, 'w') as handle:
        json.dump(status, handle, indent=1, sort_keys=True)
        handle.write('\n')
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def main(argv=None):
    parser = argparse.ArgumentParser(prog='greenflow-pgbackrest')
    parser.add_argument('--config', default='/etc/pgbackrest/pgbackrest.conf')
    parser.add_argument('--stanza', required=True)
    parser.add_argument('--pgbackrest', default='pgbackrest')
    parser.add_argument('--retention-days', type=int, default=30)
    parser.add_argument('--min-verified', type=int, default=1)
    parser.add_argument('--status-file', default='')
    parser.add_argument('--timeout', type=int, default=6 * 3600)
    # The time retention is measured from (epoch seconds; default now): for what-if runs and tests.
    parser.add_argument('--now', type=float, default=0)
    sub = parser.add_subparsers(dest='action')
    backup = sub.add_parser('backup')
    backup.add_argument('--type', choices=['full', 'diff', 'incr'], default='diff')
    sub.add_parser('verify')
    expire = sub.add_parser('expire')
    expire.add_argument('--dry-run', action='store_true')
    sub.add_parser('status')
    args = parser.parse_args(argv)
    if not args.action:
        parser.error('give an action: backup, verify, expire or status')
    if args.action == 'status':
        with open(args.status_file) as handle:
            sys.stdout.write(handle.read())
        return 0

    previous = {}
    if args.status_file and os.path.exists(args.status_file):
        try:
            with open(args.status_file) as handle:
                previous = json.load(handle)
        except ValueError:
            previous = {}
    status = {'action': args.action, 'stanza': args.stanza, 'started': now_iso(),
              'last_success': previous.get('last_success')}
    pgbr = PgBackRest(args)
    try:
        if args.action == 'backup':
            do_check(pgbr, status)
            started = time.time()
            pgbr.run('backup', '--type=%s' % args.type)
            entry = do_verify(pgbr, args, status, check=False)  # checked just before the backup
            status['backup'] = dict(newest_backup(entry) or {}, duration_s=round(time.time() - started, 1))
            do_expire(pgbr, args, status)
        elif args.action == 'verify':
            do_verify(pgbr, args, status)
        elif args.action == 'expire':
            do_expire(pgbr, args, status, dry_run=args.dry_run)
        status['result'] = 'ok'
        status['last_success'] = {'action': args.action, 'finished': now_iso(),
                                  'backup': status.get('backup', (previous.get('last_success') or {}).get('backup'))}
    except (Failure, pbb.PgBackRestReportError) as err:
        status['result'] = 'failed'
        status['error'] = str(err)
        log(str(err))
    status['finished'] = now_iso()
    write_status(args.status_file, status)
    print(json.dumps(status, sort_keys=True))
    return 0 if status['result'] == 'ok' else 1


if __name__ == '__main__':
    sys.exit(main())
