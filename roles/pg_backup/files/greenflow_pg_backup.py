# greenflow-pg-backup — installed by greenflow.platform.pg_backup. One tool for the whole backup cycle:
#
#   wal-push PATH NAME         archive_command on the database hosts (compress, encrypt, send, fsync)
#   wal-fetch NAME DEST        restore_command (fetch, decrypt, decompress)
#   backup [--verify-restore|--scheduled]  base backup with pg_basebackup, pg_verifybackup, retention, status file
#   verify [--id ID] [--restore]   pg_verifybackup of the backups, every archived WAL file, WAL continuity;
#                              --restore: restore the newest backup into a scratch instance and check it
#   retention [--dry-run] [--days N]  apply the retention rules (also part of `backup`)
#   list                       backups in the store (JSON)
#   restore-fetch --dest DIR [--backup ID|latest] [--before TIME] [--before-lsn LSN]
#                                  copy a backup into an empty data dir
#   serve                      the forced command of the store host's authorized_keys (ssh transport)
#
# Configuration: /etc/greenflow/pg_backup.json (written by the role). Exit status non-zero on any failure,
# with a message naming what failed. The logic (retention, WAL names) lives in _pg_backup.py next to it.
# /usr/local/bin/greenflow-pg-backup (files/greenflow-pg-backup) runs this file with /usr/bin/python3.
import argparse
import datetime
import fcntl
import gzip
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import time

sys.path.insert(0, '/usr/local/lib/greenflow-pg-backup')
import _pg_backup as pgb  # noqa: E402

CONFIG = os.environ.get('GREENFLOW_PG_BACKUP_CONFIG', '/etc/greenflow/pg_backup.json')
WAL_NAME_RE = re.compile(r'^([0-9A-F]{24}(\.partial|\.[0-9A-F]{8}\.backup)?|[0-9A-F]{8}\.history)$')


class Failure(Exception):
    pass


def log(message):
    sys.stderr.write('greenflow-pg-backup: %s\n' % message)
    sys.stderr.flush()


def load_config():
    with open(CONFIG) as handle:
        cfg = json.load(handle)
    cfg.setdefault('cluster', 'main')
    cfg.setdefault('store_host', '')
    cfg.setdefault('encrypt', False)
    cfg.setdefault('compress_level', 6)
    return cfg


def now_utc():
    return datetime.datetime.now(pgb.UTC)


def iso(moment):
    return moment.strftime('%Y-%m-%dT%H:%M:%SZ')


def cluster_dir(cfg):
    return os.path.join(cfg['store'], cfg['cluster'])


def wal_dir(cfg):
    return os.path.join(cluster_dir(cfg), 'wal')


def base_dir(cfg):
    return os.path.join(cluster_dir(cfg), 'base')


def wal_suffix(cfg):
    return '.gz.enc' if cfg['encrypt'] else '.gz'


