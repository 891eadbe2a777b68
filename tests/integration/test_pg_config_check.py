"""The candidate check of roles/postgresql (files/greenflow_pg_config_check.py) against a real PostgreSQL 15.

A scratch "live" cluster is laid out like a Debian one (postgresql.conf with include_dir 'conf.d', the
role's conf.d file, pg_hba.conf, a TLS certificate from a scratch CA) and started on a unix socket only.
Then candidates are checked: good ones pass; a pg_hba line with an unknown method, a bad address, a
setting with a bad value, a certificate that does not match its key are refused with PostgreSQL's own
message, and the live server keeps running on its files, which are byte for byte the same. Also the way
the role uses it: Ansible's copy module with `validate` leaves the live pg_hba.conf as it was.

Needs postgresql-15 and openssl; runs the servers as postgres when started as root."""
import hashlib
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))
SCRIPT = os.path.join(ROOT, 'roles', 'postgresql', 'files', 'greenflow_pg_config_check.py')
BIN = '/usr/lib/postgresql/15/bin'

pytestmark = pytest.mark.skipif(not (os.path.exists(os.path.join(BIN, 'initdb')) and shutil.which('openssl')),
                                reason='needs postgresql-15 and openssl')

GOOD_HBA = """local all postgres peer
local all all peer
hostssl "app" "app" 10.0.0.5/32 scram-sha-256
hostssl replication "replicator" 10.0.0.6/32 scram-sha-256
"""


def user():
    return 'postgres' if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name


def as_user(argv):
    return (['runuser', '-u', 'postgres', '--'] + argv) if os.geteuid() == 0 else argv


def chown(path):
    if os.geteuid() == 0:
        entry = pwd.getpwnam('postgres')
        for root, dirs, files in os.walk(path):
            os.chown(root, entry.pw_uid, entry.pw_gid)
            for name in files:
                os.chown(os.path.join(root, name), entry.pw_uid, entry.pw_gid)


