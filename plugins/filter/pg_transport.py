# -*- coding: utf-8 -*-
# Copyright: greenflow.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters for the PostgreSQL transport (roles/postgresql): the pg_hba guardrail and the names of a
server certificate. The logic lives in module_utils/_pg_transport.py; each filter's documentation is
in the YAML file of its name next to this one."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.errors import AnsibleFilterError

from ansible_collections.greenflow.platform.plugins.module_utils._pg_transport import (
    TransportError,
    role_hba_problems,
    sslmode_problem,
    subject_alt_names,
)


def pg_hba_problems(inputs):
    """Problems of the pg_hba lines the postgresql role would write, as a list of {kind, message}."""
    if not isinstance(inputs, dict):
        raise AnsibleFilterError('pg_hba_problems takes a dict (got %s)' % type(inputs).__name__)
    known = ('remote_type', 'remote_method', 'app_allowed_cidrs', 'extra_entries', 'replication_sslmode')
    unknown = sorted(set(inputs) - set(known))
    if unknown:
        raise AnsibleFilterError('pg_hba_problems: unknown keys %s (known: %s)' % (', '.join(unknown), ', '.join(known)))
    try:
        problems = role_hba_problems(inputs.get('remote_type'), inputs.get('remote_method'),
                                     inputs.get('app_allowed_cidrs'), inputs.get('extra_entries'))
    except TransportError as error:
        raise AnsibleFilterError(str(error))
    result = [{'kind': kind, 'message': message} for kind, message in problems]
    if 'replication_sslmode' in inputs:
        why = sslmode_problem(inputs['replication_sslmode'])
        if why:
            result.append({'kind': 'insecure', 'message': 'postgresql_replication_sslmode: ' + why})
    return result


def pg_tls_subject_alt_names(values):
    """subjectAltName entries (IP:..., DNS:...) for a list of addresses and names."""
    try:
        return subject_alt_names(values)
    except TransportError as error:
        raise AnsibleFilterError(str(error))


class FilterModule(object):
    """PostgreSQL transport filters."""

    def filters(self):
        return {
            'pg_hba_problems': pg_hba_problems,
            'pg_tls_subject_alt_names': pg_tls_subject_alt_names,
        }
