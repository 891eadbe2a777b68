# greenflow-pgbackrest — installed by greenflow.platform.pgbackrest on the repository host. pgBackRest
# does the work; this wrapper adds what pgBackRest leaves to the operator:
#
#   backup --type full|diff|incr   pgbackrest check, backup, then verify (below), then the safe expire
#   verify                         pgbackrest check (archiving works now), then pgbackrest verify;
#                                  every backup it finds valid whose WAL is archived
#                                  gets the annotation greenflow-verified (pgbackrest annotate)
#   expire [--dry-run]             time retention, but never down to fewer than --min-verified
#                                  verified backups (expire --set per full backup that may go)
#   restore-test                   the newest verified backup restored into a scratch directory, started
#                                  as a private instance (own socket and port, no archiving), the archive
#                                  replayed to its end, then pg_amcheck (or --verify-query) - nothing live
#                                  is touched or promoted; backup/verify --restore-test add it
#   status                         the status file (JSON)
#
# Repositories: every one pgbackrest.conf configures (repo1, and repo2 when set). pgBackRest pushes WAL
# to each, but a backup writes to one (--repo), so backup, verify and expire run once per repository,
# repo1 first and then repo2, in the same run (one lock, one status): check (archiving into that
# repository alone), backup --repo=N, verify --repo=N and its annotations, the safe expire with that
# repository's own retention (repoN-retention-full; --retention-days is repo1's). A repository that
# fails does not stop the next one; the run fails when any failed, its error naming the repository
# (repo2: ...). --repo=N limits a run to one repository; restore-test uses repo1 unless --repo says.
# --archiver-json: the primary's pg_stat_archiver row (playbooks/backup.yml reads it): archiving that
# fails there fails the run before anything else.
# Every run writes the status file (result, action, the newest backup, verified backups, the expire
# decision, the restore test) and, with --textfile, the same as Prometheus metrics for node-exporter's
# textfile collector. A second run while one is going exits 75 (a lock in the status file's directory).
# Exit status non-zero on any failure, with a message naming it. The logic
# (what counts as verified, what may expire) is _pgbackrest_backups.py next to this file, the
# collection's module_utils, unit tested there. Runs as the repository's owner (postgres).
import argparse
import datetime
import errno
import fcntl
import json
import os
import re
import shutil
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
    def __init__(self, args, config=None):
        self.base = [args.pgbackrest, '--config=%s' % (config or args.config), '--stanza=%s' % args.stanza]
        self.stanza = args.stanza
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

    def info(self, repo=1):
        """pgbackrest info of one repository (without --repo it merges every repository's backups)."""
        proc = self.run('--output=json', '--repo=%d' % repo, 'info')
        try:
            info = json.loads(proc.stdout)
        except ValueError:
            raise Failure('pgbackrest info printed no JSON: %r' % proc.stdout[:200])
        problem = pbb.repo_problem(pbb.stanza_info(info, self.stanza), repo)
        if problem:
            raise Failure(problem)
        return info

    def entry(self, repo=1):
        return pbb.stanza_info(self.info(repo), self.stanza)


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


def do_verify(pgbr, args, status, repo=1, check_with=None):
    """pgbackrest verify --repo=N, then the greenflow-verified annotations of that repository.
    check_with: the PgBackRest whose check runs first (None: no check, the caller just ran it)."""
    if check_with is not None:
        do_check(check_with, status)
    proc = pgbr.run('verify', '--repo=%d' % repo, '--output=text', '--verbose', may_fail=True)
    verify = pbb.parse_verify_text(proc.stdout)
    status['verify'] = {'finished': now_iso(), 'exit': proc.returncode, 'status': verify['status'],
                        'backups': verify['backups'], 'archives': verify['archives']}
    entry = pgbr.entry(repo)
    annotated = []
    for label in pbb.to_annotate(entry, verify):
        pgbr.run('annotate', '--repo=%d' % repo, '--set=%s' % label,
                 '--annotation=%s=%s' % (pbb.VERIFIED_ANNOTATION, now_iso()))
        annotated.append(label)
    status['verify']['annotated'] = annotated
    # A backup verify no longer finds valid stops counting as verified (retention will not lean on it).
    withdrawn = []
    for label in pbb.to_withdraw(entry, verify):
        pgbr.run('annotate', '--repo=%d' % repo, '--set=%s' % label, '--annotation=%s=' % pbb.VERIFIED_ANNOTATION)
        withdrawn.append(label)
    status['verify']['withdrawn'] = withdrawn
    entry = pgbr.entry(repo)
    status['verified'] = pbb.verified_labels(entry)
    bad = sorted(label for label, state in verify['backups'].items() if state != 'valid')
    if proc.returncode != 0 or verify['status'] != 'ok' or bad:
        raise Failure('pgbackrest verify found problems (exit %d, status %s%s): %s'
                      % (proc.returncode, verify['status'], ', not valid: ' + ', '.join(bad) if bad else '',
                         (proc.stderr or proc.stdout).strip()[-1000:]))
    return entry


