"""Unit tests of the pgBackRest configuration rendering (roles/pgbackrest): each host's kind of
configuration, every refusal, and the text format."""
import pytest

from ansible_collections.greenflow.platform.plugins.module_utils import _pgbackrest_config as pbc

PASS = 'v' * 32
TLS = {'cert_file': '/etc/pgbackrest/tls/host.crt', 'key_file': '/etc/pgbackrest/tls/host.key',
       'ca_file': '/etc/pgbackrest/tls/ca.crt'}


def repo_host(**extra):
    spec = {'stanza': 'main', 'repo_path': '/var/lib/pgbackrest', 'tls': TLS, 'process_max': 2,
            'pg_hosts': [{'host': '10.0.0.10', 'path': '/var/lib/postgresql/15/main', 'port': 5432},
                         {'path': '/var/lib/postgresql/15/main', 'port': 5432,
                          'socket_path': '/var/run/postgresql'}],
            'tls_server': {'address': '*', 'port': 8432, 'auth': ['pg-primary-1']},
            'backup_standby': True}
    spec.update(extra)
    return spec


def db_host(**extra):
    spec = {'stanza': 'main', 'repo_host': 'pg-replica-1.lab', 'tls': TLS,
            'pg_hosts': [{'path': '/var/lib/postgresql/15/main', 'port': 5432}],
            'tls_server': {'auth': ['pg-replica-1']}}
    spec.update(extra)
    return spec


def parsed(spec):
    return pbc.parse_config(pbc.render_config(spec, header='managed by a test'))


def test_repository_host_keeps_repo_retention_and_reaches_the_primary_over_tls():
    conf = parsed(repo_host())
    glob, stanza = conf['global'], conf['main']
    assert glob['repo1-path'] == '/var/lib/pgbackrest'
    assert glob['repo1-retention-full-type'] == 'time' and glob['repo1-retention-full'] == '30'
    assert glob['compress-type'] == 'zst' and glob['process-max'] == '2'
    assert glob['archive-async'] == 'y' and glob['spool-path'] == '/var/spool/pgbackrest'
    assert glob['expire-auto'] == 'n'  # the wrapper expires, after its safety rule
    assert 'repo1-cipher-type' not in glob
    assert glob['tls-server-auth'] == 'pg-primary-1=main'
    assert glob['tls-server-cert-file'] == TLS['cert_file'] and glob['tls-server-ca-file'] == TLS['ca_file']
    assert stanza['pg1-host'] == '10.0.0.10' and stanza['pg1-host-type'] == 'tls'
    assert stanza['pg1-host-cert-file'] == TLS['cert_file'] and stanza['pg1-host-port'] == '8432'
    assert 'pg2-host' not in stanza and stanza['pg2-socket-path'] == '/var/run/postgresql'
    assert stanza['backup-standby'] == 'y'


def test_database_host_reaches_the_repository_over_tls_and_holds_no_key():
    conf = parsed(db_host())
    glob = conf['global']
    assert glob['repo1-host'] == 'pg-replica-1.lab' and glob['repo1-host-type'] == 'tls'
    assert glob['repo1-host-key-file'] == TLS['key_file'] and glob['repo1-host-ca-file'] == TLS['ca_file']
    assert 'repo1-path' not in glob and 'repo1-cipher-pass' not in glob
    assert conf['main'] == {'pg1-path': '/var/lib/postgresql/15/main', 'pg1-port': '5432'}


def test_encryption_with_a_vault_passphrase():
    glob = parsed(repo_host(cipher_type='aes-256-cbc', cipher_pass=PASS))['global']
    assert glob['repo1-cipher-type'] == 'aes-256-cbc' and glob['repo1-cipher-pass'] == PASS


@pytest.mark.parametrize('cipher_pass', [None, '', 'short'])
def test_encryption_without_a_usable_passphrase_is_refused(cipher_pass):
    with pytest.raises(pbc.PgBackRestConfigError, match='cipher passphrase is missing or shorter'):
        pbc.render_config(repo_host(cipher_type='aes-256-cbc', cipher_pass=cipher_pass))


def test_passphrase_without_encryption_or_on_a_database_host_is_refused():
    with pytest.raises(pbc.PgBackRestConfigError, match='cipher type none'):
        pbc.render_config(repo_host(cipher_pass=PASS))
    with pytest.raises(pbc.PgBackRestConfigError, match='repository host only'):
        pbc.render_config(db_host(cipher_pass=PASS))


