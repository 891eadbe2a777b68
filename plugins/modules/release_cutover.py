#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: greenflow platform engineers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# This file only documents the action plugin plugins/action/release_cutover.py (it runs on the
# controller), so that `ansible-doc greenflow.platform.release_cutover` renders.

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: release_cutover
short_description: Health-gated blue/green cutover on nginx in weighted steps
version_added: 0.1.0
description:
  - Moves the traffic of an app from O(from_color) to O(to_color) in steps (default 5, 25, 50,
    100 %). Each step sets the shares with M(greenflow.platform.nginx_upstream), dwells
    O(step_seconds) and watches the step's window of the load balancer's JSON access log with
    M(greenflow.platform.traffic_window) every O(poll_seconds); in the same module run, on the load
    balancer, it probes O(health_urls) of the new colour.
  - If the ansible-playbook process that runs the cutover is killed (its workers outlive a
    SIGKILL), the cutover stops at its next poll and moves no more traffic; the release record
    stays C(in_progress) until C(rollback.yml -e release_force=true).
  - B(Abort) - at any poll, when the new colour's error rate is >= O(abort_error_rate) or its
    p95 >= O(abort_p95_ms) (each resting on at least O(abort_min_failures) bad requests, so one
    unlucky request never aborts), when a health probe fails, or when the log cannot be read, all
    traffic goes back to O(from_color) at once (100 %), then the task fails with the step, the
    numbers and the thresholds that broke.
  - B(End of the dwell) - the step passes only with at least O(min_requests) requests, error rate
    <= O(max_error_rate) and p95 <= O(max_p95_ms). With fewer requests the step B(waits) (the
    window keeps growing, abort lines still apply) up to O(max_wait_seconds) more, then fails
    safe. Numbers between the pass line and the abort line are inconclusive and B(fail) (an
    unattended cutover does not move more traffic on doubt). Every failure sends all traffic back
    to O(from_color).
  - The judged numbers are the new colour's pool (by the last C(upstream_addr)); 5xx answered by
    nginx without reaching an upstream during the step are charged to the new colour too (see
    O(count_unattributed_5xx)). Latency is C(upstream_response_time) of the answering server.
  - B(Watch) - with O(watch_seconds), the cutover does not end at 100 % - it keeps judging the new
    colour (see O(watch_seconds)) while O(from_color) still runs, and a breach puts all traffic back
    on O(from_color).
  - Shows one line per step as it happens (step, share, requests, error rate, p95, verdict) and
    returns the whole RV(timeline). Before the first step it checks that the log is readable and
    that the health URLs answer, so a dead new colour gets no traffic at all.
  - Options are checked before anything is touched (steps strictly ascending, 1-100, ending at
    100; different colours; gates in order; poll at most 2 s).
  - This is an action plugin; it runs on the controller and its task targets the load balancer
    host, where the two modules run.
  - The nginx options (O(conf_path), O(nginx_bin), O(nginx_conf), O(nginx_prefix), O(nginx_pid),
    O(keepalive), O(max_fails), O(fail_timeout), O(validate), O(reload), O(lock_timeout),
    O(reload_timeout), O(control_socket)) are passed to M(greenflow.platform.nginx_upstream) when set; omitted, its
    defaults (shown here) apply.
author:
  - greenflow platform engineers (@greenflow)
