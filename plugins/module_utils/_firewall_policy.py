# -*- coding: utf-8 -*-
# Copyright: greenflow.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The host firewall's policy, without I/O: which sources may reach which port on which host, derived
from the inventory's groups and the hosts' addresses, and its rendering as one nftables table.

Used by the filter plugin greenflow.platform.firewall_ruleset (roles/firewall) and by the unit tests.
Python 3.6+ standard library only.

The policy is a list of rules. A rule:
    {'name': str, 'targets': [hosts it is applied on], 'protocol': 'tcp' | 'udp' | 'vrrp',
     'ports': [int], 'sources': None (anywhere) | [CIDR strings], 'published': bool}
A 'vrrp' rule (IP protocol 112, keepalived's floating address between the load balancers) has no ports.
`published` rules guard ports that Docker publishes (DNAT to a container): they are enforced in a
prerouting chain, before Docker's NAT, instead of the input chain (see docs/firewall.md).
"""

from __future__ import absolute_import, division, print_function

import ipaddress
import re

__metaclass__ = type

PROTOCOLS = ('tcp', 'udp')
# IP protocols without ports, by the name a rule gives them and their number (nft matches the number)
PORTLESS = {'vrrp': 112}
TABLE_RE = re.compile(r'^[A-Za-z][A-Za-z0-9_]{0,31}$')
# A comment is quoted into the rule set: keep it to characters nft reads back as they are.
COMMENT_RE = re.compile(r'[^A-Za-z0-9 _.,:/()+=-]')

DEFAULT_SETTINGS = {
    'lb_group': 'lb',
    'swarm_managers_group': 'swarm_managers',
    'swarm_workers_group': 'swarm_workers',
    'db_groups': ['pg_primary', 'pg_replica'],
    'backup_hosts': [],
    'monitoring_group': 'monitoring',
    'admin_cidrs': [],
    'ssh_port': 22,
    'lb_ports': [80, 443],
    'swarm_manager_port': 2377,
    'swarm_gossip_port': 7946,
    'swarm_vxlan_port': 4789,
    'published_ports': [],
    'published_extra_cidrs': [],
    'swarm_stats_ports': [],
    'postgresql_port': 5432,
    'exporter_ports': {},
    'backup_ports': [],
    'db_backup_ports': [],
    'extra_rules': [],
    # the load balancers run keepalived (nginx_lb_vip set): VRRP between them
    'lb_vrrp': False,
}


class FirewallPolicyError(ValueError):
    """Bad input to the policy (a clear message, never a traceback for the operator)."""


def _ports(value, what):
    if isinstance(value, (int, str)) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise FirewallPolicyError('%s: ports must be a list of numbers, got %r' % (what, value))
    out = []
    for port in value:
        try:
            number = int(port)
        except (TypeError, ValueError):
            raise FirewallPolicyError('%s: not a port: %r' % (what, port))
        if isinstance(port, bool) or not 0 < number < 65536:
            raise FirewallPolicyError('%s: port out of range 1-65535: %r' % (what, port))
        if number not in out:
            out.append(number)
    return sorted(out)


def normalize_cidr(value, what='address'):
    """'10.0.0.5' -> '10.0.0.5/32'; '10.0.1.0/24' stays; host bits set are refused (a typo, usually)."""
    try:
        return str(ipaddress.ip_network(str(value).strip(), strict=True))
    except ValueError as exc:
        raise FirewallPolicyError('%s: not an IP address or network: %r (%s)' % (what, value, exc))


def _unique(items):
    out = []
    for item in items:
        if item not in out:
            out.append(item)
    return out


def group_hosts(groups, name):
    """Hosts of an inventory group; an absent group (or an empty name) has none."""
    if not name:
        return []
    return list(groups.get(name) or [])


def _sources_of(hosts, addresses, missing):
    cidrs = []
    for host in hosts:
        found = addresses.get(host) or []
        if isinstance(found, str):
            found = [found]
        found = [a for a in found if a]
        if not found:
            if host not in missing:
                missing.append(host)
            continue
        cidrs.extend(normalize_cidr(a, 'address of %s' % host) for a in found)
    return cidrs


def build_policy(groups, addresses, settings=None):
    """The whole policy for an inventory.

    groups: {group name: [hosts]} (Ansible's `groups`); addresses: {host: address or [addresses]}.
    Returns (rules, missing): missing names the hosts that a rule needs as a source but that have no
    known address (the caller fails with that list rather than render a policy with holes).
    """
    conf = dict(DEFAULT_SETTINGS)
    conf.update(settings or {})
    missing = []

    lbs = group_hosts(groups, conf['lb_group'])
    managers = group_hosts(groups, conf['swarm_managers_group'])
    swarm = _unique(managers + group_hosts(groups, conf['swarm_workers_group']))
    dbs = _unique([h for g in conf['db_groups'] for h in group_hosts(groups, g)])
    backups = _unique([h for h in conf['backup_hosts'] if h])
    monitoring = group_hosts(groups, conf['monitoring_group'])
    every_host = _unique(list(groups.get('all') or []) + lbs + swarm + dbs + backups + monitoring)

    def src(hosts):
        return _sources_of(hosts, addresses, missing)

    admin = [normalize_cidr(c, 'firewall_admin_cidrs') for c in conf['admin_cidrs']]
    rules = []

    def add(name, targets, protocol, ports, sources, published=False):
        ports = [] if protocol in PORTLESS else _ports(ports, name)
        if not targets or not (ports or protocol in PORTLESS):
            return
        if sources is not None:
            sources = _unique(sources)
            if not sources:     # nobody may: no rule (the drop policy decides)
                return
        rules.append({'name': name, 'targets': list(targets), 'protocol': protocol, 'ports': ports,
                      'sources': sources, 'published': published})

    add('ssh from the admin networks', every_host, 'tcp', conf['ssh_port'], admin)
    add('http and https from anywhere', lbs, 'tcp', conf['lb_ports'], None)
    if str(conf['lb_vrrp']).strip().lower() in ('true', 'yes', 'on', '1') and len(lbs) > 1:
        # keepalived's adverts (unicast to each peer, or multicast 224.0.0.18) between the load balancers
        add('vrrp between the load balancers', lbs, 'vrrp', [], src(lbs))
    swarm_src = src(swarm)
    add('swarm management from swarm nodes', managers, 'tcp', conf['swarm_manager_port'], swarm_src)
    add('swarm gossip (tcp) between swarm nodes', swarm, 'tcp', conf['swarm_gossip_port'], swarm_src)
    add('swarm gossip (udp) between swarm nodes', swarm, 'udp', conf['swarm_gossip_port'], swarm_src)
    add('swarm overlay (vxlan) between swarm nodes', swarm, 'udp', conf['swarm_vxlan_port'], swarm_src)
    extra_published = [normalize_cidr(c, 'published_extra_cidrs') for c in conf['published_extra_cidrs']]
    add('published app ports from the load balancers', swarm, 'tcp', conf['published_ports'],
        src(lbs) + extra_published, published=True)
    # the cutover on a load balancer reads the new colour's CPU and memory from the swarm nodes' node exporter
    add('container stats of the swarm nodes from the load balancers', swarm, 'tcp', conf['swarm_stats_ports'],
        src(lbs))
    for db in dbs:
        others = [h for h in _unique(swarm + dbs + backups + monitoring) if h != db]
        add('postgresql from swarm, database, backup and monitoring hosts', [db], 'tcp',
            conf['postgresql_port'], src(others))
    exporters = conf['exporter_ports'] or {}
    if not isinstance(exporters, dict):
        raise FirewallPolicyError('exporter_ports must map a group to a list of ports, got %r' % (exporters,))
    for group in sorted(exporters):
        targets = every_host if group == 'all' else group_hosts(groups, group)
        add('exporters of %s from monitoring' % group, targets, 'tcp', exporters[group], src(monitoring))
    for backup in backups:
        add('backup repository from the database hosts', [backup], 'tcp', conf['backup_ports'],
            src([h for h in dbs if h != backup]))
    for db in dbs:  # pgBackRest's repository host reaches each database host's own TLS server
        add('backup agent from the backup hosts', [db], 'tcp', conf['db_backup_ports'],
            src([h for h in backups if h != db]))
    for index, extra in enumerate(conf['extra_rules'] or []):
        rules.extend(_extra_rule(index, extra, groups, every_host, src))
    return rules, missing


def _extra_rule(index, extra, groups, every_host, src):
    what = 'firewall_extra_rules[%d]' % index
    if not isinstance(extra, dict):
        raise FirewallPolicyError('%s: must be a mapping, got %r' % (what, extra))
    known = {'name', 'groups', 'hosts', 'protocol', 'ports', 'sources', 'source_groups', 'published'}
    unknown = sorted(set(extra) - known)
    if unknown:
        raise FirewallPolicyError('%s: unknown keys %s (known: %s)' % (what, ', '.join(unknown), ', '.join(sorted(known))))
    name = str(extra.get('name') or what)
    protocols = extra.get('protocol', 'tcp')
    protocols = [protocols] if isinstance(protocols, str) else list(protocols)
    bad = [p for p in protocols if p not in PROTOCOLS]
    if bad or not protocols:
        raise FirewallPolicyError('%s: protocol must be tcp, udp or a list of them, got %r' % (what, extra.get('protocol')))
    if 'ports' not in extra:
        raise FirewallPolicyError('%s: ports is required' % what)
    ports = _ports(extra['ports'], what)
    if extra.get('groups') is None and extra.get('hosts') is None:
        targets = every_host
    else:
        targets = _unique([h for g in extra.get('groups') or [] for h in group_hosts(groups, g)]
                          + list(extra.get('hosts') or []))
    if extra.get('sources') is None and extra.get('source_groups') is None:
        sources = None
    else:
        sources = [normalize_cidr(c, what + '.sources') for c in extra.get('sources') or []]
        sources += src([h for g in extra.get('source_groups') or [] for h in group_hosts(groups, g)])
    out = []
    if sources is not None and not sources:
        return out
    for protocol in protocols:
        if targets:
            out.append({'name': name, 'targets': targets, 'protocol': protocol, 'ports': ports,
                        'sources': _unique(sources) if sources is not None else None,
                        'published': bool(extra.get('published', False))})
    return out


def rules_for(rules, host):
    """The rules applied on one host."""
    return [r for r in rules if host in r['targets']]


def allows(rules, host, protocol, port, source_address):
    """True when the policy lets `source_address` reach `port`/`protocol` on `host` (`port` is
    ignored for a protocol without ports: vrrp)."""
    address = ipaddress.ip_address(str(source_address))
    for rule in rules_for(rules, host):
        if rule['protocol'] != protocol:
            continue
        if protocol not in PORTLESS and int(port) not in rule['ports']:
            continue
        if rule['sources'] is None:
            return True
        if any(address in ipaddress.ip_network(c) for c in rule['sources']):
            return True
    return False


def _split_families(cidrs):
    v4 = [c for c in cidrs if ipaddress.ip_network(c).version == 4]
    v6 = [c for c in cidrs if ipaddress.ip_network(c).version == 6]
    return v4, v6


def _set(items):
    items = [str(i) for i in items]
    return items[0] if len(items) == 1 else '{ ' + ', '.join(items) + ' }'


def _comment(text):
    return COMMENT_RE.sub('_', text)[:120]


def _rule_lines(rule, verdict):
    """nft statements of one rule (one per address family when it has sources)."""
    if rule['protocol'] in PORTLESS:
        match = 'meta l4proto %d' % PORTLESS[rule['protocol']]
    else:
        match = '%s dport %s' % (rule['protocol'], _set(rule['ports']))
    comment = ' comment "%s"' % _comment(rule['name'])
    if rule['sources'] is None:
        return ['%s %s%s' % (match, verdict, comment)]
    v4, v6 = _split_families(rule['sources'])
    lines = []
    if v4:
        lines.append('ip saddr %s %s %s%s' % (_set(v4), match, verdict, comment))
    if v6:
        lines.append('ip6 saddr %s %s %s%s' % (_set(v6), match, verdict, comment))
    return lines


def render_nft(host_rules, table='greenflow', allow_ping=True, log_drops=False, header=''):
    """One nftables table (inet family) for one host's rules.

    The file deletes and re-creates only this table, in one transaction: Docker's tables (ip nat,
    ip filter) and anyone else's are never flushed. An empty `table` line before the delete makes the
    delete work on a host where the table does not exist yet.
    """
    if not TABLE_RE.match(str(table)):
        raise FirewallPolicyError('table name must be letters, digits and _ (at most 32), got %r' % (table,))
    # published ports are accepted on the input path too, from the same sources: a node that has no
    # task of the colour answers the load balancer with a reset (nginx tries the next server at once)
    # instead of letting it wait for its connect timeout
    inbound = list(host_rules)
    published = [r for r in host_rules if r['published']]
    out = []
    if header:
        out.extend('# ' + line if line else '#' for line in header.splitlines())
    out += [
        'table inet %s' % table,
        'delete table inet %s' % table,
        '',
        'table inet %s {' % table,
        '    chain input {',
        '        type filter hook input priority filter; policy drop;',
        '        iif "lo" accept comment "loopback"',
        '        ct state established,related accept comment "replies and related"',
        '        ct state invalid drop',
        '        icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-advert, nd-router-solicit,'
        ' destination-unreachable, packet-too-big, time-exceeded, parameter-problem } accept comment "ipv6 needs these"',
        '        icmp type { destination-unreachable, time-exceeded, parameter-problem } accept',
    ]
    if allow_ping:
        out.append('        icmp type echo-request limit rate 10/second accept comment "ping"')
        out.append('        icmpv6 type echo-request limit rate 10/second accept comment "ping"')
    for rule in inbound:
        out.extend('        ' + line for line in _rule_lines(rule, 'accept'))
    if log_drops:
        out.append('        limit rate 5/second log prefix "greenflow-fw drop: " level info')
    out += ['    }', '']
    # Ports Docker publishes: judged before Docker's DNAT (priority dstnat = -100) on the address the
    # client used, for packets to this host. A drop in any base chain is final, whatever Docker's own
    # chains accept afterwards.
    ports = sorted({(r['protocol'], p) for r in published for p in r['ports']})
    out += [
        '    chain published {',
        '        type filter hook prerouting priority dstnat - 10; policy accept;',
    ]
    for protocol in PROTOCOLS:
        numbers = [p for proto, p in ports if proto == protocol]
        if numbers:
            out.append('        fib daddr type local %s dport %s jump published_guard'
                       % (protocol, _set(numbers)))
    out += ['    }', '', '    chain published_guard {']
    for rule in published:
        out.extend('        ' + line for line in _rule_lines(rule, 'return'))
    if log_drops:
        out.append('        limit rate 5/second log prefix "greenflow-fw published drop: " level info')
    out += ['        drop comment "published port from a source the policy does not name"', '    }', '}', '']
    return '\n'.join(out)
