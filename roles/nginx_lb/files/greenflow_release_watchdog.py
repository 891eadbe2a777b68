# -*- coding: utf-8 -*-
# Copyright: greenflow platform engineers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""greenflow-release-watchdog: the load balancer's guard over running cutovers.

Installed by greenflow.platform.nginx_lb and run by systemd (greenflow-release-watchdog.service). Every
``--interval`` seconds it reads the release records (``--records``, and its ``peers`` subdirectory: the
copies of a lease a cutover holds on this load balancer when it is not the group's first); a cutover whose lease ran out
(its controller was killed, interrupted or cut off) gets all traffic put back on the colour it came
from, with the same switching code as the nginx_upstream module (a checked candidate, nginx -t,
rename, graceful reload), and its entry is closed as failed with "controller lost".

It runs ``/usr/bin/python3`` on this file; the collection's module_utils it needs are installed beside it
(``--lib``) under ansible_collections/greenflow/platform/plugins/module_utils. ``--once`` runs one pass
and exits (tests, or a timer instead of the service).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import argparse
import os
import signal
import sys
import time

DEFAULT_LIB = "/usr/local/lib/greenflow"


def _args(argv):
    parser = argparse.ArgumentParser(prog="greenflow-release-watchdog", description=__doc__.splitlines()[0])
    parser.add_argument("--records", default="/var/lib/greenflow/releases", help="the release records' directory")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between passes (default 1)")
    parser.add_argument("--lib", default=DEFAULT_LIB, help="where the collection's module_utils are installed")
    parser.add_argument("--once", action="store_true", help="one pass, then exit (non-zero when a put-back failed)")
    parser.add_argument("--metrics-dir", default="",
                        help="node exporter's textfile directory: the release metrics of an app are rewritten there "
                             "when the watchdog closes an entry, and for every record at start (empty: none)")
    return parser.parse_args(argv)


def _log(message):
    # systemd's journal adds the time; one line per event
    sys.stdout.write(message + "\n")
    sys.stdout.flush()


def main(argv=None):
    args = _args(argv)
    sys.path.insert(0, args.lib)
    # pylint: disable=import-outside-toplevel  # the path above decides where these come from
    from ansible_collections.greenflow.platform.plugins.module_utils import _nginx_switch
    from ansible_collections.greenflow.platform.plugins.module_utils import _release_watchdog

    def put_back(app, lease):
        return _nginx_switch.put_back(app, lease)

    stopping = []
    signal.signal(signal.SIGTERM, lambda signum, frame: stopping.append(signum))
    if not args.once:
        _log("watching the release records in %s every %g s" % (args.records, args.interval))
    if args.metrics_dir and os.path.isdir(args.records):
        written = _release_watchdog.refresh_metrics(args.records, args.metrics_dir, _log)
        if written:
            _log("release metrics written in %s for %s" % (args.metrics_dir, ", ".join(written)))
    while True:
        acted = []
        # the records (on the first load balancer of the group), then the copies of a lease that a cutover
        # run from the first one holds on this one (on the others; no metrics: the record is not here)
        for directory, metrics_dir in ((args.records, args.metrics_dir),
                                       (os.path.join(args.records, _release_watchdog.PEER_SUBDIR), "")):
            if os.path.isdir(directory):
                acted += _release_watchdog.scan(directory, time.time, put_back, _log, metrics_dir=metrics_dir)
        if args.once:
            return 1 if any(what[2].startswith("put-back failed") for what in acted) else 0
        if stopping:
            return 0
        time.sleep(args.interval)


if __name__ == "__main__":
    sys.exit(main())
