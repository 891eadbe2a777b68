#!/usr/bin/env python3
"""Backup benchmark on one data set: plain tar and pgBackRest.

    python3 bench/bench_backup.py [--scale 70] [--encrypt] [--traffic-tx 3000] [--workdir DIR] [--keep]
    python3 bench/bench_backup.py --scale 1          # smoke run (a minute; the figures mean nothing)

Everything on this machine (PostgreSQL 15 binaries in /usr/lib/postgresql/15/bin, Debian `pgbackrest`
2.45): a private primary on a unix socket in the work directory (no TCP port), loaded with
pgbench -i -s SCALE (70 ~ 1 GB). WAL archiving is off during the load and then goes to pgBackRest
(archive_command = pgbackrest archive-push, asynchronous as the role sets it).
One run of each, on the same data:

  1. backup throughput: `tar -cf` of the data directory (+ sync), `pgbackrest backup --type=full` into
     a local posix repository configured as roles/pgbackrest does (module_utils/_pgbackrest_config.py:
     compress-type zst, process-max from the CPU count, archive-async, start-fast);
  2. restore (RTO): a row is written after the backup and archived; then `pgbackrest restore` into an
     empty directory + start + replay + promotion -> seconds until the restored server accepts a write
     (and the row is there);
  3. replica rebuild: a replica is made and stopped (stale), the primary takes `pgbench -t TRAFFIC_TX`
     (two clients), then `pg_basebackup` into an empty directory vs `pgbackrest restore --delta
     --type=standby` onto the stale copy (from the full backup of step 1; the traffic's WAL comes from
     the archive and the stream) -> seconds until the standby streams and has replayed the primary's LSN.

--encrypt: the repository is encrypted (repo1-cipher-type aes-256-cbc with a passphrase made at run
time, never printed).
The figures of 0.1.x's greenflow-pg-backup beside these (docs/backups-pgbackrest.md) were measured by this
script before that tool was removed in 0.2.0: `git show a4925fa:bench/bench_backup.py`.
Prints a table and one JSON line; never asserts on time. The load of the machine (uptime) is printed
before and after: figures under contention are marked as such. Run as root it re-runs itself as the
postgres user. The work directory (default /var/tmp/greenflow-bench) is removed at the end unless --keep
(with --keep, pgbackrest.conf in it holds the throwaway passphrase of an --encrypt run).
"""
import argparse
import base64
import json
import os
import shutil
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PG_BIN = '/usr/lib/postgresql/15/bin'
PGBACKREST = shutil.which('pgbackrest') or '/usr/bin/pgbackrest'
STANZA = 'bench'
PORTS = {'primary': 54330, 'pgbr-restore': 54333, 'stale': 54334, 'basebackup-replica': 54335}
SUBDIRS = ('data', 'tar', 'pgbr', 'pgbr-restored', 'stale', 'basebackup-replica')
WAIT_S = 1800  # upper bound of every wait loop

sys.path.insert(0, os.path.join(REPO, 'plugins', 'module_utils'))
import _pgbackrest_config as pbc  # noqa: E402  (standard library only, the role's own renderer)


def run(argv, **kwargs):
    kwargs.setdefault('check', True)
    return subprocess.run(argv, **kwargs)


def quiet(argv, **kwargs):
    """Run, output kept and shown only when the command fails."""
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                          check=False, **kwargs)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout)
        raise SystemExit('failed (%d): %s' % (proc.returncode, ' '.join(argv)))
    return proc.stdout


def size_of(path):
    return int(subprocess.run(['du', '-sb', path], check=True, stdout=subprocess.PIPE, text=True).stdout.split()[0])


def uptime():
    return subprocess.run(['uptime'], stdout=subprocess.PIPE, text=True, check=False).stdout.strip()


def load1():
    with open('/proc/loadavg') as handle:
        return float(handle.read().split()[0])


