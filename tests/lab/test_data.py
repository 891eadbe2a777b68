"""The data scenario on a lab of its own: backups, point-in-time restore, verification, retention and
failover, against real PostgreSQL in the lab containers.

    .venv/bin/pytest -q -s tests/lab/test_data.py

(A plain `pytest` of the whole tree skips it: it runs when named, or with GREENFLOW_DATA_LAB=1.)

The module fixture brings up a prefixed lab (GREENFLOW_DATA_LAB_PREFIX, default `ci-data-`; its own
containers and network), provisions PostgreSQL and backups, and removes that lab at the end (also on
failure; GREENFLOW_DATA_KEEP_LAB=1 keeps it for a look). With GREENFLOW_LAB_REUSE=1 it runs on an
already provisioned lab instead (tests/lab/shared_lab.py). The tests run in file order and build on each
other (one lab, one story): PITR by time, then by LSN (the replica re-cloned; a re-run of the role
keeps it) -> verification and retention -> synchronous failover + pg_rewind -> asynchronous failover
with the lag measured.
"""
import json
import os
import re
import shutil
import subprocess
import time

import pytest

from ansible_collections.greenflow.platform.plugins.module_utils._pg_backup import parse_lsn
from shared_lab import assert_lab_running, lab_address

pytestmark = [pytest.mark.lab]

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PREFIX, HTTP_PORT, HTTPS_PORT, REUSED_LAB = lab_address(
    os.environ.get('GREENFLOW_DATA_LAB_PREFIX', 'ci-data-'),
    (os.environ.get('GREENFLOW_DATA_LAB_HTTP_PORT', '48180'), os.environ.get('GREENFLOW_DATA_LAB_HTTPS_PORT', '48543')))
ENV = dict(os.environ,
           GREENFLOW_LAB_PREFIX=PREFIX,
           GREENFLOW_LAB_HTTP_PORT=str(HTTP_PORT),
           GREENFLOW_LAB_HTTPS_PORT=str(HTTPS_PORT),
           ANSIBLE_CONFIG=os.path.join(REPO, 'ansible.cfg'),
           ANSIBLE_FORCE_COLOR='0',
           PATH=os.path.join(REPO, '.venv', 'bin') + os.pathsep + os.environ.get('PATH', ''))
PRIMARY = PREFIX + 'pg-primary-1'
REPLICA = PREFIX + 'pg-replica-1'
STORE = '/var/lib/greenflow-backup/main'
PG_BIN = '/usr/lib/postgresql/15/bin'
REPLICA_DATA = '/var/lib/postgresql/15/main'
FIGURES = {}


def play(playbook, *extra, inventory=None, check=True):
    argv = ['ansible-playbook', '-i', inventory or os.path.join(REPO, 'inventories', 'lab'),
            os.path.join(REPO, playbook)] + list(extra)
    started = time.time()
    proc = subprocess.run(argv, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, check=False)
    print('%s %s: rc=%d in %.0f s' % (playbook, ' '.join(extra), proc.returncode, time.time() - started))
    if check and proc.returncode != 0:
        pytest.fail('%s failed:\n%s' % (playbook, proc.stdout[-6000:]))
    return proc


def sh(container, command, check=True):
    proc = subprocess.run(['docker', 'exec', container, 'bash', '-c', command], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, check=False)
    if check and proc.returncode != 0:
        pytest.fail('%s: %s failed: %s' % (container, command, proc.stderr))
    return proc.stdout.strip()


def psql(container, sql, db='app'):
    return sh(container, 'runuser -u postgres -- psql -X -qtA -v ON_ERROR_STOP=1 -d %s -c "%s"' % (db, sql))


def store_listing():
    return json.loads(sh(REPLICA, 'runuser -u postgres -- greenflow-pg-backup list'))


def wait_archived(container):
    """Switch WAL on `container` (the primary) and wait until that segment is in the store."""
    segment = psql(container, 'SELECT pg_walfile_name(pg_switch_wal())')
    for _ in range(60):
        if sh(REPLICA, 'ls %s/wal/%s.gz 2>/dev/null || true' % (STORE, segment)):
            return segment
        time.sleep(1)
    pytest.fail('segment %s never reached the store' % segment)


