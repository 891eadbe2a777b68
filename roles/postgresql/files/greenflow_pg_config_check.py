# Copyright: greenflow.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Check a candidate pg_hba.conf or conf.d file of a PostgreSQL cluster before it replaces the live one.

Installed by greenflow.platform.postgresql and called by the role's `template` tasks as their `validate`
command, so a file that fails here never reaches the live configuration:

    python3 /usr/local/sbin/greenflow-pg-config-check --bin-dir /usr/lib/postgresql/15/bin \
        --conf-dir /etc/postgresql/15/main --hba CANDIDATE
    python3 /usr/local/sbin/greenflow-pg-config-check ... --conf conf.d/10-greenflow-postgresql.conf CANDIDATE

How: PostgreSQL 15 has no command that parses a pg_hba.conf other than the live one (the view
pg_hba_file_rules reads the file the running server was started with, and `postgres -C` exits before
pg_hba.conf is read). But the postmaster refuses to start when pg_hba.conf has an error ("could not
load pg_hba.conf") or when a setting is invalid, and it loads the TLS certificate and key at start. So
this starts a throwaway server: a copy of the live configuration directory with the candidate in place
of its file, a fresh scratch data directory (initdb, under a second), no TCP listener
(listen_addresses=''), its socket in the scratch directory, archiving off. It waits until the server is
ready or has died, stops it, and removes everything. The live server and its files are never touched.

Exit 0 when the throwaway server started; 1 with PostgreSQL's own messages when it did not; 2 on bad
arguments. Python 3 standard library only; runs the server as the postgres user when started as root.
"""

import argparse
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time

START_TIMEOUT = 60
STOP_TIMEOUT = 30


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n', maxsplit=1)[0])
    parser.add_argument('--bin-dir', required=True, help='directory of postgres and initdb')
    parser.add_argument('--conf-dir', required=True, help='the cluster configuration directory (postgresql.conf)')
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument('--hba', action='store_true', help='the candidate is pg_hba.conf')
    target.add_argument('--conf', metavar='RELATIVE_PATH',
                        help='the candidate replaces this file of the configuration directory (e.g. conf.d/x.conf)')
    parser.add_argument('--user', default='postgres', help='the server runs as this user when started as root')
    parser.add_argument('candidate', help='the candidate file')
    args = parser.parse_args(argv)
    if args.conf is not None:
        relative = os.path.normpath(args.conf)
        if os.path.isabs(relative) or relative.startswith('..'):
            parser.error('--conf must be a path inside the configuration directory')
        args.conf = relative
    for path, what in ((args.candidate, 'candidate'), (os.path.join(args.conf_dir, 'postgresql.conf'), 'postgresql.conf'),
                       (os.path.join(args.bin_dir, 'postgres'), 'postgres'), (os.path.join(args.bin_dir, 'initdb'), 'initdb')):
        if not os.path.exists(path):
            parser.error('%s not found: %s' % (what, path))
    return args


def as_user(user):
    """preexec_fn that becomes `user` when running as root; None otherwise."""
    if os.geteuid() != 0:
        return None
    entry = pwd.getpwnam(user)

    def become():
        os.setgid(entry.pw_gid)
        os.initgroups(user, entry.pw_gid)
        os.setuid(entry.pw_uid)
    return become


def chown_tree(path, user):
    if os.geteuid() != 0:
        return
    entry = pwd.getpwnam(user)
    for root, dirs, files in os.walk(path):
        os.chown(root, entry.pw_uid, entry.pw_gid)
        for name in files:
            os.chown(os.path.join(root, name), entry.pw_uid, entry.pw_gid)


def copy_configuration(conf_dir, dest, args):
    """The live configuration directory's files (not its subdirectories except conf.d), then the candidate."""
    os.makedirs(dest)
    for name in ('postgresql.conf', 'pg_hba.conf', 'pg_ident.conf'):
        if os.path.exists(os.path.join(conf_dir, name)):
            shutil.copyfile(os.path.join(conf_dir, name), os.path.join(dest, name))
    if os.path.isdir(os.path.join(conf_dir, 'conf.d')):
        shutil.copytree(os.path.join(conf_dir, 'conf.d'), os.path.join(dest, 'conf.d'))
    target = os.path.join(dest, 'pg_hba.conf' if args.hba else args.conf)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    shutil.copyfile(args.candidate, target)
    return target


def run(argv, user, **kwargs):
    return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                          preexec_fn=as_user(user), check=False, **kwargs)


def server_messages(log_path):
    try:
        with open(log_path) as handle:
            lines = handle.read().splitlines()
    except OSError:
        return []
    return [line for line in lines if line.strip()]


def check(args):
    scratch = tempfile.mkdtemp(prefix='greenflow-pg-config-check-')
    try:
        conf = os.path.join(scratch, 'conf')
        data = os.path.join(scratch, 'data')
        log_path = os.path.join(scratch, 'server.log')
        copy_configuration(args.conf_dir, conf, args)
        open(log_path, 'w').close()
        chown_tree(scratch, args.user)
        os.chmod(scratch, 0o700)
        init = run([os.path.join(args.bin_dir, 'initdb'), '--no-sync', '--auth=reject', '--username=postgres',
                    '--encoding=UTF8', '--locale=C', '--pgdata=' + data], args.user, cwd=scratch)
        if init.returncode != 0:
            sys.stderr.write('greenflow-pg-config-check: initdb of the scratch cluster failed (nothing was checked):\n'
                             + init.stdout)
            return 1
        argv = [os.path.join(args.bin_dir, 'postgres'), '-D', data,
                '-c', 'config_file=' + os.path.join(conf, 'postgresql.conf'),
                '-c', 'data_directory=' + data,
                '-c', 'hba_file=' + os.path.join(conf, 'pg_hba.conf'),
                '-c', 'ident_file=' + os.path.join(conf, 'pg_ident.conf'),
                '-c', 'listen_addresses=',
                '-c', 'unix_socket_directories=' + scratch,
                '-c', 'external_pid_file=',
                '-c', 'archive_mode=off',
                '-c', 'logging_collector=off',
                '-c', 'log_destination=stderr',
                '-c', 'lc_messages=C',
                '-c', 'cluster_name=greenflow-config-check']
        with open(log_path, 'a') as log:
            server = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, preexec_fn=as_user(args.user),
                                      cwd=scratch)
        deadline = time.monotonic() + START_TIMEOUT
        started = False
        while time.monotonic() < deadline:
            if server.poll() is not None:
                break
            if any('ready to accept connections' in line for line in server_messages(log_path)):
                started = True
                break
            time.sleep(0.1)
        if server.poll() is None:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                server.send_signal(signal.SIGQUIT)
                server.wait(STOP_TIMEOUT)
        what = 'pg_hba.conf' if args.hba else args.conf
        if started:
            sys.stdout.write('greenflow-pg-config-check: a throwaway server started with the candidate %s\n' % what)
            return 0
        messages = [line for line in server_messages(log_path)
                    if any(level in line for level in ('FATAL', 'ERROR', 'LOG', 'DETAIL', 'HINT', 'CONTEXT', 'WARNING'))]
        sys.stderr.write('greenflow-pg-config-check: PostgreSQL refuses the candidate %s (the live file is kept):\n%s\n'
                         % (what, '\n'.join(messages or server_messages(log_path)
                                            or ['(no message; the server did not start within %d s)' % START_TIMEOUT])))
        return 1
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    return check(args)


if __name__ == '__main__':
    sys.exit(main())
