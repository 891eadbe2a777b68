"""pgBackRest with a second repository, for real, on this machine: the scratch PostgreSQL 15 cluster of
test_pgbackrest_local.py, repo1 (encrypted, 30 days) plus repo2 of type posix in a second local directory
(its own passphrase, 7 days of retention), rendered by _pgbackrest_config, and the role's wrapper.

Covers: every backup run writes the same type of backup into both repositories (repo1 first), each one
verified with `pgbackrest verify --repo=N` and annotated in its own repository; the status file and the
Prometheus textfile per repository, repo1's metrics unchanged; the expire applies each repository's own
retention; repo2 made unreadable -> the run fails naming repo2, repo1's new backup still taken, verified
and counted (top-level status, metrics, the deploy gate).

An S3-compatible repo2 is rendered and unit-tested only (no S3-compatible server is packaged in Debian
bookworm; docs/backups-pgbackrest.md). Needs postgresql-15 and pgbackrest; skipped without them."""
import json
import os
import time

import pytest

from ansible_collections.greenflow.platform.plugins.module_utils import _backup_gate as gate
from ansible_collections.greenflow.platform.plugins.module_utils import _pgbackrest_backups as pbb
from ansible_collections.greenflow.platform.plugins.module_utils import _pgbackrest_config as pbc
from test_pgbackrest_local import PG_BIN, PGBACKREST, STANZA, Cluster

DAY = 86400
REPO2_PASS = 'second-repository-passphrase-9876543210'

pytestmark = pytest.mark.skipif(
    not (os.path.exists(os.path.join(PG_BIN, 'initdb')) and os.path.exists(PGBACKREST)),
    reason='needs postgresql-15 and pgbackrest (make debian-packages)')


class TwoRepoCluster(Cluster):
    def setup(self):
        super().setup()
        self.repo2 = self.mkdir(os.path.join(self.dir, 'repo2'))
        self.textfile = os.path.join(self.dir, 'greenflow_backup.prom')
        with open(self.conf) as handle:
            sections = pbc.parse_config(handle.read())
        glob = sections['global']
        spec = {'stanza': STANZA, 'repo_path': glob['repo1-path'], 'retention_days': 30,
                'cipher_type': 'aes-256-cbc', 'cipher_pass': glob['repo1-cipher-pass'], 'compress_type': 'zst',
                'process_max': int(glob['process-max']), 'archive_async': True, 'spool_path': glob['spool-path'],
                'pg_hosts': [{'path': self.data, 'port': self.port, 'socket_path': self.dir}],
                'options': {'log-path': glob['log-path'], 'lock-path': glob['lock-path'], 'archive-timeout': 15},
                'repo2': {'type': 'posix', 'path': self.repo2, 'retention_days': 7,
                          'cipher_type': 'aes-256-cbc', 'cipher_pass': REPO2_PASS}}
        self.write(self.conf, pbc.render_config(spec, header='integration test, two repositories'))
        os.chmod(self.conf, 0o640)

    def run_wrapper(self, *argv):
        proc = self.wrapper('--textfile=%s' % self.textfile, *argv, check=False)
        return proc, json.loads(proc.stdout)

    def entry(self, repo):
        return pbb.stanza_info(json.loads(self.pgbackrest('--output=json', '--repo=%d' % repo, 'info').stdout), STANZA)

    def metrics(self):
        with open(self.textfile) as handle:
            return handle.read()


@pytest.fixture(scope='module')
def cluster():
    c = TwoRepoCluster()
    try:
        c.setup()
        yield c
    finally:
        c.stop_all()


def test_every_backup_lands_verified_in_both_repositories(cluster):
    cluster.pgbackrest('stanza-create')  # creates the stanza in both repositories
    cluster.pgbackrest('check')
    cluster.psql('CREATE TABLE orders (id int PRIMARY KEY, note text)')
    cluster.psql("INSERT INTO orders SELECT i, md5(i::text) FROM generate_series(1, 1000) i")

    for kind in ('full', 'diff'):
        proc, report = cluster.run_wrapper('backup', '--type=%s' % kind)
        assert proc.returncode == 0 and report['result'] == 'ok', (report, proc.stderr)
        assert report['failed_repos'] == []
        assert sorted(report['repos']) == ['1', '2']
        for repo in ('1', '2'):
            part = report['repos'][repo]
            assert part['result'] == 'ok' and part['last_backup']['result'] == 'ok'
            assert part['backup']['type'] == kind and part['backup']['label'] in part['verified']
            assert part['check']['exit'] == 0 and part['verify']['status'] == 'ok'
            assert part['expire']['allowed'] is True
        assert report['repos']['1']['expire']['retention_days'] == 30
        assert report['repos']['2']['expire']['retention_days'] == 7
        # the top-level keys stay repo1's
        assert report['backup']['label'] == report['repos']['1']['backup']['label']
        assert report['verified'] == report['repos']['1']['verified']
        cluster.psql("INSERT INTO orders SELECT i, md5(i::text) FROM generate_series(1001, 1100) i "
                     "ON CONFLICT DO NOTHING")

    # pgBackRest's own report per repository: a full and a diff in each, each annotated and verified there.
    for repo in (1, 2):
        entry = cluster.entry(repo)
        assert [b['type'] for b in entry['backup']] == ['full', 'diff']
        assert all(b['database']['repo-key'] == repo for b in entry['backup'])
        assert all(pbb.VERIFIED_ANNOTATION in (b.get('annotation') or {}) for b in entry['backup'])
        assert pbb.verified_labels(entry) == [b['label'] for b in entry['backup']]
        assert entry['cipher'] == 'aes-256-cbc'
    assert cluster.entry(1)['backup'][0]['label'] != cluster.entry(2)['backup'][0]['label']

    with open(cluster.status) as handle:
        status = json.load(handle)
    assert status['repos']['2']['verified'] == [b['label'] for b in cluster.entry(2)['backup']]
    metrics = cluster.metrics()
    # repo1's metrics as monitoring knows them (no repo label), plus one series per repository
    assert 'greenflow_backup_last_run_ok{stanza="%s"} 1\n' % STANZA in metrics
    assert 'greenflow_backup_verified_backups{stanza="%s"} 2\n' % STANZA in metrics
    for repo in ('1', '2'):
        assert 'greenflow_backup_repo_last_backup_ok{stanza="%s",repo="%s"} 1\n' % (STANZA, repo) in metrics
        assert 'greenflow_backup_repo_verified_backups{stanza="%s",repo="%s"} 2\n' % (STANZA, repo) in metrics
        assert 'greenflow_backup_repo_archive_check_ok{stanza="%s",repo="%s"} 1\n' % (STANZA, repo) in metrics