class Bench:
    def __init__(self, args):
        self.args = args
        self.work = args.workdir
        self.data = os.path.join(self.work, 'data')
        self.started = []
        self.results = {}

    def path(self, *parts):
        return os.path.join(self.work, *parts)

    def psql(self, port, sql, check=True, database='postgres'):
        proc = subprocess.run([PG_BIN + '/psql', '-X', '-qtA', '-h', self.work, '-p', str(port), '-U', 'postgres',
                               '-d', database, '-c', sql], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              check=False, env=dict(os.environ, PGCONNECT_TIMEOUT='3'))
        if check and proc.returncode != 0:
            raise SystemExit('psql on port %d failed: %s\n%s' % (port, sql, proc.stderr))
        return proc.stdout.strip() if proc.returncode == 0 else None

    def start(self, data, port, extra_conf=''):
        with open(os.path.join(data, 'postgresql.conf'), 'a') as handle:
            handle.write("\n# bench_backup.py\nport = %d\nlisten_addresses = ''\nunix_socket_directories = '%s'\n%s"
                         % (port, self.work, extra_conf))
        os.chmod(data, 0o700)
        self.started.append(data)
        quiet([PG_BIN + '/pg_ctl', '-D', data, '-l', data + '.log', '-w', '-t', str(WAIT_S), 'start'])

    def stop(self, data, mode='fast'):
        subprocess.run([PG_BIN + '/pg_ctl', '-D', data, '-m', mode, '-w', 'stop'], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=False)
        if data in self.started:
            self.started.remove(data)

    def wait(self, predicate, what):
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.1)
        raise SystemExit('timed out after %d s waiting for %s' % (WAIT_S, what))

    def wait_write(self, port):
        """Until the server on port accepts a write (a row in a probe table)."""
        self.wait(lambda: self.psql(port, 'CREATE TABLE IF NOT EXISTS bench_probe (at timestamptz); '
                                          'INSERT INTO bench_probe VALUES (now())', check=False) is not None,
                  'a write on port %d' % port)

    def wait_streaming(self, port, lsn):
        """Until the standby on port streams from the primary and has replayed up to lsn."""
        sql = ("SELECT pg_is_in_recovery() AND coalesce((SELECT status = 'streaming' FROM pg_stat_wal_receiver), "
               "false) AND pg_last_wal_replay_lsn() >= '%s'::pg_lsn" % lsn)
        self.wait(lambda: self.psql(port, sql, check=False) == 't', 'the standby on port %d to stream and '
                  'replay up to %s' % (port, lsn))

    def pgbackrest(self, *argv):
        return quiet([PGBACKREST, '--config=%s' % self.path('pgbr', 'pgbackrest.conf'), '--stanza=%s' % STANZA]
                     + list(argv))

    def archived_up_to_now(self):
        """Switch WAL and wait until the archiver (pgBackRest) has stored the segment."""
        # the name of the segment the switch closed (or of the last full one when nothing was written)
        segment = self.psql(PORTS['primary'], 'SELECT pg_walfile_name(pg_switch_wal())')
        self.wait(lambda: (self.psql(PORTS['primary'], 'SELECT last_archived_wal FROM pg_stat_archiver') or '')
                  >= segment, 'WAL %s archived' % segment)

    # --- setup -------------------------------------------------------------------------------------

    def setup(self):
        args = self.args
        for sub in SUBDIRS:
            shutil.rmtree(self.path(sub), ignore_errors=True)
        os.makedirs(self.work, exist_ok=True)
        os.chmod(self.work, 0o700)
        for sub in ('pgbr', 'pgbr/repo', 'pgbr/spool', 'pgbr/log', 'pgbr/lock'):
            os.makedirs(self.path(sub), mode=0o700)
        # pgBackRest as the role configures the repository host (here also the database host).
        self.process_max = args.process_max or pbc.process_max_for(os.cpu_count() or 1)
        spec = {'stanza': STANZA, 'repo_path': self.path('pgbr', 'repo'), 'retention_days': 30,
                'compress_type': 'zst', 'process_max': self.process_max, 'archive_async': True,
                'spool_path': self.path('pgbr', 'spool'),
                'pg_hosts': [{'path': self.data, 'port': PORTS['primary'], 'socket_path': self.work}],
                'options': {'log-path': self.path('pgbr', 'log'), 'lock-path': self.path('pgbr', 'lock')}}
        if args.encrypt:
            spec['cipher_type'] = 'aes-256-cbc'
            spec['cipher_pass'] = base64.b64encode(os.urandom(36)).decode()  # throwaway, never printed
        conf = self.path('pgbr', 'pgbackrest.conf')
        with open(os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), 'w') as handle:
            handle.write(pbc.render_config(spec, header='bench/bench_backup.py (throwaway)'))

        quiet([PG_BIN + '/initdb', '-D', self.data, '--data-checksums', '-A', 'trust', '-U', 'postgres'])
        # WAL archiving is on but discards during the load; pgBackRest archives from the backup on.
        self.start(self.data, PORTS['primary'], "archive_mode = on\narchive_command = '/bin/true'\n"
                   "min_wal_size = 80MB\nmax_wal_size = 1GB\n")
        started = time.time()
        quiet([PG_BIN + '/pgbench', '-h', self.work, '-p', str(PORTS['primary']), '-U', 'postgres', '-i', '-q',
               '-s', str(args.scale), 'postgres'])
        for _ in range(2):  # recycle the load's WAL: the data directory is then mostly the database
            self.psql(PORTS['primary'], 'SELECT pg_switch_wal()')
            self.psql(PORTS['primary'], 'CHECKPOINT')
        load_s = time.time() - started
        push = '%s --config=%s --stanza=%s archive-push %%p' % (PGBACKREST, conf, STANZA)
        self.psql(PORTS['primary'], "ALTER SYSTEM SET archive_command = '%s'" % push.replace("'", "''"))
        self.psql(PORTS['primary'], 'SELECT pg_reload_conf()')
        time.sleep(1)
        self.pgbackrest('stanza-create')
        self.pgbackrest('check')  # archive-push works (a WAL switch reaches the repository)
        time.sleep(1)
        self.results['data_mb'] = round(size_of(self.data) / 1e6)
        self.results['database_mb'] = round(int(self.psql(PORTS['primary'], 'SELECT pg_database_size(current_database())'))
                                            / 1e6)
        self.results['load_s'] = round(load_s, 1)

    # --- 1. backup throughput -------------------------------------------------------------------------

    def backups(self):
        r = self.results
        started = time.time()
        os.makedirs(self.path('tar'))
        run(['tar', '-cf', self.path('tar', 'data.tar'), '-C', self.data, '.'])
        run(['sync', '-f', self.path('tar', 'data.tar')])
        r['tar'] = {'s': round(time.time() - started, 1), 'source_mb': r['data_mb'],
                    'stored_mb': round(size_of(self.path('tar')) / 1e6)}

        started = time.time()
        self.pgbackrest('backup', '--type=full')
        r['pgbackrest'] = {'s': round(time.time() - started, 1),
                           'stored_mb': round(size_of(self.path('pgbr', 'repo', 'backup')) / 1e6)}
        info = json.loads(self.pgbackrest('--output=json', 'info'))[0]['backup'][-1]
        r['pgbackrest']['source_mb'] = round(info['info']['size'] / 1e6)
        r['pgbackrest']['label'] = info['label']
        for key in ('tar', 'pgbackrest'):
            r[key]['mb_s'] = round(r[key]['source_mb'] / max(r[key]['s'], 0.01))

    # --- 2. restore RTO -------------------------------------------------------------------------------

    def restores(self):
        r = self.results
        self.psql(PORTS['primary'], 'INSERT INTO pgbench_history(tid, bid, aid, delta, mtime) '
                                    'VALUES (1, 1, 1, 424242, now())')
        self.archived_up_to_now()
        marker = 'SELECT count(*) FROM pgbench_history WHERE delta = 424242'

        restored = self.path('pgbr-restored')
        os.makedirs(restored, mode=0o700)
        started = time.time()
        # archive-mode=off: the promoted copy must not archive a new timeline into the repository.
        self.pgbackrest('restore', '--pg1-path=%s' % restored, '--archive-mode=off')
        fetched = time.time() - started
        self.start(restored, PORTS['pgbr-restore'])
        self.wait_write(PORTS['pgbr-restore'])
        r['pgbackrest']['restore_s'] = round(time.time() - started, 1)
        r['pgbackrest']['restore_fetch_s'] = round(fetched, 1)
        r['pgbackrest']['restore_row'] = self.psql(PORTS['pgbr-restore'], marker) == '1'
        self.stop(restored)
        shutil.rmtree(restored, ignore_errors=True)

    # --- 3. replica rebuild ---------------------------------------------------------------------------

    def rebuilds(self):
        r = self.results
        primary = PORTS['primary']
        conninfo = 'host=%s port=%d user=postgres application_name=bench' % (self.work, primary)
        stale = self.path('stale')
        quiet([PG_BIN + '/pg_basebackup', '-h', self.work, '-p', str(primary), '-U', 'postgres', '-D', stale,
               '-X', 'stream', '-c', 'fast', '-R'])
        self.start(stale, PORTS['stale'])
        self.wait_streaming(PORTS['stale'], self.psql(primary, 'SELECT pg_current_wal_lsn()'))
        self.stop(stale)

        started = time.time()
        quiet([PG_BIN + '/pgbench', '-h', self.work, '-p', str(primary), '-U', 'postgres', '-n', '-c', '2', '-j', '2',
               '-t', str(self.args.traffic_tx), 'postgres'])
        r['traffic'] = {'transactions': 2 * self.args.traffic_tx, 's': round(time.time() - started, 1)}
        self.archived_up_to_now()
        target = self.psql(primary, 'SELECT pg_current_wal_lsn()')
        r['traffic']['wal_since_backup_mb'] = round(float(self.psql(
            primary, "SELECT '%s'::pg_lsn - '%s'::pg_lsn" % (target, self.backup_stop_lsn()))) / 1e6, 1)

        replica = self.path('basebackup-replica')
        started = time.time()
        quiet([PG_BIN + '/pg_basebackup', '-h', self.work, '-p', str(primary), '-U', 'postgres', '-D', replica,
               '-X', 'stream', '-c', 'fast', '-R'])
        copied = time.time() - started
        self.start(replica, PORTS['basebackup-replica'])
        self.wait_streaming(PORTS['basebackup-replica'], target)
        r['rebuild_basebackup'] = {'s': round(time.time() - started, 1), 'copy_s': round(copied, 1)}
        self.stop(replica)
        shutil.rmtree(replica, ignore_errors=True)

        started = time.time()
        self.pgbackrest('restore', '--pg1-path=%s' % stale, '--delta', '--type=standby',
                        '--recovery-option=primary_conninfo=%s' % conninfo)
        copied = time.time() - started
        self.start(stale, PORTS['stale'])
        self.wait_streaming(PORTS['stale'], target)
        r['rebuild_delta'] = {'s': round(time.time() - started, 1), 'restore_s': round(copied, 1)}
        self.stop(stale)

    def backup_stop_lsn(self):
        info = json.loads(self.pgbackrest('--output=json', 'info'))[0]['backup']
        return [b for b in info if b['label'] == self.results['pgbackrest']['label']][0]['lsn']['stop']

    def cleanup(self):
        for data in list(self.started):
            self.stop(data, 'immediate' if data != self.data else 'fast')
        if not self.args.keep:
            for sub in SUBDIRS:
                shutil.rmtree(self.path(sub), ignore_errors=True)
            for name in os.listdir(self.work):
                target = self.path(name)
                if os.path.isfile(target):
                    os.unlink(target)
            try:
                os.rmdir(self.work)
            except OSError:
                pass  # something else in it: left alone


