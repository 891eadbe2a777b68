#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: greenflow platform engineers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: traffic_window
short_description: Per-pool traffic statistics of a window of nginx's JSON access log
version_added: 0.1.0
description:
  - Reads the load balancer's JSON access log (one object per line, C(log_format ... escape=json))
    for a window and returns, per pool, the number of requests, 5xx answers, error rate and the
    p50/p95/p99 of C(upstream_response_time) in milliseconds, plus the RV(position) to continue
    from next time.
  - "A request belongs to the pool whose O(pools) list holds the B(last) element of
    C(upstream_addr) (after retries nginx writes C(a, b) or C(a : b)). Status and latency are
    the last elements of C(upstream_status) and C(upstream_response_time) too. Requests nginx
    answered itself (C(upstream_addr) C(-)) or sent to an address in no pool are counted apart in
    RV(unattributed)."
  - An error is a final status 5xx. Percentiles are nearest-rank over the samples (always a
    measured value); C(-) gives no latency sample.
  - The window is every line whose C(msec) is at or after O(since), and/or every line after a
    saved O(position). Positions survive log rotation (new inode or a shorter file) - the rest
    of the rotated file C(<log_path>.1) is read first, then the new log from its start. An
    incomplete last line is not consumed and is read again next time.
  - Malformed lines (not one JSON object, C(msec) or C(status) missing) are counted, never fatal.
  - Reads one million lines in a few seconds (see C(bench/bench_traffic_window.py)).
author:
  - greenflow platform engineers (@greenflow)
