# -*- coding: utf-8 -*-
# Copyright: greenflow.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: firewall_ruleset
short_description: The nftables rule set of one host, from the platform's firewall policy
version_added: 0.2.0
description:
  - Derives the firewall policy (which source may reach which port on which host) from the inventory's groups
    and the hosts' addresses, and renders the rules of one host as a single nftables table of the inet family.
  - The table is deleted and re-created in one transaction; other tables (Docker's) are never flushed.
  - Used by the greenflow.platform.firewall role; the policy is documented in docs/firewall.md.
  - Fails with the names of the hosts whose address is unknown rather than render a policy with holes.
options:
  _input:
    description: The inventory host the rule set is for.
    type: str
    required: true
  groups:
    description: The inventory's groups (the C(groups) variable).
    type: dict
    required: true
  addresses:
    description: Host name to its address or list of addresses.
    type: dict
    required: true
  settings:
    description: Group names, ports and CIDRs of the policy (the role's firewall_* variables, see the role).
    type: dict
    default: {}
  table:
    description: Name of the nftables table.
    type: str
    default: greenflow
  allow_ping:
    description: Accept ICMP and ICMPv6 echo requests (rate limited).
    type: bool
    default: true
  log_drops:
    description: Log dropped packets (rate limited).
    type: bool
    default: false
  header:
    description: Comment lines put at the top of the rule set.
    type: str
    default: ''
"""

EXAMPLES = r"""
- name: Render the rule set of this host
  ansible.builtin.copy:
    content: "{{ inventory_hostname | greenflow.platform.firewall_ruleset(groups=groups, addresses=my_addresses) }}"
    dest: /tmp/ruleset.nft
    mode: "0600"
"""

RETURN = r"""
_value:
  description: The rule set, in nft's input syntax.
  type: str
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.greenflow.platform.plugins.module_utils._firewall_policy import (
    FirewallPolicyError,
    build_policy,
    render_nft,
    rules_for,
)


def firewall_ruleset(host, groups, addresses, settings=None, table='greenflow', allow_ping=True,
                     log_drops=False, header=''):
    try:
        rules, missing = build_policy(dict(groups), dict(addresses), dict(settings or {}))
        if missing:
            raise FirewallPolicyError(
                'no address known for %s: gather their facts in this run (the firewall role does for the hosts '
                'of the inventory it can reach), or set firewall_address in their host_vars' % ', '.join(missing))
        return render_nft(rules_for(rules, host), table=table, allow_ping=allow_ping, log_drops=log_drops,
                          header=header)
    except FirewallPolicyError as exc:
        raise AnsibleFilterError('firewall_ruleset: %s' % exc)


class FilterModule(object):
    def filters(self):
        return {'firewall_ruleset': firewall_ruleset}
