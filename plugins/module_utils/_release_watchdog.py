# -*- coding: utf-8 -*-
# Copyright: greenflow platform engineers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One pass of the load balancer's release watchdog over the release records.

For every record in the records directory, every in-progress entry whose cutover lease ran out
(_release_lease.expired) gets all its traffic put back on the colour the cutover came from, then the
entry is closed as failed with "controller lost". The nginx switch itself is passed in
(``put_back(app, lease)``, returning a short description or raising), so that this pass is the same
whatever switches nginx, and testable on its own.

Order and locks: the record's lock is held from the re-read to the write, so that a controller that
comes back cannot renew in between (its renewal waits for the lock, then finds the lease lost). When the
switch fails, the entry stays as it is and the next pass tries again: the record never says traffic was
put back when it was not.

With ``metrics_dir`` (node exporter's textfile directory) the app's release metrics are rewritten after the
entry is closed (``_release_metrics``), and ``refresh_metrics`` writes them for every record (the program
does at its start: records written before the metrics existed get theirs).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import glob
import os

from ansible_collections.greenflow.platform.plugins.module_utils import _release_lease as lease_mod
from ansible_collections.greenflow.platform.plugins.module_utils import _release_metrics as metrics
from ansible_collections.greenflow.platform.plugins.module_utils import _release_model as rr_model
from ansible_collections.greenflow.platform.plugins.module_utils import _release_record as rr
from ansible_collections.greenflow.platform.plugins.module_utils._atomic_file import (
    AtomicFileError, FileLock, atomic_write, lock_path_for, read_snapshot)


# the lease copies on the second (third, ...) load balancer: a subdirectory of the records' one
PEER_SUBDIR = rr_model.PEER_SUBDIR


def record_files(directory):
    """The release records in ``directory`` (one <app>.json each)."""
    return sorted(path for path in glob.glob(os.path.join(directory, "*.json")) if os.path.isfile(path))


def _app_of(path):
    return os.path.basename(path)[:-len(".json")]


def _load(path):
    snapshot = read_snapshot(path)
    return snapshot, rr.parse_record(snapshot.text(), _app_of(path))


def scan(directory, now, put_back, log, lock_timeout=5.0, metrics_dir=None):
    """One pass. Returns a list of (app, entry id, outcome text) for what it acted on."""
    acted = []
    for path in record_files(directory):
        try:
            _snapshot, record = _load(path)     # without the lock first: most passes find nothing to do
        except (AtomicFileError, rr.ReleaseRecordError) as exc:
            log("cannot read %s: %s" % (path, exc))
            continue
        if not lease_mod.expired(record, now()):
            continue
        try:
            with FileLock(lock_path_for(path), timeout=lock_timeout):
                snapshot, record = _load(path)
                for entry in lease_mod.expired(record, now()):
                    acted.append(_take_over(path, record, snapshot, entry, now, put_back, log, metrics_dir))
        except (AtomicFileError, rr.ReleaseRecordError) as exc:
            log("%s: %s" % (path, exc))
    return acted


def _write_metrics(metrics_dir, record, log):
    try:
        metrics.write(metrics_dir, record)
    except (AtomicFileError, OSError) as exc:
        log("%s: the release metrics in %s were not written: %s" % (record["app"], metrics_dir, exc))


def refresh_metrics(directory, metrics_dir, log, lock_timeout=5.0):
    """Write the release metrics of every record in ``directory`` (each under its record's lock). Returns
    the apps whose metrics were written."""
    done = []
    if not metrics_dir or not os.path.isdir(metrics_dir):
        return done
    for path in record_files(directory):
        try:
            with FileLock(lock_path_for(path), timeout=lock_timeout):
                _snapshot, record = _load(path)
                if metrics.write(metrics_dir, record):
                    done.append(record["app"])
        except (AtomicFileError, rr.ReleaseRecordError, OSError) as exc:
            log("%s: the release metrics were not written: %s" % (path, exc))
    return done


def _take_over(path, record, snapshot, entry, now, put_back, log, metrics_dir=None):
    app, lease = record["app"], entry["lease"]
    try:
        done = put_back(app, lease)
    except Exception as exc:  # pylint: disable=broad-except  # any failure: log it, keep the entry, try again
        log("%s entry %s: lease ran out, but putting traffic back on %s failed (next pass tries again): %s"
            % (app, entry["id"], lease["from_color"], exc))
        return (app, entry["id"], "put-back failed: %s" % exc)
    lease_mod.mark_lost(entry, now(), done)
    atomic_write(path, rr.dump_record(record).encode("utf-8"), like=snapshot, default_mode=0o640)
    _write_metrics(metrics_dir, record, log)
    log("%s entry %s: %s" % (app, entry["id"], entry["reason"]))
    return (app, entry["id"], entry["reason"])
