# -*- coding: utf-8 -*-
# Copyright: greenflow.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Prometheus' scrape configuration, derived from the inventory without I/O.

Used by the filter plugin greenflow.platform.monitoring_scrape_configs (roles/monitoring) and by the
unit tests. Python 3.6+ standard library only.

Every host gets a node exporter job; database hosts a postgres job (label pg_role primary/replica from
their group); load balancers nginx (stub_status) and mtail (per-colour traffic from the JSON access log);
swarm nodes the Docker engine's own metrics. Each target carries `instance: <inventory host name>` so
alerts name the host as the inventory does, never an address. The blackbox probes go through the local
blackbox exporter (relabelled the usual way: the probed URL becomes the `instance`).
"""

from __future__ import absolute_import, division, print_function

import ipaddress
import re

__metaclass__ = type

DEFAULT_SETTINGS = {
    'lb_group': 'lb',
    'swarm_groups': ['swarm_managers', 'swarm_workers'],
    'primary_group': 'pg_primary',
    'replica_group': 'pg_replica',
    'monitoring_group': 'monitoring',
    'node_port': 9100,
    'postgres_port': 9187,
    'nginx_port': 9113,
    'mtail_port': 3903,
    'docker_port': 9323,
    'scrape_interval': '15s',
    'scrape_timeout': '10s',
    'blackbox_address': '127.0.0.1:9115',
    'blackbox_module': 'https_2xx',
    'blackbox_targets': [],
    'prometheus_address': '127.0.0.1:9090',
    'alertmanager_address': '127.0.0.1:9093',
}

DURATION_RE = re.compile(r'^([0-9]+(ms|s|m|h|d|w|y))+$')
HOST_LABEL_RE = re.compile(r'^[A-Za-z0-9_.:-]+$')


class MonitoringConfigError(ValueError):
    """Bad input (a clear message for the operator, never a traceback)."""


def _port(value, what):
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise MonitoringConfigError('%s: not a port: %r' % (what, value))
    if isinstance(value, bool) or not 0 < number < 65536:
        raise MonitoringConfigError('%s: port out of range 1-65535: %r' % (what, value))
    return number


def _duration(value, what):
    if not isinstance(value, str) or not DURATION_RE.match(value):
        raise MonitoringConfigError('%s: not a Prometheus duration (e.g. 15s, 1m, 1h30m): %r' % (what, value))
    return value


def _hosts(groups, name):
    if not name:
        return []
    return list(groups.get(name) or [])


def host_port(address, port):
    """'10.0.0.5', 9100 -> '10.0.0.5:9100'; IPv6 addresses in brackets; a name stays a name."""
    address = str(address).strip()
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        if not address or not HOST_LABEL_RE.match(address) or ':' in address:
            raise MonitoringConfigError('not an address or host name: %r' % (address,))
        return '%s:%d' % (address, port)
    if parsed.version == 6:
        return '[%s]:%d' % (parsed, port)
    return '%s:%d' % (parsed, port)


def _targets(hosts, addresses, port, missing, extra_labels=None):
    """One static_config per host, so each carries its own instance label."""
    out = []
    for host in hosts:
        address = addresses.get(host)
        if isinstance(address, (list, tuple)):
            address = address[0] if address else None
        if not address:
            if host not in missing:
                missing.append(host)
            continue
        labels = {'instance': host}
        labels.update((extra_labels or {}).get(host, {}))
        out.append({'targets': [host_port(address, port)], 'labels': labels})
    return out


ADDRESS_VARIABLES = ('monitoring_address', 'firewall_address', 'postgresql_address', 'nginx_lb_upstream_address')


def addresses_from_hostvars(hosts, hostvars):
    """{host: address}: per host the first set of ADDRESS_VARIABLES, else its default IPv4 address from
    facts; hosts with none are left out (scrape_configs names them)."""
    out = {}
    for host in hosts:
        try:
            hv = hostvars[host]
        except KeyError:
            continue
        found = None
        for name in ADDRESS_VARIABLES:
            value = hv.get(name) if hasattr(hv, 'get') else None
            if value:
                found = value
                break
        if not found:
            facts = (hv.get('ansible_facts') if hasattr(hv, 'get') else None) or {}
            found = (facts.get('default_ipv4') or {}).get('address')
        if found:
            out[host] = found
    return out


def scrape_configs(groups, addresses, settings=None):
    """The scrape_configs list of prometheus.yml for an inventory.

    groups: {group: [hosts]} (Ansible's `groups`); addresses: {host: address}. Returns the list; raises
    MonitoringConfigError naming every host without an address, or the bad setting.
    """
    conf = dict(DEFAULT_SETTINGS)
    conf.update(settings or {})
    for key in ('node_port', 'postgres_port', 'nginx_port', 'mtail_port', 'docker_port'):
        if key == 'docker_port' and conf[key] in (None, ''):
            continue    # the Docker engine's metrics are not scraped
        conf[key] = _port(conf[key], key)
    interval = _duration(conf['scrape_interval'], 'scrape_interval')
    timeout = _duration(conf['scrape_timeout'], 'scrape_timeout')
    if not isinstance(conf['swarm_groups'], (list, tuple)):
        raise MonitoringConfigError('swarm_groups must be a list of group names, got %r' % (conf['swarm_groups'],))
    probes = conf['blackbox_targets']
    if isinstance(probes, str) or not isinstance(probes, (list, tuple)):
        raise MonitoringConfigError('blackbox_targets must be a list of URLs, got %r' % (probes,))
    for url in probes:
        if not isinstance(url, str) or not re.match(r'^https?://[^\s/]+', url):
            raise MonitoringConfigError('blackbox_targets: not an http(s) URL: %r' % (url,))

    # sorted: the same inventory gives the same file, whatever order the groups come in (idempotence)
    lbs = sorted(_hosts(groups, conf['lb_group']))
    swarm = sorted(set(h for g in conf['swarm_groups'] for h in _hosts(groups, g)))
    primaries = sorted(_hosts(groups, conf['primary_group']))
    replicas = sorted(h for h in _hosts(groups, conf['replica_group']) if h not in primaries)
    dbs = sorted(set(primaries + replicas))
    monitoring = _hosts(groups, conf['monitoring_group'])
    every = sorted(set(list(groups.get('all') or []) + lbs + swarm + dbs + monitoring))
    missing = []

    def job(name, static_configs, **extra):
        if not static_configs:
            return None
        out = {'job_name': name, 'scrape_interval': interval, 'scrape_timeout': timeout,
               'static_configs': static_configs}
        out.update(extra)
        return out

    pg_roles = dict((h, {'pg_role': 'primary'}) for h in primaries)
    pg_roles.update((h, {'pg_role': 'replica'}) for h in replicas)
    jobs = [
        job('prometheus', [{'targets': [conf['prometheus_address']], 'labels': {'instance': 'prometheus'}}]),
        job('alertmanager', [{'targets': [conf['alertmanager_address']], 'labels': {'instance': 'alertmanager'}}]),
        job('node', _targets(every, addresses, conf['node_port'], missing)),
        job('postgres', _targets(dbs, addresses, conf['postgres_port'], missing, pg_roles)),
        job('nginx', _targets(lbs, addresses, conf['nginx_port'], missing)),
        job('mtail', _targets(lbs, addresses, conf['mtail_port'], missing)),
        job('docker', _targets(swarm, addresses, conf['docker_port'], missing)
            if conf['docker_port'] not in (None, '') else []),
    ]
    if probes:
        jobs.append(job(
            'blackbox', [{'targets': list(probes)}],
            metrics_path='/probe', params={'module': [conf['blackbox_module']]},
            relabel_configs=[
                {'source_labels': ['__address__'], 'target_label': '__param_target'},
                {'source_labels': ['__param_target'], 'target_label': 'instance'},
                {'target_label': '__address__', 'replacement': conf['blackbox_address']},
            ]))
    if missing:
        raise MonitoringConfigError(
            'no address known for %s: set monitoring_address (or firewall_address) for them, or gather '
            'their network facts' % ', '.join(sorted(missing)))
    return [j for j in jobs if j]
