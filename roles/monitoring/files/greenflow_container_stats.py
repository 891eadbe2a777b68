# -*- coding: utf-8 -*-
# Copyright: greenflow platform engineers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""greenflow-container-stats: CPU and memory of this swarm node's task containers, for node exporter.

Installed by greenflow.platform.monitoring on the swarm nodes and run by systemd
(greenflow-container-stats.service). Every ``--interval`` seconds it asks the Docker engine (its unix
socket) for the running containers of swarm services, reads each one's limits once (inspect) and its
usage (one-shot stats), and rewrites ``greenflow_container_stats.prom`` in node exporter's textfile
directory (a temporary file renamed over it: a reader never sees half a file). The metrics and how the
percentages are counted: the collection's module_utils/_container_stats.py, installed beside this file
(``--lib``). The cutover's CPU and memory gates read them from the nodes of the new colour.

``--once`` samples twice, ``--interval`` apart (a CPU percent needs two samples), writes and exits.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import argparse
import json
import os
import signal
import socket
import sys
import time

try:
    import http.client as httplib
    from urllib.parse import quote
except ImportError:  # pragma: no cover (python 2)
    import httplib  # type: ignore
    from urllib import quote  # type: ignore

DEFAULT_LIB = "/usr/local/lib/greenflow"


class DockerSocket(httplib.HTTPConnection):
    """HTTP over the Docker engine's unix socket."""

    def __init__(self, path, timeout):
        httplib.HTTPConnection.__init__(self, "localhost", timeout=timeout)
        self._path = path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


def docker_get(sock_path, path, timeout):
    conn = DockerSocket(sock_path, timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
        if resp.status == 404:
            return None  # the container went away between the list and this call
        if resp.status != 200:
            raise IOError("Docker engine answered %s to GET %s: %s" % (resp.status, path, body[:200]))
        return json.loads(body.decode("utf-8"))
    finally:
        conn.close()


def _args(argv):
    parser = argparse.ArgumentParser(prog="greenflow-container-stats", description=__doc__.splitlines()[0])
    parser.add_argument("--textfile-dir", default="/var/lib/prometheus/node-exporter",
                        help="node exporter's textfile collector directory")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between samples (default 2)")
    parser.add_argument("--docker-socket", default="/run/docker.sock", help="the Docker engine's API socket")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds for one call to the engine")
    parser.add_argument("--lib", default=DEFAULT_LIB, help="where the collection's module_utils are installed")
    parser.add_argument("--once", action="store_true", help="two samples, one write, then exit")
    return parser.parse_args(argv)


def _log(message):
    sys.stdout.write(message + "\n")
    sys.stdout.flush()


class Sampler(object):
    def __init__(self, cs, args):
        self.cs = cs
        self.args = args
        self.known = {}     # container id -> (identity, limits): inspected once per container
        self.previous = {}  # container id -> its last sample
        self.failing = False

    def one_pass(self):
        args, cs = self.args, self.cs
        filters = quote(json.dumps({"label": [cs.SERVICE_LABEL], "status": ["running"]}))
        listed = docker_get(args.docker_socket, "/containers/json?filters=%s" % filters, args.timeout) or []
        samples, current = [], {}
        for item in listed:
            cid = item.get("Id")
            if not cid:
                continue
            if cid not in self.known:
                inspect = docker_get(args.docker_socket, "/containers/%s/json" % cid, args.timeout)
                identity = cs.identity_of(inspect) if inspect else None
                if identity is None:
                    continue
                self.known[cid] = (identity, cs.limits_of(inspect))
            identity, limits = self.known[cid]
            stats = docker_get(args.docker_socket, "/containers/%s/stats?stream=false&one-shot=true" % cid,
                               args.timeout)
            if not stats:
                continue
            try:
                s = cs.sample(identity, limits, stats, time.monotonic(), self.previous.get(cid))
            except cs.ContainerStatsError as exc:
                _log("container %s: %s" % (identity["container"], exc))
                continue
            current[cid] = s
            samples.append(s)
        self.previous = current
        self.known = dict((k, v) for k, v in self.known.items() if k in current)
        return samples

    def write(self, samples):
        directory = self.args.textfile_dir
        target = os.path.join(directory, self.cs.TEXTFILE_NAME)
        tmp = "%s.%d.tmp" % (target, os.getpid())
        with open(tmp, "w") as f:
            f.write(self.cs.render_textfile(samples, time.time(), self.args.interval))
        os.chmod(tmp, 0o644)
        os.rename(tmp, target)

    def step(self):
        """One pass and one write; an engine that does not answer is said once, not every pass."""
        try:
            samples = self.one_pass()
        except (IOError, OSError, ValueError) as exc:
            if not self.failing:
                _log("cannot read the Docker engine at %s: %s (retrying every %gs)"
                     % (self.args.docker_socket, exc, self.args.interval))
            self.failing = True
            self.previous = {}
            samples = []
        else:
            if self.failing:
                _log("the Docker engine answers again")
            self.failing = False
        self.write(samples)
        return samples


def main(argv=None):
    args = _args(argv)
    sys.path.insert(0, args.lib)
    from ansible_collections.greenflow.platform.plugins.module_utils import _container_stats as cs

    if not args.interval > 0:
        sys.exit("--interval must be > 0")
    sampler = Sampler(cs, args)
    if args.once:
        sampler.step()
        time.sleep(args.interval)
        samples = sampler.step()
        _log("%d task containers sampled" % len(samples))
        return 1 if sampler.failing else 0

    stopping = []
    signal.signal(signal.SIGTERM, lambda signum, frame: stopping.append(signum))
    _log("sampling every %gs into %s" % (args.interval, os.path.join(args.textfile_dir, cs.TEXTFILE_NAME)))
    while not stopping:
        started = time.monotonic()
        sampler.step()
        rest = args.interval - (time.monotonic() - started)
        while rest > 0 and not stopping:
            time.sleep(min(rest, 0.5))
            rest = args.interval - (time.monotonic() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
