# -*- coding: utf-8 -*-
# Copyright: greenflow.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure logic of the pgBackRest configuration (no I/O): one host's /etc/pgbackrest/pgbackrest.conf
from a plain description of the setup, with every input checked first.

Who renders what (roles/pgbackrest builds the description per host):
- the repository host (``repo_path`` set): repo1 is local; retention, encryption of repo1 and the
  ``pgN-*`` entries of every database host (remote ones over TLS) live here, and backups run here;
- a database host whose repository is elsewhere (``repo_host`` set): repo1 is reached through
  pgBackRest's TLS server on the repository host (``repo1-host-type=tls`` with this host's client
  certificate); encryption of repo1 is not configured here (the repository host holds the key);
- any host that other hosts reach runs ``pgbackrest server`` (``tls_server``) and names the client
  certificate CNs it accepts.
An optional second repository (``repo2``: S3-compatible object storage or a mounted path) is written
on every host, since WAL is pushed to each repository by the database host itself.

Python 3.6+ standard library only (the role also uses it from a filter plugin on the controller).
"""

from __future__ import absolute_import, division, print_function

import re

__metaclass__ = type

STANZA_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$')
OPTION_RE = re.compile(r'^[a-z][a-z0-9-]*$')
# A host name, an IPv4 address or a bracket-less IPv6 address.
HOST_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.:-]*$')
CN_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.@-]*$')

COMPRESS_TYPES = ('zst', 'lz4', 'gz', 'bz2', 'none')
# Highest level pgBackRest accepts per type (zst goes higher, but levels above 9 cost a lot of CPU
# for little; the role caps what it accepts at these).
COMPRESS_LEVEL_MAX = {'zst': 19, 'lz4': 12, 'gz': 9, 'bz2': 9, 'none': 0}
CIPHER_TYPES = ('none', 'aes-256-cbc')
MIN_CIPHER_PASS = 20
MAX_PG_HOSTS = 8
LOG_LEVELS = ('off', 'error', 'warn', 'info', 'detail', 'debug', 'trace')
REPO2_TYPES = ('s3', 'posix')

# Options the description sets itself: the free-form ``options`` may not override them.
MANAGED_PREFIXES = ('repo1-', 'repo2-', 'pg1-', 'pg2-', 'pg3-', 'pg4-', 'pg5-', 'pg6-', 'pg7-', 'pg8-',
                    'tls-server-', 'compress-', 'archive-async', 'spool-path', 'process-max',
                    'expire-auto', 'start-fast', 'backup-standby', 'log-level-file')


class PgBackRestConfigError(ValueError):
    """Bad input for the pgBackRest configuration (a clear message; nothing gets written)."""


def process_max_for(cpus):
    """Parallel processes for backup/restore on a host with ``cpus`` CPUs: half of them (the
    database keeps the other half), at least 1 and at most 8."""
    try:
        cpus = int(cpus)
    except (TypeError, ValueError):
        raise PgBackRestConfigError('CPU count must be a whole number, got %r' % (cpus,))
    if cpus < 1:
        raise PgBackRestConfigError('CPU count must be at least 1, got %d' % cpus)
    return max(1, min(8, cpus // 2))


def _text(value, what, errors, allow_empty=False):
    if value is None:
        value = ''
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        errors.append('%s must be a string, got %r' % (what, type(value).__name__))
        return ''
    value = str(value)
    if not value and not allow_empty:
        errors.append('%s must not be empty' % what)
    if any(ch in value for ch in '\r\n\x00'):
        errors.append('%s must be one line' % what)
    elif value != value.strip():
        errors.append('%s must not start or end with blanks' % what)
    return value


def _abs_path(value, what, errors):
    value = _text(value, what, errors)
    if value and (not value.startswith('/') or ' ' in value or value.rstrip('/') != value and value != '/'):
        errors.append('%s must be an absolute path without spaces or a trailing slash, got %r' % (what, value))
    return value


def _int(value, what, errors, low=None, high=None):
    if isinstance(value, bool):
        errors.append('%s must be a whole number, got %r' % (what, value))
        return 0
    try:
        number = int(str(value).strip())
    except (TypeError, ValueError):
        errors.append('%s must be a whole number, got %r' % (what, value))
        return 0
    if (low is not None and number < low) or (high is not None and number > high):
        errors.append('%s must be between %s and %s, got %d' % (what, low, high, number))
    return number


def _bool(value, what, errors):
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ('y', 'yes', 'true', 'on', '1'):
        return True
    if text in ('n', 'no', 'false', 'off', '0'):
        return False
    errors.append('%s must be true or false, got %r' % (what, value))
    return False


def _yn(flag):
    return 'y' if flag else 'n'


def _tls_files(tls, what, errors):
    """cert_file, key_file, ca_file of this host (all absolute paths)."""
    if not isinstance(tls, dict):
        errors.append('%s needs tls with cert_file, key_file and ca_file' % what)
        return None
    return dict((key, _abs_path(tls.get(key), 'tls.%s' % key, errors))
                for key in ('cert_file', 'key_file', 'ca_file'))


def _cipher(prefix, cipher_type, cipher_pass, what, errors):
    """Options of a repository's encryption; refuses encryption without a usable passphrase."""
    cipher_type = cipher_type or 'none'
    if cipher_type not in CIPHER_TYPES:
        errors.append('%s cipher type must be one of %s, got %r' % (what, ', '.join(CIPHER_TYPES), cipher_type))
        return []
    if cipher_type == 'none':
        if cipher_pass:
            errors.append('%s has a cipher passphrase but cipher type none: set the cipher type to aes-256-cbc '
                          'or drop the passphrase' % what)
        return []
    if not isinstance(cipher_pass, str) or len(cipher_pass) < MIN_CIPHER_PASS:
        errors.append('%s is encrypted (%s) but its cipher passphrase is missing or shorter than %d characters '
                      '(set it from ansible-vault, e.g. openssl rand -base64 48)' % (what, cipher_type, MIN_CIPHER_PASS))
        return []
    if any(ch in cipher_pass for ch in '\r\n\x00') or cipher_pass != cipher_pass.strip():
        errors.append('%s cipher passphrase must be one line without leading or trailing blanks' % what)
        return []
    return [('%s-cipher-type' % prefix, cipher_type), ('%s-cipher-pass' % prefix, cipher_pass)]