@pytest.fixture(scope='module')
def lab(request):
    named = any('tests/lab' in str(arg) for arg in request.config.args)
    if not named and os.environ.get('GREENFLOW_DATA_LAB') != '1':
        pytest.skip('lab scenario: run it by name (pytest tests/lab/test_data.py) or with GREENFLOW_DATA_LAB=1')
    if shutil.which('docker') is None:
        pytest.skip('no docker here')
    started = time.time()
    try:
        if REUSED_LAB:  # up and provisioned by site.yml already (GREENFLOW_LAB_REUSE=1)
            assert_lab_running(PREFIX)
        else:
            play('lab/lab-up.yml')
            play('playbooks/postgresql.yml')
            play('playbooks/pg_backup.yml')
            FIGURES['provision_s'] = round(time.time() - started)
        yield
    finally:
        print('figures: %s' % json.dumps(FIGURES, sort_keys=True))
        if not REUSED_LAB and os.environ.get('GREENFLOW_DATA_KEEP_LAB') != '1':
            play('lab/lab-down.yml', check=False)


def test_point_in_time_restore_has_exactly_the_rows_before_the_target(lab):
    psql(PRIMARY, 'CREATE TABLE pitr(id serial PRIMARY KEY, phase int, ts timestamptz DEFAULT clock_timestamp())')
    psql(PRIMARY, 'INSERT INTO pitr(phase) SELECT 1 FROM generate_series(1, 50)')
    play('playbooks/backup.yml')
    psql(PRIMARY, 'INSERT INTO pitr(phase) SELECT 2 FROM generate_series(1, 30)')
    time.sleep(1.5)
    target = psql(PRIMARY, 'SELECT now()')
    time.sleep(1.5)
    psql(PRIMARY, 'INSERT INTO pitr(phase) SELECT 3 FROM generate_series(1, 20)')
    before_target = int(psql(PRIMARY, "SELECT count(*) FROM pitr WHERE ts < '%s'" % target))
    assert before_target == 80
    wait_archived(PRIMARY)

    # a running primary is not overwritten without the cluster's name
    refused = play('playbooks/restore.yml', '-e', 'restore_confirm=wrong', check=False)
    assert refused.returncode != 0 and 'runs a PRIMARY' in refused.stdout
    assert psql(PRIMARY, 'SELECT count(*) FROM pitr') == '100'

    started = time.time()
    play('playbooks/restore.yml', '-e', 'restore_confirm=main', '-e', 'restore_target_time="%s"' % target)
    FIGURES['pitr_restore_playbook_s'] = round(time.time() - started)
    assert psql(PRIMARY, 'SELECT phase, count(*) FROM pitr GROUP BY 1 ORDER BY 1').split() == ['1|50', '2|30']
    assert psql(PRIMARY, "SELECT count(*) FROM pitr WHERE ts >= '%s'" % target) == '0'
    # the replica was rebuilt from the restored primary and streams again
    assert psql(PRIMARY, 'SELECT state FROM pg_stat_replication', db='postgres') == 'streaming'
    assert psql(PRIMARY, 'SELECT pg_is_in_recovery()') == 'f'


def test_restore_to_an_lsn_starts_from_a_backup_taken_before_it(lab):
    # restore.yml ended with a fresh backup (A). Rows of phase 4, the target LSN, rows of phase 5 (the
    # replica replays past the target), a backup (B, taken on the replica) that is consistent only
    # after the target, rows of phase 6: the restore must start from A, since B cannot go back.
    psql(PRIMARY, 'INSERT INTO pitr(phase) SELECT 4 FROM generate_series(1, 10)')
    target = psql(PRIMARY, 'SELECT pg_current_wal_insert_lsn()')
    psql(PRIMARY, 'INSERT INTO pitr(phase) SELECT 5 FROM generate_series(1, 10)')
    wait_archived(PRIMARY)
    play('playbooks/backup.yml')
    psql(PRIMARY, 'INSERT INTO pitr(phase) SELECT 6 FROM generate_series(1, 10)')
    wait_archived(PRIMARY)
    newest = [b for b in store_listing() if not b.get('partial')][-1]
    assert newest['verified'], newest
    assert parse_lsn(newest['stop_lsn']) > parse_lsn(target), (newest, target)  # B really cannot serve
    sh(REPLICA, 'touch %s/greenflow-test-marker' % REPLICA_DATA)  # gone once the replica is re-cloned
    started = time.time()
    proc = play('playbooks/restore.yml', '-e', 'restore_confirm=main', '-e', 'restore_target_lsn=%s' % target)
    FIGURES['lsn_restore_playbook_s'] = round(time.time() - started)
    restored = re.search(r"restored_backup: '?([0-9]{8}T[0-9]{6}Z)", proc.stdout)
    assert restored and restored.group(1) != newest['id'], (restored and restored.group(1), newest['id'])
    assert psql(PRIMARY, 'SELECT phase, count(*) FROM pitr GROUP BY 1 ORDER BY 1').split() == ['1|50', '2|30', '4|10']
    assert psql(PRIMARY, 'SELECT state FROM pg_stat_replication', db='postgres') == 'streaming'
    # restore.yml rebuilt the replica (pg_replica_rebuild=true): its old data directory is gone
    assert not sh(REPLICA, 'ls %s/greenflow-test-marker 2>/dev/null || true' % REPLICA_DATA)


