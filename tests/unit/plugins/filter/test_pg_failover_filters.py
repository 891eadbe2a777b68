"""The failover filters as a playbook calls them: names, arguments, clear errors."""
import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.greenflow.platform.plugins.filter.pg_failover import FilterModule

FILTERS = FilterModule().filters()


def test_the_filters_are_registered():
    assert sorted(FILTERS) == ['pg_controldata', 'pg_failover_gate', 'pg_lsn_diff', 'pg_waldump_end']


def test_lsn_diff_and_a_bad_lsn():
    assert FILTERS['pg_lsn_diff']('0/3000000', '0/2000000') == 16777216
    with pytest.raises(AnsibleFilterError, match='not an LSN'):
        FILTERS['pg_lsn_diff']('nonsense', '0/0')


def test_waldump_end_with_a_segment_size():
    out = 'pg_waldump: error: could not find file "000000010000000000000002": No such file or directory'
    assert FILTERS['pg_waldump_end'](out, 16777216) == '0/2000000'


def test_gate_takes_a_dict_and_names_unknown_keys():
    result = FILTERS['pg_failover_gate']({'old_primary': 'a', 'new_primary': 'b', 'fenced': True,
                                          'old_primary_lsn': '0/10', 'replica_lsns': ['0/10', None],
                                          'max_lag_bytes': '0'})
    assert result['allowed'] and result['lag_bytes'] == 0
    with pytest.raises(AnsibleFilterError, match='unknown keys max_lag'):
        FILTERS['pg_failover_gate']({'old_primary': 'a', 'new_primary': 'b', 'max_lag': 1})
    with pytest.raises(AnsibleFilterError, match='new_primary is required'):
        FILTERS['pg_failover_gate']({'old_primary': 'a'})
    with pytest.raises(AnsibleFilterError, match='takes a dict'):
        FILTERS['pg_failover_gate']('a')
    with pytest.raises(AnsibleFilterError, match='failover_max_lag_bytes'):
        FILTERS['pg_failover_gate']({'old_primary': 'a', 'new_primary': 'b', 'max_lag_bytes': -5})
