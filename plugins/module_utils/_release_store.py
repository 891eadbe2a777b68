# -*- coding: utf-8 -*-
# Copyright: greenflow platform engineers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The release record file on the load balancer: read it, or change it under its lock.

    with RecordUpdate(path, app, keep=200) as update:
        entry = _release_record.begin(update.record, ...)
    # written atomically on a clean exit; left as it was when the block raises

With ``metrics_dir`` (node exporter's textfile directory), every write of the record also rewrites the
app's ``greenflow_release_<app>.prom`` there (``_release_metrics``); a failure to write the metrics leaves
the record written and is kept in ``metrics_error`` (the caller warns): the record is what counts.

Every writer (release_record, release_rollback, the watchdog's pass) holds the same lock file
(``<path>.lock``) from the read to the write, so a change is never planned on a state another writer
is changing. A record that cannot be parsed is never overwritten.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ansible_collections.greenflow.platform.plugins.module_utils import _release_metrics as metrics
from ansible_collections.greenflow.platform.plugins.module_utils import _release_record as rr
from ansible_collections.greenflow.platform.plugins.module_utils._atomic_file import (
    AtomicFileError, FileLock, atomic_write, check_writable_dir, lock_path_for, read_snapshot)

LOCK_TIMEOUT = 30


def read(path, app):
    """The record as the file has it now (no lock: writes are atomic). Raises AtomicFileError,
    ReleaseRecordError or UnicodeDecodeError."""
    return rr.parse_record(read_snapshot(path).text(), app)


def write_metrics(metrics_dir, record):
    """The record's metrics into ``metrics_dir`` (under the record's lock, so that they follow the record's
    order of writes). Returns (path or None, error text or None); never raises."""
    try:
        return metrics.write(metrics_dir, record), None
    except (AtomicFileError, OSError) as exc:
        return None, "the release metrics in %s were not written: %s" % (metrics_dir, exc)


class RecordUpdate(object):
    """Context manager: the record read under its lock (``record``), written back on a clean exit
    (pruned to ``keep`` entries). ``dry_run`` reads without the lock and writes nothing (check mode).
    ``metrics_dir``: after each write, the release metrics are written there too (``metrics_path`` is then
    their file, ``metrics_error`` why they could not be written)."""

    def __init__(self, path, app, keep=200, dry_run=False, lock_timeout=LOCK_TIMEOUT, metrics_dir=None):
        self.path, self.app, self.keep, self.dry_run = path, app, keep, dry_run
        self.lock_timeout = lock_timeout
        self.metrics_dir = metrics_dir
        self.metrics_path = None
        self.metrics_error = None
        self.lock = None
        self.snapshot = None
        self.record = None

    def __enter__(self):
        if not self.dry_run:
            os.makedirs(os.path.dirname(self.path), mode=0o750, exist_ok=True)
            check_writable_dir(self.path)
            self.lock = FileLock(lock_path_for(self.path), timeout=self.lock_timeout)
            self.lock.acquire()
        try:
            self.snapshot = read_snapshot(self.path)
            self.record = rr.parse_record(self.snapshot.text(), self.app)
        except Exception:
            self._unlock()
            raise
        return self

    def write(self):
        """Write the record now (the block goes on holding the lock): for a change that must be on
        disk before the next step, such as a lock taken before a long switch."""
        if self.dry_run:
            return
        rr.prune(self.record, self.keep)
        atomic_write(self.path, rr.dump_record(self.record).encode("utf-8"), like=self.snapshot, default_mode=0o640)
        self.snapshot = read_snapshot(self.path)
        self.metrics_path, self.metrics_error = write_metrics(self.metrics_dir, self.record)

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is None:
                self.write()
        finally:
            self._unlock()
        return False

    def _unlock(self):
        if self.lock is not None:
            self.lock.release()
            self.lock = None