def do_expire(pgbr, args, status, repo=1, retention_days=None, dry_run=False):
    days = args.retention_days if retention_days is None else retention_days
    plan = pbb.expire_plan(pgbr.info(repo), args.stanza, days, args.now or time.time(),
                           min_verified=args.min_verified)
    status['expire'] = dict(plan, finished=now_iso(), dry_run=dry_run, retention_days=days)
    log('repo%d: %s' % (repo, plan['reason']))
    if not plan['allowed']:
        raise Failure(plan['reason'])
    if dry_run or not plan['remove']:
        return plan
    entry = pgbr.entry(repo)
    fulls = [b['label'] for b in entry['backup'] if b['type'] == 'full' and b['label'] in plan['remove']]
    # One full backup at a time (its diff/incr backups go with it): pgBackRest removes exactly what the
    # plan names, never more than the safety rule allowed, and only in this repository (--repo: without
    # it, expire --set searches every repository).
    for label in fulls:
        pgbr.run('expire', '--repo=%d' % repo, '--set=%s' % label)
    return plan


def newest_backup(entry):
    backups = entry.get('backup') or []
    if not backups:
        return None
    last = backups[-1]
    return {'label': last['label'], 'type': last['type'], 'stop': last['timestamp']['stop'],
            'size_bytes': (last.get('info') or {}).get('size'),
            'repo_size_bytes': ((last.get('info') or {}).get('repository') or {}).get('size')}


def write_file(path, text):
    directory = os.path.dirname(path) or '.'
    fd, tmp = tempfile.mkstemp(prefix='.greenflow-', dir=directory)
    with os.fdopen(fd, 'w') as handle:
        handle.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def write_status(path, status):
    if path:
        write_file(path, json.dumps(status, indent=1, sort_keys=True) + '\n')


def write_textfile(path, status):
    if not path:
        return
    try:
        write_file(path, pbb.prometheus_text(status))
    except OSError as err:
        log('metrics not written to %s: %s' % (path, err))


def newest_verified(entry, verified):
    for backup in reversed(entry.get('backup') or []):
        if backup['label'] in verified:
            return {'label': backup['label'], 'type': backup['type'], 'stop': backup['timestamp']['stop']}
    return None


def tail(path, lines=15):
    try:
        with open(path, errors='replace') as handle:
            return ' | '.join(handle.read().splitlines()[-lines:])
    except OSError:
        return '(no log)'