def _repo2(repo2, errors):
    """Options of the optional second repository."""
    if not repo2:
        return []
    if not isinstance(repo2, dict):
        errors.append('repo2 must be a mapping (type s3 or posix) or empty')
        return []
    kind = repo2.get('type', 's3')
    if kind not in REPO2_TYPES:
        errors.append('repo2.type must be one of %s, got %r' % (', '.join(REPO2_TYPES), kind))
        return []
    options = [('repo2-type', kind), ('repo2-path', _abs_path(repo2.get('path'), 'repo2.path', errors))]
    if kind == 's3':
        for key in ('bucket', 'endpoint', 'region', 'key', 'key_secret'):
            if not repo2.get(key):
                errors.append('repo2 of type s3 needs %s' % key)
        options += [('repo2-s3-bucket', _text(repo2.get('bucket'), 'repo2.bucket', errors)),
                    ('repo2-s3-endpoint', _text(repo2.get('endpoint'), 'repo2.endpoint', errors)),
                    ('repo2-s3-region', _text(repo2.get('region'), 'repo2.region', errors)),
                    ('repo2-s3-key', _text(repo2.get('key'), 'repo2.key', errors)),
                    ('repo2-s3-key-secret', _text(repo2.get('key_secret'), 'repo2.key_secret', errors))]
        uri_style = repo2.get('uri_style', 'path')
        if uri_style not in ('path', 'host'):
            errors.append('repo2.uri_style must be path or host, got %r' % (uri_style,))
        options.append(('repo2-s3-uri-style', uri_style))
        if repo2.get('port') not in (None, ''):
            options.append(('repo2-storage-port', str(_int(repo2['port'], 'repo2.port', errors, 1, 65535))))
        if repo2.get('ca_file'):
            options.append(('repo2-storage-ca-file', _abs_path(repo2['ca_file'], 'repo2.ca_file', errors)))
        if not _bool(repo2.get('verify_tls', True), 'repo2.verify_tls', errors):
            options.append(('repo2-storage-verify-tls', 'n'))
    days = _int(repo2.get('retention_days', 30), 'repo2.retention_days', errors, 1, 3650)
    options += [('repo2-retention-full-type', 'time'), ('repo2-retention-full', str(days))]
    options += _cipher('repo2', repo2.get('cipher_type'), repo2.get('cipher_pass'), 'repo2', errors)
    return options


