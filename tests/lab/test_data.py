"""The data scenario on a lab of its own: backups (pgBackRest, the default engine), point-in-time restore,
verification, archiving health, retention and failover, against real PostgreSQL in the lab containers.

    .venv/bin/pytest -q -s tests/lab/test_data.py

(A plain `pytest` of the whole tree skips it: it runs when named, or with GREENFLOW_DATA_LAB=1.)

The module fixture brings up a prefixed lab (GREENFLOW_DATA_LAB_PREFIX, default `ci-data-`; its own
containers and network), provisions PostgreSQL and backups, and removes that lab at the end (also on
failure; GREENFLOW_DATA_KEEP_LAB=1 keeps it for a look). With GREENFLOW_LAB_REUSE=1 it runs on an
already provisioned lab instead (tests/lab/shared_lab.py). The tests run in file order and build on each
other (one lab, one story): pgBackRest's TLS between the hosts (both ways; a foreign or unlisted
certificate refused) -> PITR by time, then by LSN (the replica re-cloned; a re-run of the role
keeps it; a stopped server is not restored without restore_confirm) -> verification (a damaged backup
and a damaged WAL file caught; the restore test; the status file and the metrics) -> archiving stopped:
backup and verify not ok -> retention never leaves zero verified backups -> a replica re-seeded by
`pgbackrest restore --delta --type=standby` (pg_replica_reseed.yml) ->
failover refused without failover_confirm, when the old primary cannot be fenced, and (before the fence)
when the replica lags too far behind a running primary -> synchronous failover (the fenced old primary
restarted and rebooted stays a standby or down) + pg_rewind -> asynchronous failover refused above
failover_max_lag_bytes, allowed with a larger limit, and the fenced old primary rewound again (the lab
ends as the inventory describes it).
"""
import json
import os
import re
import shutil
import subprocess
import time

import pytest

from ansible_collections.greenflow.platform.plugins.module_utils import _pgbackrest_backups as pbb
from ansible_collections.greenflow.platform.plugins.module_utils._pgbackrest_backups import parse_lsn
from shared_lab import assert_lab_running, database_turn, lab_address

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
REPO_DIR = '/var/lib/pgbackrest'  # the pgBackRest repository, on REPLICA (pg_backup_host)
STATUS = '/var/lib/greenflow-pgbackrest/status.json'
METRICS = '/var/lib/prometheus/node-exporter/greenflow_backup.prom'
LABEL = r'[0-9]{8}-[0-9]{6}F(?:_[0-9]{8}-[0-9]{6}[DI])?'
PG_BIN = '/usr/lib/postgresql/15/bin'
REPLICA_DATA = '/var/lib/postgresql/15/main'
PG_DATA = '/var/lib/postgresql/15/main'
PG_UNIT = 'postgresql@15-main'
CONFIRM = ['-e', 'failover_confirm=main']
SECRETS = ['-e', 'postgresql_lab_secrets_dir=%s/lab/.secrets' % REPO]
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
    # the YAML callback folds long messages over lines: `flat` has them on one line, for matching
    proc.flat = ' '.join(proc.stdout.split())
    return proc


def sh(container, command, check=True):
    proc = subprocess.run(['docker', 'exec', container, 'bash', '-c', command], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, check=False)
    if check and proc.returncode != 0:
        pytest.fail('%s: %s failed: %s' % (container, command, proc.stderr))
    return proc.stdout.strip()


def psql(container, sql, db='app'):
    return sh(container, 'runuser -u postgres -- psql -X -qtA -v ON_ERROR_STOP=1 -d %s -c "%s"' % (db, sql))


def in_recovery(container):
    """'t' or 'f' from pg_is_in_recovery(), or None when PostgreSQL does not answer there."""
    proc = subprocess.run(['docker', 'exec', container, 'runuser', '-u', 'postgres', '--', 'psql', '-X', '-qtA',
                           '-d', 'postgres', '-c', 'SELECT pg_is_in_recovery()'],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, check=False)
    return proc.stdout.strip() if proc.returncode == 0 else None


