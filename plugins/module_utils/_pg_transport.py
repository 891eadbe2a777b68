# -*- coding: utf-8 -*-
# Copyright: greenflow.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure logic for the PostgreSQL transport and its guardrails (roles/postgresql), without I/O.

- `hba_problems`: the pg_hba entries the role is about to write, judged. `trust` anywhere, an address
  that matches every host (a /0 prefix of IPv4 or IPv6, `0.0.0.0` with netmask `0.0.0.0`, the keyword
  `all`), and a remote line that accepts a connection without TLS (`host`, `hostnossl`) are reported,
  each with the line it comes from. The role refuses them unless `postgresql_allow_insecure` is true.
- `role_hba_problems`: the same for the role's own inputs (remote type and method, the app CIDRs, the
  extra entries), which is what the role's assert calls.
- `subject_alt_names`: the subjectAltName list of a server certificate from the addresses and names
  clients use (IP: for addresses, DNS: for names), in order, without duplicates.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ipaddress
import re

HBA_TYPES = ('local', 'host', 'hostssl', 'hostnossl', 'hostgssenc', 'hostnogssenc')
# Methods PostgreSQL 15 knows (pg_hba.conf documentation, "Authentication Methods").
HBA_METHODS = ('trust', 'reject', 'scram-sha-256', 'md5', 'password', 'gss', 'sspi', 'ident', 'peer', 'ldap',
               'radius', 'cert', 'pam', 'bsd')
# Connection types that accept a TCP connection without TLS.
PLAIN_TYPES = ('host', 'hostnossl')
ADDRESS_KEYWORDS = ('samehost', 'samenet')
SSLMODES_SECURE = ('verify-full', 'verify-ca', 'require')
_HOSTNAME = re.compile(r'^\.?[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*\.?$')


class TransportError(ValueError):
    """Input the logic cannot judge (not a list, not a mapping): a clear message for the operator."""


def _text(value):
    return '' if value is None else str(value).strip()


def open_address(address, netmask=''):
    """True when a pg_hba address matches every host: prefix length 0 (0.0.0.0/0, ::/0, 10.0.0.0/0),
    the keyword `all`, or an address with netmask 0.0.0.0 / ::."""
    address = _text(address)
    netmask = _text(netmask)
    if address.lower() == 'all':
        return True
    if netmask:
        try:
            return int(ipaddress.ip_address(netmask)) == 0
        except ValueError:
            return False
    if '/' not in address:
        return False
    try:
        return ipaddress.ip_network(address, strict=False).prefixlen == 0
    except ValueError:
        return False


def address_problem(address):
    """None when `address` is a pg_hba address (IP, CIDR, host name, samehost/samenet, all), else why not."""
    address = _text(address)
    if not address:
        return 'no address'
    if address.lower() in ADDRESS_KEYWORDS + ('all',):
        return None
    try:
        ipaddress.ip_network(address, strict=False)
        return None
    except ValueError:
        pass
    if '/' in address or ':' in address or not _HOSTNAME.match(address):
        return "'%s' is neither an IP address, a CIDR, a host name nor samehost/samenet/all" % address
    return None


