"""Unit tests of the fenced failover logic: LSN arithmetic, pg_controldata / pg_waldump output, the gate."""
import pytest

from ansible_collections.greenflow.platform.plugins.module_utils import _pg_failover as pgf

CONTROLDATA = """pg_control version number:            1300
Catalog version number:               202209061
Database system identifier:           7312345678901234567
Database cluster state:               in production
pg_control last modified:             Wed 02 Dec 2026 01:02:03 AM UTC
Latest checkpoint location:           0/5000098
Latest checkpoint's REDO location:    0/5000060
Latest checkpoint's REDO WAL file:    000000020000000000000005
Latest checkpoint's TimeLineID:       2
Latest checkpoint's PrevTimeLineID:   2
Bytes per WAL segment:                16777216
"""


# --- LSNs --------------------------------------------------------------------------------------------

def test_lsn_round_trip():
    assert pgf.parse_lsn('0/3000028') == 0x3000028
    assert pgf.parse_lsn(' 16/b374d848 ') == (0x16 << 32) | 0xB374D848
    assert pgf.format_lsn(pgf.parse_lsn('16/B374D848')) == '16/B374D848'
    assert pgf.format_lsn(0) == '0/0'


@pytest.mark.parametrize('bad', ['', '3000028', '0/', 'x/1', '1/2/3', '123456789/0', None])
def test_a_bad_lsn_is_refused_clearly(bad):
    with pytest.raises(pgf.FailoverLogicError, match='not an LSN'):
        pgf.parse_lsn(bad)


def test_lsn_diff_across_the_32_bit_boundary_and_negative():
    assert pgf.lsn_diff('1/0', '0/FFFFFFFF') == 1
    assert pgf.lsn_diff('0/3000000', '0/2000000') == 16 * 1024 * 1024
    assert pgf.lsn_diff('0/2000000', '0/3000000') == -16 * 1024 * 1024
    assert pgf.lsn_diff('A/10', 'A/10') == 0


def test_newest_lsn_compares_numerically_not_as_text():
    assert pgf.newest_lsn(['0/9000000', '0/10000000']) == '0/10000000'
    assert pgf.newest_lsn(['1/0', '0/FFFFFFFF', None, '']) == '1/0'
    assert pgf.newest_lsn([None, '']) is None


# --- pg_controldata and pg_waldump -------------------------------------------------------------------

def test_controldata_fields():
    parsed = pgf.parse_controldata(CONTROLDATA)
    assert parsed == {'state': 'in production', 'checkpoint_lsn': '0/5000098', 'redo_lsn': '0/5000060',
                      'timeline': 2, 'segment_size': 16777216}


def test_controldata_missing_fields_are_none_and_the_segment_size_defaults():
    parsed = pgf.parse_controldata('Database cluster state:   shut down\n')
    assert parsed['state'] == 'shut down'
    assert parsed['redo_lsn'] is None and parsed['timeline'] is None
    assert parsed['segment_size'] == pgf.DEFAULT_SEGMENT_SIZE
    assert pgf.parse_controldata('')['state'] is None


def test_waldump_end_is_where_it_stopped_reading():
    output = ('pg_waldump: error: error in WAL record at 0/5000148: invalid record length at 0/5000180: '
              'expected at least 24, got 0\n')
    assert pgf.waldump_end(output) == '0/5000180'


def test_waldump_end_at_a_segment_boundary_is_the_start_of_the_missing_segment():
    output = 'pg_waldump: error: could not find file "000000020000000100000003": No such file or directory\n'
    assert pgf.waldump_end(output) == '1/3000000'
    # 64 MB segments: segment 3 of log 0 starts at 3 * 64 MB
    output = 'pg_waldump: error: could not find file "pg_wal/000000010000000000000003": No such file'
    assert pgf.waldump_end(output, 64 * 1024 * 1024) == '0/C000000'


def test_waldump_end_unknown_when_the_output_says_nothing_useful():
    assert pgf.waldump_end('') is None
    assert pgf.waldump_end(None) is None
    assert pgf.waldump_end('pg_waldump: error: could not open directory "pg_wal": Permission denied') is None