def wait_for(what, probe, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(1)
    pytest.fail('waited %d s for %s' % (timeout, what))


def streaming(primary):
    return psql(primary, 'SELECT state FROM pg_stat_replication', db='postgres') == 'streaming'


def inventory_copy(tmp_path, swap=False, unreachable=()):
    """The lab inventory in tmp_path: pg_primary / pg_replica swapped (as after a failover), and the hosts
    named in `unreachable` pointed at containers that do not exist (a host this controller cannot reach)."""
    inventory = tmp_path / ('inventory-swapped' if swap else 'inventory')
    inventory.mkdir()
    for sub in ('group_vars', 'host_vars'):
        os.symlink(os.path.join(REPO, 'inventories', 'lab', sub), str(inventory / sub))
    text = open(os.path.join(REPO, 'inventories', 'lab', 'hosts.yml')).read()
    if swap:
        text = (text.replace('pg-primary-1:', 'PRIMARY_TMP:').replace('pg-replica-1:', 'pg-primary-1:')
                .replace('PRIMARY_TMP:', 'pg-replica-1:')
                .replace('"{{ lab_prefix }}pg-primary-1"', '"{{ lab_prefix }}TMP"')
                .replace('"{{ lab_prefix }}pg-replica-1"', '"{{ lab_prefix }}pg-primary-1"')
                .replace('"{{ lab_prefix }}TMP"', '"{{ lab_prefix }}pg-replica-1"'))
    for host in unreachable:
        marker = '"{{ lab_prefix }}%s"' % host
        assert marker in text, host
        text = text.replace(marker, '"{{ lab_prefix }}%s-unreachable"' % host)
    (inventory / 'hosts.yml').write_text(text)
    return str(inventory)


def pgbackrest(container, *args, check=True):
    return sh(container, 'runuser -u postgres -- pgbackrest --stanza=main %s' % ' '.join(args), check=check)


def backups():
    """The stanza's entry of `pgbackrest info --output=json` (on the repository host)."""
    return pbb.stanza_info(json.loads(pgbackrest(REPLICA, '--output=json', 'info')), 'main')


def status():
    return json.loads(sh(REPLICA, 'cat %s' % STATUS))


def metric(name):
    match = re.search(r'^%s\{[^}]*\} (\S+)$' % name, sh(REPLICA, 'cat %s' % METRICS), re.M)
    return float(match.group(1)) if match else None


def wait_archived(container):
    """Switch WAL on `container` (the primary) and wait until that segment is in the repository
    (archive-push, also in asynchronous mode, succeeds only once the repository has it)."""
    segment = psql(container, 'SELECT pg_walfile_name(pg_switch_wal())')
    for _ in range(90):
        done = psql(container, 'SELECT last_archived_wal FROM pg_stat_archiver', db='postgres')
        if done and done[:24] >= segment:
            return segment
        time.sleep(1)
    pytest.fail('segment %s never reached the repository' % segment)


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
        # the cluster is this scenario's while it runs: the release scenario's migration tests wait for it
        with database_turn(PREFIX) as waited:
            FIGURES['database_turn_waited_s'] = round(waited)
            yield
    finally:
        print('figures: %s' % json.dumps(FIGURES, sort_keys=True))
        if not REUSED_LAB and os.environ.get('GREENFLOW_DATA_KEEP_LAB') != '1':
            play('lab/lab-down.yml', check=False)


def test_pgbackrest_talks_tls_both_ways_and_refuses_foreign_certificates(lab):
    """Folded from the former tests/lab/test_pgbackrest.py: check from the repository host reaches the
    primary over TLS and waits for a WAL segment the primary pushed over TLS; a certificate of another CA
    (with an allowed CN) and one of the role's CA with an unlisted CN are refused."""
    primary_conf = sh(PRIMARY, 'cat /etc/pgbackrest/pgbackrest.conf')
    assert 'repo1-host=%s' % REPLICA in primary_conf and 'repo1-host-type=tls' in primary_conf
    assert 'cipher-pass' not in primary_conf  # the passphrase stays on the repository host
    assert psql(PRIMARY, 'SHOW archive_command', db='postgres') == 'pgbackrest --stanza=main archive-push %p'
    pgbackrest(REPLICA, 'check')                              # repository host -> primary
    pgbackrest(PRIMARY, '--output=json', 'info')              # primary -> repository host
    assert backups()['cipher'] == 'aes-256-cbc'
    forged = sh(REPLICA, "runuser -u postgres -- bash -c 'cd /tmp && openssl req -x509 -newkey ec "
                "-pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout forged.key -out forged.crt -subj /CN=pg-replica-1 "
                "-days 1 2>/dev/null && pgbackrest --stanza=main --pg1-host-cert-file=/tmp/forged.crt "
                "--pg1-host-key-file=/tmp/forged.key check 2>&1; echo rc=$?; rm -f forged.key forged.crt'")
    assert 'rc=0' not in forged and 'unknown ca' in forged, forged
    own = sh(PRIMARY, 'runuser -u postgres -- pgbackrest --stanza=main --repo1-host=%s info 2>&1; echo rc=$?' % PRIMARY)
    assert 'access denied' in own, own  # info reports the stanza in error (exit 0)
    # encryption on and no passphrase: refused before any host changes
    refused = play('playbooks/pg_backup.yml', '-e', 'pgbackrest_cipher_pass=', check=False)
    assert refused.returncode != 0 and 'pgbackrest_cipher_pass is missing' in refused.flat, refused.stdout[-3000:]
    assert not re.search(r'changed=[1-9]', refused.stdout), refused.stdout[-3000:]


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
    assert refused.returncode != 0 and 'runs a PRIMARY' in refused.flat
    assert psql(PRIMARY, 'SELECT count(*) FROM pitr') == '100'

    started = time.time()
    play('playbooks/restore.yml', '-e', 'restore_confirm=main', '-e', 'restore_target_time="%s"' % target)
    FIGURES['pitr_restore_playbook_s'] = round(time.time() - started)
    assert psql(PRIMARY, 'SELECT phase, count(*) FROM pitr GROUP BY 1 ORDER BY 1').split() == ['1|50', '2|30']
    assert psql(PRIMARY, "SELECT count(*) FROM pitr WHERE ts >= '%s'" % target) == '0'
    # the replica was rebuilt from the restored primary and streams again
    assert psql(PRIMARY, 'SELECT state FROM pg_stat_replication', db='postgres') == 'streaming'
    assert psql(PRIMARY, 'SELECT pg_is_in_recovery()') == 'f'


def test_a_stopped_server_is_not_restored_without_restore_confirm(lab):
    # restore_confirm is needed whatever the server's state: stopped (or crashed), its data is replaced all the same
    sh(PRIMARY, 'systemctl stop %s' % PG_UNIT)
    try:
        assert in_recovery(PRIMARY) is None
        before = sh(PRIMARY, 'ls /var/lib/postgresql/15')
        refused = play('playbooks/restore.yml', check=False)
        assert refused.returncode != 0, refused.stdout[-3000:]
        assert 'does not answer' in refused.flat and 'restore_confirm=main' in refused.flat, refused.stdout[-3000:]
        refused = play('playbooks/restore.yml', '-e', 'restore_confirm=wrong', check=False)
        assert refused.returncode != 0 and 'Nothing was changed' in refused.flat, refused.stdout[-3000:]
        # nothing was touched: same directories, the server still stopped
        assert sh(PRIMARY, 'ls /var/lib/postgresql/15') == before
        assert sh(PRIMARY, 'systemctl is-active %s || true' % PG_UNIT) in ('inactive', 'failed')
    finally:
        sh(PRIMARY, 'systemctl start %s' % PG_UNIT)
    assert in_recovery(PRIMARY) == 'f'
    wait_for('the replica to stream again', lambda: streaming(PRIMARY))


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
    entry = backups()
    newest = entry['backup'][-1]
    assert newest['label'] in pbb.verified_labels(entry), newest
    assert parse_lsn(newest['lsn']['stop']) > parse_lsn(target), (newest, target)  # B really cannot serve
    sh(REPLICA, 'touch %s/greenflow-test-marker' % REPLICA_DATA)  # gone once the replica is re-cloned
    started = time.time()
    proc = play('playbooks/restore.yml', '-e', 'restore_confirm=main', '-e', 'restore_target_lsn=%s' % target)
    FIGURES['lsn_restore_playbook_s'] = round(time.time() - started)
    restored = re.search(r"restored_backup: '?(%s)" % LABEL, proc.stdout)
    assert restored and restored.group(1) != newest['label'], (restored and restored.group(1), newest['label'])
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
    report = status()
    assert report['result'] == 'ok', report
    assert report['restore_test']['result'] == 'ok' and report['restore_test']['check'] == 'pg_amcheck', report
    assert report['backup']['label'] in report['verified'] and report['archiver']['ok'] is True, report
    FIGURES['backup_with_restore_test_s'] = round(report['finished_epoch'] - pbb.parse_pg_time(
        report['started'].replace('T', ' ')))
    FIGURES['restore_test_s'] = report['restore_test']['duration_s']
    assert metric('greenflow_backup_last_run_ok') == 1 and metric('greenflow_backup_restore_test_ok') == 1
    assert metric('greenflow_backup_verified_backups') >= 2
    assert abs(metric('greenflow_backup_last_verified_backup_timestamp_seconds') - time.time()) < 600
    newest = backups()['backup'][-1]['label']
    # taken from the standby (the primary only starts and stops the backup)
    assert int(sh(REPLICA, 'grep -c "replay on the standby reached" /var/log/pgbackrest/main-backup.log')) >= 1

    # a damaged data file of the newest backup: verify fails, names it, and it stops counting as verified
    victim = sh(REPLICA, 'ls %s/backup/main/%s/pg_data/global/pg_control*' % (REPO_DIR, newest))
    sh(REPLICA, 'cp -p %s /tmp/keep && printf garbage >> %s' % (victim, victim))
    proc = play('playbooks/backup.yml', '-e', 'pg_backup_action=verify', check=False)
    assert proc.returncode != 0
    assert 'verify found problems' in proc.flat and newest in proc.flat, proc.stdout[-3000:]
    assert status()['result'] == 'failed' and newest not in status()['verified']
    assert metric('greenflow_backup_last_run_ok') == 0
    sh(REPLICA, 'cp -p /tmp/keep %s' % victim)
    play('playbooks/backup.yml', '-e', 'pg_backup_action=verify')
    assert newest in status()['verified']

    # a damaged WAL segment in the archive
    segment = wait_archived(PRIMARY)
    wal = sh(REPLICA, 'ls %s/archive/main/*/%s/%s-*' % (REPO_DIR, segment[:16], segment))
    sh(REPLICA, 'cp -p %s /tmp/keep && truncate -s 100 %s' % (wal, wal))
    proc = play('playbooks/backup.yml', '-e', 'pg_backup_action=verify', check=False)
    assert proc.returncode != 0 and 'verify found problems' in proc.flat, proc.stdout[-3000:]
    sh(REPLICA, 'cp -p /tmp/keep %s' % wal)
    play('playbooks/backup.yml', '-e', 'pg_backup_action=verify')


def test_a_backup_while_archiving_is_stopped_is_not_ok(lab):
    psql(PRIMARY, "ALTER SYSTEM SET archive_command = '/bin/false'", db='postgres')
    psql(PRIMARY, 'SELECT pg_reload_conf()', db='postgres')
    try:
        # a WAL record first: on an idle server pg_switch_wal() makes no new segment, and nothing is archived
        psql(PRIMARY, "SELECT pg_logical_emit_message(false, 'greenflow-test', 'archiving stopped')", db='postgres')
        psql(PRIMARY, 'SELECT pg_switch_wal()', db='postgres')
        wait_for('an archiving failure', lambda: psql(PRIMARY, 'SELECT failed_count > 0 AND last_failed_time > '
                                                      "coalesce(last_archived_time, '-infinity') FROM pg_stat_archiver",
                                                      db='postgres') == 't')
        before = [b['label'] for b in backups()['backup']]
        proc = play('playbooks/backup.yml', '-e', 'pg_backup_type=diff', check=False)
        assert proc.returncode != 0 and 'WAL archiving fails on the primary' in proc.flat, proc.stdout[-3000:]
        assert [b['label'] for b in backups()['backup']] == before  # refused before any backup was taken
        report = status()
        assert report['result'] == 'failed' and report['archiver']['ok'] is False
        assert metric('greenflow_backup_archiver_ok') == 0 and metric('greenflow_backup_archiver_failed_count') > 0
        proc = play('playbooks/backup.yml', '-e', 'pg_backup_action=verify', check=False)
        assert proc.returncode != 0 and 'WAL archiving fails' in proc.flat, proc.stdout[-3000:]
        # the cron path (no playbook to read pg_stat_archiver): pgbackrest check fails the run
        cron = sh(REPLICA, 'runuser -u postgres -- greenflow-pgbackrest verify >/dev/null 2>/tmp/err; echo rc=$?; cat /tmp/err')
        assert 'rc=1' in cron and 'pgbackrest check failed' in cron, cron
    finally:
        psql(PRIMARY, 'ALTER SYSTEM RESET archive_command', db='postgres')
        psql(PRIMARY, 'SELECT pg_reload_conf()', db='postgres')
    wait_archived(PRIMARY)
    play('playbooks/backup.yml', '-e', 'pg_backup_type=diff')
    assert status()['result'] == 'ok' and metric('greenflow_backup_archiver_ok') == 1


def test_retention_never_leaves_zero_verified_backups(lab):
    entry = backups()
    fulls = [b['label'] for b in entry['backup'] if b['type'] == 'full']
    assert len(fulls) >= 3, fulls
    newest_full = fulls[-1]
    future = str(int(time.time()) + 400 * 86400)  # every backup is then older than the 30-day window
    # the newest full backup (the one retention keeps) not verified: the expire would leave none - refused
    pgbackrest(REPLICA, '--set=%s' % newest_full, '--annotation=greenflow-verified=', 'annotate')
    refused = sh(REPLICA, 'runuser -u postgres -- greenflow-pgbackrest --now=%s expire 2>&1; echo rc=$?' % future)
    assert 'rc=1' in refused and 'expire refused' in refused, refused
    assert [b['label'] for b in backups()['backup'] if b['type'] == 'full'] == fulls  # nothing removed
    # verified again: the expire keeps the newest full backup (and its diffs) and removes the rest
    sh(REPLICA, 'runuser -u postgres -- greenflow-pgbackrest verify')
    sh(REPLICA, 'runuser -u postgres -- greenflow-pgbackrest --now=%s expire' % future)
    after = backups()
    assert [b['label'] for b in after['backup'] if b['type'] == 'full'] == [newest_full]
    assert pbb.verified_labels(after)
    # what is left still restores
    sh(REPLICA, 'runuser -u postgres -- greenflow-pgbackrest restore-test')
    assert status()['restore_test']['result'] == 'ok'


def test_a_replica_is_reseeded_by_a_delta_restore_as_standby(lab):
    sh(REPLICA, 'touch %s/greenflow-test-marker' % REPLICA_DATA)  # not in any backup: the delta removes it
    psql(PRIMARY, 'INSERT INTO pitr(phase) SELECT 7 FROM generate_series(1, 5)')
    started = time.time()
    proc = play('playbooks/pg_replica_reseed.yml')
    FIGURES['replica_reseed_delta_s'] = round(time.time() - started)
    assert 'restore --delta failed' not in proc.flat, proc.stdout[-3000:]
    assert re.search(r'pgbackrest restore --delta --type=standby\] \*+\s+changed: \[pg-replica-1\]', proc.stdout), \
        proc.stdout[-3000:]
    assert not sh(REPLICA, 'ls %s/greenflow-test-marker 2>/dev/null || true' % REPLICA_DATA)
    wait_for('the replica to stream again', lambda: streaming(PRIMARY))
    assert in_recovery(REPLICA) == 't'
    rows = psql(PRIMARY, 'SELECT count(*) FROM pitr')
    wait_for('the replica to have every row', lambda: psql(REPLICA, 'SELECT count(*) FROM pitr') == rows)


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


def _not_changed_by_a_refused_failover():
    """The old primary still runs as primary, unfenced; the replica is still a standby and streams."""
    assert in_recovery(PRIMARY) == 'f'
    assert in_recovery(REPLICA) == 't'
    assert sh(PRIMARY, 'systemctl is-enabled %s 2>&1 || true' % PG_UNIT) != 'masked'
    assert not sh(PRIMARY, 'ls %s/standby.signal %s.greenflow-fenced 2>/dev/null || true' % (PG_DATA, PG_DATA))
    wait_for('the replica to stream', lambda: streaming(PRIMARY))


def test_failover_is_refused_without_failover_confirm(lab):
    refused = play('playbooks/failover.yml', check=False)
    assert refused.returncode != 0
    assert 'Nothing was changed' in refused.flat and 'failover_confirm=main' in refused.flat, refused.stdout[-3000:]
    refused = play('playbooks/failover.yml', '-e', 'failover_confirm=wrong', check=False)
    assert refused.returncode != 0 and 'failover_confirm=main' in refused.flat, refused.stdout[-3000:]
    _not_changed_by_a_refused_failover()


def test_failover_is_refused_when_the_old_primary_cannot_be_fenced(lab, tmp_path):
    # cut off from the controller while it still runs (a network partition): promoting would make two primaries
    started = time.time()
    refused = play('playbooks/failover.yml', *(CONFIRM + SECRETS),
                   inventory=inventory_copy(tmp_path, unreachable=['pg-primary-1']), check=False)
    FIGURES['failover_refused_unreachable_s'] = round(time.time() - started)
    assert refused.returncode != 0, refused.stdout[-3000:]
    assert 'could not be fenced' in refused.flat and 'NOT promoted' in refused.flat, refused.stdout[-3000:]
    assert 'failover_old_primary_is_dead=true' in refused.flat
    _not_changed_by_a_refused_failover()

    # reachable, but a fence step fails (here: standby.signal cannot be written): no promotion either
    refused = play('playbooks/failover.yml', *CONFIRM, '-e', 'postgresql_data_dir=/nonexistent/main', check=False)
    try:
        assert refused.returncode != 0, refused.stdout[-3000:]
        assert 'could not be fenced' in refused.flat and 'standby.signal' in refused.flat, refused.stdout[-3000:]
        assert in_recovery(REPLICA) == 't'
    finally:  # the steps that did work (mask, stop) are undone by hand, as an operator would
        sh(PRIMARY, 'systemctl unmask %s && systemctl start %s' % (PG_UNIT, PG_UNIT))
    _not_changed_by_a_refused_failover()


def _replica_receiving(container, receiving):
    """Cut (False) or restore (True) what a standby receives: its streaming and its archive recovery."""
    for setting in ('primary_conninfo', 'restore_command'):
        psql(container, ('ALTER SYSTEM RESET %s' % setting) if receiving else ("ALTER SYSTEM SET %s = ''" % setting),
             db='postgres')
    psql(container, 'SELECT pg_reload_conf()', db='postgres')
    if not receiving:
        wait_for('the replica to stop receiving',
                 lambda: psql(container, 'SELECT count(*) FROM pg_stat_wal_receiver', db='postgres') == '0')


def test_failover_is_refused_before_the_fence_when_the_replica_lags(lab):
    # the old primary still runs and the replica is too far behind: it is not even stopped
    _replica_receiving(REPLICA, False)
    try:
        psql(PRIMARY, 'CREATE TABLE IF NOT EXISTS lag_probe(id int)')
        psql(PRIMARY, 'INSERT INTO lag_probe SELECT generate_series(1, 2000)')
        refused = play('playbooks/failover.yml', *CONFIRM, '-e', 'failover_max_lag_bytes=1000', check=False)
        assert refused.returncode != 0, refused.stdout[-3000:]
        assert 'failover_max_lag_bytes=1000' in refused.flat and 'Nothing was changed' in refused.flat, \
            refused.stdout[-3000:]
        assert 'mask the unit' not in refused.flat  # stopped before the fence's first step
    finally:
        _replica_receiving(REPLICA, True)
    _not_changed_by_a_refused_failover()


def _fenced_stays_down_or_standby(container, reboot=True):
    """The fenced old primary: masked, standby.signal; systemctl start fails, a reboot does not start it,
    and started by hand it is a standby."""
    assert sh(container, 'systemctl is-enabled %s 2>&1 || true' % PG_UNIT) == 'masked'
    assert sh(container, 'ls %s/standby.signal' % PG_DATA)
    assert in_recovery(container) is None
    attempt = subprocess.run(['docker', 'exec', container, 'systemctl', 'start', PG_UNIT],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
    assert attempt.returncode != 0 and 'masked' in attempt.stdout, attempt.stdout
    attempt = subprocess.run(['docker', 'exec', container, 'pg_ctlcluster', '15', 'main', 'start'],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
    assert attempt.returncode != 0, attempt.stdout
    assert in_recovery(container) is None
    if not reboot:
        return
    # a reboot: the container restarted (systemd as PID 1 boots again)
    address = sh(container, 'hostname -I')
    started = time.time()
    subprocess.run(['docker', 'restart', container], check=True, stdout=subprocess.DEVNULL)
    wait_for('%s to boot' % container, lambda: sh(container, 'systemctl is-system-running 2>/dev/null || true')
             in ('running', 'degraded'), timeout=120)
    FIGURES['fenced_reboot_s'] = round(time.time() - started)
    FIGURES['fenced_reboot_same_address'] = sh(container, 'hostname -I') == address
    time.sleep(3)
    assert in_recovery(container) is None, 'the fenced old primary runs again after a reboot'
    assert sh(container, 'systemctl is-active %s || true' % PG_UNIT) in ('inactive', 'failed')
    # started by hand, around systemd: standby.signal makes it a standby, never a primary
    sh(container, 'runuser -u postgres -- %s/pg_ctl -D %s -o "-c config_file=/etc/postgresql/15/main/postgresql.conf" '
                  '-l /tmp/fenced-start.log -w -t 60 start' % (PG_BIN, PG_DATA))
    try:
        assert in_recovery(container) == 't'
    finally:
        sh(container, 'runuser -u postgres -- %s/pg_ctl -D %s -m fast -w stop' % (PG_BIN, PG_DATA))


def test_synchronous_failover_loses_no_acknowledged_transaction(lab):
    psql(PRIMARY, 'CREATE TABLE IF NOT EXISTS acked(id int PRIMARY KEY, ts timestamptz DEFAULT clock_timestamp())')
    psql(PRIMARY, 'TRUNCATE acked')
    psql(PRIMARY, "ALTER SYSTEM SET synchronous_standby_names = 'ANY 1 (*)'", db='postgres')
    psql(PRIMARY, 'SELECT pg_reload_conf()', db='postgres')
    time.sleep(1)
    assert psql(PRIMARY, 'SELECT sync_state FROM pg_stat_replication', db='postgres') == 'quorum'
    _insert_loop(PRIMARY)
    time.sleep(6)
    acked = _crash(PRIMARY)
    assert len(acked) >= 3
    started = time.time()
    proc = play('playbooks/failover.yml', *CONFIRM)
    FIGURES['failover_sync_s'] = round(time.time() - started)
    present = {int(x) for x in psql(REPLICA, 'SELECT id FROM acked').split()}
    missing = sorted(set(acked) - present)
    FIGURES['sync_acknowledged'] = len(acked)
    FIGURES['sync_lost'] = len(missing)
    FIGURES['sync_lag_at_failure_bytes'] = _failover_report(proc.stdout)
    assert not missing, 'acknowledged but lost after a synchronous failover: %s' % missing[:20]
    assert psql(REPLICA, 'SELECT pg_is_in_recovery()') == 'f'
    # fenced: restarted or rebooted, the old primary is down or a standby, never a second primary
    _fenced_stays_down_or_standby(PRIMARY)
    # the old primary comes back as a replica of the new one (pg_rewind), unmasked
    started = time.time()
    play('playbooks/failover_reattach.yml')
    FIGURES['reattach_s'] = round(time.time() - started)
    assert psql(REPLICA, 'SELECT state FROM pg_stat_replication', db='postgres') == 'streaming'
    assert psql(PRIMARY, 'SELECT pg_is_in_recovery()') == 't'
    assert sh(PRIMARY, 'systemctl is-enabled %s 2>&1 || true' % PG_UNIT) != 'masked'
    assert not sh(PRIMARY, 'ls %s.greenflow-fenced 2>/dev/null || true' % PG_DATA)


def test_asynchronous_failover_is_limited_by_the_lag(lab, tmp_path):
    # the inventory after the first failover: the groups swapped
    inventory = inventory_copy(tmp_path, swap=True)
    new_primary, new_replica = REPLICA, PRIMARY
    assert psql(new_primary, 'SHOW synchronous_standby_names', db='postgres') == ''
    psql(new_primary, 'TRUNCATE acked')
    _insert_loop(new_primary)
    time.sleep(4)
    cut = int(sh(new_primary, 'wc -l < /tmp/acked'))  # committed a second before the cut: streamed
    time.sleep(1)
    # the replica stops receiving (no streaming, no archive): everything committed from now on is lag
    _replica_receiving(new_replica, False)
    time.sleep(3)
    acked = _crash(new_primary)
    assert len(acked) > cut, (len(acked), cut)
    try:
        refused = play('playbooks/failover.yml', *(CONFIRM + SECRETS), '-e', 'failover_max_lag_bytes=1000',
                       inventory=inventory, check=False)
        assert refused.returncode != 0, refused.stdout[-3000:]
        match = re.search(r'lags (\d+) bytes of WAL behind the old primary \S+ \(old primary at (\S+), replica at (\S+)\)',
                          refused.flat)
        assert match and int(match.group(1)) > 1000, refused.stdout[-3000:]
        assert parse_lsn(match.group(2)) - parse_lsn(match.group(3)) == int(match.group(1))
        assert 'failover_max_lag_bytes=1000' in refused.flat and 'NOT promoted' in refused.flat
        assert in_recovery(new_replica) == 't'
        FIGURES['async_refused_lag_bytes'] = int(match.group(1))

        proc = play('playbooks/failover.yml', *(CONFIRM + SECRETS), '-e', 'failover_max_lag_bytes=1073741824',
                    inventory=inventory)
    finally:
        _replica_receiving(new_replica, True)
    lag = _failover_report(proc.stdout)
    present = {int(x) for x in psql(new_replica, 'SELECT id FROM acked').split()}
    FIGURES['async_acknowledged'] = len(acked)
    FIGURES['async_lost'] = len(set(acked) - present)
    FIGURES['async_lag_at_failure_bytes'] = lag
    assert lag is not None and re.match(r'^\d+$', lag), proc.stdout[-3000:]
    assert int(lag) == FIGURES['async_refused_lag_bytes']
    assert psql(new_replica, 'SELECT pg_is_in_recovery()') == 'f'
    # what the replica had when the stream was cut is there; what came after is the (reported) loss
    assert set(acked[:cut]) <= present
    assert FIGURES['async_lost'] > 0

    # the crashed, fenced old primary is rewound (crash recovery first) and streams again: the lab is back
    # to its inventory
    _fenced_stays_down_or_standby(new_primary, reboot=False)
    started = time.time()
    play('playbooks/failover_reattach.yml', *SECRETS, inventory=inventory)
    FIGURES['reattach_after_crash_s'] = round(time.time() - started)
    assert psql(new_replica, 'SELECT state FROM pg_stat_replication', db='postgres') == 'streaming'
    assert in_recovery(new_primary) == 't'
    assert sh(new_primary, 'systemctl is-enabled %s 2>&1 || true' % PG_UNIT) != 'masked'
