# -*- coding: utf-8 -*-
# Copyright: greenflow platform engineers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""CPU and memory of the swarm's task containers, as metrics (pure logic, no Ansible imports).

Two users:

- ``greenflow-container-stats`` (roles/monitoring, on every swarm node) samples each task container through
  the Docker engine's API (inspect once per container, one-shot stats every interval) and writes
  ``render_textfile``'s output into node exporter's textfile directory. Prometheus scrapes it with the rest
  of the node exporter; the cutover reads it straight from the nodes that run the new colour.
- ``traffic_window`` (on the load balancer, once per cutover poll) fetches that node exporter page
  (``?collect[]=textfile``: only the textfile collector) and keeps one service's tasks with
  ``readings_for_service``.

Percentages, like ``docker stats``: CPU is the share of the task's CPU limit used over the last sampling
interval (of one core when the task has no limit: a busy single thread is 100 %), memory is the usage
without the page cache's inactive files, as a share of the task's memory limit (none without a limit).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

SERVICE_LABEL = "com.docker.swarm.service.name"
TASK_LABEL = "com.docker.swarm.task.name"
PREFIX = "greenflow_container_"
TEXTFILE_NAME = "greenflow_container_stats.prom"

METRICS = (
    ("cpu_seconds_total", "counter", "CPU time the task's container used."),
    ("cpu_percent", "gauge", "CPU used over the last sampling interval, percent of the task's CPU limit "
                             "(of one core without a limit)."),
    ("cpu_limit_cores", "gauge", "The task's CPU limit in cores (0: none)."),
    ("memory_bytes", "gauge", "Memory used, without inactive page cache."),
    ("memory_limit_bytes", "gauge", "The task's memory limit (0: none)."),
    ("memory_percent", "gauge", "Memory used, percent of the task's memory limit (only with a limit)."),
)


class ContainerStatsError(ValueError):
    """Input that cannot be read as container stats or metrics."""


def limits_of(inspect):
    """(cpu_limit_cores, memory_limit_bytes) of a container from its ``docker inspect`` document; 0 = none."""
    host = (inspect or {}).get("HostConfig") or {}
    cores = 0.0
    if host.get("NanoCpus"):
        cores = float(host["NanoCpus"]) / 1e9
    elif host.get("CpuQuota") and int(host["CpuQuota"]) > 0:
        cores = float(host["CpuQuota"]) / float(host.get("CpuPeriod") or 100000)
    memory = int(host.get("Memory") or 0)
    return cores, max(memory, 0)


def identity_of(inspect):
    """{container, service, task} of a swarm task's container, or None for a container of no service."""
    labels = ((inspect or {}).get("Config") or {}).get("Labels") or {}
    service = labels.get(SERVICE_LABEL)
    if not service:
        return None
    return {"container": str((inspect or {}).get("Id") or "")[:12], "service": service,
            "task": labels.get(TASK_LABEL) or ""}


def memory_used(stats):
    """Memory in use from a stats document, like ``docker stats``: usage less the inactive page cache."""
    mem = (stats or {}).get("memory_stats") or {}
    usage = int(mem.get("usage") or 0)
    inner = mem.get("stats") or {}
    for key in ("total_inactive_file", "inactive_file"):  # cgroup v1, v2
        if key in inner and int(inner[key]) < usage:
            return usage - int(inner[key])
    return usage


def cpu_seconds(stats):
    """Total CPU time (seconds) from a stats document."""
    usage = (((stats or {}).get("cpu_stats") or {}).get("cpu_usage") or {}).get("total_usage")
    if usage is None:
        raise ContainerStatsError("stats without cpu_stats.cpu_usage.total_usage")
    return int(usage) / 1e9


def sample(identity, limits, stats, now, previous=None):
    """One container's sample. ``now``: the sampler's monotonic clock; ``previous``: this container's last
    sample (for the CPU percent over the interval between the two)."""
    cores, memory_limit = limits
    out = dict(identity)
    out.update(cpu_seconds=cpu_seconds(stats), cpu_limit_cores=cores, memory_bytes=memory_used(stats),
               memory_limit_bytes=memory_limit, at=now)
    if memory_limit:
        out["memory_percent"] = round(100.0 * out["memory_bytes"] / memory_limit, 2)
    if previous and now > previous["at"] and out["cpu_seconds"] >= previous["cpu_seconds"]:
        used = (out["cpu_seconds"] - previous["cpu_seconds"]) / (now - previous["at"])
        out["cpu_percent"] = round(100.0 * used / (cores or 1.0), 2)
    return out


def _label_value(text):
    return str(text).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render_textfile(samples, timestamp, interval):
    """The textfile collector's file for these samples (``timestamp``: wall clock of the pass)."""
    lines = []
    for name, kind, helptext in METRICS:
        lines.append("# HELP %s%s %s" % (PREFIX, name, helptext))
        lines.append("# TYPE %s%s %s" % (PREFIX, name, kind))
        for s in samples:
            if name not in s:
                continue
            labels = 'service="%s",task="%s",container="%s"' % (
                _label_value(s["service"]), _label_value(s["task"]), _label_value(s["container"]))
            lines.append("%s%s{%s} %s" % (PREFIX, name, labels, repr(float(s[name]))))
    lines.append("# HELP %sstats_timestamp_seconds When greenflow-container-stats last sampled (Unix time)." % PREFIX)
    lines.append("# TYPE %sstats_timestamp_seconds gauge" % PREFIX)
    lines.append("%sstats_timestamp_seconds %s" % (PREFIX, repr(float(timestamp))))
    lines.append("# HELP %sstats_interval_seconds Seconds between greenflow-container-stats' samples." % PREFIX)
    lines.append("# TYPE %sstats_interval_seconds gauge" % PREFIX)
    lines.append("%sstats_interval_seconds %s" % (PREFIX, repr(float(interval))))
    return "\n".join(lines) + "\n"


