# -*- coding: utf-8 -*-
# Copyright: greenflow.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The floating address of the load balancers (keepalived, VRRP), without I/O: which interface carries
the virtual address on each load balancer, its own address and its peers' for unicast VRRP, its
priority, the virtual router id, and the checks that refuse a plan that would not fail over.

Used by the filter plugin greenflow.platform.keepalived_plan (roles/nginx_lb) and by the unit tests.
Python 3.6+ standard library only.

Input, per load balancer (in the order of the inventory group):
    {'addresses': {interface: ['10.0.0.5/24', ...]},   # its IPv4 addresses, from facts
     'interface': '' | name,                            # nginx_lb_keepalived_interface (empty: detect)
     'address': '' | '10.0.0.5',                        # nginx_lb_keepalived_address (empty: detect)
     'priority': 0 | 1-254}                             # nginx_lb_keepalived_priority (0: by position)
"""

from __future__ import absolute_import, division, print_function

import ipaddress

__metaclass__ = type

DEFAULT_SETTINGS = {
    'router_id': 0,        # 0: derived from the address
    'priority_top': 150,   # the first host of the group
    'priority_step': 10,   # each next host this much lower
    'unicast': True,
    'peers': [],           # explicit unicast peers of every host (empty: the group's other hosts)
    'nopreempt': True,
    'check_weight': 0,     # 0: a failed check puts the instance in FAULT; < 0: lowers its priority
}


class KeepalivedPlanError(ValueError):
    """Bad input to the plan (a clear message, never a traceback for the operator)."""


def _flag(value):
    """A setting's truth: a bool, or the string Ansible's templating may hand over for one."""
    if isinstance(value, str):
        return value.strip().lower() in ('true', 'yes', 'on', '1')
    return bool(value)


def parse_vip(value):
    """'10.0.0.100' or '10.0.0.100/24' -> (IPv4Address, prefix or None). IPv4 only (VRRP version 2)."""
    text = str(value or '').strip()
    if not text:
        raise KeepalivedPlanError('nginx_lb_vip is empty')
    address, dummy, prefix = text.partition('/')
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise KeepalivedPlanError('nginx_lb_vip must be an IPv4 address (optionally with /prefix), got %r' % (value,))
    if ip.version != 4:
        raise KeepalivedPlanError('nginx_lb_vip must be an IPv4 address (VRRP version 2 here), got %r' % (value,))
    if ip.is_loopback or ip.is_multicast or ip.is_unspecified or ip.is_link_local:
        raise KeepalivedPlanError('nginx_lb_vip %s is not an address clients can reach (loopback, multicast, '
                                  'link-local or 0.0.0.0)' % ip)
    if prefix:
        if not prefix.isdigit() or not 0 < int(prefix) <= 32:
            raise KeepalivedPlanError('nginx_lb_vip: the prefix must be 1-32, got %r' % (value,))
        return ip, int(prefix)
    return ip, None


def derive_router_id(vip):
    """The default virtual_router_id (1-255): the address modulo 255, plus 1. Two floating addresses
    of one network get different ids unless they are 255 apart; set nginx_lb_keepalived_router_id
    when another VRRP user shares the network."""
    return int(parse_vip(vip)[0]) % 255 + 1


def _interfaces(addresses, host):
    """{interface: [IPv4Interface]} of a host's facts; bad entries are refused by name."""
    out = {}
    for name, items in sorted((addresses or {}).items()):
        if isinstance(items, str):
            items = [items]
        parsed = []
        for item in items or []:
            try:
                parsed.append(ipaddress.ip_interface(str(item)))
            except ValueError:
                raise KeepalivedPlanError('%s: not an address/prefix on %s: %r' % (host, name, item))
        out[name] = [i for i in parsed if i.version == 4]
    return out


def find_interface(vip, addresses, host='this host'):
    """The interface whose IPv4 subnet holds the virtual address, and that subnet's prefix length.
    Raises when none or more than one does."""
    ip = parse_vip(vip)[0]
    found = []
    for name, items in _interfaces(addresses, host).items():
        for item in items:
            if item.ip != ip and ip in item.network and item.network.prefixlen < 32:
                found.append((name, item.network.prefixlen))
                break
    if not found:
        raise KeepalivedPlanError(
            '%s: no interface has an IPv4 subnet that holds nginx_lb_vip %s; set nginx_lb_keepalived_interface '
            '(and nginx_lb_keepalived_address) for it' % (host, ip))
    if len(found) > 1:
        raise KeepalivedPlanError(
            '%s: several interfaces have a subnet that holds nginx_lb_vip %s (%s): set nginx_lb_keepalived_interface'
            % (host, ip, ', '.join(entry[0] for entry in found)))
    return found[0]


def _own_address(vip, host, interface, items):
    """The host's address on the VRRP interface: the one in the virtual address's subnet first."""
    candidates = [i for i in items if i.ip != vip]
    for item in candidates:
        if vip in item.network:
            return str(item.ip)
    if candidates:
        return str(candidates[0].ip)
    raise KeepalivedPlanError('%s: interface %s has no IPv4 address of its own; set nginx_lb_keepalived_address'
                              % (host, interface))