def _pg_hosts(pg_hosts, tls, errors):
    """pgN-* options of the stanza: a local entry has no host; a remote one is reached over TLS."""
    if not isinstance(pg_hosts, list) or not pg_hosts:
        errors.append('pg_hosts must list at least one database (path, port, and host when remote)')
        return []
    if len(pg_hosts) > MAX_PG_HOSTS:
        errors.append('at most %d database hosts per stanza, got %d' % (MAX_PG_HOSTS, len(pg_hosts)))
        return []
    options = []
    for index, entry in enumerate(pg_hosts, start=1):
        what = 'pg_hosts[%d]' % (index - 1)
        if not isinstance(entry, dict):
            errors.append('%s must be a mapping' % what)
            continue
        prefix = 'pg%d' % index
        if entry.get('host'):
            host = _text(entry['host'], what + '.host', errors)
            if host and not HOST_RE.match(host):
                errors.append('%s.host is not a host name or address: %r' % (what, host))
            port = _int(entry.get('tls_port', 8432), what + '.tls_port', errors, 1, 65535)
            options += [('%s-host' % prefix, host), ('%s-host-type' % prefix, 'tls'),
                        ('%s-host-port' % prefix, str(port))]
            files = _tls_files(tls, 'a remote database host (%s)' % what, errors)
            if files:
                options += [('%s-host-cert-file' % prefix, files['cert_file']),
                            ('%s-host-key-file' % prefix, files['key_file']),
                            ('%s-host-ca-file' % prefix, files['ca_file'])]
        options.append(('%s-path' % prefix, _abs_path(entry.get('path'), what + '.path', errors)))
        options.append(('%s-port' % prefix, str(_int(entry.get('port', 5432), what + '.port', errors, 1, 65535))))
        if entry.get('socket_path'):
            options.append(('%s-socket-path' % prefix, _abs_path(entry['socket_path'], what + '.socket_path',
                                                                 errors)))
        if entry.get('user'):
            options.append(('%s-user' % prefix, _text(entry['user'], what + '.user', errors)))
    return options