def restore_test(pgbr, args, status):
    """Restore the newest verified backup into args.scratch_dir with a configuration of its own (the
    repository's options, pg1-path the scratch directory: this host's pgbackrest.conf names the live
    database), start it as a private instance, replay the archive to its end, check it, remove it."""
    started = time.time()
    repo = args.repo or 1
    result = {'result': 'failed', 'started': now_iso(), 'repo': repo}
    status['restore_test'] = result
    entry = pgbr.entry(repo)
    verified = pbb.verified_labels(entry)
    if not verified:
        raise Failure('restore test: no verified backup in repo%d' % repo)
    label = verified[-1]
    result['backup'] = label
    scratch = args.scratch_dir
    data = os.path.join(scratch, 'data')
    conf = os.path.join(scratch, 'pgbackrest.conf')
    logfile = os.path.join(scratch, 'postgres.log')
    pg_ctl = os.path.join(args.pg_bin, 'pg_ctl')
    port = str(args.scratch_port)
    shutil.rmtree(scratch, ignore_errors=True)
    os.makedirs(scratch, mode=0o700)
    os.makedirs(data, mode=0o700)
    try:
        with open(args.config) as handle:
            sections = pbb_config_sections(handle.read())
        skip = ('tls-server-', 'archive-async', 'spool-path', 'pg', 'log-path', 'lock-path')
        glob = [(k, v) for k, v in sections.get('global', []) if not k.startswith(skip)]
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, 'w') as handle:
            handle.write('[global]\n' + ''.join('%s=%s\n' % kv for kv in glob))
            handle.write('log-path=%s\nlock-path=%s\n' % (scratch, scratch))
            handle.write('[%s]\npg1-path=%s\npg1-port=%s\npg1-socket-path=%s\n' % (args.stanza, data, port, scratch))
        base = [args.pgbackrest, '--config=%s' % conf, '--stanza=%s' % args.stanza]
        restore_command = "%s --repo=%d archive-get %%f \"%%p\"" % (' '.join(base), repo)
        proc = subprocess.run(base + ['--repo=%d' % repo, '--set=%s' % label, '--type=default',
                                      '--log-level-console=warn',
                                      '--recovery-option=restore_command=%s' % restore_command, 'restore'],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                              timeout=args.restore_test_timeout, check=False)
        if proc.returncode != 0:
            raise Failure('restore test: pgbackrest restore of %s failed: %s' % (label, (proc.stderr or proc.stdout)[-1500:]))
        with open(os.path.join(data, 'postgresql.conf'), 'w') as handle:
            handle.write("shared_buffers = 64MB\nfsync = off\nlogging_collector = off\n")
        with open(os.path.join(data, 'pg_hba.conf'), 'w') as handle:
            handle.write('local all all peer\n')
        open(os.path.join(data, 'pg_ident.conf'), 'w').close()
        for leftover in ('standby.signal', 'postmaster.pid'):
            if os.path.exists(os.path.join(data, leftover)):
                os.unlink(os.path.join(data, leftover))
        # Command-line settings win over postgresql.auto.conf from the backup: private socket and port, no
        # network, no archiving, no synchronous standby to wait for.
        options = ("-c port=%s -c listen_addresses='' -c unix_socket_directories='%s' -c archive_mode=off "
                   "-c synchronous_standby_names='' -c hot_standby=on -c config_file=%s/postgresql.conf "
                   "-c hba_file=%s/pg_hba.conf -c ident_file=%s/pg_ident.conf" % (port, scratch, data, data, data))
        proc = subprocess.run([pg_ctl, '-D', data, '-l', logfile, '-o', options, '-w', '-t',
                               str(args.restore_test_timeout), 'start'],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, check=False)
        if proc.returncode != 0:
            raise Failure('restore test: the scratch instance did not start: %s' % tail(logfile))
        psql = [os.path.join(args.pg_bin, 'psql'), '-X', '-h', scratch, '-p', port, '-d', 'postgres', '-tA',
                '-v', 'ON_ERROR_STOP=1']
        deadline = time.time() + args.restore_test_timeout
        while True:
            state = subprocess.run(psql + ['-c', 'SELECT pg_is_in_recovery()'], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, universal_newlines=True, check=False)
            if state.returncode == 0 and state.stdout.strip() == 'f':
                break
            if time.time() > deadline:
                raise Failure('restore test: recovery did not finish in %d s: %s' % (args.restore_test_timeout, tail(logfile)))
            time.sleep(1)
        log_text = open(logfile, errors='replace').read()
        redo = re.findall(r'redo done at ([0-9A-F]+/[0-9A-F]+)', log_text)
        last_tx = re.findall(r'last completed transaction was at log time (.+)', log_text)
        result['redo_done_lsn'] = redo[-1] if redo else None
        result['last_transaction'] = last_tx[-1].strip() if last_tx else None
        if args.verify_query:
            check = subprocess.run(psql + ['-d', args.verify_database, '-c', args.verify_query],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, check=False)
            result['check'] = 'query'
            if check.returncode != 0 or check.stdout.strip().splitlines()[:1] not in (['t'], ['true'], ['1']):
                raise Failure('restore test: the check query did not return true: %s' % check.stdout.strip()[-1000:])
        else:
            check = subprocess.run([os.path.join(args.pg_bin, 'pg_amcheck'), '-h', scratch, '-p', port, '--all',
                                    '--install-missing', '--heapallindexed'],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, check=False)
            result['check'] = 'pg_amcheck'
            if check.returncode != 0:
                raise Failure('restore test: pg_amcheck found problems: %s' % check.stdout.strip()[-2000:])
        result['result'] = 'ok'
        return result
    finally:
        if os.path.exists(os.path.join(data, 'postmaster.pid')):
            subprocess.run([pg_ctl, '-D', data, '-m', 'immediate', '-w', 'stop'], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, check=False)
        result['duration_s'] = round(time.time() - started, 1)
        result['finished'] = now_iso()
        result['finished_epoch'] = int(time.time())
        if not args.keep_scratch:
            shutil.rmtree(scratch, ignore_errors=True)


