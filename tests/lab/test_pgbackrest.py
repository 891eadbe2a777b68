"""roles/pgbackrest on a lab of its own: pgBackRest across two hosts over its TLS server, with the
repository on the replica (pg_backup_host) and the primary archiving into it.

    .venv/bin/pytest -q -s tests/lab/test_pgbackrest.py

(A plain `pytest` of the whole tree skips it: it runs when named, or with GREENFLOW_PGBACKREST_LAB=1.)

The module fixture brings up a prefixed lab (GREENFLOW_PGBACKREST_LAB_PREFIX, default `ci-pgbr-`, ports
GREENFLOW_PGBACKREST_LAB_HTTP_PORT / _HTTPS_PORT), provisions PostgreSQL and then the pgbackrest role
with pg_backup_engine=pgbackrest and an encrypted repository, and removes that lab at the end
(GREENFLOW_PGBACKREST_KEEP_LAB=1 keeps it). With GREENFLOW_LAB_REUSE=1 it runs on a lab that is up
and has PostgreSQL (tests/lab/shared_lab.py); the role is applied either way. Tests run in file order.
"""
import json
import os
import shutil
import subprocess
import time

import pytest

from ansible_collections.greenflow.platform.plugins.module_utils import _pgbackrest_backups as pbb
from shared_lab import assert_lab_running, lab_address

pytestmark = [pytest.mark.lab]

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PREFIX, HTTP_PORT, HTTPS_PORT, REUSED_LAB = lab_address(
    os.environ.get('GREENFLOW_PGBACKREST_LAB_PREFIX', 'ci-pgbr-'),
    (os.environ.get('GREENFLOW_PGBACKREST_LAB_HTTP_PORT', '48280'),
     os.environ.get('GREENFLOW_PGBACKREST_LAB_HTTPS_PORT', '48643')))
ENV = dict(os.environ, GREENFLOW_LAB_PREFIX=PREFIX, GREENFLOW_LAB_HTTP_PORT=str(HTTP_PORT),
           GREENFLOW_LAB_HTTPS_PORT=str(HTTPS_PORT), ANSIBLE_CONFIG=os.path.join(REPO, 'ansible.cfg'),
           ANSIBLE_FORCE_COLOR='0', PATH=os.path.join(REPO, '.venv', 'bin') + os.pathsep + os.environ.get('PATH', ''))
PRIMARY = PREFIX + 'pg-primary-1'
REPLICA = PREFIX + 'pg-replica-1'  # also the repository host (inventories/lab: pg_backup_host)
PG_BIN = '/usr/lib/postgresql/15/bin'
# A lab-only passphrase (the role refuses encryption without one; production takes it from vault).
ROLE_VARS = ['-e', 'pg_backup_engine=pgbackrest', '-e', 'pgbackrest_encrypt=true',
             '-e', 'pgbackrest_cipher_pass=lab-only-passphrase-0123456789abcdef']
FIGURES = {}


def play(playbook, *extra, check=True):
    argv = ['ansible-playbook', '-i', os.path.join(REPO, 'inventories', 'lab'), os.path.join(REPO, playbook)]
    started = time.time()
    proc = subprocess.run(argv + list(extra), cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, check=False, timeout=1800)
    proc.seconds = round(time.time() - started)
    print('%s: rc=%d in %d s' % (playbook, proc.returncode, proc.seconds))
    if check and proc.returncode != 0:
        pytest.fail('%s failed:\n%s' % (playbook, proc.stdout[-6000:]))
    return proc


def sh(container, command, check=True, user='postgres'):
    proc = subprocess.run(['docker', 'exec', '-u', user, container, 'bash', '-c', command], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, check=False, timeout=600)
    if check and proc.returncode != 0:
        pytest.fail('%s: %s failed (%d): %s %s' % (container, command, proc.returncode, proc.stdout, proc.stderr))
    return proc


def psql(container, sql, port=5432, host='/var/run/postgresql'):
    return sh(container, 'psql -X -qtA -v ON_ERROR_STOP=1 -h %s -p %d -d postgres -c "%s"' % (host, port, sql)
              ).stdout.strip()


def recap(output):
    """{host: changed count} from a play recap."""
    counts = {}
    for line in output.splitlines():
        if ' changed=' in line and ' : ok=' in line:
            counts[line.split()[0]] = int(line.split(' changed=')[1].split()[0])
    return counts