def build_config(spec):
    """The description -> ordered sections [(name, [(option, value), ...]), ...].

    Raises PgBackRestConfigError listing every problem found (nothing is half-rendered)."""
    if not isinstance(spec, dict):
        raise PgBackRestConfigError('the pgBackRest description must be a mapping')
    errors = []
    stanza = _text(spec.get('stanza'), 'stanza', errors)
    if stanza and not STANZA_RE.match(stanza):
        errors.append('stanza must be letters, digits, _ . - (up to 64), got %r' % stanza)

    repo_path = spec.get('repo_path')
    repo_host = spec.get('repo_host')
    if bool(repo_path) == bool(repo_host):
        errors.append('give exactly one of repo_path (this host keeps the repository) or repo_host '
                      '(the repository is on that host, reached over TLS)')
    tls = spec.get('tls')

    glob = []
    if repo_path:
        glob.append(('repo1-path', _abs_path(repo_path, 'repo_path', errors)))
        days = _int(spec.get('retention_days', 30), 'retention_days', errors, 1, 3650)
        glob += [('repo1-retention-full-type', 'time'), ('repo1-retention-full', str(days))]
        if spec.get('retention_diff') not in (None, ''):
            diffs = _int(spec['retention_diff'], 'retention_diff', errors, 1, 9999)
            glob.append(('repo1-retention-diff', str(diffs)))
        glob += _cipher('repo1', spec.get('cipher_type'), spec.get('cipher_pass'), 'repo1', errors)
    elif repo_host:
        host = _text(repo_host, 'repo_host', errors)
        if host and not HOST_RE.match(host):
            errors.append('repo_host is not a host name or address: %r' % host)
        glob += [('repo1-host', host), ('repo1-host-type', 'tls'),
                 ('repo1-host-port', str(_int(spec.get('repo_tls_port', 8432), 'repo_tls_port', errors, 1, 65535)))]
        files = _tls_files(tls, 'a remote repository (repo_host)', errors)
        if files:
            glob += [('repo1-host-cert-file', files['cert_file']), ('repo1-host-key-file', files['key_file']),
                     ('repo1-host-ca-file', files['ca_file'])]
        if spec.get('cipher_pass'):
            errors.append('the repo1 cipher passphrase belongs on the repository host only (repo_path), not on '
                          'a host that reaches the repository over TLS')
    glob += _repo2(spec.get('repo2'), errors)

    compress_type = spec.get('compress_type', 'zst')
    if compress_type not in COMPRESS_TYPES:
        errors.append('compress_type must be one of %s, got %r' % (', '.join(COMPRESS_TYPES), compress_type))
    else:
        glob.append(('compress-type', compress_type))
        if spec.get('compress_level') not in (None, '') and compress_type != 'none':
            glob.append(('compress-level', str(_int(spec['compress_level'], 'compress_level', errors, 1,
                                                    COMPRESS_LEVEL_MAX[compress_type]))))
    glob.append(('process-max', str(_int(spec.get('process_max', 1), 'process_max', errors, 1, 64))))
    if _bool(spec.get('archive_async', True), 'archive_async', errors):
        spool = _abs_path(spec.get('spool_path', '/var/spool/pgbackrest'), 'spool_path', errors)
        glob += [('archive-async', 'y'), ('spool-path', spool)]
    # Expiry is run by the greenflow wrapper after its safety check (never by pgBackRest on its own).
    glob.append(('expire-auto', 'n'))
    glob.append(('start-fast', _yn(_bool(spec.get('start_fast', True), 'start_fast', errors))))
    log_level = spec.get('log_level_file', 'info')
    if log_level not in LOG_LEVELS:
        errors.append('log_level_file must be one of %s, got %r' % (', '.join(LOG_LEVELS), log_level))
    glob.append(('log-level-file', log_level))

    server = spec.get('tls_server')
    if server:
        if not isinstance(server, dict):
            errors.append('tls_server must be a mapping (address, port, auth)')
        else:
            files = _tls_files(tls, 'tls_server', errors)
            address = _text(server.get('address', '*'), 'tls_server.address', errors)
            if address and address != '*' and not HOST_RE.match(address):
                errors.append('tls_server.address must be * or an address, got %r' % address)
            glob += [('tls-server-address', address),
                     ('tls-server-port', str(_int(server.get('port', 8432), 'tls_server.port', errors, 1, 65535)))]
            if files:
                glob += [('tls-server-cert-file', files['cert_file']), ('tls-server-key-file', files['key_file']),
                         ('tls-server-ca-file', files['ca_file'])]
            auth = server.get('auth')
            if not isinstance(auth, list) or not auth:
                errors.append('tls_server.auth must list the client certificate CNs allowed in')
            else:
                for cn in auth:
                    if not isinstance(cn, str) or not CN_RE.match(cn):
                        errors.append('tls_server.auth: %r is not a certificate CN' % (cn,))
                if stanza:
                    # One line per client CN (pgBackRest repeats the option): <client CN>=<stanza>.
                    glob += [('tls-server-auth', '%s=%s' % (cn, stanza)) for cn in sorted(set(map(str, auth)))]

    extra = spec.get('options') or {}
    if not isinstance(extra, dict):
        errors.append('options must be a mapping of pgBackRest option to value')
        extra = {}
    for key in sorted(extra):
        if not OPTION_RE.match(str(key)):
            errors.append('options: %r is not a pgBackRest option name' % (key,))
        elif str(key).startswith(MANAGED_PREFIXES) or str(key) in ('stanza', 'config'):
            errors.append('options: %s is set by the role itself (use its own variable)' % key)
        else:
            value = extra[key]
            glob.append((str(key), _yn(value) if isinstance(value, bool) else _text(value, 'options.%s' % key, errors)))

    stanza_options = _pg_hosts(spec.get('pg_hosts'), tls, errors) if repo_path else []
    if not repo_path and repo_host:
        local = spec.get('pg_hosts') or []
        if not isinstance(local, list) or len(local) != 1 or (isinstance(local[0], dict) and local[0].get('host')):
            errors.append('a database host with a remote repository lists exactly its own database in pg_hosts '
                          '(no host)')
        else:
            stanza_options = _pg_hosts(local, tls, errors)
    if repo_path and _bool(spec.get('backup_standby', False), 'backup_standby', errors):
        stanza_options.append(('backup-standby', 'y'))

    if errors:
        raise PgBackRestConfigError('pgBackRest configuration refused: ' + '; '.join(errors))
    return [('global', glob), (stanza, stanza_options)]


