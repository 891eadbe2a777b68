# -*- coding: utf-8 -*-
# Copyright: greenflow platform engineers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Generic helpers for modules that own a file: atomic write/restore and an flock lock.

Private to this collection. Used by nginx_upstream; other modules may reuse it.

- ``read_snapshot(path)`` -> FileSnapshot (content bytes + mode/uid/gid, or absent)
- ``atomic_write(path, data, like=snapshot)``: temp file in the same directory, fsync, chmod/
  chown like the previous file, rename over, fsync the directory. Readers see the old or the new
  file, never a partial one. The temp name ends in ``.tmp`` so ``include *.conf`` never picks it up.
- ``restore(path, snapshot)``: put the previous content back (atomically) or remove the new file
  if there was none.
- ``write_candidate(path, data, like=snapshot)`` / ``install(candidate, path)`` /
  ``discard(candidate)``: the two halves of ``atomic_write`` with a check in between: the new
  content is written and fsynced next to ``path`` under a hidden name (``.<name>.XXXX.candidate``),
  checked by the caller, and only then renamed over ``path``. Until then ``path`` is untouched.
- ``remove_leftovers(path)``: candidates and temp files of ``path`` that a killed run left behind.
- ``FileLock(path, timeout)``: exclusive ``fcntl.flock`` with a timeout, as a context manager.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import fcntl
import os
import stat
import tempfile
import time


class AtomicFileError(Exception):
    pass


class LockTimeout(AtomicFileError):
    pass


class FileSnapshot:
    """What a file looked like before we touched it."""

    def __init__(self, path, content=None, mode=None, uid=None, gid=None):
        self.path = path
        self.content = content
        self.mode = mode
        self.uid = uid
        self.gid = gid

    @property
    def exists(self):
        return self.content is not None

    def text(self, encoding="utf-8"):
        return None if self.content is None else self.content.decode(encoding, "replace")


def read_snapshot(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return FileSnapshot(path)
        raise AtomicFileError("cannot read %s: %s" % (path, exc.strerror))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise AtomicFileError("%s exists but is not a regular file" % path)
        chunks = []
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(fd)
    return FileSnapshot(path, b"".join(chunks), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)


def check_writable_dir(path):
    """Raise AtomicFileError with a clear message unless ``path``'s directory can take new files."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise AtomicFileError("directory %s does not exist (or is not a directory)" % directory)
    # os.access is not enough for root (it ignores modes) nor for read-only or immutable
    # directories: try to create and remove a probe file.
    try:
        fd, probe = tempfile.mkstemp(dir=directory, prefix=".greenflow-probe-", suffix=".tmp")
    except OSError as exc:
        raise AtomicFileError("directory %s is not writable: %s" % (directory, exc.strerror))
    os.close(fd)
    os.unlink(probe)
    return directory


def _fsync_dir(directory):
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


_TMP_SUFFIX = ".tmp"
_CANDIDATE_SUFFIX = ".candidate"


def _sibling_prefix(path):
    # Hidden: nginx's include globs (glob(3), like the shell) never match a leading dot with "*",
    # so neither "include conf.d/*.conf" nor "include sites-enabled/*" can pick these files up.
    return ".%s." % os.path.basename(path)


def _write_sibling(path, data, like, default_mode, suffix):
    """Write ``data`` to a new hidden file next to ``path`` (fsynced, mode/owner of ``like``)."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=_sibling_prefix(path), suffix=suffix)
    except OSError as exc:
        raise AtomicFileError("cannot create a temporary file in %s: %s" % (directory, exc.strerror))
    try:
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
            if like is not None and like.exists:
                os.fchmod(fd, like.mode)
                if os.geteuid() == 0 and (like.uid, like.gid) != (os.geteuid(), os.getegid()):
                    os.fchown(fd, like.uid, like.gid)
            else:
                os.fchmod(fd, default_mode)
        finally:
            os.close(fd)
    except OSError as exc:
        discard(tmp)
        raise AtomicFileError("cannot write %s: %s" % (path, exc.strerror))
    return tmp


def atomic_write(path, data, like=None, default_mode=0o644):
    """Replace ``path`` with ``data`` atomically, keeping mode/owner of ``like`` (a snapshot)."""
    install(_write_sibling(path, data, like, default_mode, _TMP_SUFFIX), path)


def write_candidate(path, data, like=None, default_mode=0o644):
    """Write the next content of ``path`` beside it, not in place; returns the candidate's path.

    The candidate already has its final bytes, mode and owner, so what the caller checks is exactly
    what ``install`` puts in place (a rename: same inode, nothing rewritten).
    """
    return _write_sibling(path, data, like, default_mode, _CANDIDATE_SUFFIX)


def install(candidate, path):
    """Rename ``candidate`` over ``path`` (atomic: readers see the old or the new file)."""
    try:
        os.rename(candidate, path)
    except OSError as exc:
        discard(candidate)
        raise AtomicFileError("cannot write %s: %s" % (path, exc.strerror))
    _fsync_dir(os.path.dirname(os.path.abspath(path)))


def discard(candidate):
    """Remove a candidate or temp file; False if it could not be removed (it is a leftover then)."""
    try:
        os.unlink(candidate)
    except OSError as exc:
        return exc.errno == errno.ENOENT
    return True


def remove_leftovers(path):
    """Remove the candidates and temp files of ``path`` that a killed run left behind.

    Only a run holding ``path``'s lock creates them, so call this with the lock held: anything
    found then belongs to a run that is gone. Returns the names removed.
    """
    prefix = _sibling_prefix(path)
    return remove_matching(os.path.dirname(os.path.abspath(path)),
                           lambda name: name.startswith(prefix) and name.endswith((_TMP_SUFFIX, _CANDIDATE_SUFFIX)))


def remove_matching(directory, wanted):
    """Remove the files of ``directory`` whose name ``wanted(name)`` accepts; returns the names removed."""
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in sorted(names):
        if wanted(name) and discard(os.path.join(directory, name)):
            removed.append(name)
    return removed


def restore(path, snapshot):
    """Put ``snapshot`` back at ``path``: its content, or no file if it did not exist."""
    if snapshot.exists:
        atomic_write(path, snapshot.content, like=snapshot)
    else:
        try:
            os.unlink(path)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise AtomicFileError("cannot remove %s: %s" % (path, exc.strerror))
        _fsync_dir(os.path.dirname(os.path.abspath(path)))


def lock_path_for(path):
    """The lock file that sits next to ``path`` (hidden, never matched by ``*.conf``)."""
    directory, base = os.path.split(os.path.abspath(path))
    return os.path.join(directory, ".%s.lock" % base)


class FileLock:
    """Exclusive flock on ``path`` (created if needed), waiting at most ``timeout`` seconds."""

    def __init__(self, path, timeout=30.0, poll=0.05):
        self.path = path
        self.timeout = timeout
        self.poll = poll
        self.fd = None
        self.waited = 0.0

    def acquire(self):
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise AtomicFileError("cannot open lock file %s: %s" % (self.path, exc.strerror))
        start = time.monotonic()
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self.waited = time.monotonic() - start
                return self
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    self.release()
                    raise AtomicFileError("cannot lock %s: %s" % (self.path, exc.strerror))
            if time.monotonic() - start >= self.timeout:
                self.release()
                raise LockTimeout(
                    "another run holds the lock %s; gave up after %.0f s" % (self.path, self.timeout)
                )
            time.sleep(self.poll)

    def release(self):
        if self.fd is not None:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            except OSError:
                pass
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
        return False