def test_a_rerun_of_the_postgresql_role_keeps_the_replica_data(lab):
    sh(REPLICA, 'touch %s/greenflow-test-marker' % REPLICA_DATA)
    proc = play('playbooks/postgresql.yml')
    recap = re.search(r'^pg-replica-1\s+: ok=\d+\s+changed=(\d+)', proc.stdout, re.M)
    assert recap and recap.group(1) == '0', proc.stdout[-3000:]
    assert sh(REPLICA, 'ls %s/greenflow-test-marker' % REPLICA_DATA)
    assert psql(PRIMARY, 'SELECT state FROM pg_stat_replication', db='postgres') == 'streaming'
    sh(REPLICA, 'rm -f %s/greenflow-test-marker' % REPLICA_DATA)


def test_verification_catches_damage_and_restore_test_passes(lab):
    proc = play('playbooks/backup.yml', '-e', 'verify_restore=true')
    status = json.loads(sh(REPLICA, 'cat /var/lib/greenflow-pg-backup/status.json'))
    assert status['result'] == 'ok'
    assert status['last_verify_restore']['result'] == 'ok', status
    assert status['last_success']['size_bytes'] > 0
    FIGURES['backup_with_restore_test_s'] = status['last_run']['duration_s']
    FIGURES['restore_test_s'] = status['last_verify_restore']['duration_s']
    newest = [b for b in store_listing() if not b.get('partial')][-1]['id']

    # a damaged data file of the newest backup
    victim = '%s/base/%s/global/pg_control' % (STORE, newest)
    sh(REPLICA, 'cp -p %s /tmp/keep && printf garbage >> %s' % (victim, victim))
    proc = play('playbooks/backup.yml', '-e', 'pg_backup_action=verify', check=False)
    assert proc.returncode != 0
    assert 'DAMAGED' in proc.stdout and 'global/pg_control' in proc.stdout, proc.stdout[-3000:]
    status = json.loads(sh(REPLICA, 'cat /var/lib/greenflow-pg-backup/status.json'))
    assert status['result'] == 'failed'
    sh(REPLICA, 'cp -p /tmp/keep %s' % victim)

    # a damaged WAL segment in the archive
    segment = wait_archived(PRIMARY)
    wal = '%s/wal/%s.gz' % (STORE, segment)
    sh(REPLICA, 'cp -p %s /tmp/keep && truncate -s 100 %s' % (wal, wal))
    proc = play('playbooks/backup.yml', '-e', 'pg_backup_action=verify', check=False)
    assert proc.returncode != 0 and 'WAL file DAMAGED' in proc.stdout and segment in proc.stdout
    sh(REPLICA, 'cp -p /tmp/keep %s' % wal)
    play('playbooks/backup.yml', '-e', 'pg_backup_action=verify')


def test_retention_keeps_the_newest_verified_backup_and_its_wal(lab):
    listing = [b for b in store_listing() if not b.get('partial')]
    assert len(listing) >= 3
    newest = listing[-1]
    # age 0 days: everything but the newest verified backup is outside the window
    sh(REPLICA, 'runuser -u postgres -- greenflow-pg-backup retention --days 0')
    after = [b for b in store_listing() if not b.get('partial')]
    assert [b['id'] for b in after] == [newest['id']]
    names = sh(REPLICA, 'ls %s/wal' % STORE).split()
    segments = [n[:24] for n in names if re.match(r'^[0-9A-F]{24}\.gz$', n)]
    assert segments and min(s[8:] for s in segments) >= newest['start_wal'][8:]
    assert any(n.endswith('.history.gz') for n in names)  # history files stay
    # what is left still restores
    sh(REPLICA, 'runuser -u postgres -- greenflow-pg-backup verify --restore')


def _insert_loop(container):
    """Commit one row per transaction until the server goes away; acknowledged ids go to /tmp/acked."""
    sh(container, 'rm -f /tmp/acked /tmp/loop.done')
    subprocess.run(['docker', 'exec', '-d', container, 'bash', '-c',
                    'for i in $(seq 1 1000000); do runuser -u postgres -- psql -X -qtA -d app '
                    '-c "INSERT INTO acked(id) VALUES ($i)" >/dev/null 2>&1 && echo $i >> /tmp/acked || break; '
                    'done; touch /tmp/loop.done'], check=True)


