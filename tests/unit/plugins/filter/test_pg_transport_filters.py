"""The transport filters as the postgresql role calls them."""
import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.greenflow.platform.plugins.filter.pg_transport import FilterModule

FILTERS = FilterModule().filters()


def test_the_filters_are_registered():
    assert sorted(FILTERS) == ['pg_hba_problems', 'pg_tls_subject_alt_names']


def test_hba_problems_as_the_role_calls_it():
    good = {'remote_type': 'hostssl', 'remote_method': 'scram-sha-256', 'app_allowed_cidrs': [],
            'extra_entries': [], 'replication_sslmode': 'verify-full'}
    assert FILTERS['pg_hba_problems'](good) == []
    bad = dict(good, app_allowed_cidrs=['::/0'], replication_sslmode='prefer')
    result = FILTERS['pg_hba_problems'](bad)
    assert [p['kind'] for p in result] == ['insecure', 'insecure']
    assert result[1]['message'].startswith('postgresql_replication_sslmode: ')


def test_hba_problems_clear_errors():
    with pytest.raises(AnsibleFilterError, match='takes a dict'):
        FILTERS['pg_hba_problems']([])
    with pytest.raises(AnsibleFilterError, match='unknown keys remote'):
        FILTERS['pg_hba_problems']({'remote': 'host'})
    with pytest.raises(AnsibleFilterError, match='must be a list'):
        FILTERS['pg_hba_problems']({'remote_type': 'hostssl', 'remote_method': 'md5', 'extra_entries': 'x'})


def test_subject_alt_names_filter():
    assert FILTERS['pg_tls_subject_alt_names'](['10.0.0.1', 'db-1']) == ['IP:10.0.0.1', 'DNS:db-1']
    with pytest.raises(AnsibleFilterError, match='neither'):
        FILTERS['pg_tls_subject_alt_names'](['a b'])
