# -*- coding: utf-8 -*-
# Copyright: greenflow.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: keepalived_plan
short_description: The VRRP settings of every load balancer for a floating address
version_added: 0.2.0
description:
  - Works out, for each host of the load balancer group, the interface that carries the floating address (the one whose
    IPv4 subnet holds it, unless given), the host's own VRRP address, its priority (by position in the group unless given),
    the virtual router id (derived from the address unless given) and the unicast peers (the other hosts' addresses).
  - Fails with a clear message on a plan that cannot work - an address that is not IPv4, no or several interfaces in the
    address's subnet, two hosts with one address, a check weight that would never move the address.
  - Used by the greenflow.platform.nginx_lb role (keepalived); docs/lb-pair.md.
options:
  _input:
    description: The floating address (nginx_lb_vip), C(10.0.0.100) or C(10.0.0.100/24).
    type: str
    required: true
  hosts:
    description:
      - The load balancers in the group's order, each a dict with C(name), C(addresses) (interface name to a list of
        C(address/prefix)), C(interface), C(address) and C(priority) (0 - by position).
    type: list
    elements: dict
    required: true
  settings:
    description: C(router_id), C(priority_top), C(priority_step), C(unicast), C(peers), C(nopreempt), C(check_weight).
    type: dict
    default: {}
"""

EXAMPLES = r"""
- name: The VRRP settings of this load balancer
  ansible.builtin.set_fact:
    my_vrrp: "{{ (nginx_lb_vip | greenflow.platform.keepalived_plan(hosts=my_hosts))[inventory_hostname] }}"
"""

RETURN = r"""
_value:
  description: Host name to its settings - interface, address, vip, prefix, router_id, priority, unicast_peers.
  type: dict
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.greenflow.platform.plugins.module_utils._keepalived import (
    KeepalivedPlanError,
    plan,
)


def keepalived_plan(vip, hosts, settings=None):
    try:
        return plan(vip, [(h.get('name'), h) for h in hosts], dict(settings or {}))
    except KeepalivedPlanError as exc:
        raise AnsibleFilterError('keepalived_plan: %s' % exc)


class FilterModule(object):
    def filters(self):
        return {'keepalived_plan': keepalived_plan}
