"""pgBackRest for real, on this machine: a PostgreSQL 15 cluster started in a scratch directory (own
port, unix socket only), a local encrypted repository, the configuration rendered by the collection's
_pgbackrest_config, and the role's wrapper (roles/pgbackrest/files/greenflow_pgbackrest.py, laid out
as the role installs it, next to a copy of _pgbackrest_backups.py).

Covers: stanza-create, check (and a stopped archive_command failing backup and verify), asynchronous archive-push, a full and a differential backup through
the wrapper (each verified with `pgbackrest verify` and annotated), `info --output=json` read by the
logic, the expire safety rule against the real repository (refused when it would leave no verified
backup; `expire --set` when allowed), and a restore of the differential into a scratch directory that
starts and has the right row count.

Needs the Debian packages postgresql-15 and pgbackrest (Makefile DEBIAN_PACKAGES); skipped without
them. Runs the database as the postgres user when started as root (initdb refuses root)."""
import json
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time

import pytest

from ansible_collections.greenflow.platform.plugins.module_utils import _pgbackrest_backups as pbb
from ansible_collections.greenflow.platform.plugins.module_utils import _pgbackrest_config as pbc

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))
PG_BIN = '/usr/lib/postgresql/15/bin'
PGBACKREST = shutil.which('pgbackrest') or '/usr/bin/pgbackrest'
STANZA = 'itest'
CIPHER_PASS = 'integration-test-passphrase-0123456789'
DAY = 86400

pytestmark = pytest.mark.skipif(
    not (os.path.exists(os.path.join(PG_BIN, 'initdb')) and os.path.exists(PGBACKREST)),
    reason='needs postgresql-15 and pgbackrest (make debian-packages)')


def free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


class Cluster:
    """A scratch PostgreSQL cluster plus a pgBackRest repository, both under one directory."""

    def __init__(self):
        self.as_root = os.geteuid() == 0
        self.user = 'postgres' if self.as_root else pwd.getpwuid(os.geteuid()).pw_name
        self.dir = tempfile.mkdtemp(prefix='greenflow-pgbackrest-', dir='/tmp')
        if self.as_root:
            pw = pwd.getpwnam('postgres')
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        self.data = os.path.join(self.dir, 'pg')
        self.port = free_port()
        self.conf = os.path.join(self.dir, 'pgbackrest.conf')
        self.lib = os.path.join(self.dir, 'lib')
        self.status = os.path.join(self.dir, 'status.json')
        self.started = []

    def run(self, argv, check=True, timeout=300, env=None):
        """Run as the database user; returns the CompletedProcess."""
        if self.as_root:
            env_args = ['env'] + ['%s=%s' % kv for kv in env.items()] if env else []
            argv = ['runuser', '-u', self.user, '--'] + env_args + list(argv)
            env = None
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                              timeout=timeout, check=False, cwd=self.dir,
                              env=dict(os.environ, **env) if env else None)
        if check and proc.returncode != 0:
            raise AssertionError('%s failed (%d):\n%s\n%s'
                                 % (' '.join(argv), proc.returncode, proc.stdout, proc.stderr))
        return proc

    def write(self, path, text):
        with open(path, 'w') as handle:
            handle.write(text)
        if self.as_root:
            pw = pwd.getpwnam('postgres')
            os.chown(path, pw.pw_uid, pw.pw_gid)

    def mkdir(self, path):
        os.makedirs(path, exist_ok=True)
        if self.as_root:
            pw = pwd.getpwnam('postgres')
            os.chown(path, pw.pw_uid, pw.pw_gid)
        return path

    def pgbackrest(self, *argv, check=True):
        return self.run([PGBACKREST, '--config=%s' % self.conf, '--stanza=%s' % STANZA] + list(argv), check=check)

    def wrapper(self, *argv, check=True):
        return self.run(['/usr/bin/python3', os.path.join(self.lib, 'greenflow_pgbackrest.py'),
                         '--config=%s' % self.conf, '--stanza=%s' % STANZA, '--status-file=%s' % self.status,
                         '--pgbackrest=%s' % PGBACKREST] + list(argv), check=check,
                        env={'GREENFLOW_PGBACKREST_LIB': self.lib})

    def psql(self, sql, port=None, database='postgres'):
        proc = self.run([os.path.join(PG_BIN, 'psql'), '-X', '-tA', '-h', self.dir, '-p', str(port or self.port),
                         '-d', database, '-c', sql])
        return proc.stdout.strip()

    def info(self):
        return json.loads(self.pgbackrest('--output=json', 'info').stdout)

    def setup(self):
        for path in ('spool', 'log', 'lock', 'repo'):
            self.mkdir(os.path.join(self.dir, path))
        # The wrapper as the role installs it: the program next to the logic it imports, run by
        # the system's python3 (as on the hosts).
        self.mkdir(self.lib)
        shutil.copy(os.path.join(ROOT, 'roles', 'pgbackrest', 'files', 'greenflow_pgbackrest.py'), self.lib)
        shutil.copy(os.path.join(ROOT, 'plugins', 'module_utils', '_pgbackrest_backups.py'), self.lib)
        spec = {'stanza': STANZA, 'repo_path': os.path.join(self.dir, 'repo'), 'retention_days': 30,
                'cipher_type': 'aes-256-cbc', 'cipher_pass': CIPHER_PASS, 'compress_type': 'zst',
                'process_max': pbc.process_max_for(os.cpu_count() or 1), 'archive_async': True,
                'spool_path': os.path.join(self.dir, 'spool'),
                'pg_hosts': [{'path': self.data, 'port': self.port, 'socket_path': self.dir}],
                'options': {'log-path': os.path.join(self.dir, 'log'), 'lock-path': os.path.join(self.dir, 'lock'),
                            # check/backup wait this long for a WAL segment to arrive (default 60 s).
                            'archive-timeout': 15}}
        self.write(self.conf, pbc.render_config(spec, header='integration test'))
        os.chmod(self.conf, 0o640)
        self.run([os.path.join(PG_BIN, 'initdb'), '-D', self.data, '-A', 'trust', '-U', 'postgres',
                  '--data-checksums', '--no-sync'])
        with open(os.path.join(self.data, 'postgresql.conf'), 'a') as handle:
            handle.write("\nport = %d\nlisten_addresses = ''\nunix_socket_directories = '%s'\n"
                         "archive_mode = on\narchive_timeout = 0\n"
                         "archive_command = '%s --config=%s --stanza=%s archive-push %%p'\n"
                         % (self.port, self.dir, PGBACKREST, self.conf, STANZA))
        self.start(self.data)

    def start(self, data, extra=''):
        self.run([os.path.join(PG_BIN, 'pg_ctl'), '-D', data, '-l', data + '.log', '-w', '-t', '120',
                  '-o', extra, 'start'] if extra else
                 [os.path.join(PG_BIN, 'pg_ctl'), '-D', data, '-l', data + '.log', '-w', '-t', '120', 'start'])
        self.started.append(data)

    def stop_all(self):
        for data in reversed(self.started):
            self.run([os.path.join(PG_BIN, 'pg_ctl'), '-D', data, '-m', 'immediate', '-w', 'stop'], check=False,
                     timeout=60)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope='module')
