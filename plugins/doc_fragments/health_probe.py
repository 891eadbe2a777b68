# -*- coding: utf-8 -*-
# Copyright: greenflow platform engineers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The health probe's timeout and certificate options, documented once (traffic_window probes,
release_cutover passes them on)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    """Documentation fragment greenflow.platform.health_probe."""

    DOCUMENTATION = r"""
options:
  health_timeout:
    description: Timeout of one health probe, in seconds.
    type: float
    default: 2
  health_validate_certs:
    description: Verify TLS certificates of https O(health_urls).
    type: bool
    default: true
"""