@pytest.fixture(scope='module')
def lab(request):
    named = any('tests/lab' in str(arg) for arg in request.config.args)
    if not named and os.environ.get('GREENFLOW_PGBACKREST_LAB') != '1':
        pytest.skip('lab scenario: run it by name (pytest tests/lab/test_pgbackrest.py) or with '
                    'GREENFLOW_PGBACKREST_LAB=1')
    if shutil.which('docker') is None:
        pytest.skip('no docker here')
    try:
        if REUSED_LAB:
            assert_lab_running(PREFIX)
        else:
            play('lab/lab-up.yml')
            play('playbooks/postgresql.yml')
        FIGURES['role_first_run_s'] = play('playbooks/pgbackrest.yml', *ROLE_VARS).seconds
        yield
    finally:
        print('figures: %s' % json.dumps(FIGURES, sort_keys=True))
        if not REUSED_LAB and os.environ.get('GREENFLOW_PGBACKREST_KEEP_LAB') != '1':
            play('lab/lab-down.yml', check=False)


def test_role_sets_up_tls_between_the_hosts_and_check_passes(lab):
    primary_conf = sh(PRIMARY, 'cat /etc/pgbackrest/pgbackrest.conf').stdout
    assert 'repo1-host=%s' % REPLICA in primary_conf and 'repo1-host-type=tls' in primary_conf
    assert 'cipher-pass' not in primary_conf  # the key stays on the repository host
    assert sh(PRIMARY, 'stat -c %a /etc/pgbackrest/pgbackrest.conf').stdout.strip() == '640'
    assert "archive_command = 'pgbackrest --stanza=main archive-push %p'" in sh(
        PRIMARY, 'cat /etc/postgresql/15/main/conf.d/30-greenflow-pgbackrest.conf').stdout
    assert psql(PRIMARY, 'SHOW archive_command') == 'pgbackrest --stanza=main archive-push %p'
    # check on the repository host: reaches the primary over TLS and waits for a WAL segment the primary
    # pushed over TLS.
    sh(REPLICA, 'pgbackrest --stanza=main check')
    info = json.loads(sh(REPLICA, 'pgbackrest --stanza=main --output=json info').stdout)
    assert pbb.stanza_info(info, 'main')['cipher'] == 'aes-256-cbc'


def test_only_certificates_of_the_role_ca_with_an_allowed_cn_get_in(lab):
    # A certificate of another CA, even with an allowed CN, fails the TLS handshake.
    forged = sh(REPLICA, 'cd /tmp && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes '
                '-keyout forged.key -out forged.crt -subj /CN=pg-replica-1 -days 1 2>/dev/null && '
                'pgbackrest --stanza=main --pg1-host-cert-file=/tmp/forged.crt --pg1-host-key-file=/tmp/forged.key '
                'check; rc=$?; rm -f forged.key forged.crt; exit $rc', check=False)
    assert forged.returncode != 0 and 'unknown ca' in (forged.stdout + forged.stderr)
    # A certificate of the role's CA whose CN the server does not list (the primary's own) is refused.
    own = sh(PRIMARY, 'pgbackrest --stanza=main --repo1-host=%s info' % PRIMARY, check=False)
    assert 'access denied' in own.stdout + own.stderr


def test_full_and_diff_backups_across_hosts_are_verified(lab):
    psql(PRIMARY, 'DROP TABLE IF EXISTS orders')
    psql(PRIMARY, 'CREATE TABLE orders (id int PRIMARY KEY, note text)')
    psql(PRIMARY, 'INSERT INTO orders SELECT i, md5(i::text) FROM generate_series(1, 5000) i')
    started = time.time()
    full = json.loads(sh(REPLICA, 'greenflow-pgbackrest backup --type=full').stdout)
    FIGURES['full_backup_s'] = round(time.time() - started, 1)
    assert full['result'] == 'ok' and full['backup']['type'] == 'full'
    psql(PRIMARY, 'INSERT INTO orders SELECT i, md5(i::text) FROM generate_series(5001, 6000) i')
    diff = json.loads(sh(REPLICA, 'greenflow-pgbackrest backup --type=diff').stdout)
    assert diff['result'] == 'ok' and diff['backup']['type'] == 'diff'
    psql(PRIMARY, 'INSERT INTO orders SELECT i, md5(i::text) FROM generate_series(6001, 6100) i')
    entry = pbb.stanza_info(json.loads(sh(REPLICA, 'pgbackrest --stanza=main --output=json info').stdout), 'main')
    labels = [b['label'] for b in entry['backup']]
    assert full['backup']['label'] in labels and diff['backup']['label'] == labels[-1]
    assert set([full['backup']['label'], diff['backup']['label']]) <= set(pbb.verified_labels(entry))
    # Taken from the standby (the primary only starts and stops the backup).
    log = sh(REPLICA, 'grep -c "replay on the standby reached" /var/log/pgbackrest/main-backup.log').stdout
    assert int(log) >= 2
    status = json.loads(sh(REPLICA, 'cat /var/lib/greenflow-pgbackrest/status.json').stdout)
    assert status['result'] == 'ok' and status['backup']['label'] == diff['backup']['label']