def digest(path):
    with open(path, 'rb') as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def openssl(*args, cwd):
    subprocess.run(['openssl'] + list(args), cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.fixture(scope='module')
def live():
    base = tempfile.mkdtemp(prefix='greenflow-itest-pgcheck-', dir='/tmp')
    conf, data, tls = (os.path.join(base, name) for name in ('conf', 'data', 'tls'))
    os.makedirs(os.path.join(conf, 'conf.d'))
    os.makedirs(tls)
    openssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2',
            '-subj', '/CN=itest CA', '-keyout', 'ca.key', '-out', 'ca.crt', cwd=tls)
    openssl('req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
            '-subj', '/CN=db', '-keyout', 'server.key', '-out', 'server.csr', cwd=tls)
    openssl('x509', '-req', '-in', 'server.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '2',
            '-out', 'server.crt', cwd=tls)
    openssl('req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
            '-subj', '/CN=other', '-keyout', 'other.key', '-out', 'other.csr', cwd=tls)
    os.chmod(os.path.join(tls, 'server.key'), 0o600)
    os.chmod(os.path.join(tls, 'other.key'), 0o600)
    with open(os.path.join(conf, 'postgresql.conf'), 'w') as handle:
        handle.write("data_directory = '%s'\nhba_file = '%s/pg_hba.conf'\nident_file = '%s/pg_ident.conf'\n"
                     "unix_socket_directories = '%s'\nlisten_addresses = ''\nport = 5432\n"
                     "include_dir = 'conf.d'\n" % (data, conf, conf, base))
    with open(os.path.join(conf, 'pg_ident.conf'), 'w') as handle:
        handle.write('')
    with open(os.path.join(conf, 'pg_hba.conf'), 'w') as handle:
        handle.write(GOOD_HBA)
    with open(os.path.join(conf, 'conf.d', '10-greenflow-postgresql.conf'), 'w') as handle:
        handle.write(role_conf(tls))
    chown(base)
    subprocess.run(as_user([os.path.join(BIN, 'initdb'), '--no-sync', '-A', 'peer', '-U', 'postgres', '-D', data]),
                   check=True, stdout=subprocess.DEVNULL)
    subprocess.run(as_user([os.path.join(BIN, 'pg_ctl'), '-D', data, '-o', '-c config_file=%s/postgresql.conf' % conf,
                            '-l', os.path.join(base, 'live.log'), '-w', 'start']), check=True, stdout=subprocess.DEVNULL)
    info = {'base': base, 'conf': conf, 'data': data, 'tls': tls}
    info['pid'] = postmaster_pid(info)
    yield info
    subprocess.run(as_user([os.path.join(BIN, 'pg_ctl'), '-D', data, '-m', 'immediate', 'stop']), check=False,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shutil.rmtree(base, ignore_errors=True)


def role_conf(tls, key='server.key', extra=''):
    return ("shared_buffers = '32MB'\nmax_connections = 20\nssl = on\nssl_cert_file = '%s/server.crt'\n"
            "ssl_key_file = '%s/%s'\nssl_min_protocol_version = 'TLSv1.2'\nwal_level = 'replica'\n%s"
            % (tls, tls, key, extra))


def postmaster_pid(info):
    with open(os.path.join(info['data'], 'postmaster.pid')) as handle:
        return int(handle.readline())


def psql(info, sql):
    proc = subprocess.run(as_user([os.path.join(BIN, 'psql'), '-h', info['base'], '-U', 'postgres', '-d', 'postgres',
                                   '-XAtc', sql]), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, check=True)
    return proc.stdout.strip()


def check(info, text, *target):
    candidate = os.path.join(info['base'], 'candidate')
    with open(candidate, 'w') as handle:
        handle.write(text)
    proc = subprocess.run([sys.executable, SCRIPT, '--bin-dir', BIN, '--conf-dir', info['conf']] + list(target)
                          + [candidate], stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                          timeout=120, check=False)
    return proc


@pytest.fixture()
def untouched(live):
    """The live server and files before a test; after it, asserts that nothing changed."""
    files = {name: digest(os.path.join(live['conf'], name))
             for name in ('pg_hba.conf', 'conf.d/10-greenflow-postgresql.conf', 'postgresql.conf')}
    yield live
    assert postmaster_pid(live) == live['pid']
    os.kill(live['pid'], 0)
    assert psql(live, 'SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()') == 'f'  # unix socket: no TLS
    assert psql(live, "SHOW ssl") == 'on'
    assert {name: digest(os.path.join(live['conf'], name)) for name in files} == files
    assert not [name for name in os.listdir('/tmp') if name.startswith('greenflow-pg-config-check-')]


def test_a_good_pg_hba_passes(untouched):
    proc = check(untouched, GOOD_HBA + 'hostssl all "backup" 10.0.3.7/32 scram-sha-256\n', '--hba')
    assert proc.returncode == 0, proc.stderr
    assert 'throwaway server started' in proc.stdout


@pytest.mark.parametrize('line,message', [
    ('hostssl all all 10.0.3.7/32 scram-sha-257', 'invalid authentication method "scram-sha-257"'),
    ('hostssl all all 10.0.3.300/32 scram-sha-256', 'specifying both host name and CIDR mask is invalid'),
    ('hostsl all all 10.0.3.7/32 scram-sha-256', 'invalid connection type "hostsl"'),
])
def test_a_bad_pg_hba_line_is_refused_with_postgresqls_message(untouched, line, message):
    proc = check(untouched, GOOD_HBA + line + '\n', '--hba')
    assert proc.returncode == 1
    assert message in proc.stderr, proc.stderr
    assert 'line 5 of configuration file' in proc.stderr
    assert 'the live file is kept' in proc.stderr


def test_a_good_settings_file_passes(untouched):
    proc = check(untouched, role_conf(untouched['tls'], extra="work_mem = '8MB'\n"),
                 '--conf', 'conf.d/10-greenflow-postgresql.conf')
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize('extra,key,message', [
    ("shared_buffers = 'lots'\n", 'server.key', 'invalid value for parameter "shared_buffers": "lots"'),
    ("wal_level = 'minimal'\nmax_wal_senders = 10\n", 'server.key', 'WAL streaming (max_wal_senders > 0) requires wal_level'),
    ('', 'other.key', 'key values mismatch'),
    ('', 'missing.key', 'could not access private key file'),
])
def test_a_bad_settings_file_is_refused(untouched, extra, key, message):
    proc = check(untouched, role_conf(untouched['tls'], key=key, extra=extra),
                 '--conf', 'conf.d/10-greenflow-postgresql.conf')
    assert proc.returncode == 1
    assert message in proc.stderr, proc.stderr


def test_the_role_way_copy_with_validate_keeps_the_live_file(untouched):
    """What the role's template task does: Ansible writes the file only when validate passes."""
    live_hba = os.path.join(untouched['conf'], 'pg_hba.conf')
    module_args = {'content': GOOD_HBA + 'hostssl all all 10.0.3.7/32 scram-sha-257\n', 'dest': live_hba,
                   'validate': '%s %s --bin-dir %s --conf-dir %s --hba %%s' % (sys.executable, SCRIPT, BIN,
                                                                                untouched['conf'])}
    proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), 'ansible'), 'localhost', '-c', 'local',
                           '-m', 'ansible.builtin.copy', '-a', json.dumps(module_args)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, timeout=120,
                          check=False, env=dict(os.environ, ANSIBLE_PYTHON_INTERPRETER=sys.executable))
    assert proc.returncode != 0
    assert 'invalid authentication method' in proc.stdout, proc.stdout