options:
  log_path:
    description: The JSON access log on the managed host.
    type: path
    required: true
  pools:
    description:
      - Servers of each colour as C(host:port), exactly as nginx writes them in C(upstream_addr)
        (the same dict as greenflow.platform.nginx_upstream's O(pools)).
      - Upstream group names (for example C(demo_green)) may be listed too - nginx writes the
        group name when none of its servers is available.
    type: dict
    default: {}
  since:
    description:
      - Epoch seconds; lines with C(msec) before it are skipped (counted in RV(before_since)).
      - Compared with the load balancer's clock.
    type: float
  position:
    description:
      - A RV(position) returned by an earlier run; reading starts there.
      - Without O(position) the whole current log is read (filtered by O(since) when given).
    type: dict
  resource_urls:
    description:
      - Node exporter pages to read the CPU and memory of O(resource_service)'s tasks from, while the log is
        read (for example C(http://10.0.0.11:9100/metrics?collect[]=textfile)) - the
        C(greenflow_container_*) metrics that greenflow-container-stats (role greenflow.platform.monitoring)
        writes on the swarm nodes. Fetched in parallel; see RV(resources).
    type: list
    elements: str
    default: []
  resource_service:
    description: The swarm service whose tasks O(resource_urls) are read for (required with it).
    type: str
  resource_timeout:
    description: Seconds each O(resource_urls) fetch may take.
    type: float
    default: 2.0
  from_end:
    description:
      - Read nothing; return the position of the end of the log (after its last complete line),
        to mark the start of a window.
    type: bool
    default: false
  max_lines:
    description:
      - Read at most this many lines; RV(truncated) tells whether more remain after
        RV(position).
    type: int
  host:
    description: Count only requests whose C(host) field equals this value (a shortcut for O(match) on C(host)).
    type: str
  match:
    description:
      - Count only lines whose fields equal these values (compared as the text nginx wrote), for
        example the field C(app) equal to the app's name when several apps share one log. Other lines are counted in
        RV(unmatched).
    type: dict
  latency_thresholds_ms:
    description:
      - For each value, RV(pools.over_ms) counts the responses that took at least that many
        milliseconds (the cutover uses them to require several slow responses before aborting).
    type: list
    elements: float
    default: []
  latency_histogram:
    description:
      - Also return each pool's latency histogram (RV(pools.latency_histogram)), so that the windows of several
        load balancers' logs can be added up with exact percentiles (greenflow.platform.release_cutover with
        O(greenflow.platform.release_cutover#module:peers)).
    type: bool
    default: false
  rotated_suffix:
    description: Suffix of the rotated log (logrotate's default C(.1)).
    type: str
    default: ".1"  # quoted: bare .1 is the number 0.1 in YAML
  health_urls:
    description:
      - URLs to GET from the managed host (the load balancer) while the log is read, all at once;
        RV(health) tells how each answered. greenflow.platform.release_cutover probes the new
        colour's servers this way, so that the probes take nginx's path and the firewall needs to
        let only the load balancers reach the colours' ports.
    type: list
    elements: str
    default: []
notes:
  - Read only; never changes anything. Check mode runs it as usual.
extends_documentation_fragment:
  - greenflow.platform.health_probe
  - greenflow.platform.attributes
  - greenflow.platform.attributes.idempotent
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  idempotent:
    support: full
seealso:
  - module: greenflow.platform.nginx_upstream
  - module: greenflow.platform.release_cutover
"""

EXAMPLES = r"""
- name: Mark the start of a window before a traffic shift
  greenflow.platform.traffic_window:
    log_path: /var/log/nginx/greenflow-access.json
    from_end: true
  register: window_start

- name: Read what happened since the mark
  greenflow.platform.traffic_window:
    log_path: /var/log/nginx/greenflow-access.json
    pools:
      blue: ["10.0.0.11:8081", "10.0.0.12:8081"]
      green: ["10.0.0.11:8082", "10.0.0.12:8082", "demo_green"]
    position: "{{ window_start.position }}"
    latency_thresholds_ms: [500, 1000]
  register: window

- name: Show the new colour's numbers
  ansible.builtin.debug:
    msg: >-
      green: {{ window.pools.green.requests }} requests,
      {{ window.pools.green.errors_5xx }} 5xx, p95 {{ window.pools.green.p95_ms }} ms

- name: The last five minutes, by the load balancer's clock
  greenflow.platform.traffic_window:
    log_path: /var/log/nginx/greenflow-access.json
    pools:
      blue: ["10.0.0.11:8081"]
      green: ["10.0.0.11:8082"]
    since: "{{ ansible_facts['date_time']['epoch'] | float - 300 }}"
"""

RETURN = r"""
pools:
  description: Statistics per colour of O(pools).
  returned: always
  type: dict
  contains:
    requests:
      description: Requests answered by a server of the pool (last upstream).
      type: int
    errors_5xx:
      description: Of those, how many ended with a 5xx status.
      type: int
    error_rate:
      description: errors_5xx / requests; null without requests.
      type: float
    retried:
      description: Requests that reached the pool after trying another server first.
      type: int
    statuses:
      description: Counts per status class (1xx, 2xx, 3xx, 4xx, 5xx, other).
      type: dict
    latency_samples:
      description: Requests with a usable upstream_response_time.
      type: int
    p50_ms:
      description: Median upstream response time in ms; null without samples.
      type: float
    p95_ms:
      description: 95th percentile in ms (nearest rank); null without samples.
      type: float
    p99_ms:
      description: 99th percentile in ms; null without samples.
      type: float
    max_ms:
      description: Slowest response in ms; null without samples.
      type: float
    over_ms:
      description: For each of O(latency_thresholds_ms), responses at or over it.
      type: dict
    latency_histogram:
      description: With O(latency_histogram), C([ms, count]) pairs in ascending order.
      type: list
      elements: list
  sample:
    green:
      requests: 1204
      errors_5xx: 3
      error_rate: 0.0025
      retried: 0
      statuses: {"1xx": 0, "2xx": 1190, "3xx": 0, "4xx": 11, "5xx": 3, "other": 0}
      latency_samples: 1204
      p50_ms: 12.0
      p95_ms: 48.0
      p99_ms: 95.0
      max_ms: 311.0
      over_ms: {"500": 0, "1000": 0}
unattributed:
  description:
    - The same statistics for requests without upstream (nginx answered itself, e.g. a 502 with
      no server reached) or sent to an address in no pool, plus C(no_upstream) and
      C(no_upstream_5xx) - the requests (and 5xx) with C(upstream_addr) C(-).
  returned: always
  type: dict
position:
  description:
    - Where the next read continues (after the last complete line read); pass it back as
      O(position). Null when the log does not exist.
  returned: always
  type: dict
  sample: {"inode": 1835021, "dev": 2049, "offset": 73400320}
lines:
  description: Complete lines read (including malformed and filtered ones).
  returned: always
  type: int
malformed:
  description: Lines that are not one JSON object with C(msec) and C(status).
  returned: always
  type: int
malformed_samples:
  description: Up to five malformed lines (first 200 characters) with the parse error.
  returned: always
  type: list
  elements: dict
partial:
  description: Unterminated last lines of a rotated file (nginx will not finish them).
  returned: always
  type: int
blank:
  description: Empty lines.
  returned: always
  type: int
before_since:
  description: Lines skipped because their C(msec) is before O(since).
  returned: always
  type: int
unmatched:
  description: Lines skipped by O(match) or O(host).
  returned: always
  type: int
first_msec:
  description: Earliest C(msec) counted in the window (epoch seconds); null when empty.
  returned: always
  type: float
last_msec:
  description: Latest C(msec) counted in the window (epoch seconds); null when empty.
  returned: always
  type: float
rotated:
  description: The saved position was in a file that has since been rotated.
  returned: always
  type: bool
rotation_gap:
  description:
    - Part of the window may be missing (the rotated file was gone, rotated again, or shorter
      than the saved offset).
  returned: always
  type: bool
truncated:
  description: O(max_lines) was reached; more lines follow RV(position).
  returned: always
  type: bool
files:
  description: The byte ranges read, per file.
  returned: always
  type: list
  elements: dict
seconds:
  description: Time spent reading, in seconds.
  returned: always
  type: float
health:
  description:
    - One entry per O(health_urls), in their order - C(url), C(ok) (a 2xx answer), C(ms), and
      C(status) (the answer) or C(error) (no answer). Empty without O(health_urls).
  returned: always
  type: list
  elements: dict
  sample: [{"url": "http://10.0.0.11:8002/health", "ok": true, "status": 200, "ms": 3.1}]
resources:
  description:
    - With O(resource_urls) - C(tasks), one per task of O(resource_service) found (C(node), C(task),
      C(container), C(cpu_percent), C(cpu_limit_cores), C(memory_bytes), C(memory_limit_bytes),
      C(memory_percent), and the sampler's C(timestamp) and C(interval)); C(errors), one per page that
      could not be read (C(url), C(error)); C(ms), the time the reads took.
    - C(cpu_percent) is missing until a task's second sample, C(memory_percent) without a memory limit.
  returned: when O(resource_urls) is given
  type: dict
"""

import threading
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.greenflow.platform.plugins.module_utils import _http_get as http_get
from ansible_collections.greenflow.platform.plugins.module_utils._container_stats import read_nodes
from ansible_collections.greenflow.platform.plugins.module_utils._health_probe import probe_urls
from ansible_collections.greenflow.platform.plugins.module_utils._traffic_stats import (
    read_window,
)


def _check_pools(module, pools):
    out = {}
    for colour, members in (pools or {}).items():
        if members is None:
            members = []
        if isinstance(members, str):
            members = [members]
        if not isinstance(members, list):
            module.fail_json(msg="pools.%s must be a list of host:port strings, got %r"
                             % (colour, members))
        out[str(colour)] = [str(m) for m in members]
    return out


def _check_position(module, position):
    if position is None:
        return None
    try:
        pos = {"inode": int(position["inode"]), "offset": int(position.get("offset", 0))}
    except (KeyError, TypeError, ValueError):
        module.fail_json(msg="position must be a dict with integer inode and offset, as returned "
                             "by an earlier run; got %r" % (position,))
    if pos["offset"] < 0:
        module.fail_json(msg="position.offset must be >= 0, got %d" % pos["offset"])
    return pos


def _fetcher(validate_certs):
    def fetch(url, timeout):
        return http_get.status(url, timeout, validate_certs)
    return fetch


def _in_background(work):
    """Run ``work()`` in a thread while the log is read; returns a function that waits for its result.
    Both works below return within their timeout + 1 s, hung fetches included."""
    box = {}

    def run():
        box["result"] = work()

    thread = threading.Thread(target=run)
    thread.daemon = True
    thread.start()

    def result():
        thread.join()
        return box.get("result")
    return result


def _start_probes(urls, timeout, validate_certs):
    """Probe ``urls`` (the new colour's health URLs) in the background."""
    if not urls:
        return lambda: []
    return _in_background(lambda: probe_urls(urls, timeout, _fetcher(validate_certs)))


def _read_text(url, timeout):
    return http_get.get(url, timeout).read().decode("utf-8", "replace")


def _start_resource_reads(urls, service, timeout):
    """Read the service's CPU and memory from the node exporters at ``urls`` in the background."""
    if not urls:
        return lambda: None
    return _in_background(lambda: read_nodes(urls, service, timeout, _read_text, now=time.time()))


def main():
    module = AnsibleModule(
        argument_spec=dict(
            log_path=dict(type="path", required=True),
            pools=dict(type="dict", default={}),
            since=dict(type="float"),
            position=dict(type="dict"),
            from_end=dict(type="bool", default=False),
            max_lines=dict(type="int"),
            host=dict(type="str"),
            match=dict(type="dict"),
            latency_thresholds_ms=dict(type="list", elements="float", default=[]),
            latency_histogram=dict(type="bool", default=False),
            rotated_suffix=dict(type="str", default=".1"),
            health_urls=dict(type="list", elements="str", default=[]),
            health_timeout=dict(type="float", default=2.0),
            health_validate_certs=dict(type="bool", default=True),
            resource_urls=dict(type="list", elements="str", default=[]),
            resource_service=dict(type="str"),
            resource_timeout=dict(type="float", default=2.0),
        ),
        mutually_exclusive=[("from_end", "position"), ("from_end", "since")],
        supports_check_mode=True,
    )
    p = module.params
    if p["max_lines"] is not None and p["max_lines"] < 1:
        module.fail_json(msg="max_lines must be >= 1, got %d" % p["max_lines"])
    if not p["rotated_suffix"]:
        module.fail_json(msg="rotated_suffix must not be empty")
    if not p["health_timeout"] > 0:
        module.fail_json(msg="health_timeout must be > 0, got %r" % p["health_timeout"])
    bad_urls = [u for u in p["health_urls"] if not u.startswith(("http://", "https://"))]
    if bad_urls:
        module.fail_json(msg="health_urls must be http:// or https:// URLs, got %r" % bad_urls)
    bad_urls = [u for u in p["resource_urls"] if not u.startswith(("http://", "https://"))]
    if bad_urls:
        module.fail_json(msg="resource_urls must be http:// or https:// URLs, got %r" % bad_urls)
    if p["resource_urls"] and not p["resource_service"]:
        module.fail_json(msg="resource_urls needs resource_service (whose tasks to keep)")
    if not p["resource_timeout"] > 0:
        module.fail_json(msg="resource_timeout must be > 0, got %r" % p["resource_timeout"])
    pools = _check_pools(module, p["pools"])
    position = _check_position(module, p["position"])
    health = _start_probes(p["health_urls"], p["health_timeout"], p["health_validate_certs"])
    resources = _start_resource_reads(p["resource_urls"], p["resource_service"], p["resource_timeout"])
    start = time.monotonic()
    try:
        result = read_window(
            p["log_path"], pools=pools, since=p["since"], position=position,
            max_lines=p["max_lines"], host=p["host"], match=p["match"],
            thresholds_ms=p["latency_thresholds_ms"], from_end=p["from_end"],
            rotated_suffix=p["rotated_suffix"], histogram=p["latency_histogram"],
        )
    except (OSError, IOError) as exc:
        module.fail_json(msg="cannot read %s: %s" % (p["log_path"], exc))
    result["seconds"] = round(time.monotonic() - start, 4)
    result["health"] = health()
    read = resources()
    if read is not None:
        result["resources"] = read
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