def test_the_diff_restores_into_a_scratch_directory_with_its_rows(lab):
    label = pbb.stanza_info(json.loads(sh(REPLICA, 'pgbackrest --stanza=main --output=json info').stdout),
                            'main')['backup'][-1]['label']
    scratch = '/var/tmp/greenflow-pgbackrest-restore-test'
    sh(REPLICA, 'rm -rf {0} && mkdir -m 700 {0} && pgbackrest --stanza=main --reset-pg1-host --pg1-path={0} '
                '--set={1} --type=immediate --target-action=promote --archive-mode=off restore && '
                ': > {0}/postgresql.conf && echo "local all postgres peer" > {0}/pg_hba.conf && '
                '{2}/pg_ctl -D {0} -l {0}.log -w -o "-p 54330 -c unix_socket_directories=/tmp '
                '-c listen_addresses=" start'.format(scratch, label, PG_BIN))
    try:
        for _ in range(60):
            if psql(REPLICA, 'SELECT pg_is_in_recovery()', port=54330, host='/tmp') == 'f':
                break
            time.sleep(1)
        assert psql(REPLICA, 'SELECT count(*) FROM orders', port=54330, host='/tmp') == '6000'
    finally:
        sh(REPLICA, '{0}/pg_ctl -D {1} -m fast -w stop; rm -rf {1} {1}.log'.format(PG_BIN, scratch), check=False)
    assert psql(PRIMARY, 'SELECT count(*) FROM orders') == '6100'


def test_run_entry_point_for_backup_yml(lab):
    """tasks_from: run.yml, what playbooks/backup.yml will include (here ad hoc on the repository host)."""
    def run(*extra):
        argv = ['ansible', '-i', os.path.join(REPO, 'inventories', 'lab'), 'pg-replica-1', '-m',
                'ansible.builtin.include_role', '-a', 'name=greenflow.platform.pgbackrest tasks_from=run.yml']
        return subprocess.run(argv + list(extra), cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, check=False, timeout=900)
    backup = run('-e', 'pgbackrest_action=backup', '-e', 'pgbackrest_backup_type=incr')
    assert backup.returncode == 0, backup.stdout[-3000:]
    entry = pbb.stanza_info(json.loads(sh(REPLICA, 'pgbackrest --stanza=main --output=json info').stdout), 'main')
    assert entry['backup'][-1]['type'] == 'incr' and entry['backup'][-1]['label'] in pbb.verified_labels(entry)
    expire = run('-e', 'pgbackrest_action=expire')
    assert expire.returncode == 0 and 'nothing to expire' in expire.stdout, expire.stdout[-3000:]
    bad = run('-e', 'pgbackrest_action=destroy')
    assert bad.returncode != 0 and 'pgbackrest_action' in bad.stdout and 'destroy' in bad.stdout


def test_second_run_changes_nothing_and_a_missing_passphrase_is_refused(lab):
    again = play('playbooks/pgbackrest.yml', *ROLE_VARS)
    assert set(recap(again.stdout).values()) == {0}, again.stdout[-3000:]
    refused = play('playbooks/pgbackrest.yml', '-e', 'pg_backup_engine=pgbackrest', '-e', 'pgbackrest_encrypt=true',
                   check=False)
    assert refused.returncode != 0
    assert 'pgbackrest_cipher_pass is missing' in refused.stdout
    assert set(recap(refused.stdout).values()) == {0}
