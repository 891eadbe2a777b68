#!/usr/bin/env python3
"""Backup benchmark: greenflow-pg-backup against a plain tar, and the time to restore ~1 GB.

    python3 bench/bench_backup.py [--scale 70] [--workdir /var/tmp/greenflow-bench] [--keep]

On this machine (PostgreSQL 15 binaries in /usr/lib/postgresql/15/bin), with a private server on a unix
socket in the work directory (no TCP port): pgbench -i -s SCALE (70 ~ 1 GB), then one run each of
  1. `greenflow-pg-backup backup` (pg_basebackup -Fp + pg_verifybackup + fsync, the role's tool with a
     local store) and `tar -cf` of the same data directory (+ sync) -> MB/s of each and their ratio;
  2. a restore: `greenflow-pg-backup restore-fetch` (copy + pg_verifybackup) into an empty directory,
     start with recovery.signal, replay, promote -> seconds until the restored server accepts writes.
--encrypt measures the same with encryption at rest. Prints figures; never asserts on time. Run as root it re-runs itself as the postgres user.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(REPO, 'roles', 'pg_backup', 'files', 'greenflow_pg_backup.py')
PG_BIN = '/usr/lib/postgresql/15/bin'


def run(argv, **kwargs):
    return subprocess.run(argv, check=True, **kwargs)


def size_of(path):
    return int(subprocess.run(['du', '-sb', path], check=True, stdout=subprocess.PIPE, text=True).stdout.split()[0])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--scale', type=int, default=70)
    parser.add_argument('--workdir', default='/var/tmp/greenflow-bench')
    parser.add_argument('--keep', action='store_true')
    parser.add_argument('--encrypt', action='store_true', help='encrypt the store (openssl, a throwaway key)')
    args = parser.parse_args()
    if os.geteuid() == 0:
        os.makedirs(args.workdir, exist_ok=True)
        shutil.chown(args.workdir, 'postgres', 'postgres')
        os.execvp('runuser', ['runuser', '-u', 'postgres', '--', '/usr/bin/python3', os.path.abspath(__file__)]
                  + sys.argv[1:])
    work = args.workdir
    for sub in ('data', 'store', 'tar', 'restored', 'scratch', 'state'):
        shutil.rmtree(os.path.join(work, sub), ignore_errors=True)
    data, restored = os.path.join(work, 'data'), os.path.join(work, 'restored')
    config = {
        'cluster': 'bench', 'store': os.path.join(work, 'store'), 'store_host': '', 'encrypt': False,
        'compress_level': 6, 'pg_bin': PG_BIN, 'retention_days': 30, 'checkpoint': 'fast', 'max_rate': '',
        'source': {'host': work, 'port': 54330, 'user': os.environ.get('USER', 'postgres'), 'passfile': ''},
        'status_file': os.path.join(work, 'state', 'status.json'),
        'lock_file': os.path.join(work, 'state', 'lock'), 'scratch_dir': os.path.join(work, 'scratch'),
        'scratch_port': 54331, 'verify_query': '', 'verify_database': 'postgres', 'verify_restore_weekdays': [],
    }
    for sub in ('state', 'scratch'):
        os.makedirs(os.path.join(work, sub))
    if args.encrypt:
        config['encrypt'] = True
        config['key_file'] = os.path.join(work, 'state', 'key')
        with open(config['key_file'], 'w') as handle:
            handle.write(os.urandom(24).hex())
    config_file = os.path.join(work, 'pg_backup.json')
    with open(config_file, 'w') as handle:
        json.dump(config, handle)
    env = dict(os.environ, GREENFLOW_PG_BACKUP_CONFIG=config_file,
               PYTHONPATH=os.path.join(REPO, 'plugins', 'module_utils'))
    tool = [sys.executable, TOOL]
    archive = "%s %s wal-push %%p %%f" % (sys.executable, TOOL)
    run([PG_BIN + '/initdb', '-D', data, '--data-checksums', '-A', 'trust', '-U', 'postgres'],
        stdout=subprocess.DEVNULL)
    with open(os.path.join(data, 'postgresql.conf'), 'a') as handle:
        handle.write("port = 54330\nlisten_addresses = ''\nunix_socket_directories = '%s'\n"
                     "archive_mode = on\narchive_command = 'PYTHONPATH=%s GREENFLOW_PG_BACKUP_CONFIG=%s %s'\n"
                     "min_wal_size = 80MB\nmax_wal_size = 1GB\n" % (work, env['PYTHONPATH'], config_file, archive))
    run([PG_BIN + '/pg_ctl', '-D', data, '-l', os.path.join(work, 'data.log'), '-w', 'start'], stdout=subprocess.DEVNULL)
    try:
        started = time.time()
        run([PG_BIN + '/pgbench', '-h', work, '-p', '54330', '-U', 'postgres', '-i', '-q', '-s', str(args.scale),
             'postgres'], stderr=subprocess.DEVNULL)
        for _ in range(2):  # recycle the load's WAL: the data directory is then mostly the database
            run([PG_BIN + '/psql', '-h', work, '-p', '54330', '-U', 'postgres', '-qc', 'SELECT pg_switch_wal()',
                 '-c', 'CHECKPOINT', 'postgres'], stdout=subprocess.DEVNULL)
        time.sleep(2)
        db_size = size_of(data)
        print('data directory: %.0f MB (pgbench -s %d, %.0f s to load)' % (db_size / 1e6, args.scale, time.time() - started))

        started = time.time()
        run(tool + ['backup'], env=dict(env, USER='postgres'), stdout=subprocess.DEVNULL)
        backup_s = time.time() - started
        started = time.time()
        os.makedirs(os.path.join(work, 'tar'))
        run(['tar', '-cf', os.path.join(work, 'tar', 'data.tar'), '-C', data, '.'])
        run(['sync', '-f', os.path.join(work, 'tar', 'data.tar')])
        tar_s = time.time() - started
        backup_bytes = size_of(os.path.join(work, 'store', 'bench', 'base'))
        tar_bytes = size_of(os.path.join(work, 'tar'))
        print('greenflow-pg-backup backup (pg_basebackup + pg_verifybackup + fsync): %.0f MB in %.1f s, %.0f MB/s'
              % (backup_bytes / 1e6, backup_s, backup_bytes / 1e6 / backup_s))
        print('tar -cf of the data directory (+ sync):                             %.0f MB in %.1f s, %.0f MB/s'
              % (tar_bytes / 1e6, tar_s, tar_bytes / 1e6 / tar_s))
        print('throughput ratio backup / tar (MB/s): %.2f'
              % ((backup_bytes / backup_s) / (tar_bytes / tar_s)))
        # the two carry different bytes (tar takes all of pg_wal, the backup only the WAL it needs):
        # what an operator waits for is the wall time
        print('wall time ratio backup / tar (s): %.2f' % (backup_s / tar_s))

        run([PG_BIN + '/psql', '-h', work, '-p', '54330', '-U', 'postgres', '-qc',
             'INSERT INTO pgbench_history(tid, bid, aid, delta, mtime) VALUES (1, 1, 1, 1, now())', '-c',
             'SELECT pg_switch_wal()', 'postgres'], stdout=subprocess.DEVNULL)
        time.sleep(3)
        started = time.time()
        run(tool + ['restore-fetch', '--dest', restored], env=env, stdout=subprocess.DEVNULL)
        fetched_s = time.time() - started
        with open(os.path.join(restored, 'postgresql.conf'), 'a') as handle:
            handle.write("port = 54332\narchive_mode = off\nrestore_command = 'PYTHONPATH=%s GREENFLOW_PG_BACKUP_CONFIG=%s "
                         "%s %s wal-fetch %%f %%p'\n" % (env['PYTHONPATH'], config_file, sys.executable, TOOL))
        open(os.path.join(restored, 'recovery.signal'), 'w').close()
        os.chmod(restored, 0o700)
        run([PG_BIN + '/pg_ctl', '-D', restored, '-l', os.path.join(work, 'restored.log'), '-w', '-t', '600', 'start'],
            stdout=subprocess.DEVNULL)
        while subprocess.run([PG_BIN + '/psql', '-h', work, '-p', '54332', '-U', 'postgres', '-tAc',
                              'SELECT pg_is_in_recovery()', 'postgres'], stdout=subprocess.PIPE, text=True,
                             check=False).stdout.strip() != 'f':
            time.sleep(0.2)
        restore_s = time.time() - started
        rows = subprocess.run([PG_BIN + '/psql', '-h', work, '-p', '54332', '-U', 'postgres', '-tAc',
                               'SELECT count(*) FROM pgbench_history', 'postgres'], stdout=subprocess.PIPE,
                              text=True, check=True).stdout.strip()
        run([PG_BIN + '/pg_ctl', '-D', restored, '-m', 'fast', '-w', 'stop'], stdout=subprocess.DEVNULL)
        print('restore of the %.0f MB backup: %.1f s (copy + pg_verifybackup %.1f s, then WAL replay and '
              'promotion); row written after the backup restored: %s' % (backup_bytes / 1e6, restore_s, fetched_s,
                                                                        rows == '1'))
    finally:
        subprocess.run([PG_BIN + '/pg_ctl', '-D', data, '-m', 'fast', '-w', 'stop'], stdout=subprocess.DEVNULL, check=False)
        subprocess.run([PG_BIN + '/pg_ctl', '-D', restored, '-m', 'immediate', '-w', 'stop'],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        if not args.keep:
            for sub in ('data', 'store', 'tar', 'restored', 'scratch'):
                shutil.rmtree(os.path.join(work, sub), ignore_errors=True)


if __name__ == '__main__':
    main()