def render_config(spec, header=None):
    """The description -> the text of pgbackrest.conf (ini). ``header``: comment lines on top."""
    lines = []
    for line in (header or '').splitlines():
        lines.append('# ' + line if line else '#')
    for name, options in build_config(spec):
        if lines:
            lines.append('')
        lines.append('[%s]' % name)
        lines += ['%s=%s' % (key, value) for key, value in options]
    return '\n'.join(lines) + '\n'


def parse_config(text):
    """pgbackrest.conf text -> {section: {option: value}} (for checks and tests); an option given on
    several lines (tls-server-auth) becomes a list of its values."""
    sections = {}
    current = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith('#'):
            continue
        if line.startswith('[') and line.endswith(']'):
            current = sections.setdefault(line[1:-1], {})
            continue
        if current is None or '=' not in line:
            raise PgBackRestConfigError('not a pgBackRest configuration line: %r' % raw)
        key, value = line.split('=', 1)
        if key in current:
            previous = current[key]
            current[key] = (previous if isinstance(previous, list) else [previous]) + [value]
        else:
            current[key] = value
    return sections


def host_spec(host, repo_host, db_hosts, tls_names, settings):
    """The description of one host's configuration, from the inventory's shape and the role's settings.

    host: this host's inventory name; repo_host: the repository host's; db_hosts: the database hosts,
    primary first; tls_names: {inventory name: name the other hosts reach it by (in its certificate)};
    settings: stanza, pg_path, pg_port, socket_path, repo_path, retention_days, compress_type,
    compress_level, process_max, archive_async, spool_path, backup_standby, log_level_file, options,
    tls_port, tls_listen, tls (cert_file/key_file/ca_file), cipher_type, cipher_pass, repo2.
    Every host runs the TLS server: the repository host accepts the database hosts (archive-push,
    restore), a database host accepts the repository host (backup, check)."""
    if host not in db_hosts and host != repo_host:
        raise PgBackRestConfigError('%s is neither a database host nor the repository host' % host)
    missing = sorted(set(list(db_hosts) + [repo_host]) - set(tls_names))
    if missing:
        raise PgBackRestConfigError('no TLS name for %s' % ', '.join(missing))
    local_pg = {'path': settings.get('pg_path'), 'port': settings.get('pg_port', 5432),
                'socket_path': settings.get('socket_path', '/var/run/postgresql')}
    spec = dict((key, settings[key]) for key in ('stanza', 'compress_type', 'compress_level', 'archive_async',
                                                 'spool_path', 'log_level_file', 'options', 'tls', 'repo2')
                if key in settings)
    spec['process_max'] = settings.get('process_max', 1)
    if host == repo_host:
        spec.update(repo_path=settings.get('repo_path'), retention_days=settings.get('retention_days', 30),
                    cipher_type=settings.get('cipher_type', 'none'), cipher_pass=settings.get('cipher_pass'),
                    backup_standby=settings.get('backup_standby', False) and len(db_hosts) > 1)
        spec['pg_hosts'] = [dict(local_pg) if db == host else
                            {'host': tls_names[db], 'path': settings.get('pg_path'),
                             'port': settings.get('pg_port', 5432), 'tls_port': settings.get('tls_port', 8432)}
                            for db in db_hosts]
        clients = [db for db in db_hosts if db != host]
    else:
        spec.update(repo_host=tls_names[repo_host], repo_tls_port=settings.get('tls_port', 8432),
                    pg_hosts=[local_pg])
        clients = [repo_host]
    if clients:
        spec['tls_server'] = {'address': settings.get('tls_listen', '*'), 'port': settings.get('tls_port', 8432),
                              'auth': clients}
    return spec