def pbb_config_sections(text):
    """pgbackrest.conf -> {section: [(option, value), ...]} in file order (repeated options kept)."""
    sections, current = {}, None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith('#'):
            continue
        if line.startswith('[') and line.endswith(']'):
            current = sections.setdefault(line[1:-1], [])
        elif current is not None and '=' in line:
            current.append(tuple(line.split('=', 1)))
    return sections


def check_archiver(args, status):
    if not args.archiver_json:
        return
    try:
        row = json.loads(args.archiver_json)
    except ValueError:
        row = {'error': 'not JSON: %r' % args.archiver_json[:200]}
    health = pbb.archiver_health(row)
    status['archiver'] = health
    if not health['ok']:
        raise Failure('; '.join(health['reasons']))


def repo_check_config(args, sections, repo, directory):
    """A copy of pgbackrest.conf with only ``repo`` among the repositories, for its own check."""
    path = os.path.join(directory, 'pgbackrest-repo%d.conf' % repo)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, 'w') as handle:
        for name, options in sections.items():
            if name == 'global':
                options = pbb.limit_to_repo(options, repo)
            handle.write('[%s]\n%s' % (name, ''.join('%s=%s\n' % kv for kv in options)))
    return path


def run_repo(action, pgbr, checker, args, state, repo, retention_days):
    """One action on one repository; ``state`` is that repository's part of the status."""
    if action == 'backup':
        state['last_backup'] = {'result': 'failed', 'type': args.type, 'started': now_iso()}
        do_check(checker, state)
        started = time.time()
        pgbr.run('backup', '--repo=%d' % repo, '--type=%s' % args.type)
        entry = do_verify(pgbr, args, state, repo)  # checked just before the backup
        state['backup'] = dict(newest_backup(entry) or {}, duration_s=round(time.time() - started, 1))
        if state['backup'].get('label') not in state['verified']:
            raise Failure('the new backup %s does not count as verified: %s' % (
                state['backup'].get('label'),
                '; '.join(pbb.backup_checks(entry).get(state['backup'].get('label'), {}).get('reasons', []))))
        state['last_backup'] = dict(state['backup'], result='ok', finished=now_iso())
        do_expire(pgbr, args, state, repo, retention_days)
    elif action == 'verify':
        do_verify(pgbr, args, state, repo, check_with=checker)
    elif action == 'expire':
        do_expire(pgbr, args, state, repo, retention_days, dry_run=args.dry_run)


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
    parser.add_argument('--textfile', default='', help='Prometheus textfile to write (node-exporter)')
    parser.add_argument('--archiver-json', default='', help="the primary's pg_stat_archiver row (JSON)")
    parser.add_argument('--pg-bin', default='/usr/lib/postgresql/15/bin')
    parser.add_argument('--scratch-dir', default='/var/tmp/greenflow-pgbackrest-restore-test')
    parser.add_argument('--scratch-port', type=int, default=54329)
    parser.add_argument('--verify-query', default='')
    parser.add_argument('--verify-database', default='postgres')
    parser.add_argument('--restore-test-timeout', type=int, default=1800)
    parser.add_argument('--keep-scratch', action='store_true')
    # One repository only (1, 2); default: backup, verify and expire run on every configured repository,
    # restore-test on repo1.
    parser.add_argument('--repo', type=int, default=0)
    sub = parser.add_subparsers(dest='action')
    backup = sub.add_parser('backup')
    backup.add_argument('--type', choices=['full', 'diff', 'incr'], default='diff')
    backup.add_argument('--restore-test', action='store_true')
    verify = sub.add_parser('verify')
    verify.add_argument('--restore-test', action='store_true')
    sub.add_parser('restore-test')
    expire = sub.add_parser('expire')
    expire.add_argument('--dry-run', action='store_true')
    sub.add_parser('status')
    args = parser.parse_args(argv)
    if not args.action:
        parser.error('give an action: backup, verify, expire, restore-test or status')
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
    lock_dir = os.path.dirname(args.status_file) if args.status_file else tempfile.gettempdir()
    lock = open(os.path.join(lock_dir or '.', '.greenflow-pgbackrest.lock'), 'a')
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        if err.errno in (errno.EAGAIN, errno.EACCES):
            log('another run is going (lock %s); nothing done' % lock.name)
            return 75
        raise
    status = {'action': args.action, 'stanza': args.stanza, 'started': now_iso()}
    # What monitoring reads stays from earlier runs until a run replaces it.
    for key in ('last_success', 'last_backup', 'restore_test', 'verified', 'newest_verified', 'archiver', 'check'):
        if previous.get(key) is not None:
            status[key] = previous[key]
    pgbr = PgBackRest(args)
    sections = {}
    repo_errors = {}
    workdir = None
    try:
        with open(args.config) as handle:
            sections = pbb_config_sections(handle.read())
        configured = pbb.configured_repos(sections.get('global', [])) or [1]
        if args.repo and args.repo not in configured:
            raise Failure('repo%d is not configured in %s (repositories: %s)'
                          % (args.repo, args.config, ', '.join('repo%d' % r for r in configured)))
    except (OSError, Failure, pbb.PgBackRestReportError) as err:
        configured = [1]
        repo_errors[0] = str(err)
    previous_repos = previous.get('repos') if isinstance(previous.get('repos'), dict) else {}
    status['repos'] = {}
    for repo in configured:
        # repo1's part starts from the top-level keys of a status written before repositories were kept apart.
        earlier = previous_repos.get(str(repo)) or (previous if repo == 1 else {})
        status['repos'][str(repo)] = dict((key, earlier[key]) for key in pbb.REPO_STATUS_KEYS
                                          if isinstance(earlier, dict) and earlier.get(key) is not None)
    targets = [args.repo] if args.repo else configured
    try:
        if repo_errors:
            raise Failure(repo_errors.pop(0))
        check_archiver(args, status)
        if args.action in ('backup', 'verify', 'expire'):
            if len(configured) > 1 and args.action != 'expire':
                workdir = tempfile.mkdtemp(prefix='greenflow-pgbackrest-')
            for repo in targets:
                state = status['repos'][str(repo)]
                state['result'] = 'failed'
                try:
                    retention = (args.retention_days if repo == 1 else
                                 pbb.repo_retention_days(sections.get('global', []), repo, args.retention_days))
                    # pgbackrest check covers every configured repository: with several, each is checked
                    # alone (a copy of the configuration without the others), so a broken repo2 cannot stop
                    # repo1's backup and the failure names the repository it is in.
                    checker = (PgBackRest(args, repo_check_config(args, sections, repo, workdir)) if workdir
                               else pgbr)
                    run_repo(args.action, pgbr, checker, args, state, repo, retention)
                    state['result'] = 'ok'
                    repo_errors[repo] = None
                except (Failure, pbb.PgBackRestReportError, subprocess.TimeoutExpired, OSError) as err:
                    state['error'] = str(err)
                    repo_errors[repo] = str(err)
                    log('repo%d: %s' % (repo, err))
                state['finished'] = now_iso()
        if args.action == 'restore-test' or getattr(args, 'restore_test', False):
            restore_test(pgbr, args, status)
        result, error, failed = pbb.run_outcome(repo_errors)
        status['failed_repos'] = failed
        if result != 'ok':
            raise Failure(error)
        status['result'] = 'ok'
        status['last_success'] = {'action': args.action, 'finished': now_iso(), 'finished_epoch': int(time.time()),
                                  'backup': ((status['repos'].get('1') or {}).get('backup') if args.action == 'backup'
                                             and 1 in targets else None)
                                  or (previous.get('last_success') or {}).get('backup')}
    except (Failure, pbb.PgBackRestReportError, subprocess.TimeoutExpired, OSError) as err:
        status['result'] = 'failed'
        # A failure of one repository's part is already named (repo2: ...); a failure outside them (the
        # archiver, the restore test) is reported together with any repository that failed too.
        _result, repo_error, failed = pbb.run_outcome(repo_errors)
        status['failed_repos'] = failed
        status['error'] = str(err) if not repo_error or str(err) == repo_error else '%s; %s' % (err, repo_error)
        log(str(err))
    finally:
        if workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    for repo in configured:
        state = status['repos'][str(repo)]
        try:
            entry = pgbr.entry(repo)
            state['verified'] = pbb.verified_labels(entry)
            state['newest_verified'] = newest_verified(entry, state['verified'])
        except (Failure, pbb.PgBackRestReportError) as err:
            log('pgbackrest info of repo%d for the status: %s' % (repo, err))
    # The top-level keys stay repo1's (what monitoring, the deploy gate and older readers know).
    for key in pbb.REPO_STATUS_KEYS:
        if (status['repos'].get('1') or {}).get(key) is not None:
            status[key] = status['repos']['1'][key]
    status['finished'] = now_iso()
    status['finished_epoch'] = int(time.time())
    write_status(args.status_file, status)
    write_textfile(args.textfile, status)
    print(json.dumps(status, sort_keys=True))
    return 0 if status['result'] == 'ok' else 1


if __name__ == '__main__':
    sys.exit(main())