options:
  app:
    description: The app, as in M(greenflow.platform.nginx_upstream).
    type: str
    required: true
  from_color:
    description: The colour that serves now and takes all traffic back on failure.
    type: str
    required: true
    choices: [blue, green]
  to_color:
    description: The new colour.
    type: str
    required: true
    choices: [blue, green]
  pools:
    description:
      - Servers of each colour (dict colour -> list of C(host:port)), passed to
        M(greenflow.platform.nginx_upstream) and used to attribute log lines to pools.
      - Omitted, the pools in the app's generated nginx file are used.
    type: dict
  count_unattributed_5xx:
    description:
      - Charge 5xx that nginx answered without reaching any upstream (C(upstream_addr) C(-)) to
        the new colour. Fail safe - an unexplained server error during a canary is blamed on what
        changed. Answers from addresses in no pool are never charged.
      - When several apps or vhosts share the log, set O(log_match) so that only this app's
        lines count.
    type: bool
    default: true
  log_match:
    description:
      - Only log lines whose fields equal these values count (passed to
        M(greenflow.platform.traffic_window) as its C(match) option), for example field C(app) equal to the app's name.
    type: dict
  health_urls:
    description:
      - Health endpoints of the new colour (its servers directly, not through nginx), probed
        with GET from the load balancer (the path nginx's traffic takes) before the first step and at every poll. Any answer other
        than 2xx, or none within O(health_timeout), aborts.
    type: list
    elements: str
    default: []
  log_path:
    description: The JSON access log on the load balancer (see M(greenflow.platform.traffic_window)).
    type: path
    required: true
  resource_urls:
    description:
      - Node exporter pages of the nodes that run O(to_color)'s tasks, read from the load balancer at every poll
        with the log (for example C(http://10.0.0.11:9100/metrics?collect[]=textfile)) - the
        C(greenflow_container_*) CPU and memory metrics that greenflow-container-stats (role
        C(greenflow.platform.monitoring)) writes there. Given (and O(abort_cpu_percent) or
        O(abort_memory_percent) not 0), the resource lines are judged in the steps and the watch.
      - Before any traffic moves every page must answer and show a task of O(resource_service); else the task
        fails and nothing moves. A page that stops answering later is warned about and judged as no reading.
      - Not given - the resource lines are not judged.
    type: list
    elements: str
    default: []
  resource_service:
    description: The swarm service whose tasks O(resource_urls) show (default C(<app>-<to_color>)).
    type: str
  resource_timeout:
    description: Seconds each O(resource_urls) read may take.
    type: float
    default: 2.0
  record_entry:
    description:
      - The in-progress entry of the release record (M(greenflow.platform.release_record), its C(entry.id)) this
        cutover belongs to. Given, the cutover holds a lease on it on the load balancer from its first switch
        on, renews it at its polls (a third of O(lease_ttl) apart at most, and right before every switch) and
        ends it when it is done. If the controller is lost (killed, Ctrl-C, network down), the lease runs out
        and the load balancer's release watchdog (role C(nginx_lb)) puts all traffic back on O(from_color)
        by itself and records the entry as failed ("controller lost"). A cutover that finds its lease lost
        stops without touching nginx. Not given - no lease, no watchdog.
    type: int
  record_path:
    description: The release record file, when not the module's default (C(/var/lib/greenflow/releases/<app>.json)).
    type: path
  lease_ttl:
    description:
      - Seconds the lease is good for after each renewal (5 to 300). Traffic is back on O(from_color) at most
        about this long (plus the watchdog's interval) after the controller was lost.
    type: float
    default: 10
  peers:
    description:
      - The other load balancers of the group (inventory host names), switched together with the task's host.
      - Before any traffic moves, each must carry the same split (all on O(from_color)) and have a readable access
        log at O(log_path); else nothing moves.
      - Every step is set on the task's host, then on each peer; a step counts only when every one carries it. If
        one cannot (nginx refuses its config, the host does not answer), every load balancer is put back on
        O(from_color) and the cutover fails, naming it.
      - The gates judge the windows of all their access logs added up (the share, the error rate and the
        percentiles of all the traffic). The health probes and the CPU and memory reads run from the task's host.
      - The task's host keeps the release record and the lock (one place of truth, whichever load balancer holds
        a floating address). With O(record_entry), each peer holds a copy of the lease in
        C(/var/lib/greenflow/releases/peers/<app>.json), renewed with the task's, and its own release watchdog puts
        its traffic back when the controller is lost.
      - Each peer is reached with its own connection settings from the inventory (C(ansible_connection),
        C(ansible_host), C(ansible_user), C(ansible_become), ...), as C(delegate_to) would; the other options
        (paths, nginx) are the same on every load balancer.
    type: list
    elements: str
    default: []
  validate_only:
    description:
      - Only check the options (steps, dwells, gates, watch) and return RV(plan); nothing is read
        on the load balancer and no traffic moves. C(deploy.yml) does this before it changes anything.
    type: bool
    default: false
notes:
  - Check mode prints and returns the plan (RV(plan)) and moves no traffic.
  - The task's duration is bounded - at most about the sum of the dwells, len(steps) x
    O(max_wait_seconds) and O(watch_seconds), plus the time of the module runs.
extends_documentation_fragment:
  - greenflow.platform.health_probe
  - greenflow.platform.gates
  - greenflow.platform.nginx
  - greenflow.platform.attributes
  - greenflow.platform.attributes.action
attributes:
  action:
    support: full
  async:
    support: none
  check_mode:
    support: full
  diff_mode:
    support: none
seealso:
  - module: greenflow.platform.nginx_upstream
  - module: greenflow.platform.traffic_window
"""

EXAMPLES = r"""
- name: Canary green - 5 % for 2 minutes, then 25, 50, 100 % - back to blue by itself if it hurts
  greenflow.platform.release_cutover:
    app: demo
    from_color: blue
    to_color: green
    steps: [5, 25, 50, 100]
    step_seconds: 120
    log_path: /var/log/nginx/greenflow-access.json
    health_urls:
      - http://10.0.0.11:8082/health
      - http://10.0.0.12:8082/health
  register: cutover

- name: Show the timeline
  ansible.builtin.debug:
    var: cutover.timeline

- name: The runbooks' pacing - longer dwells as the share grows, then 10 minutes of watch at 100 %
  greenflow.platform.release_cutover:
    app: demo
    from_color: blue
    to_color: green
    step_seconds: [300, 600, 900, 900]
    watch_seconds: 600
    watch_window_seconds: 60
    log_path: /var/log/nginx/greenflow-access.json

- name: Strict gates for a busy app, pools given explicitly
  greenflow.platform.release_cutover:
    app: shop
    from_color: green
    to_color: blue
    pools:
      blue: ["10.0.0.11:9081", "10.0.0.12:9081"]
      green: ["10.0.0.11:9082", "10.0.0.12:9082"]
    steps: [1, 10, 50, 100]
    step_seconds: 300
    min_requests: 500
    max_error_rate: 0.002
    max_p95_ms: 250
    abort_error_rate: 0.02
    abort_p95_ms: 800
    log_path: /var/log/nginx/greenflow-access.json
"""

RETURN = r"""
timeline:
  description:
    - What happened, in order - a C(preflight) entry, one C(step) entry per step tried, a C(watch)
      entry when O(watch_seconds) is set and every step passed, and a C(revert) entry when traffic was
      sent back (its C(after) is C(step) or C(watch)).
    - A step entry holds step, steps, share, shares, started / ended (ISO 8601 UTC) and their
      epochs, seconds, verdict (pass, fail, abort, error), reasons, breaches, the judged numbers
      (requests, errors_5xx, error_rate, p50_ms, p95_ms, p99_ms, unattributed_5xx), per-pool
      numbers (pools), the last health probes and every poll (t, verdict, requests, error_rate,
      p95_ms).
  returned: always
  type: list
  elements: dict
  sample:
    - {"event": "preflight", "time": "2025-05-01T10:00:00.000+00:00", "health": []}
    - {"event": "step", "step": 1, "steps": 4, "share": 5, "shares": {"green": 5, "blue": 95},
       "started": "2025-05-01T10:00:00.412+00:00", "ended": "2025-05-01T10:02:00.530+00:00",
       "seconds": 120.1, "verdict": "pass", "reasons": [], "requests": 312, "errors_5xx": 0,
       "error_rate": 0.0, "p95_ms": 41.0}
plan:
  description: In check mode, the steps that would run (step, share, shares, dwell_seconds, max_seconds).
  returned: check mode or O(validate_only)
  type: list
  elements: dict
shares:
  description: Shares in force at the end (to_color 100 after success, from_color 100 after a revert).
  returned: success or revert
  type: dict
  sample: {"green": 100, "blue": 0}
reverted:
  description: Whether traffic was sent back to O(from_color).
  returned: always (not in check mode)
  type: bool
failed_step:
  description: Number of the step that failed (the number of steps + 1 for the watch).
  returned: failure
  type: int
failed_phase:
  description: C(step) when a step failed, C(watch) when the watch after the last step put traffic back.
  returned: failure after traffic moved
  type: str
watch:
  description: The watch's verdict, seconds, and the numbers it was judged on.
  returned: when O(watch_seconds) is set and every step passed
  type: dict
  sample: {"verdict": "pass", "seconds": 120.4, "requests": 30112, "error_rate": 0.0, "p95_ms": 12.0,
           "reasons": []}
breaches:
  description: What broke the gate - metric, value, op, threshold (and counts).
  returned: failure
  type: list
  elements: dict
  sample: [{"metric": "error_rate", "value": 0.31, "op": ">=", "threshold": 0.05,
            "errors_5xx": 31, "requests": 100}]
thresholds:
  description: The gates in force.
  returned: failure
  type: dict
gates:
  description: The gates in force (after defaults).
  returned: always
  type: dict
seconds:
  description: Duration of a successful cutover.
  returned: success
  type: float
"""