def fsync_path(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(path):
    for root, dirs, files in os.walk(path):
        for name in files:
            fsync_path(os.path.join(root, name))
        fsync_path(root)
    fsync_path(os.path.dirname(path.rstrip('/')))


def run(argv, **kwargs):
    kwargs.setdefault('stdout', subprocess.PIPE)
    kwargs.setdefault('stderr', subprocess.PIPE)
    return subprocess.run(argv, check=False, **kwargs)


# --- encoding of stored files: gzip, then optionally openssl (AES-256, key from a file) -----------------

def openssl(cfg, data, decrypt):
    argv = ['openssl', 'enc', '-aes-256-cbc', '-pbkdf2', '-iter', '100000', '-pass', 'file:' + cfg['key_file']]
    argv += ['-d'] if decrypt else ['-salt']
    proc = run(argv, input=data)
    if proc.returncode != 0:
        what = 'decryption' if decrypt else 'encryption'
        raise Failure('openssl %s failed: %s' % (what, proc.stderr.decode(errors='replace').strip()))
    return proc.stdout


def encode(cfg, raw):
    blob = gzip.compress(raw, compresslevel=int(cfg['compress_level']), mtime=0)
    return openssl(cfg, blob, decrypt=False) if cfg['encrypt'] else blob


def decode(cfg, blob, encrypted):
    if encrypted:
        blob = openssl(cfg, blob, decrypt=True)
    return gzip.decompress(blob)


# --- the store: local operations (on the store host) -----------------------------------------------------

def check_wal_name(name):
    if not WAL_NAME_RE.match(name or ''):
        raise Failure('not a WAL file name: %r' % (name,))


def store_wal_put(cfg, name, sha, blob):
    check_wal_name(name)
    os.makedirs(wal_dir(cfg), mode=0o750, exist_ok=True)
    for suffix in ('.gz', '.gz.enc'):
        existing = os.path.join(wal_dir(cfg), name + suffix)
        if os.path.exists(existing):
            with open(existing, 'rb') as handle:
                try:
                    content = decode(cfg, handle.read(), suffix == '.gz.enc')
                except (OSError, EOFError, Failure) as exc:
                    raise Failure('%s is already in the archive and unreadable (%s): not overwritten' % (existing, exc))
            if hashlib.sha256(content).hexdigest() == sha:
                log('%s already archived with the same content' % name)
                return
            raise Failure('%s is already in the archive with DIFFERENT content: refusing to overwrite it '
                          '(two clusters archiving into one store?)' % existing)
    dest = os.path.join(wal_dir(cfg), name + wal_suffix(cfg))
    tmp = '%s.tmp.%d' % (dest, os.getpid())
    with open(tmp, 'wb') as handle:
        handle.write(blob)
        handle.flush()
        os.fsync(handle.fileno())
    try:
        os.link(tmp, dest)  # never replaces an existing file
    finally:
        os.unlink(tmp)
    fsync_path(wal_dir(cfg))


def store_wal_get(cfg, name):
    check_wal_name(name)
    for suffix in ('.gz.enc', '.gz'):
        path = os.path.join(wal_dir(cfg), name + suffix)
        if os.path.exists(path):
            with open(path, 'rb') as handle:
                return handle.read(), suffix == '.gz.enc'
    return None, False


def read_meta(cfg, backup_id):
    with open(os.path.join(base_dir(cfg), backup_id + '.json')) as handle:
        return json.load(handle)


def write_meta(cfg, meta):
    path = os.path.join(base_dir(cfg), meta['id'] + '.json')
    tmp = path + '.tmp'
    with open(tmp, 'w') as handle:
        json.dump(meta, handle, indent=2, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fsync_path(base_dir(cfg))


def store_list(cfg):
    """Complete backups (with metadata), oldest first, plus unfinished ones marked partial."""
    result = []
    if not os.path.isdir(base_dir(cfg)):
        return result
    for entry in sorted(os.listdir(base_dir(cfg))):
        path = os.path.join(base_dir(cfg), entry)
        if entry.endswith('.partial') and os.path.isdir(path):
            result.append({'id': entry, 'partial': True,
                           'stop_time': iso(datetime.datetime.fromtimestamp(os.path.getmtime(path), pgb.UTC))})
        elif pgb.BACKUP_ID_RE.match(entry) and os.path.isdir(path):
            try:
                result.append(read_meta(cfg, entry))
            except (OSError, ValueError):
                result.append({'id': entry, 'partial': True, 'stop_time': iso(
                    datetime.datetime.fromtimestamp(os.path.getmtime(path), pgb.UTC))})
    return result


def parse_time(text):
    text = text.strip().replace(' ', 'T', 1)
    if text.endswith('Z'):
        text = text[:-1] + '+00:00'
    if re.search(r'[+-]\d\d$', text):
        text += ':00'
    moment = datetime.datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=pgb.UTC)


def store_base_send(cfg, backup_id, out):
    if not pgb.BACKUP_ID_RE.match(backup_id or ''):
        raise Failure('not a backup id: %r' % (backup_id,))
    path = os.path.join(base_dir(cfg), backup_id)
    meta = read_meta(cfg, backup_id)
    if meta.get('encrypted'):
        with open(os.path.join(path, 'base.tar.gz.enc'), 'rb') as handle:
            shutil.copyfileobj(handle, out)
    else:
        with tarfile.open(fileobj=out, mode='w|') as tar:
            for entry in sorted(os.listdir(path)):
                tar.add(os.path.join(path, entry), arcname=entry)
    out.flush()


# --- the store seen from a database host: local or through ssh ---------------------------------------------

def ssh_argv(cfg, *command):
    return ['ssh', '-i', cfg['ssh_key'], '-p', str(cfg.get('ssh_port', 22)), '-o', 'BatchMode=yes',
            '-o', 'StrictHostKeyChecking=yes', '-o', 'UserKnownHostsFile=' + cfg['ssh_known_hosts'],
            '-o', 'ConnectTimeout=15', '%s@%s' % (cfg['ssh_user'], cfg['store_host']), '--',
            ' '.join(shlex.quote(part) for part in command)]


def remote(cfg, *command, data=None):
    proc = run(ssh_argv(cfg, *command), input=data)
    if proc.returncode != 0:
        raise Failure('store host %s: %s failed: %s' % (cfg['store_host'], command[0],
                                                        proc.stderr.decode(errors='replace').strip()))
    return proc.stdout


def cmd_wal_push(cfg, args):
    with open(args.path, 'rb') as handle:
        raw = handle.read()
    sha = hashlib.sha256(raw).hexdigest()
    blob = encode(cfg, raw)
    if cfg['store_host']:
        remote(cfg, 'wal-put', args.name, sha, data=blob)
    else:
        store_wal_put(cfg, args.name, sha, blob)


def cmd_wal_fetch(cfg, args):
    check_wal_name(args.name)
    if cfg['store_host']:
        proc = run(ssh_argv(cfg, 'wal-get', args.name))
        if proc.returncode == 3:
            return 1  # not in the archive (normal at the end of recovery)
        if proc.returncode != 0:
            raise Failure('store host %s: wal-get %s failed: %s'
                          % (cfg['store_host'], args.name, proc.stderr.decode(errors='replace').strip()))
        encrypted, blob = proc.stdout[:1] == b'E', proc.stdout[1:]
    else:
        blob, encrypted = store_wal_get(cfg, args.name)
        if blob is None:
            return 1
    raw = decode(cfg, blob, encrypted)
    tmp = args.dest + '.greenflow-tmp'
    with open(tmp, 'wb') as handle:
        handle.write(raw)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, args.dest)
    return 0


