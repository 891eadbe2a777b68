# -*- coding: utf-8 -*-
# Copyright: greenflow platform engineers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The cutover's gates, documented once.

The defaults are the release model's (plugins/module_utils/_release_model.py GATE_SPEC), which the
action plugin's argument spec is built from; tests/unit/plugins/doc_fragments/test_doc_fragments.py
fails when the two differ. Change a default there and here together.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    """Documentation fragment greenflow.platform.gates."""

    DOCUMENTATION = r"""
options:
  steps:
    description: Percent of traffic on O(to_color) at each step; strictly ascending, 1-100, last 100.
    type: list
    elements: int
    default: [5, 25, 50, 100]
  step_seconds:
    description:
      - Dwell of each step, in seconds (more than 0, at most 3600) - one number for every step, or a list
        with one number per step (for example C([300, 600, 900, 900]) for the runbooks' pacing).
    type: raw
    default: 60
  poll_seconds:
    description: Seconds between polls of the log and the health URLs (more than 0, at most 2).
    type: float
    default: 2
  min_requests:
    description: Requests the new colour must have served in a step's window for it to be judged.
    type: int
    default: 50
  max_wait_seconds:
    description:
      - How much longer than O(step_seconds) a step may wait for O(min_requests) (0-3600); then
        the cutover fails safe and goes back.
    type: float
    default: 300
  max_error_rate:
    description: Pass line - highest error rate (fraction of 5xx, 0.01 = 1 %) that passes.
    type: float
    default: 0.01
  max_p95_ms:
    description: Pass line - highest p95 of upstream response time (ms) that passes.
    type: float
    default: 500
  abort_error_rate:
    description: Abort line - an error rate at or above it aborts at once.
    type: float
    default: 0.05
  abort_p95_ms:
    description: Abort line - a p95 (ms) at or above it aborts at once.
    type: float
    default: 1000
  abort_min_failures:
    description:
      - Minimum evidence for an abort line - at least this many 5xx (error rate) or responses at
        or over O(abort_p95_ms) (latency) in the step's window.
    type: int
    default: 5
  watch_seconds:
    description:
      - After the last step, keep the gates running this long (0 - no watch, at most 86400) while
        O(from_color) still runs. At every poll the last O(watch_window_seconds) of the log are judged on
        the abort lines (and the health probes); at the end the whole watch is judged on the pass lines
        (fewer than O(min_requests) requests pass). A breach puts all traffic back on O(from_color) and
        fails the task (RV(failed_phase) C(watch)) - an automatic rollback.
    type: float
    default: 0
  watch_window_seconds:
    description:
      - The rolling window the watch judges at each poll, in seconds (at least O(poll_seconds)). A release
        that breaks after 100 % is caught within about this window, its errors not diluted by a long
        good start.
    type: float
    default: 30
  abort_cpu_percent:
    description:
      - Abort line on CPU - a task of O(to_color) using at least this percent of its CPU limit (of one core
        when it has none) on O(abort_resource_samples) samples in a row aborts, in the steps and the watch.
        0 turns it off.
      - Judged only when the cutover reads the tasks' CPU and memory (option C(resource_urls) of
        greenflow.platform.release_cutover - deploy.yml passes the node exporters of the new colour's nodes).
    type: float
    default: 80
  abort_memory_percent:
    description:
      - Abort line on memory - a task of O(to_color) using at least this percent of its memory limit on
        O(abort_resource_samples) samples in a row aborts. Tasks without a memory limit are not judged on it.
        0 turns it off.
    type: float
    default: 85
  abort_resource_samples:
    description:
      - How many samples in a row (greenflow-container-stats samples every 2 s by default) a task must be at
        or over a resource line before it aborts - one busy moment is no evidence.
    type: int
    default: 3"""