def cluster():
    c = Cluster()
    try:
        c.setup()
        yield c
    finally:
        c.stop_all()


def wait_for(predicate, seconds, what):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError('timed out after %d s waiting for %s' % (seconds, what))


def test_stanza_backups_verify_and_restore(cluster):
    cluster.pgbackrest('stanza-create')
    cluster.pgbackrest('check')  # also proves archive_command works (a WAL switch reaches the repository)

    cluster.psql('CREATE TABLE orders (id int PRIMARY KEY, note text)')
    cluster.psql("INSERT INTO orders SELECT i, md5(i::text) FROM generate_series(1, 1000) i")
    full = json.loads(cluster.wrapper('backup', '--type=full').stdout)
    assert full['result'] == 'ok', full
    cluster.psql("INSERT INTO orders SELECT i, md5(i::text) FROM generate_series(1001, 1500) i")
    diff = json.loads(cluster.wrapper('backup', '--type=diff').stdout)
    assert diff['result'] == 'ok', diff
    # Rows after the differential backup: not in a restore of it to its consistent point.
    cluster.psql("INSERT INTO orders SELECT i, md5(i::text) FROM generate_series(1501, 1700) i")

    # The status file monitoring reads.
    with open(cluster.status) as handle:
        status = json.load(handle)
    assert status['result'] == 'ok' and status['backup']['type'] == 'diff'
    assert status['verify']['status'] == 'ok'
    assert status['expire']['allowed'] is True and status['expire']['remove'] == []

    # pgBackRest's own report, read by the logic: both backups verified (annotated, WAL archived).
    info = cluster.info()
    entry = pbb.stanza_info(info, STANZA)
    labels = [b['label'] for b in entry['backup']]
    assert [b['type'] for b in entry['backup']] == ['full', 'diff']
    assert entry['cipher'] == 'aes-256-cbc'
    assert pbb.verified_labels(entry) == labels, pbb.backup_checks(entry)
    assert status['verified'] == labels
    assert pbb.parse_verify_text(cluster.pgbackrest('verify', '--output=text', '--verbose').stdout)['backups'] == {
        label: 'valid' for label in labels}

    # Restore the differential into a scratch directory (the running cluster is not touched).
    scratch = os.path.join(cluster.dir, 'restored')
    cluster.mkdir(scratch)
    os.chmod(scratch, 0o700)
    cluster.pgbackrest('restore', '--set=%s' % labels[1], '--pg1-path=%s' % scratch, '--type=immediate',
                       '--target-action=promote', '--archive-mode=off')
    port = free_port()
    cluster.start(scratch, extra="-p %d -c unix_socket_directories='%s' -c listen_addresses=''" % (port, cluster.dir))
    wait_for(lambda: cluster.psql('SELECT pg_is_in_recovery()', port=port) == 'f', 120, 'the restore to promote')
    assert cluster.psql('SELECT count(*) FROM orders', port=port) == '1500'
    assert cluster.psql('SELECT count(*) FROM orders') == '1700'