def cmd_serve(cfg, _args):
    """Forced command for the ssh key of the database hosts: only these operations are allowed."""
    words = shlex.split(os.environ.get('SSH_ORIGINAL_COMMAND', ''))
    if not words:
        raise Failure('serve: no command')
    op, rest = words[0], words[1:]
    if op == 'wal-put' and len(rest) == 2 and re.match(r'^[0-9a-f]{64}$', rest[1]):
        store_wal_put(cfg, rest[0], rest[1], sys.stdin.buffer.read())
    elif op == 'wal-get' and len(rest) == 1:
        blob, encrypted = store_wal_get(cfg, rest[0])
        if blob is None:
            return 3
        sys.stdout.buffer.write((b'E' if encrypted else b'P') + blob)
    elif op == 'list' and not rest:
        sys.stdout.write(json.dumps(store_list(cfg)))
    elif op == 'base-send' and len(rest) == 1:
        store_base_send(cfg, rest[0], sys.stdout.buffer)
    else:
        raise Failure('serve: operation not allowed: %r' % (words,))
    return 0


# --- base backups ----------------------------------------------------------------------------------------

def pg_bin(cfg, name):
    return os.path.join(cfg['pg_bin'], name)


def dir_size(path):
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def verify_plain(cfg, path):
    """pg_verifybackup on a plain backup directory: returns (ok, message naming the damaged files)."""
    proc = run([pg_bin(cfg, 'pg_verifybackup'), path])
    output = (proc.stdout + proc.stderr).decode(errors='replace').strip()
    return proc.returncode == 0, output


OPENSSL_ENC = 'openssl enc -aes-256-cbc -pbkdf2 -iter 100000 -pass file:%s'


