"""Unit tests of the backup store logic: WAL names, retention, continuity, status, recovery settings."""
import datetime

import pytest

from ansible_collections.greenflow.platform.plugins.module_utils import _pg_backup as pgb

UTC = pgb.UTC
NOW = datetime.datetime(2024, 3, 31, 2, 0, tzinfo=UTC)


def days_ago(days):
    return NOW - datetime.timedelta(days=days)


def seg(number, tli=1):
    return '%08X%08X%08X' % (tli, number // 256, number % 256)


def backup(bid, age_days, start_seg, verified=True, partial=False):
    return {'id': bid, 'stop_time': days_ago(age_days), 'verified': verified,
            'start_wal': seg(start_seg), 'partial': partial}


# --- LSNs and segment names ------------------------------------------------------------------------

def test_lsn_round_trip_and_segment_name():
    assert pgb.parse_lsn('0/3000028') == 0x3000028
    assert pgb.format_lsn(pgb.parse_lsn('16/B374D848')) == '16/B374D848'
    assert pgb.segment_name(1, '0/3000028') == '000000010000000000000003'
    assert pgb.segment_name(2, '1/FF000000') == '0000000200000001000000FF'
    assert pgb.parse_segment('0000000200000001000000FF') == (2, 511)
    assert pgb.parse_segment('00000002.history') is None


@pytest.mark.parametrize('bad', ['', '0/', 'x/1', '123', None])
def test_bad_lsn_is_a_clear_error(bad):
    with pytest.raises(pgb.BackupLogicError, match='not an LSN'):
        pgb.parse_lsn(bad)


def test_wal_file_base_strips_our_suffixes():
    assert pgb.wal_file_base('000000010000000000000003.gz') == '000000010000000000000003'
    assert pgb.wal_file_base('000000010000000000000003.gz.enc') == '000000010000000000000003'
    assert pgb.wal_file_base('00000002.history.gz') == '00000002.history'


def test_backup_id():
    bid = pgb.new_backup_id(NOW)
    assert bid == '20240331T020000Z'
    assert pgb.backup_id_time(bid) == NOW
    with pytest.raises(pgb.BackupLogicError, match='not a backup id'):
        pgb.backup_id_time('../etc')


def test_backup_label_and_manifest():
    label = ('START WAL LOCATION: 0/5000028 (file 000000010000000000000005)\n'
             'CHECKPOINT LOCATION: 0/5000060\nBACKUP METHOD: streamed\nBACKUP FROM: standby\n'
             'START TIME: 2024-03-31 02:00:00 UTC\nLABEL: x\nSTART TIMELINE: 1\n')
    parsed = pgb.parse_backup_label(label)
    assert parsed['start_wal'] == '000000010000000000000005'
    assert parsed['timeline'] == 1
    with pytest.raises(pgb.BackupLogicError, match='missing'):
        pgb.parse_backup_label('LABEL: x\n')
    manifest = {'WAL-Ranges': [{'Timeline': 1, 'Start-LSN': '0/5000028', 'End-LSN': '0/5000100'}]}
    assert pgb.manifest_wal_range(manifest) == (1, '0/5000028', '0/5000100')
    with pytest.raises(pgb.BackupLogicError):
        pgb.manifest_wal_range({})


# --- Retention -------------------------------------------------------------------------------------

def test_retention_keeps_window_and_base_of_window_start_deletes_the_rest():
    backups = [backup('b40', 40, 10), backup('b35', 35, 20), backup('b20', 20, 30), backup('b1', 1, 40)]
    wal = [seg(n) for n in range(5, 45)] + ['00000002.history']
    plan = pgb.retention_plan(backups, wal, NOW, 30)
    assert plan['keep'] == ['b35', 'b20', 'b1']
    assert plan['delete'] == ['b40']
    assert plan['keep_reasons']['b35'] == 'base of the window start'
    # WAL before the oldest kept backup's start goes; the rest and history files stay
    assert plan['delete_wal'] == [seg(n) for n in range(5, 20)]
    assert plan['oldest_needed_wal'] == seg(20)


def test_retention_never_deletes_the_newest_verified_backup_or_its_wal():
    # everything is older than the window; the newest backup failed verification
    backups = [backup('b50', 50, 10), backup('b45', 45, 20), backup('b40', 40, 30, verified=False)]
    wal = [seg(n) for n in range(10, 35)]
    plan = pgb.retention_plan(backups, wal, NOW, 30)
    assert plan['keep'] == ['b45']
    assert plan['keep_reasons']['b45'] == 'newest verified backup'
    assert plan['delete'] == ['b40', 'b50']
    assert plan['delete_wal'] == [seg(n) for n in range(10, 20)]


def test_retention_zero_days_keeps_only_newest_verified():
    backups = [backup('a', 2, 10), backup('b', 1, 20), backup('c', 0.5, 30, verified=False)]
    plan = pgb.retention_plan(backups, [seg(n) for n in range(10, 31)], NOW, 0)
    assert plan['keep'] == ['b']
    assert sorted(plan['delete']) == ['a', 'c']


def test_retention_without_verified_backup_keeps_window_and_wal_of_kept():
    backups = [backup('old', 60, 5, verified=False), backup('new', 2, 50, verified=False)]
    plan = pgb.retention_plan(backups, [seg(n) for n in range(5, 60)], NOW, 30)
    assert plan['keep'] == ['new']
    assert plan['delete'] == ['old']
    assert plan['delete_wal'] == [seg(n) for n in range(5, 50)]


def test_retention_with_nothing_kept_deletes_no_wal():
    plan = pgb.retention_plan([backup('x', 90, 5, verified=False)], [seg(1), seg(2)], NOW, 30)
    assert plan['delete'] == ['x']
    assert plan['delete_wal'] == []


def test_retention_partial_backups_go_only_when_stale():
    backups = [backup('run', 0.01, 50, verified=False, partial=True),
               backup('dead', 3, 40, verified=False, partial=True), backup('ok', 1, 30)]
    plan = pgb.retention_plan(backups, [], NOW, 30)
    assert plan['delete'] == ['dead']
    assert plan['keep'] == ['ok']


def test_retention_wal_of_other_timelines_and_backup_files():
    backups = [backup('b', 1, 20)]
    wal = [seg(19), seg(19, tli=2), seg(21, tli=2), seg(19) + '.00000028.backup', '00000002.history']
    plan = pgb.retention_plan(backups, wal, NOW, 30)
    assert plan['delete_wal'] == sorted([seg(19), seg(19, tli=2), seg(19) + '.00000028.backup'])


def test_retention_rejects_negative_days():
    with pytest.raises(pgb.BackupLogicError, match='retention_days'):
        pgb.retention_plan([], [], NOW, -1)


# --- Continuity ------------------------------------------------------------------------------------

def test_wal_gaps():
    assert pgb.wal_gaps([seg(n) for n in range(3, 8)]) == []
    assert pgb.wal_gaps([seg(3), seg(4), seg(6)]) == [seg(5)]
    # from the backup's start segment: a missing first segment is a gap
    assert pgb.wal_gaps([seg(4), seg(5)], from_segment=seg(3)) == [seg(3)]
    # older gaps before the start do not matter
    assert pgb.wal_gaps([seg(1), seg(3), seg(4)], from_segment=seg(3)) == []
    # per timeline; history and partial files are ignored
    assert pgb.wal_gaps([seg(3), seg(4), seg(4, tli=2), seg(5, tli=2), '00000002.history',
                         seg(6) + '.partial']) == []


# --- Status and recovery settings --------------------------------------------------------------------

def test_status_keeps_last_success_across_failures():
    ok = {'action': 'backup', 'result': 'ok', 'finished': 't1', 'backup_id': 'b1', 'size_bytes': 10,
          'duration_s': 2.0}
    doc = pgb.status_document({}, ok)
    assert doc['last_success']['backup_id'] == 'b1'
    failed = {'action': 'backup', 'result': 'failed', 'finished': 't2', 'error': 'boom'}
    doc = pgb.status_document(doc, failed)
    assert doc['result'] == 'failed'
    assert doc['last_success']['backup_id'] == 'b1'
    assert doc['last_run']['error'] == 'boom'
    doc = pgb.status_document(doc, {'action': 'verify', 'result': 'ok', 'finished': 't3',
                                    'verify_restore': {'result': 'ok'}})
    assert doc['last_verify_restore'] == {'result': 'ok', 'at': 't3'}
    assert doc['last_backup_result'] == 'failed'


def test_recovery_settings():
    text = pgb.recovery_settings("x %f '%p'", target_time='2024-03-31 02:00:00+00')
    assert "restore_command = 'x %f ''%p'''" in text
    assert "recovery_target_time = '2024-03-31 02:00:00+00'" in text
    assert "recovery_target_action = 'promote'" in text
    text = pgb.recovery_settings('x', target_lsn='0/3000028')
    assert "recovery_target_lsn = '0/3000028'" in text
    assert 'recovery_target_action' not in pgb.recovery_settings('x')
    with pytest.raises(pgb.BackupLogicError, match='not both'):
        pgb.recovery_settings('x', target_time='t', target_lsn='0/1')


def test_backups_for_an_lsn_target_are_those_consistent_by_then():
    backups = [{'id': 'a', 'stop_lsn': '0/3000100'}, {'id': 'b', 'stop_lsn': '0/5000028'},
               {'id': 'c', 'stop_lsn': '1/0'}, {'id': 'partial'}]
    assert [b['id'] for b in pgb.backups_ending_by_lsn(backups, '0/5000028')] == ['a', 'b']
    assert [b['id'] for b in pgb.backups_ending_by_lsn(backups, '0/5000027')] == ['a']
    assert [b['id'] for b in pgb.backups_ending_by_lsn(backups, 'FF/0')] == ['a', 'b', 'c']
    assert pgb.backups_ending_by_lsn(backups, '0/100') == []
    with pytest.raises(pgb.BackupLogicError):
        pgb.backups_ending_by_lsn(backups, 'nonsense')