def _int(value, what, low, high):
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise KeepalivedPlanError('%s must be a number %d-%d, got %r' % (what, low, high, value))
    if isinstance(value, bool) or not low <= number <= high:
        raise KeepalivedPlanError('%s must be %d-%d, got %r' % (what, low, high, value))
    return number


def plan(vip, hosts, settings=None):
    """The keepalived settings of every load balancer.

    vip: nginx_lb_vip; hosts: [(host name, host input)] in the group's order (see the module doc);
    settings: see DEFAULT_SETTINGS. Returns {host: {'interface', 'address', 'vip', 'prefix',
    'router_id', 'priority', 'unicast_peers'}}.
    """
    conf = dict(DEFAULT_SETTINGS)
    conf.update(settings or {})
    ip, given_prefix = parse_vip(vip)
    if not hosts:
        raise KeepalivedPlanError('the load balancer group has no hosts')
    router_id = _int(conf['router_id'], 'nginx_lb_keepalived_router_id', 0, 255) or derive_router_id(vip)
    top = _int(conf['priority_top'], 'nginx_lb_keepalived_priority_top', 1, 254)
    step = _int(conf['priority_step'], 'nginx_lb_keepalived_priority_step', 0, 253)
    weight = _int(conf['check_weight'], 'nginx_lb_keepalived_check_weight', -253, 0)
    if weight < 0 and _flag(conf['nopreempt']):
        raise KeepalivedPlanError(
            'nginx_lb_keepalived_check_weight %d with nginx_lb_keepalived_nopreempt: a backup never takes the address '
            'from a master whose priority only dropped; keep the weight 0 (a failed check is a FAULT, the address '
            'moves) or turn nopreempt off' % weight)

    out = {}
    for index, (host, given) in enumerate(hosts):
        given = given or {}
        interfaces = _interfaces(given.get('addresses'), host)
        interface = str(given.get('interface') or '')
        prefix = given_prefix
        if interface:
            if interfaces and interface not in interfaces:
                raise KeepalivedPlanError('%s: nginx_lb_keepalived_interface %s is not an interface of the host (it has %s)'
                                          % (host, interface, ', '.join(sorted(interfaces)) or 'none'))
            if prefix is None:
                inside = [i.network.prefixlen for i in interfaces.get(interface, []) if ip in i.network and i.ip != ip]
                prefix = inside[0] if inside else 32
        else:
            interface, subnet_prefix = find_interface(vip, given.get('addresses'), host)
            prefix = subnet_prefix if prefix is None else prefix
        address = str(given.get('address') or '')
        if address:
            try:
                ipaddress.IPv4Address(address)
            except ValueError:
                raise KeepalivedPlanError('%s: nginx_lb_keepalived_address must be an IPv4 address, got %r' % (host, address))
        else:
            address = _own_address(ip, host, interface, interfaces.get(interface, []))
        if address == str(ip):
            raise KeepalivedPlanError('%s: nginx_lb_vip %s is the address of the host itself; the floating address '
                                      'must be a free one' % (host, ip))
        priority = given.get('priority') or 0
        if priority:
            priority = _int(priority, '%s: nginx_lb_keepalived_priority' % host, 1, 254)
        else:
            priority = top - index * step
            if priority < 1:
                raise KeepalivedPlanError(
                    '%s: priority by position is %d (top %d, step %d, position %d): lower '
                    'nginx_lb_keepalived_priority_step or set nginx_lb_keepalived_priority per host'
                    % (host, priority, top, step, index + 1))
        out[host] = {'interface': interface, 'address': address, 'vip': str(ip), 'prefix': prefix,
                     'router_id': router_id, 'priority': priority}

    addresses = [entry['address'] for entry in out.values()]
    twice = sorted(set(a for a in addresses if addresses.count(a) > 1))
    if twice:
        raise KeepalivedPlanError('two load balancers have the same VRRP address %s: set nginx_lb_keepalived_address'
                                  % ', '.join(twice))
    if weight < 0 and len(out) > 1:
        spread = max(e['priority'] for e in out.values()) - min(e['priority'] for e in out.values())
        if -weight <= spread:
            priorities = ', '.join(str(e['priority']) for e in out.values())
            raise KeepalivedPlanError(
                'nginx_lb_keepalived_check_weight %d does not take a failed master below the others (priorities %s): '
                'the weight must be more negative than -%d' % (weight, priorities, spread))
    explicit = [str(p) for p in conf['peers'] or []]
    for peer in explicit:
        try:
            ipaddress.IPv4Address(peer)
        except ValueError:
            raise KeepalivedPlanError('nginx_lb_keepalived_unicast_peers: not an IPv4 address: %r' % (peer,))
    for host, entry in out.items():
        if not _flag(conf['unicast']):
            entry['unicast_peers'] = []
        elif explicit:
            entry['unicast_peers'] = [p for p in explicit if p != entry['address']]
        else:
            entry['unicast_peers'] = [e['address'] for h, e in out.items() if h != host]
    return out
