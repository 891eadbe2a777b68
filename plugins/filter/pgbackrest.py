# -*- coding: utf-8 -*-
# Copyright: greenflow.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters of roles/pgbackrest: the text of pgbackrest.conf for one host, and process-max for a host.
The logic is plugins/module_utils/_pgbackrest_config.py (unit tested there); documentation is in the
YAML files of the same names next to this file."""

from __future__ import absolute_import, division, print_function

from ansible.errors import AnsibleFilterError

from ansible_collections.greenflow.platform.plugins.module_utils._pgbackrest_backups import (
    PgBackRestReportError, restore_set)
from ansible_collections.greenflow.platform.plugins.module_utils._pgbackrest_config import (
    PgBackRestConfigError, host_spec, process_max_for, render_config)

__metaclass__ = type


def pgbackrest_config(settings, host, repo_host, db_hosts, tls_names, ansible_hosts=None, header=''):
    """Text of this host's pgbackrest.conf. A host's name for TLS: its entry in tls_names, else in
    ansible_hosts, else its inventory name (empty entries count as not set)."""
    names = {}
    for name in list(db_hosts) + [repo_host]:
        names[name] = (tls_names or {}).get(name) or (ansible_hosts or {}).get(name) or name
    try:
        return render_config(host_spec(host, repo_host, list(db_hosts), names, dict(settings)), header=header)
    except PgBackRestConfigError as err:
        raise AnsibleFilterError('%s: %s' % (host, err))


def pgbackrest_process_max(cpus):
    """Parallel processes for a host with this many CPUs."""
    try:
        return process_max_for(cpus)
    except PgBackRestConfigError as err:
        raise AnsibleFilterError(str(err))


def pgbackrest_restore_set(info, stanza, label='latest', target_time='', target_lsn='', allow_unverified=False):
    """The backup set a restore starts from (see _pgbackrest_backups.restore_set)."""
    try:
        return restore_set(info, stanza, label=label or 'latest', target_time=target_time or None,
                           target_lsn=target_lsn or None, allow_unverified=bool(allow_unverified))
    except PgBackRestReportError as err:
        raise AnsibleFilterError(str(err))


class FilterModule(object):
    def filters(self):
        return {'pgbackrest_config': pgbackrest_config, 'pgbackrest_process_max': pgbackrest_process_max,
                'pgbackrest_restore_set': pgbackrest_restore_set}