def report(r, args, load_before, load_after, uptime_before, uptime_after):
    contended = max(load_before, load_after) > 1.0
    lines = [
        'bench_backup.py: pgbench -s %d, data directory %d MB (database %d MB), loaded in %.0f s; %s; '
        'process-max %d on %d CPUs%s' % (args.scale, r['data_mb'], r['database_mb'], r['load_s'],
                                         'encrypted stores (aes-256-cbc / openssl)' if args.encrypt else 'no encryption',
                                         r['process_max'], os.cpu_count() or 1,
                                         '' if not contended else ' [UNDER CONTENTION: other work on the machine]'),
        'uptime before: %s' % uptime_before,
        'uptime after:  %s' % uptime_after,
        '',
        '%-52s %9s %9s %8s %8s' % ('1. backup', 'read MB', 'stored MB', 'seconds', 'MB/s'),
    ]
    names = {'tar': 'tar -cf of the data directory + sync',
             'pgbackrest': 'pgbackrest backup --type=full (zst%s)' % (', aes-256-cbc' if args.encrypt else '')}
    for key in ('tar', 'pgbackrest'):
        lines.append('%-52s %9d %9d %8.1f %8d' % (names[key], r[key]['source_mb'], r[key]['stored_mb'],
                                                   r[key]['s'], r[key]['mb_s']))
    lines += [
        '',
        '%-52s %9s %9s %8s' % ('2. restore of the full backup (RTO)', 'fetch s', 'total s', 'row ok'),
        '%-52s %9.1f %9.1f %8s' % ('pgbackrest restore + start + promote', r['pgbackrest']['restore_fetch_s'],
                                   r['pgbackrest']['restore_s'], r['pgbackrest']['restore_row']),
        '   (total: from the start of the fetch until the restored server accepts a write)',
        '',
        '3. replica rebuild after pgbench -t %d x 2 clients (%d tx in %.1f s; WAL since the full backup %.1f MB)'
        % (args.traffic_tx, r['traffic']['transactions'], r['traffic']['s'], r['traffic']['wal_since_backup_mb']),
        '%-52s %9s %9s' % ('', 'copy s', 'total s'),
        '%-52s %9.1f %9.1f' % ('pg_basebackup into an empty directory + start',
                               r['rebuild_basebackup']['copy_s'], r['rebuild_basebackup']['s']),
        '%-52s %9.1f %9.1f' % ('pgbackrest restore --delta --type=standby (stale copy)',
                               r['rebuild_delta']['restore_s'], r['rebuild_delta']['s']),
        '   (total: until the standby streams from the primary and has replayed its current LSN)',
    ]
    print('\n'.join(lines))
    print('JSON ' + json.dumps(dict(r, scale=args.scale, encrypt=args.encrypt, traffic_tx=args.traffic_tx,
                                    load_before=load_before, load_after=load_after, contended=contended),
                               sort_keys=True))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--scale', type=int, default=70, help='pgbench scale (70 ~ 1 GB; 1 for a smoke run)')
    parser.add_argument('--workdir', default='/var/tmp/greenflow-bench')
    parser.add_argument('--keep', action='store_true', help='keep the work directory')
    parser.add_argument('--encrypt', action='store_true',
                        help='encrypt the repository (a throwaway passphrase made at run time)')
    parser.add_argument('--traffic-tx', type=int, default=3000,
                        help='pgbench transactions per client (2 clients) between the stale replica and its rebuild')
    parser.add_argument('--process-max', type=int, default=0,
                        help='pgBackRest process-max (default: as the role, half the CPUs, 1 to 8)')
    args = parser.parse_args()
    missing = [what for what, path in (('PostgreSQL 15 (Debian package postgresql-15)', PG_BIN + '/initdb'),
                                       ('pgbench (Debian package postgresql-15)', PG_BIN + '/pgbench'),
                                       ('pgbackrest (Debian package pgbackrest)', PGBACKREST))
               if not os.path.exists(path)]
    if missing:
        raise SystemExit('bench_backup.py: missing %s; `make debian-packages` installs them (Makefile '
                         'DEBIAN_PACKAGES)' % ', '.join(missing))
    if args.scale < 1 or args.traffic_tx < 1:
        raise SystemExit('--scale and --traffic-tx must be at least 1')
    if os.geteuid() == 0:
        os.makedirs(args.workdir, exist_ok=True)
        shutil.chown(args.workdir, 'postgres', 'postgres')
        os.execvp('runuser', ['runuser', '-u', 'postgres', '--', '/usr/bin/python3', os.path.abspath(__file__)]
                  + sys.argv[1:])
    if os.path.exists('/tmp/greenflow-ci-running'):
        print('note: a CI run is measuring (/tmp/greenflow-ci-running): the figures are contended')
    uptime_before, load_before = uptime(), load1()
    bench = Bench(args)
    try:
        bench.setup()
        bench.results['process_max'] = bench.process_max
        bench.backups()
        bench.restores()
        bench.rebuilds()
    finally:
        bench.cleanup()
    report(bench.results, args, load_before, load1(), uptime_before, uptime())


if __name__ == '__main__':
    main()
