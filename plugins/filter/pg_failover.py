# -*- coding: utf-8 -*-
# Copyright: greenflow.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters for a fenced PostgreSQL failover (playbooks/failover.yml): LSN arithmetic, pg_controldata
and pg_waldump output, and the promotion decision. The logic lives in module_utils/_pg_failover.py;
the documentation of each filter is in the YAML file of its name next to this one."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.errors import AnsibleFilterError

from ansible_collections.greenflow.platform.plugins.module_utils._pg_failover import (
    DEFAULT_MAX_LAG_BYTES,
    DEFAULT_SEGMENT_SIZE,
    FailoverLogicError,
    failover_gate,
    lsn_diff,
    parse_controldata,
    waldump_end,
)


def _clear(function):
    def wrapped(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except FailoverLogicError as error:
            raise AnsibleFilterError(str(error))
    wrapped.__name__ = function.__name__
    wrapped.__doc__ = function.__doc__
    return wrapped


@_clear
def pg_lsn_diff(first, second):
    """Bytes of WAL from `second` to `first` (negative when `first` is behind)."""
    return lsn_diff(first, second)


@_clear
def pg_controldata(text):
    """pg_controldata's output as a dict (state, checkpoint_lsn, redo_lsn, timeline, segment_size)."""
    return parse_controldata(text)


@_clear
def pg_waldump_end(output, segment_size=DEFAULT_SEGMENT_SIZE):
    """The end of the valid WAL from `pg_waldump -q` output, or None."""
    return waldump_end(output, segment_size)


@_clear
def pg_failover_gate(facts):
    """The promotion decision from a dict of what failover.yml measured."""
    if not isinstance(facts, dict):
        raise AnsibleFilterError('pg_failover_gate takes a dict (got %s)' % type(facts).__name__)
    known = ('old_primary', 'new_primary', 'fenced', 'fence_error', 'old_primary_is_dead', 'old_primary_lsn',
             'replica_lsns', 'max_lag_bytes', 'stage')
    unknown = sorted(set(facts) - set(known))
    if unknown:
        raise AnsibleFilterError('pg_failover_gate: unknown keys %s (known: %s)' % (', '.join(unknown), ', '.join(known)))
    for required in ('old_primary', 'new_primary'):
        if not facts.get(required):
            raise AnsibleFilterError('pg_failover_gate: %s is required' % required)
    return failover_gate(
        old_primary=facts['old_primary'],
        new_primary=facts['new_primary'],
        fenced=facts.get('fenced'),
        fence_error=facts.get('fence_error') or None,
        old_primary_is_dead=bool(facts.get('old_primary_is_dead', False)),
        old_primary_lsn=facts.get('old_primary_lsn') or None,
        replica_lsns=facts.get('replica_lsns') or [],
        max_lag_bytes=facts.get('max_lag_bytes', DEFAULT_MAX_LAG_BYTES),
        stage=facts.get('stage') or 'promotion')


class FilterModule(object):
    """PostgreSQL failover filters."""

    def filters(self):
        return {
            'pg_lsn_diff': pg_lsn_diff,
            'pg_controldata': pg_controldata,
            'pg_waldump_end': pg_waldump_end,
            'pg_failover_gate': pg_failover_gate,
        }