def test_expire_applies_each_repositorys_own_retention(cluster):
    assert len(cluster.entry(2)['backup']) == 2, 'runs after test_every_backup_lands_verified_in_both_repositories'
    proc, report = cluster.run_wrapper('backup', '--type=full')
    assert proc.returncode == 0, report
    # Ten days on: repo1 keeps 30 days (nothing goes); repo2 keeps 7, its first full and the diff on it go.
    later = time.time() + 10 * DAY
    proc, report = cluster.run_wrapper('--now=%d' % later, 'expire')
    assert proc.returncode == 0 and report['result'] == 'ok', report
    assert report['repos']['1']['expire']['remove'] == []
    assert len(report['repos']['2']['expire']['remove']) == 2
    assert [b['type'] for b in cluster.entry(1)['backup']] == ['full', 'diff', 'full']
    assert [b['type'] for b in cluster.entry(2)['backup']] == ['full']
    assert pbb.verified_labels(cluster.entry(2)) == [cluster.entry(2)['backup'][0]['label']]


def test_a_broken_repo2_fails_the_run_naming_it_and_repo1_still_counts(cluster):
    before1 = [b['label'] for b in cluster.entry(1)['backup']]
    before2 = [b['label'] for b in cluster.entry(2)['backup']]
    os.chmod(cluster.repo2, 0o000)  # pgBackRest runs as postgres: repo2 can no longer be read or written
    try:
        proc, report = cluster.run_wrapper('backup', '--type=diff')
    finally:
        os.chmod(cluster.repo2, 0o750)
    assert proc.returncode == 1, report
    assert report['result'] == 'failed' and report['failed_repos'] == [2]
    assert report['error'].startswith('repo2: ') and 'repo1:' not in report['error'], report['error']
    assert 'repo2: ' in proc.stderr
    # repo1: its diff was taken, verified and counts
    part1 = report['repos']['1']
    assert part1['result'] == 'ok' and part1['last_backup']['result'] == 'ok'
    new1 = [b['label'] for b in cluster.entry(1)['backup'] if b['label'] not in before1]
    assert len(new1) == 1 and new1[0] in part1['verified'] and part1['backup']['type'] == 'diff'
    assert report['last_backup']['result'] == 'ok' and report['newest_verified']['label'] == new1[0]
    # repo2: nothing new, the failure recorded in its part
    part2 = report['repos']['2']
    assert part2['result'] == 'failed' and part2['last_backup']['result'] == 'failed' and part2['error']
    assert [b['label'] for b in cluster.entry(2)['backup']] == before2
    metrics = cluster.metrics()
    assert 'greenflow_backup_last_run_ok{stanza="%s"} 0\n' % STANZA in metrics
    assert 'greenflow_backup_last_backup_ok{stanza="%s"} 1\n' % STANZA in metrics
    assert 'greenflow_backup_repo_last_backup_ok{stanza="%s",repo="1"} 1\n' % STANZA in metrics
    assert 'greenflow_backup_repo_last_backup_ok{stanza="%s",repo="2"} 0\n' % STANZA in metrics
    assert 'greenflow_backup_repo_last_run_ok{stanza="%s",repo="2"} 0\n' % STANZA in metrics
    # the deploy gate reads repo1's restore point: a release is not held back by the offsite copy
    with open(cluster.status) as handle:
        decision = gate.evaluate(json.load(handle), time.time(), 26)
    assert decision['ok'] is True and decision['newest_verified']['label'] == new1[0], decision

    # repo2 back: the next run puts a backup into both again.
    proc, report = cluster.run_wrapper('backup', '--type=diff')
    assert proc.returncode == 0 and report['result'] == 'ok' and report['failed_repos'] == [], report
    assert 'greenflow_backup_repo_last_backup_ok{stanza="%s",repo="2"} 1\n' % STANZA in cluster.metrics()
