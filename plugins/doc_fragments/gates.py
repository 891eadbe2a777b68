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
    description: Dwell of each step, in seconds.
    type: float
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
    default: 5"""