def _crash(container):
    sh(container, 'runuser -u postgres -- %s/pg_ctl -D /var/lib/postgresql/15/main stop -m immediate' % PG_BIN)
    for _ in range(30):
        if sh(container, 'test -e /tmp/loop.done && echo y || true'):
            break
        time.sleep(0.5)
    return [int(x) for x in sh(container, 'cat /tmp/acked').split()]


def _failover_report(output):
    match = re.search(r'lag_at_failure_bytes: (\S+)', output)
    return match.group(1) if match else None


def test_synchronous_failover_loses_no_acknowledged_transaction(lab):
    psql(PRIMARY, 'CREATE TABLE acked(id int PRIMARY KEY, ts timestamptz DEFAULT clock_timestamp())')
    psql(PRIMARY, "ALTER SYSTEM SET synchronous_standby_names = 'ANY 1 (*)'", db='postgres')
    psql(PRIMARY, 'SELECT pg_reload_conf()', db='postgres')
    time.sleep(1)
    assert psql(PRIMARY, 'SELECT sync_state FROM pg_stat_replication', db='postgres') == 'quorum'
    _insert_loop(PRIMARY)
    time.sleep(6)
    acked = _crash(PRIMARY)
    assert len(acked) >= 3
    started = time.time()
    proc = play('playbooks/failover.yml')
    FIGURES['failover_sync_s'] = round(time.time() - started)
    present = {int(x) for x in psql(REPLICA, 'SELECT id FROM acked').split()}
    missing = sorted(set(acked) - present)
    FIGURES['sync_acknowledged'] = len(acked)
    FIGURES['sync_lost'] = len(missing)
    FIGURES['sync_lag_at_failure_bytes'] = _failover_report(proc.stdout)
    assert not missing, 'acknowledged but lost after a synchronous failover: %s' % missing[:20]
    assert psql(REPLICA, 'SELECT pg_is_in_recovery()') == 'f'
    # the old primary comes back as a replica of the new one (pg_rewind)
    started = time.time()
    play('playbooks/failover_reattach.yml')
    FIGURES['reattach_s'] = round(time.time() - started)
    assert psql(REPLICA, 'SELECT state FROM pg_stat_replication', db='postgres') == 'streaming'
    assert psql(PRIMARY, 'SELECT pg_is_in_recovery()') == 't'


def test_asynchronous_failover_reports_the_lag(lab, tmp_path):
    # the inventory after the first failover: the groups swapped
    inventory = tmp_path / 'inventory'
    inventory.mkdir()
    for sub in ('group_vars', 'host_vars'):
        os.symlink(os.path.join(REPO, 'inventories', 'lab', sub), str(inventory / sub))
    (inventory / 'hosts.yml').write_text(
        open(os.path.join(REPO, 'inventories', 'lab', 'hosts.yml')).read()
        .replace('pg-primary-1:', 'PRIMARY_TMP:').replace('pg-replica-1:', 'pg-primary-1:')
        .replace('PRIMARY_TMP:', 'pg-replica-1:')
        .replace('"{{ lab_prefix }}pg-primary-1"', '"{{ lab_prefix }}TMP"')
        .replace('"{{ lab_prefix }}pg-replica-1"', '"{{ lab_prefix }}pg-primary-1"')
        .replace('"{{ lab_prefix }}TMP"', '"{{ lab_prefix }}pg-replica-1"'))
    secrets = ['-e', 'postgresql_lab_secrets_dir=%s/lab/.secrets' % REPO]
    new_primary, new_replica = REPLICA, PRIMARY
    assert psql(new_primary, 'SHOW synchronous_standby_names', db='postgres') == ''
    psql(new_primary, 'TRUNCATE acked')
    _insert_loop(new_primary)
    time.sleep(6)
    acked = _crash(new_primary)
    proc = play('playbooks/failover.yml', *secrets, inventory=str(inventory))
    lag = _failover_report(proc.stdout)
    present = {int(x) for x in psql(new_replica, 'SELECT id FROM acked').split()}
    FIGURES['async_acknowledged'] = len(acked)
    FIGURES['async_lost'] = len(set(acked) - present)
    FIGURES['async_lag_at_failure_bytes'] = lag
    assert lag is not None and re.match(r'^\d+$', lag), proc.stdout[-3000:]
    assert psql(new_replica, 'SELECT pg_is_in_recovery()') == 'f'