def unpack_encrypted(cfg, source, dest):
    """openssl -d | gunzip | tar -x, streamed (no copy in memory); source: a file object."""
    cmd = 'set -o pipefail; %s -d | gzip -dc | tar -C %s -xf -' % (OPENSSL_ENC % shlex.quote(cfg['key_file']),
                                                                   shlex.quote(dest))
    proc = subprocess.run(['bash', '-c', cmd], stdin=source, stderr=subprocess.PIPE, check=False)
    if proc.returncode != 0:
        raise Failure('decrypt/unpack failed: %s' % proc.stderr.decode(errors='replace').strip())


def extract_encrypted(cfg, backup_path, dest):
    with open(os.path.join(backup_path, 'base.tar.gz.enc'), 'rb') as handle:
        unpack_encrypted(cfg, handle, dest)


def scratch_path(cfg, name):
    path = os.path.join(cfg['scratch_dir'], name)
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path, mode=0o700)
    return path


def verify_backup(cfg, backup_id):
    """Check one stored backup against its manifest. Returns (ok, message)."""
    path = os.path.join(base_dir(cfg), backup_id)
    meta = read_meta(cfg, backup_id)
    if not meta.get('encrypted'):
        return verify_plain(cfg, path)
    scratch = scratch_path(cfg, 'verify-' + backup_id)
    try:
        try:
            extract_encrypted(cfg, path, scratch)
        except (Failure, OSError, EOFError, tarfile.TarError) as exc:
            return False, '%s: cannot be decrypted/unpacked: %s' % (os.path.join(path, 'base.tar.gz.enc'), exc)
        return verify_plain(cfg, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def source_args(cfg):
    src = cfg['source']
    argv = ['--host', src['host'], '--port', str(src['port']), '--username', src['user'], '--no-password']
    env = dict(os.environ)
    if src.get('passfile'):
        env['PGPASSFILE'] = src['passfile']
    return argv, env


def take_backup(cfg, run_info):
    os.makedirs(base_dir(cfg), mode=0o750, exist_ok=True)
    started = now_utc()
    backup_id = pgb.new_backup_id(started)
    run_info['backup_id'] = backup_id
    partial = os.path.join(base_dir(cfg), backup_id + '.partial')
    final = os.path.join(base_dir(cfg), backup_id)
    conn, env = source_args(cfg)
    argv = [pg_bin(cfg, 'pg_basebackup'), '--pgdata', partial, '--format', 'plain', '--wal-method', 'stream',
            '--checkpoint', cfg.get('checkpoint', 'fast'), '--manifest-checksums', 'CRC32C',
            '--label', 'greenflow-' + backup_id, '--no-sync'] + conn
    if cfg.get('max_rate'):
        argv += ['--max-rate', str(cfg['max_rate'])]
    proc = run(argv, env=env)
    if proc.returncode != 0:
        raise Failure('pg_basebackup failed (%s): %s' % (cfg['source']['host'], proc.stderr.decode(errors='replace').strip()))
    with open(os.path.join(partial, 'backup_label')) as handle:
        label = pgb.parse_backup_label(handle.read())
    with open(os.path.join(partial, 'backup_manifest')) as handle:
        timeline, _start, stop_lsn = pgb.manifest_wal_range(json.load(handle))
    ok, message = verify_plain(cfg, partial)
    if not ok:
        raise Failure('pg_verifybackup failed on the new backup %s: %s' % (partial, message))
    size = dir_size(partial)
    encrypted = bool(cfg['encrypt'])
    if encrypted:
        packed = partial + '.enc-tmp'
        os.makedirs(packed, mode=0o750)
        cmd = 'set -o pipefail; tar -C %s -cf - . | gzip -%d | %s -salt > %s' % (
            shlex.quote(partial), int(cfg['compress_level']), OPENSSL_ENC % shlex.quote(cfg['key_file']),
            shlex.quote(os.path.join(packed, 'base.tar.gz.enc')))
        proc = subprocess.run(['bash', '-c', cmd], stderr=subprocess.PIPE, check=False)
        if proc.returncode != 0:
            raise Failure('encrypting the backup failed: %s' % proc.stderr.decode(errors='replace').strip())
        shutil.copy2(os.path.join(partial, 'backup_manifest'), os.path.join(packed, 'backup_manifest'))
        shutil.rmtree(partial)
        os.rename(packed, partial)
    fsync_tree(partial)
    os.rename(partial, final)
    fsync_path(base_dir(cfg))
    stopped = now_utc()
    meta = {'id': backup_id, 'start_time': iso(started), 'stop_time': iso(stopped), 'timeline': timeline,
            'start_lsn': label['start_lsn'], 'start_wal': label['start_wal'], 'stop_lsn': stop_lsn,
            'size_bytes': size, 'stored_bytes': dir_size(final), 'encrypted': encrypted,
            'verified': True, 'verified_at': iso(stopped), 'source': cfg['source']['host']}
    write_meta(cfg, meta)
    run_info['size_bytes'] = size
    run_info['verify'] = {'result': 'ok', 'backups': [backup_id]}
    log('backup %s: %s, verified' % (backup_id, pgb.human_size(size)))
    return meta


def store_wal_names(cfg):
    if not os.path.isdir(wal_dir(cfg)):
        return []
    return sorted(pgb.wal_file_base(name) for name in os.listdir(wal_dir(cfg)) if '.tmp.' not in name)


def apply_retention(cfg, dry_run=False, days=None):
    backups = []
    for meta in store_list(cfg):
        entry = {'id': meta['id'], 'partial': bool(meta.get('partial')), 'verified': bool(meta.get('verified')),
                 'stop_time': parse_time(meta['stop_time']), 'start_wal': meta.get('start_wal', '')}
        backups.append(entry)
    days = int(cfg['retention_days']) if days is None else int(days)
    plan = pgb.retention_plan(backups, store_wal_names(cfg), now_utc(), days)
    if not dry_run:
        for backup_id in plan['delete']:
            shutil.rmtree(os.path.join(base_dir(cfg), backup_id), ignore_errors=True)
            meta_file = os.path.join(base_dir(cfg), backup_id + '.json')
            if os.path.exists(meta_file):
                os.unlink(meta_file)
        for name in plan['delete_wal']:
            for suffix in ('.gz', '.gz.enc'):
                path = os.path.join(wal_dir(cfg), name + suffix)
                if os.path.exists(path):
                    os.unlink(path)
    return {'keep': plan['keep'], 'deleted_backups': plan['delete'], 'deleted_wal': len(plan['delete_wal']),
            'oldest_needed_wal': plan['oldest_needed_wal'], 'dry_run': dry_run}


def verify_store(cfg, backup_ids=None):
    """pg_verifybackup every (or the named) backup, read every archived WAL file, look for gaps."""
    problems = []
    checked = []
    for meta in store_list(cfg):
        if meta.get('partial') or (backup_ids and meta['id'] not in backup_ids):
            continue
        ok, message = verify_backup(cfg, meta['id'])
        checked.append(meta['id'])
        meta['verified'] = ok
        meta['verified_at'] = iso(now_utc())
        if not ok:
            meta['verify_error'] = message[-2000:]
            problems.append('backup %s DAMAGED: %s' % (meta['id'], message))
        else:
            meta.pop('verify_error', None)
        write_meta(cfg, meta)
    metas = [m for m in store_list(cfg) if not m.get('partial')]
    # a backup carries its own WAL up to its end: the archive must be complete from the segment of the
    # oldest backup's end on (older archived files are read too, when present)
    oldest = min((pgb.segment_name(m['timeline'], m['stop_lsn']) for m in metas),
                 key=pgb.segment_number) if metas else None
    if os.path.isdir(wal_dir(cfg)):
        for name in sorted(os.listdir(wal_dir(cfg))):
            path = os.path.join(wal_dir(cfg), name)
            if '.tmp.' in name:
                continue
            number = pgb.segment_number(pgb.wal_file_base(name).split('.', 1)[0])
            try:
                with open(path, 'rb') as handle:
                    decode(cfg, handle.read(), name.endswith('.enc'))
            except (OSError, EOFError, gzip.BadGzipFile, Failure, ValueError) as exc:
                problems.append('WAL file DAMAGED: %s: %s' % (path, exc))
        gaps = pgb.wal_gaps(store_wal_names(cfg), from_segment=oldest)
        if gaps:
            problems.append('WAL archive has gaps (missing in %s): %s' % (wal_dir(cfg), ', '.join(gaps[:20])))
    return {'result': 'failed' if problems else 'ok', 'backups': checked, 'problems': problems}


def restore_test(cfg, backup_id=None):
    """Restore a backup into a scratch instance, replay the archived WAL, check it. Returns a dict."""
    started = time.time()
    metas = [m for m in store_list(cfg) if not m.get('partial') and m.get('verified')]
    if backup_id:
        metas = [m for m in metas if m['id'] == backup_id]
    if not metas:
        raise Failure('restore test: no verified backup %sin the store' % ('%s ' % backup_id if backup_id else ''))
    meta = metas[-1]
    path = os.path.join(base_dir(cfg), meta['id'])
    scratch = scratch_path(cfg, 'restore-test')
    data = os.path.join(scratch, 'data')
    port = str(cfg.get('scratch_port', 54329))
    result = {'backup_id': meta['id'], 'result': 'failed'}
    try:
        if meta.get('encrypted'):
            os.makedirs(data, mode=0o700)
            extract_encrypted(cfg, path, data)
        else:
            shutil.copytree(path, data, symlinks=True)
        os.chmod(data, 0o700)
        for leftover in ('standby.signal', 'backup_manifest', 'postmaster.pid'):
            if os.path.exists(os.path.join(data, leftover)):
                os.unlink(os.path.join(data, leftover))
        restore_cmd = '%s %s wal-fetch %%f %%p' % (sys.executable, os.path.realpath(sys.argv[0]))
        with open(os.path.join(data, 'postgresql.conf'), 'w') as handle:
            handle.write("port = %s\nlisten_addresses = ''\nunix_socket_directories = '%s'\n"
                         "archive_mode = off\nhot_standby = off\nshared_buffers = 64MB\nfsync = off\n"
                         "max_wal_senders = 10\nmax_replication_slots = 10\nmax_connections = 100\n"
                         "logging_collector = off\n" % (port, scratch))
            handle.write(pgb.recovery_settings(restore_cmd))
        with open(os.path.join(data, 'pg_hba.conf'), 'w') as handle:
            handle.write('local all all trust\n')
        open(os.path.join(data, 'recovery.signal'), 'w').close()
        logfile = os.path.join(scratch, 'postgres.log')
        proc = run([pg_bin(cfg, 'pg_ctl'), '-D', data, '-l', logfile, '-w', '-t',
                    str(cfg.get('restore_test_timeout', 1800)), 'start'])
        if proc.returncode != 0:
            raise Failure('restore test: the scratch instance did not start: %s' % tail(logfile))
        psql = [pg_bin(cfg, 'psql'), '-X', '-h', scratch, '-p', port, '-U', 'postgres', '-d', 'postgres', '-tA',
                '-v', 'ON_ERROR_STOP=1']
        deadline = time.time() + float(cfg.get('restore_test_timeout', 1800))
        while True:
            state = run(psql + ['-c', 'SELECT pg_is_in_recovery()'])
            if state.returncode == 0 and state.stdout.strip() == b'f':
                break
            if time.time() > deadline:
                raise Failure('restore test: recovery did not finish in time: %s' % tail(logfile))
            time.sleep(1)
        log_text = open(logfile, errors='replace').read()
        redo = re.findall(r'redo done at ([0-9A-F]+/[0-9A-F]+)', log_text)
        last_tx = re.findall(r'last completed transaction was at log time (.+)', log_text)
        result['redo_done_lsn'] = redo[-1] if redo else None
        result['last_transaction'] = last_tx[-1].strip() if last_tx else None
        result['wal_replayed_from'] = meta['start_wal']
        if cfg.get('verify_query'):
            check = run(psql + ['-d', cfg.get('verify_database') or 'postgres', '-c', cfg['verify_query']])
            output = (check.stdout + check.stderr).decode(errors='replace').strip()
            result['check'] = 'query'
            if check.returncode != 0 or output.splitlines()[:1] not in (['t'], ['true'], ['1']):
                raise Failure('restore test: check query did not return true: %s' % output)
        else:
            check = run([pg_bin(cfg, 'pg_amcheck'), '-h', scratch, '-p', port, '-U', 'postgres', '--all',
                         '--install-missing', '--heapallindexed'])
            output = (check.stdout + check.stderr).decode(errors='replace').strip()
            result['check'] = 'pg_amcheck'
            if check.returncode != 0:
                raise Failure('restore test: pg_amcheck found problems: %s' % output[-2000:])
        result['result'] = 'ok'
        return result
    finally:
        run([pg_bin(cfg, 'pg_ctl'), '-D', data, '-m', 'immediate', '-w', 'stop'])
        result['duration_s'] = round(time.time() - started, 1)
        shutil.rmtree(scratch, ignore_errors=True)


def tail(path, lines=15):
    try:
        with open(path, errors='replace') as handle:
            return ' | '.join(handle.read().splitlines()[-lines:])
    except OSError:
        return '(no log)'


# --- status file and lock ---------------------------------------------------------------------------

def write_status(cfg, run_info):
    path = cfg['status_file']
    try:
        with open(path) as handle:
            previous = json.load(handle)
    except (OSError, ValueError):
        previous = {}
    doc = pgb.status_document(previous, run_info)
    doc['cluster'] = cfg['cluster']
    tmp = path + '.tmp'
    with open(tmp, 'w') as handle:
        json.dump(doc, handle, indent=2, sort_keys=True)
        handle.write('\n')
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def with_lock(cfg, action, body):
    run_info = {'action': action, 'result': 'failed', 'started': iso(now_utc())}
    start = time.time()
    lock = open(cfg['lock_file'], 'a')
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        log('another run holds %s: not starting' % cfg['lock_file'])
        return 75
    code = 1
    try:
        body(run_info)
        run_info['result'] = 'ok' if not run_info.get('problems') else 'failed'
        code = 0 if run_info['result'] == 'ok' else 1
    except (Failure, pgb.BackupLogicError, OSError) as exc:
        run_info['error'] = str(exc)
        log('FAILED: %s' % exc)
    finally:
        run_info['finished'] = iso(now_utc())
        run_info['duration_s'] = round(time.time() - start, 1)
        write_status(cfg, run_info)
        fcntl.flock(lock, fcntl.LOCK_UN)
        lock.close()
    for problem in run_info.get('problems', []):
        log(problem)
    print(json.dumps(run_info, sort_keys=True))
    return code


def cmd_backup(cfg, args):
    def body(info):
        meta = take_backup(cfg, info)
        info['retention'] = apply_retention(cfg)
        weekday = now_utc().isoweekday() % 7  # 0 = Sunday, like cron
        scheduled = args.scheduled and weekday in [int(d) for d in cfg.get('verify_restore_weekdays', [])]
        if args.verify_restore or scheduled:
            info['verify_restore'] = restore_test(cfg, meta['id'])
    return with_lock(cfg, 'backup', body)


def cmd_verify(cfg, args):
    def body(info):
        info['verify'] = verify_store(cfg, [args.id] if args.id else None)
        info['problems'] = list(info['verify']['problems'])
        if args.restore and not info['problems']:
            info['verify_restore'] = restore_test(cfg, args.id)
    return with_lock(cfg, 'verify', body)


def cmd_retention(cfg, args):
    def body(info):
        info['retention'] = apply_retention(cfg, dry_run=args.dry_run, days=args.days)
    return with_lock(cfg, 'retention', body)


def cmd_list(cfg, _args):
    if cfg['store_host']:
        sys.stdout.write(remote(cfg, 'list').decode())
    else:
        sys.stdout.write(json.dumps(store_list(cfg), indent=2))
    sys.stdout.write('\n')
    return 0


def cmd_restore_fetch(cfg, args):
    """Copy a stored backup into an empty data directory (on the host being restored)."""
    if os.path.isdir(args.dest) and os.listdir(args.dest):
        raise Failure('restore-fetch: %s is not empty' % args.dest)
    listing = json.loads(remote(cfg, 'list')) if cfg['store_host'] else store_list(cfg)
    candidates = [m for m in listing if not m.get('partial') and m.get('verified')]
    if args.backup and args.backup != 'latest':
        candidates = [m for m in listing if m['id'] == args.backup and not m.get('partial')]
        if not candidates:
            raise Failure('restore-fetch: no backup %s in the store (have: %s)' % (
                args.backup, ', '.join(m['id'] for m in listing) or 'none'))
    if args.before:
        limit = parse_time(args.before)
        candidates = [m for m in candidates if parse_time(m['stop_time']) < limit]
    if args.before_lsn:
        candidates = pgb.backups_ending_by_lsn(candidates, args.before_lsn)
    if not candidates:
        limits = (['ended before %s' % args.before] if args.before else []) + (
            ['consistent at or before LSN %s' % args.before_lsn] if args.before_lsn else [])
        raise Failure('restore-fetch: no verified backup fits%s' % (
            ' (%s)' % ', '.join(limits) if limits else ''))
    meta = candidates[-1]
    os.makedirs(args.dest, mode=0o700, exist_ok=True)
    if cfg['store_host']:
        proc = subprocess.Popen(ssh_argv(cfg, 'base-send', meta['id']), stdout=subprocess.PIPE)
        stream = proc.stdout
    else:
        proc = None
        pipe_r, pipe_w = os.pipe()
        if os.fork() == 0:
            os.close(pipe_r)
            with os.fdopen(pipe_w, 'wb') as out:
                store_base_send(cfg, meta['id'], out)
            os._exit(0)
        os.close(pipe_w)
        stream = os.fdopen(pipe_r, 'rb')
    if meta.get('encrypted'):
        unpack_encrypted(cfg, stream, args.dest)
    else:
        with tarfile.open(fileobj=stream, mode='r|') as tar:
            tar.extractall(args.dest)
    if proc is not None and proc.wait() != 0:
        raise Failure('restore-fetch: copying backup %s from %s failed' % (meta['id'], cfg['store_host']))
    if proc is None:
        os.wait()
    ok, message = verify_plain(cfg, args.dest)
    if not ok:
        raise Failure('restore-fetch: the copied backup %s fails pg_verifybackup: %s' % (meta['id'], message))
    for leftover in ('standby.signal', 'backup_manifest'):
        if os.path.exists(os.path.join(args.dest, leftover)):
            os.unlink(os.path.join(args.dest, leftover))
    fsync_tree(args.dest)
    print(json.dumps({'backup_id': meta['id'], 'stop_time': meta['stop_time'], 'start_wal': meta['start_wal']}))
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog='greenflow-pg-backup')
    sub = parser.add_subparsers(dest='command', required=True)
    p = sub.add_parser('wal-push')
    p.add_argument('path')
    p.add_argument('name')
    p = sub.add_parser('wal-fetch')
    p.add_argument('name')
    p.add_argument('dest')
    p = sub.add_parser('backup')
    p.add_argument('--verify-restore', action='store_true')
    p.add_argument('--scheduled', action='store_true',
                   help='run by cron: restore-test on the weekdays of verify_restore_weekdays')
    p = sub.add_parser('verify')
    p.add_argument('--id')
    p.add_argument('--restore', action='store_true')
    p = sub.add_parser('retention')
    p.add_argument('--dry-run', action='store_true')
    p.add_argument('--days', type=int, help='override retention_days for this run')
    sub.add_parser('list')
    sub.add_parser('serve')
    p = sub.add_parser('restore-fetch')
    p.add_argument('--dest', required=True)
    p.add_argument('--backup', default='latest')
    p.add_argument('--before')
    p.add_argument('--before-lsn', help='only a backup consistent at or before this LSN (PITR by LSN)')
    args = parser.parse_args(argv)
    try:
        cfg = load_config()
        handler = {'wal-push': cmd_wal_push, 'wal-fetch': cmd_wal_fetch, 'backup': cmd_backup,
                   'verify': cmd_verify, 'retention': cmd_retention, 'list': cmd_list, 'serve': cmd_serve,
                   'restore-fetch': cmd_restore_fetch}[args.command]
        return handler(cfg, args) or 0
    except (Failure, pgb.BackupLogicError, OSError, ValueError) as exc:
        log('%s FAILED: %s' % (args.command, exc))
        return 1


if __name__ == '__main__':
    sys.exit(main())