def test_errors_never_echo_the_passphrase():
    with pytest.raises(pbc.PgBackRestConfigError) as err:
        pbc.render_config(repo_host(cipher_type='aes-256-cbc', cipher_pass='secret-but-short'))
    assert 'secret-but-short' not in str(err.value)


def test_second_repository_on_s3_compatible_storage():
    repo2 = {'type': 's3', 'path': '/greenflow', 'bucket': 'backups', 'endpoint': 'minio.lab', 'region': 'lab',
             'key': 'AKEY', 'key_secret': 'SECRET', 'port': 9000, 'verify_tls': False, 'retention_days': 60,
             'cipher_type': 'aes-256-cbc', 'cipher_pass': PASS}
    glob = parsed(db_host(repo2=repo2))['global']
    assert glob['repo2-type'] == 's3' and glob['repo2-s3-bucket'] == 'backups'
    assert glob['repo2-s3-endpoint'] == 'minio.lab' and glob['repo2-storage-port'] == '9000'
    assert glob['repo2-s3-uri-style'] == 'path' and glob['repo2-storage-verify-tls'] == 'n'
    assert glob['repo2-retention-full'] == '60' and glob['repo2-cipher-pass'] == PASS


def test_second_repository_s3_needs_its_secrets():
    with pytest.raises(pbc.PgBackRestConfigError, match='repo2 of type s3 needs key_secret'):
        pbc.render_config(repo_host(repo2={'type': 's3', 'path': '/x', 'bucket': 'b', 'endpoint': 'e',
                                           'region': 'r', 'key': 'k'}))


def test_second_repository_posix_path():
    glob = parsed(repo_host(repo2={'type': 'posix', 'path': '/mnt/offsite'}))['global']
    assert glob['repo2-type'] == 'posix' and glob['repo2-path'] == '/mnt/offsite'


def test_several_clients_get_one_auth_line_each():
    conf = parsed(repo_host(tls_server={'auth': ['pg-primary-1', 'pg-replica-2', 'pg-primary-1']}))
    assert conf['global']['tls-server-auth'] == ['pg-primary-1=main', 'pg-replica-2=main']


@pytest.mark.parametrize('change, message', [
    ({'stanza': 'bad stanza'}, 'stanza must be'),
    ({'retention_days': 0}, 'retention_days must be between 1'),
    ({'retention_days': 'thirty'}, 'retention_days must be a whole number'),
    ({'compress_type': 'xz'}, 'compress_type must be one of'),
    ({'compress_type': 'gz', 'compress_level': 12}, 'compress_level must be between 1 and 9'),
    ({'process_max': 0}, 'process_max must be between 1'),
    ({'repo_path': 'relative/path'}, 'repo_path must be an absolute path'),
    ({'repo_host': 'also-remote'}, 'exactly one of repo_path'),
    ({'pg_hosts': []}, 'pg_hosts must list at least one'),
    ({'tls': None}, 'needs tls with cert_file'),
    ({'tls_server': {'auth': []}}, 'tls_server.auth must list'),
    ({'tls_server': {'auth': ['bad cn']}}, 'is not a certificate CN'),
    ({'options': {'repo1-path': '/elsewhere'}}, 'set by the role itself'),
    ({'options': {'Bad Key': 'x'}}, 'not a pgBackRest option name'),
    ({'log_level_file': 'loud'}, 'log_level_file must be one of'),
    ({'spool_path': '/var/spool/pg\nbackrest'}, 'spool_path must be one line'),
])
def test_bad_input_is_refused_with_a_clear_message(change, message):
    with pytest.raises(pbc.PgBackRestConfigError, match=message):
        pbc.render_config(repo_host(**change))


def test_every_problem_is_reported_at_once():
    with pytest.raises(pbc.PgBackRestConfigError) as err:
        pbc.render_config(repo_host(retention_days=-1, compress_type='xz', process_max='many'))
    text = str(err.value)
    assert 'retention_days' in text and 'compress_type' in text and 'process_max' in text


def test_database_host_lists_only_its_own_database():
    with pytest.raises(pbc.PgBackRestConfigError, match='exactly its own database'):
        pbc.render_config(db_host(pg_hosts=[{'host': 'x', 'path': '/p'}]))