_LINE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?$')
_LABEL_RE = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*,?')


def _unescape(value):
    return re.sub(r'\\(.)', lambda m: "\n" if m.group(1) == "n" else m.group(1), value)


def parse_metrics(text, prefix=PREFIX):
    """Samples of the exposition text whose names start with ``prefix``: [(name, {label: value}, float)].
    Other metrics (node exporter's own) are skipped; a malformed line of ours raises ContainerStatsError."""
    out = []
    for raw in (text or "").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or not line.startswith(prefix):
            continue
        m = _LINE_RE.match(line)
        if not m:
            raise ContainerStatsError("cannot read the metric line %r" % line[:200])
        labels = {}
        body = m.group(2) or ""
        pos = 0
        while pos < len(body):
            lm = _LABEL_RE.match(body, pos)
            if not lm:
                raise ContainerStatsError("cannot read the labels of %r" % line[:200])
            labels[lm.group(1)] = _unescape(lm.group(2))
            pos = lm.end()
        try:
            value = float(m.group(3))
        except ValueError:
            raise ContainerStatsError("not a number in %r" % line[:200])
        out.append((m.group(1), labels, value))
    return out


def readings_for_service(text, service):
    """What one node exporter page says about ``service``'s tasks:
    {"timestamp": float or None, "interval": float or None, "tasks": [{task, container, cpu_percent,
    cpu_limit_cores, memory_bytes, memory_limit_bytes, memory_percent}]} (a task's cpu_percent is missing
    until its second sample, memory_percent without a memory limit)."""
    tasks = {}
    timestamp = interval = None
    for name, labels, value in parse_metrics(text):
        short = name[len(PREFIX):]
        if short == "stats_timestamp_seconds":
            timestamp = value
        elif short == "stats_interval_seconds":
            interval = value
        elif labels.get("service") == service and short != "cpu_seconds_total":
            key = labels.get("container") or labels.get("task")
            task = tasks.setdefault(key, {"task": labels.get("task"), "container": labels.get("container")})
            task[short] = value
    return {"timestamp": timestamp, "interval": interval,
            "tasks": [tasks[k] for k in sorted(tasks)]}


def _node_of(url):
    rest = url.split("://", 1)[-1]
    return rest.split("/", 1)[0]


STALE_PAGE_SAMPLES = 5
STALE_PAGE_MIN_SECONDS = 30.0


def read_nodes(urls, service, timeout, fetch_text, now=None):
    """Fetch every node exporter page of ``urls`` in parallel (``fetch_text(url, timeout)`` returns the
    body or raises) and keep ``service``'s tasks. Returns {"tasks": [...], "errors": [{url, error}],
    "ms": float}; each task carries ``node`` (the URL's host:port) and that page's ``timestamp`` and
    ``interval``. A page without greenflow_container_stats_timestamp_seconds is an error (the sampler
    never wrote, or the textfile collector does not read its directory). With ``now`` (the reader's wall
    clock), so is a page whose newest sample is older than ``STALE_PAGE_SAMPLES`` intervals (at least
    ``STALE_PAGE_MIN_SECONDS``): its sampler stopped, and the tasks it lists may be gone."""
    import threading
    import time

    pages = [None] * len(urls)
    start = time.monotonic()

    def one(index, url):
        try:
            pages[index] = ("ok", readings_for_service(fetch_text(url, timeout), service))
        except Exception as exc:  # pylint: disable=broad-except  # any failure to read is the finding
            pages[index] = ("error", str(exc) or exc.__class__.__name__)

    threads = [threading.Thread(target=one, args=(i, u)) for i, u in enumerate(urls)]
    for thread in threads:
        thread.daemon = True
        thread.start()
    tasks, errors = [], []
    for index, thread in enumerate(threads):
        thread.join(max(0.0, timeout + 1 - (time.monotonic() - start)))
        url = urls[index]
        page = pages[index]
        if thread.is_alive() or page is None:
            errors.append({"url": url, "error": "no answer within %g s" % timeout})
        elif page[0] == "error":
            errors.append({"url": url, "error": page[1]})
        elif page[1]["timestamp"] is None:
            errors.append({"url": url, "error": "no greenflow_container_* metrics (is greenflow-container-stats "
                                                "running there, writing into node exporter's textfile directory?)"})
        elif now is not None and now - page[1]["timestamp"] > max(
                STALE_PAGE_MIN_SECONDS, STALE_PAGE_SAMPLES * float(page[1]["interval"] or 2.0)):
            errors.append({"url": url, "error": "its newest sample is %.0f s old (has greenflow-container-stats "
                                                "stopped there?)" % (now - page[1]["timestamp"])})
        else:
            for task in page[1]["tasks"]:
                task = dict(task, node=_node_of(url), timestamp=page[1]["timestamp"],
                            interval=page[1]["interval"])
                tasks.append(task)
    return {"tasks": tasks, "errors": errors, "ms": round(1000 * (time.monotonic() - start), 1)}
