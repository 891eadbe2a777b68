# -*- coding: utf-8 -*-
# Copyright: greenflow.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: monitoring_scrape_configs
short_description: Prometheus scrape jobs of the platform, from the inventory's groups
version_added: 0.2.0
description:
  - Derives the C(scrape_configs) list of prometheus.yml from the inventory.
  - Node exporter on every host, the PostgreSQL exporter on the database hosts (label C(pg_role) primary or replica),
    nginx and mtail on the load balancers, the Docker engine on the swarm nodes, blackbox probes through the local
    blackbox exporter.
  - Every target is labelled C(instance) with its inventory host name.
  - Fails with the names of the hosts whose address is unknown rather than leave them unwatched.
  - Used by the greenflow.platform.monitoring role.
options:
  _input:
    description: The inventory's groups (the C(groups) variable).
    type: dict
    required: true
  addresses:
    description:
      - Host name to its address (or a list, the first is used).
      - Without it, the addresses come from O(hostvars).
    type: dict
  hostvars:
    description:
      - The C(hostvars) variable. A host's address is the first set of monitoring_address, firewall_address,
        postgresql_address, nginx_lb_upstream_address, else its default IPv4 address from facts.
      - Used for the hosts O(addresses) does not name.
    type: dict
  settings:
    description: Group names, exporter ports, intervals and blackbox targets (see the role's monitoring_* variables).
    type: dict
    default: {}
"""

EXAMPLES = r"""
- name: The scrape jobs as YAML
  ansible.builtin.debug:
    msg: "{{ groups | greenflow.platform.monitoring_scrape_configs(hostvars=hostvars) | to_nice_yaml }}"
"""

RETURN = r"""
_value:
  description: The scrape_configs list (job_name, static_configs and the blackbox job's relabelling).
  type: list
  elements: dict
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.greenflow.platform.plugins.module_utils._monitoring_scrape import (
    MonitoringConfigError,
    addresses_from_hostvars,
    scrape_configs,
)


def monitoring_scrape_configs(groups, addresses=None, settings=None, hostvars=None):
    try:
        found = {}
        if hostvars is not None:
            found = addresses_from_hostvars(list(groups.get('all') or []), hostvars)
        found.update(dict(addresses or {}))
        return scrape_configs(dict(groups), found, dict(settings or {}))
    except MonitoringConfigError as exc:
        raise AnsibleFilterError('monitoring_scrape_configs: %s' % exc)


class FilterModule(object):
    def filters(self):
        return {'monitoring_scrape_configs': monitoring_scrape_configs}
