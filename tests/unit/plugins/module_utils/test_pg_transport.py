"""The PostgreSQL transport guardrails and certificate names (module_utils/_pg_transport.py)."""
import pytest

from ansible_collections.greenflow.platform.plugins.module_utils import _pg_transport as t


def entry(**kwargs):
    base = {'type': 'hostssl', 'database': 'app', 'user': 'app', 'address': '10.0.0.5/32',
            'method': 'scram-sha-256'}
    base.update(kwargs)
    return base


def kinds(problems):
    return [kind for kind, _ in problems]


def test_a_tls_line_with_a_password_is_fine():
    assert t.hba_problems([entry(), entry(address='fd00::5/128'), entry(address='db.internal'),
                           entry(type='local', address=None, method='peer', user='postgres', database='all'),
                           entry(address='samenet')]) == []


@pytest.mark.parametrize('address,netmask', [
    ('0.0.0.0/0', ''), ('::/0', ''), ('10.1.0.0/0', ''), ('all', ''), ('ALL', ''),
    ('0.0.0.0', '0.0.0.0'), ('::', '::'),
])
def test_an_address_that_matches_every_host_is_insecure(address, netmask):
    problems = t.hba_problems([entry(address=address, netmask=netmask, source='mine')])
    assert ('insecure', "mine: address '%s%s' matches every host (a /0 network, IPv4 or IPv6)"
            % (address, (' ' + netmask) if netmask else '')) in problems


@pytest.mark.parametrize('address', ['10.0.0.0/8', '0.0.0.0/1', '::/1', '192.0.2.1', 'fd00::1'])
def test_narrower_networks_are_not_open(address):
    assert not t.open_address(address)


def test_a_reject_line_for_everyone_is_allowed():
    assert t.hba_problems([entry(type='hostnossl', address='0.0.0.0/0', method='reject', database='all',
                                 user='all')]) == []


def test_trust_is_insecure_even_locally():
    problems = t.hba_problems([entry(type='local', address='', method='trust', source='local line')])
    assert problems == [('insecure', 'local line: method trust lets anyone who reaches this line in without a password')]


@pytest.mark.parametrize('kind', ['host', 'hostnossl'])
def test_a_remote_line_without_tls_is_insecure(kind):
    assert kinds(t.hba_problems([entry(type=kind)])) == ['insecure']
    assert 'use hostssl' in t.hba_problems([entry(type=kind)])[0][1]


def test_every_problem_of_one_line_is_named():
    problems = t.hba_problems([entry(type='host', address='0.0.0.0/0', method='trust')])
    assert kinds(problems) == ['insecure', 'insecure', 'insecure']


@pytest.mark.parametrize('bad,message', [
    ({'type': 'hots'}, "type 'hots' is not one of"),
    ({'method': 'scram-sha-257'}, "method 'scram-sha-257' is not one of"),
    ({'address': '10.0.0.300/32'}, "'10.0.0.300/32' is neither an IP address"),
    ({'address': ''}, 'no address'),
    ({'user': ''}, 'no user'),
    ({'database': None}, 'no database'),
])
def test_invalid_lines_are_named(bad, message):
    problems = t.hba_problems([entry(**bad)])
    assert kinds(problems) == ['invalid']
    assert message in problems[0][1]
    assert problems[0][1].startswith('entry 1: ')


def test_not_a_list_or_not_a_mapping_is_a_clear_error():
    with pytest.raises(t.TransportError, match='must be a list'):
        t.hba_problems('host all all 0.0.0.0/0 trust')
    with pytest.raises(t.TransportError, match='entry 2 must be a mapping'):
        t.hba_problems([entry(), 'x'])


def test_role_inputs_default_to_the_role_type_and_method():
    assert t.role_hba_problems('hostssl', 'scram-sha-256', ['10.0.2.0/24'],
                               [{'database': 'all', 'user': 'backup', 'address': '10.0.3.7/32'}]) == []
    problems = t.role_hba_problems('host', 'scram-sha-256', ['0.0.0.0/0'],
                                   [{'database': 'all', 'user': 'x', 'address': '::/0', 'method': 'trust'}])
    messages = [message for _, message in problems]
    assert any(m.startswith("the role's lines") and 'without TLS' in m for m in messages)
    assert any(m.startswith("postgresql_app_allowed_cidrs '0.0.0.0/0'") and 'every host' in m for m in messages)
    assert any(m.startswith('postgresql_hba_extra_entries item 1') and 'trust' in m for m in messages)
    assert any(m.startswith('postgresql_hba_extra_entries item 1') and "'::/0'" in m for m in messages)


def test_role_inputs_of_the_wrong_shape():
    with pytest.raises(t.TransportError, match='postgresql_app_allowed_cidrs must be a list'):
        t.role_hba_problems('hostssl', 'scram-sha-256', '0.0.0.0/0', [])
    with pytest.raises(t.TransportError, match='item 1 must be a mapping'):
        t.role_hba_problems('hostssl', 'scram-sha-256', [], ['host all all 0.0.0.0/0 trust'])


@pytest.mark.parametrize('mode,ok', [('verify-full', True), ('verify-ca', True), ('require', True),
                                     ('prefer', False), ('disable', False), ('', False)])
def test_sslmode(mode, ok):
    assert (t.sslmode_problem(mode) is None) == ok


def test_subject_alt_names():
    assert t.subject_alt_names(['172.18.0.5', 'pg-primary-1', '', None, 'PG-Primary-1', '172.18.0.5', 'fd00::0005',
                                'db.example.org.']) == [
        'IP:172.18.0.5', 'DNS:pg-primary-1', 'IP:fd00::5', 'DNS:db.example.org']


@pytest.mark.parametrize('bad', ['not a name', 'a/b', '.leading'])
def test_subject_alt_names_refuse_what_is_neither(bad):
    with pytest.raises(t.TransportError, match='neither an IP address nor a host name'):
        t.subject_alt_names([bad])
    with pytest.raises(t.TransportError, match='takes a list'):
        t.subject_alt_names('10.0.0.1')