def test_segment_start_refuses_a_bad_name():
    with pytest.raises(pgf.FailoverLogicError, match='not a WAL segment name'):
        pgf.segment_start('00000001.history')


# --- the gate ----------------------------------------------------------------------------------------

def gate(**kwargs):
    args = dict(old_primary='pg-1', new_primary='pg-2', fenced=True, old_primary_lsn='0/5000180',
                replica_lsns=['0/5000180', '0/5000180'])
    args.update(kwargs)
    return pgf.failover_gate(**args)


def test_fenced_and_caught_up_is_allowed():
    result = gate()
    assert result['allowed'] and result['refusals'] == [] and result['lag_bytes'] == 0
    assert result['max_lag_bytes'] == pgf.DEFAULT_MAX_LAG_BYTES == 1048576


def test_not_fenced_is_refused_with_the_way_out():
    result = gate(fenced=False, fence_error='unreachable: container not found')
    assert not result['allowed']
    assert len(result['refusals']) == 1
    message = result['refusals'][0]
    assert 'pg-1' in message and 'could not be fenced: unreachable: container not found' in message
    assert 'NOT promoted' in message and 'failover_old_primary_is_dead=true' in message


def test_not_fenced_but_declared_dead_is_allowed_with_a_note():
    result = gate(fenced=False, old_primary_is_dead=True, old_primary_lsn=None)
    assert result['allowed'] and result['lag_bytes'] is None
    assert any('not fenced' in note for note in result['notes'])
    assert any('lag is unknown' in note for note in result['notes'])


def test_lag_above_the_limit_is_refused_with_the_numbers():
    result = gate(old_primary_lsn='0/5100000', replica_lsns=['0/5000000', '0/4F00000'], max_lag_bytes=1000)
    assert not result['allowed'] and result['lag_bytes'] == 0x100000
    message = result['refusals'][0]
    for part in ('1048576 bytes', '0/5100000', '0/5000000', 'failover_max_lag_bytes=1000',
                 'failover_max_lag_bytes=1048576 or more'):
        assert part in message, (part, message)


def test_lag_at_the_limit_is_allowed_and_a_replica_ahead_means_zero_lag():
    assert gate(old_primary_lsn='0/5000400', replica_lsns=['0/5000000'], max_lag_bytes=1024)['allowed']
    assert gate(old_primary_lsn='0/5000401', replica_lsns=['0/5000000'], max_lag_bytes=1024)['allowed'] is False
    # replay from the archive can be ahead of what was streamed: the furthest LSN counts
    result = gate(old_primary_lsn='0/5000000', replica_lsns=['0/4000000', '0/6000000'], max_lag_bytes=0)
    assert result['allowed'] and result['lag_bytes'] == 0


def test_dead_does_not_lift_a_known_lag_limit():
    result = gate(old_primary_is_dead=True, old_primary_lsn='0/9000000', replica_lsns=['0/5000000'])
    assert not result['allowed'] and 'failover_max_lag_bytes' in result['refusals'][0]


def test_unknown_lag_needs_the_dead_declaration():
    result = gate(old_primary_lsn=None)
    assert not result['allowed'] and 'lag of pg-2 is unknown' in result['refusals'][0]
    assert gate(old_primary_lsn=None, old_primary_is_dead=True)['allowed']


def test_before_the_fence_only_a_known_lag_is_judged():
    assert gate(stage='before fence', fenced=None, old_primary_lsn=None)['allowed']
    result = gate(stage='before fence', fenced=None, old_primary_lsn='0/7000000', replica_lsns=['0/5000000'])
    assert not result['allowed'] and len(result['refusals']) == 1


def test_both_reasons_are_given_at_once():
    result = gate(fenced=False, old_primary_lsn='0/9000000', replica_lsns=['0/5000000'])
    assert len(result['refusals']) == 2


@pytest.mark.parametrize('bad', [-1, 'lots', None, '1.5'])
def test_a_bad_limit_is_refused_clearly(bad):
    with pytest.raises(pgf.FailoverLogicError, match='failover_max_lag_bytes'):
        gate(max_lag_bytes=bad)


def test_the_limit_may_be_a_string_from_extra_vars():
    assert gate(max_lag_bytes='0', old_primary_lsn='0/5000181')['allowed'] is False