def hba_problems(entries):
    """Problems of pg_hba entries: a list of (kind, message); kind is `insecure` or `invalid`.

    Each entry is a mapping with type, database, user, address (not for local), method, and optionally
    netmask and source (where the entry comes from, for the message)."""
    if not isinstance(entries, (list, tuple)):
        raise TransportError('pg_hba entries must be a list of mappings (got %s)' % type(entries).__name__)
    problems = []
    for index, entry in enumerate(entries, 1):
        if not isinstance(entry, dict):
            raise TransportError('pg_hba entry %d must be a mapping (got %s)' % (index, type(entry).__name__))
        source = _text(entry.get('source')) or 'entry %d' % index
        kind = _text(entry.get('type') or 'host').lower()
        method = _text(entry.get('method')).lower()
        address = _text(entry.get('address'))
        if kind not in HBA_TYPES:
            problems.append(('invalid', "%s: type '%s' is not one of %s" % (source, kind, ', '.join(HBA_TYPES))))
            continue
        if method not in HBA_METHODS:
            problems.append(('invalid', "%s: method '%s' is not one of %s" % (source, method, ', '.join(HBA_METHODS))))
            continue
        for field in ('database', 'user'):
            if not _text(entry.get(field)):
                problems.append(('invalid', '%s: no %s' % (source, field)))
        if kind != 'local':
            why = address_problem(address)
            if why:
                problems.append(('invalid', '%s: %s' % (source, why)))
        if method == 'trust':
            problems.append(('insecure', '%s: method trust lets anyone who reaches this line in without a password'
                             % source))
        if kind != 'local' and method != 'reject' and open_address(address, entry.get('netmask')):
            problems.append(('insecure', "%s: address '%s%s' matches every host (a /0 network, IPv4 or IPv6)"
                             % (source, address, (' ' + _text(entry.get('netmask'))) if entry.get('netmask') else '')))
        if kind in PLAIN_TYPES and method != 'reject':
            problems.append(('insecure', "%s: type %s accepts the connection without TLS (use hostssl)"
                             % (source, kind)))
    return problems


def role_hba_problems(remote_type, remote_method, app_allowed_cidrs=None, extra_entries=None):
    """hba_problems of what the postgresql role writes: its own remote lines (app hosts and replication,
    one address per host), postgresql_app_allowed_cidrs and postgresql_hba_extra_entries."""
    app_allowed_cidrs = app_allowed_cidrs or []
    extra_entries = extra_entries or []
    if not isinstance(app_allowed_cidrs, (list, tuple)):
        raise TransportError('postgresql_app_allowed_cidrs must be a list (got %s)' % type(app_allowed_cidrs).__name__)
    if not isinstance(extra_entries, (list, tuple)):
        raise TransportError('postgresql_hba_extra_entries must be a list (got %s)' % type(extra_entries).__name__)
    entries = [{'type': remote_type, 'method': remote_method, 'database': 'app', 'user': 'app',
                'address': '192.0.2.1/32',
                'source': 'the role\'s lines (postgresql_hba_remote_type / postgresql_hba_remote_method)'}]
    for cidr in app_allowed_cidrs:
        entries.append({'type': remote_type, 'method': remote_method, 'database': 'app', 'user': 'app',
                        'address': cidr, 'source': "postgresql_app_allowed_cidrs '%s'" % _text(cidr)})
    for index, entry in enumerate(extra_entries, 1):
        if not isinstance(entry, dict):
            raise TransportError('postgresql_hba_extra_entries item %d must be a mapping (got %s)'
                                 % (index, type(entry).__name__))
        item = dict(entry)
        item.setdefault('type', remote_type)
        item.setdefault('method', remote_method)
        item['source'] = 'postgresql_hba_extra_entries item %d' % index
        entries.append(item)
    return hba_problems(entries)


def sslmode_problem(sslmode):
    """None for an sslmode that encrypts (verify-full, verify-ca, require), else why it is insecure."""
    if _text(sslmode) in SSLMODES_SECURE:
        return None
    return "sslmode '%s' does not require TLS (use verify-full, verify-ca or require)" % _text(sslmode)


def subject_alt_names(values):
    """subjectAltName entries for the given addresses and names: 'IP:<addr>' for an IP address, 'DNS:<name>'
    for a host name; empty values are skipped, duplicates dropped, order kept."""
    if isinstance(values, str) or not isinstance(values, (list, tuple)):
        raise TransportError('subject_alt_names takes a list of addresses and names')
    result = []
    for value in values:
        value = _text(value)
        if not value:
            continue
        try:
            entry = 'IP:%s' % ipaddress.ip_address(value)
        except ValueError:
            if not _HOSTNAME.match(value) or value.startswith('.'):
                raise TransportError("'%s' is neither an IP address nor a host name" % value)
            entry = 'DNS:%s' % value.rstrip('.').lower()
        if entry not in result:
            result.append(entry)
    return result