def test_expire_never_leaves_zero_verified_backups(cluster):
    entry = pbb.stanza_info(cluster.info(), STANZA)
    assert len(entry['backup']) == 2, 'runs after test_stanza_backups_verify_and_restore'
    # A second full backup, then pretend it failed verification: drop its annotation.
    json.loads(cluster.wrapper('backup', '--type=full').stdout)
    newest = pbb.stanza_info(cluster.info(), STANZA)['backup'][-1]
    assert newest['type'] == 'full'
    cluster.pgbackrest('annotate', '--set=%s' % newest['label'], '--annotation=%s=' % pbb.VERIFIED_ANNOTATION)
    later = time.time() + 40 * DAY  # both fulls outside a 30-day window: the older one would go

    # Refused: the only verified backups are the old full and its diff, which the expire would remove.
    refused = cluster.wrapper('--now=%d' % later, 'expire', check=False)
    assert refused.returncode == 1
    report = json.loads(refused.stdout)
    assert report['expire']['allowed'] is False and report['expire']['verified_after'] == []
    assert 'leave 0 verified backup(s)' in report['error']
    assert len(pbb.stanza_info(cluster.info(), STANZA)['backup']) == 3  # nothing removed

    # Verified again: the expire runs, and pgBackRest removes exactly the planned backups.
    verified = json.loads(cluster.wrapper('verify').stdout)
    assert newest['label'] in verified['verify']['annotated']
    done = json.loads(cluster.wrapper('--now=%d' % later, 'expire').stdout)
    assert done['result'] == 'ok' and len(done['expire']['remove']) == 2
    left = [b['label'] for b in pbb.stanza_info(cluster.info(), STANZA)['backup']]
    assert left == [newest['label']]
    cluster.pgbackrest('check')


def test_stopped_archiving_fails_backup_and_verify(cluster):
    before = len(pbb.stanza_info(cluster.info(), STANZA)['backup'])
    cluster.psql("ALTER SYSTEM SET archive_command = '/bin/false'")
    cluster.psql('SELECT pg_reload_conf()')
    try:
        for action in (['verify'], ['backup', '--type=diff']):
            proc = cluster.wrapper(*action, check=False)
            assert proc.returncode == 1, proc.stdout
            report = json.loads(proc.stdout)
            assert report['result'] == 'failed' and 'WAL archiving does not work' in report['error']
        assert len(pbb.stanza_info(cluster.info(), STANZA)['backup']) == before  # no backup was taken
        with open(cluster.status) as handle:
            status = json.load(handle)
        assert status['result'] == 'failed' and status['last_success']['action'] == 'expire'
    finally:
        cluster.psql('ALTER SYSTEM RESET archive_command')
        cluster.psql('SELECT pg_reload_conf()')
    assert json.loads(cluster.wrapper('verify').stdout)['result'] == 'ok'


def test_restore_test_restores_the_newest_verified_backup_into_scratch_and_checks_it(cluster):
    """The weekly restore test: its own configuration, a private instance, the archive replayed to its
    end, pg_amcheck; the live cluster untouched; the result in the status file and the metrics."""
    if not cluster.as_root:
        pytest.skip('the scratch instance authenticates by peer as postgres: run as root')
    assert json.loads(cluster.wrapper('verify').stdout)['result'] == 'ok'
    scratch = os.path.join(cluster.dir, 'restore-test')
    textfile = os.path.join(cluster.dir, 'greenflow_backup.prom')
    proc = cluster.wrapper('--scratch-dir=%s' % scratch, '--scratch-port=%d' % free_port(), '--pg-bin=%s' % PG_BIN,
                           '--textfile=%s' % textfile, 'restore-test', check=False)
    report = json.loads(proc.stdout)
    assert proc.returncode == 0 and report['result'] == 'ok', (report, proc.stderr)
    test = report['restore_test']
    assert test['result'] == 'ok' and test['check'] == 'pg_amcheck' and test['redo_done_lsn'], test
    assert test['backup'] == pbb.verified_labels(pbb.stanza_info(cluster.info(), STANZA))[-1]
    assert not os.path.exists(scratch)  # removed afterwards
    assert cluster.psql('SELECT pg_is_in_recovery()') == 'f'  # the live cluster untouched
    with open(textfile) as handle:
        metrics = handle.read()
    assert 'greenflow_backup_restore_test_ok{stanza="%s"} 1' % STANZA in metrics
    assert 'greenflow_backup_last_verified_backup_timestamp_seconds' in metrics
    # a check query that is not true fails the test
    proc = cluster.wrapper('--scratch-dir=%s' % scratch, '--scratch-port=%d' % free_port(), '--pg-bin=%s' % PG_BIN,
                           '--verify-query=SELECT false', 'restore-test', check=False)
    assert proc.returncode == 1 and 'check query did not return true' in json.loads(proc.stdout)['error']