def test_extra_options_and_header():
    text = pbc.render_config(repo_host(options={'archive-push-queue-max': '4GiB', 'delta': True}),
                             header='line one\n\nline two')
    assert text.startswith('# line one\n#\n# line two\n\n[global]\n')
    conf = pbc.parse_config(text)
    assert conf['global']['archive-push-queue-max'] == '4GiB' and conf['global']['delta'] == 'y'


def test_output_is_stable():
    assert pbc.render_config(repo_host()) == pbc.render_config(repo_host())


@pytest.mark.parametrize('cpus, expected', [(1, 1), (2, 1), (3, 1), (4, 2), (8, 4), (16, 8), (64, 8)])
def test_process_max_leaves_half_the_cpus_to_postgres(cpus, expected):
    assert pbc.process_max_for(cpus) == expected


def test_process_max_bad_cpu_count():
    with pytest.raises(pbc.PgBackRestConfigError):
        pbc.process_max_for(0)
    with pytest.raises(pbc.PgBackRestConfigError):
        pbc.process_max_for('two')


def test_parse_config_rejects_garbage():
    with pytest.raises(pbc.PgBackRestConfigError):
        pbc.parse_config('no section=here\n')


SETTINGS = {'stanza': 'main', 'pg_path': '/var/lib/postgresql/15/main', 'pg_port': 5432,
            'repo_path': '/var/lib/pgbackrest', 'retention_days': 30, 'process_max': 1, 'tls': TLS,
            'tls_port': 8432, 'backup_standby': True, 'cipher_type': 'aes-256-cbc', 'cipher_pass': PASS}
NAMES = {'pg-primary-1': 'lab-pg-primary-1', 'pg-replica-1': 'lab-pg-replica-1', 'backup-1': 'backup-1.internal'}


def test_lab_shape_repository_on_the_replica():
    dbs = ['pg-primary-1', 'pg-replica-1']
    repo = parsed(pbc.host_spec('pg-replica-1', 'pg-replica-1', dbs, NAMES, SETTINGS))
    assert repo['main']['pg1-host'] == 'lab-pg-primary-1' and 'pg2-host' not in repo['main']
    assert repo['main']['backup-standby'] == 'y'
    assert repo['global']['tls-server-auth'] == 'pg-primary-1=main'
    assert repo['global']['repo1-cipher-pass'] == PASS
    primary = parsed(pbc.host_spec('pg-primary-1', 'pg-replica-1', dbs, NAMES, SETTINGS))
    assert primary['global']['repo1-host'] == 'lab-pg-replica-1'
    assert primary['global']['tls-server-auth'] == 'pg-replica-1=main'
    assert 'repo1-cipher-pass' not in primary['global']
    assert primary['main'] == {'pg1-path': '/var/lib/postgresql/15/main', 'pg1-port': '5432',
                               'pg1-socket-path': '/var/run/postgresql'}


def test_production_shape_dedicated_repository_host():
    dbs = ['pg-primary-1', 'pg-replica-1']
    repo = parsed(pbc.host_spec('backup-1', 'backup-1', dbs, NAMES, SETTINGS))
    assert repo['main']['pg1-host'] == 'lab-pg-primary-1' and repo['main']['pg2-host'] == 'lab-pg-replica-1'
    assert repo['global']['tls-server-auth'] == ['pg-primary-1=main', 'pg-replica-1=main']
    replica = parsed(pbc.host_spec('pg-replica-1', 'backup-1', dbs, NAMES, SETTINGS))
    assert replica['global']['repo1-host'] == 'backup-1.internal'


def test_single_database_with_local_repository_needs_no_server_and_no_standby():
    spec = pbc.host_spec('pg-primary-1', 'pg-primary-1', ['pg-primary-1'], NAMES, SETTINGS)
    conf = parsed(spec)
    assert 'tls-server-auth' not in conf['global'] and 'backup-standby' not in conf['main']


def test_host_spec_refusals():
    with pytest.raises(pbc.PgBackRestConfigError, match='neither a database host'):
        pbc.host_spec('lb-1', 'pg-replica-1', ['pg-primary-1', 'pg-replica-1'], NAMES, SETTINGS)
    with pytest.raises(pbc.PgBackRestConfigError, match='no TLS name for pg-replica-2'):
        pbc.host_spec('pg-primary-1', 'pg-replica-1', ['pg-primary-1', 'pg-replica-2'], NAMES, SETTINGS)
