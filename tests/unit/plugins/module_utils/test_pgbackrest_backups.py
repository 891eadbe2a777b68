"""Unit tests of the verified-backup and expire safety logic over pgBackRest's reports.

fixtures/pgbackrest_info_2.45.json is the real output of `pgbackrest info --output=json` (Debian
pgbackrest 2.45, PostgreSQL 15, encrypted repository): a full backup annotated greenflow-verified and
a differential on top of it. Longer histories are built from its entries."""
import copy
import json
import os

import pytest

from ansible_collections.greenflow.platform.plugins.module_utils import _pgbackrest_backups as pbb

HERE = os.path.dirname(os.path.abspath(__file__))
DAY = 86400

with open(os.path.join(HERE, 'fixtures', 'pgbackrest_info_2.45.json')) as handle:
    REAL = json.load(handle)

VERIFY_TEXT = """stanza: t
status: ok
  archiveId: 15-1, total WAL checked: 5, total valid WAL: 5
    missing: 0, checksum invalid: 0, size invalid: 0, other: 0
  backup: 20261202-005147F, status: valid, total files checked: 964, total valid files: 964
    missing: 0, checksum invalid: 0, size invalid: 0, other: 0
  backup: 20261202-005147F_20261202-005153D, status: valid, total files checked: 965, total valid files: 965
    missing: 0, checksum invalid: 0, size invalid: 0, other: 0
"""


def seg(number, tli=1):
    return '%08X%08X%08X' % (tli, number // 256, number % 256)


def history(*backups, archive_max=None):
    """A stanza report shaped like the real one, with the given backups.
    Each backup: (label, type, age in days, first segment, verified, prior)."""
    info = copy.deepcopy(REAL)
    template = info[0]['backup'][0]
    entries, last = [], 1
    for label, kind, age, first, verified, prior in backups:
        backup = copy.deepcopy(template)
        backup.update(label=label, type=kind, prior=prior,
                      reference=None if prior is None else [prior],
                      timestamp={'start': NOW - age * DAY - 60, 'stop': NOW - age * DAY},
                      archive={'start': seg(first), 'stop': seg(first + 1)})
        backup['annotation'] = {'greenflow-verified': '2026-01-01T00:00:00Z'} if verified else None
        if not verified:
            del backup['annotation']
        entries.append(backup)
        last = max(last, first + 1)
    info[0]['backup'] = entries
    info[0]['archive'][0]['min'] = seg(1)
    info[0]['archive'][0]['max'] = archive_max or seg(last + 3)
    return info


NOW = 1796172715 + 100 * DAY


def test_real_report_full_is_verified_and_the_diff_is_not_yet():
    entry = pbb.stanza_info(REAL, 't')
    checks = pbb.backup_checks(entry)
    assert checks['20261202-005147F'] == {'verified': True, 'reasons': []}
    diff = checks['20261202-005147F_20261202-005153D']
    assert diff['verified'] is False and 'no greenflow-verified annotation' in diff['reasons'][0]
    assert pbb.verified_labels(entry) == ['20261202-005147F']


def test_verify_text_is_read_and_drives_the_annotation():
    verify = pbb.parse_verify_text(VERIFY_TEXT)
    assert verify['status'] == 'ok'
    assert verify['archives'] == {'15-1': {'checked': 5, 'valid': 5}}
    assert verify['backups']['20261202-005147F_20261202-005153D'] == 'valid'
    assert pbb.to_annotate(pbb.stanza_info(REAL, 't'), verify) == ['20261202-005147F_20261202-005153D']


def test_a_backup_verify_did_not_find_valid_is_not_annotated():
    verify = pbb.parse_verify_text(VERIFY_TEXT.replace('005153D, status: valid', '005153D, status: invalid'))
    assert pbb.to_annotate(pbb.stanza_info(REAL, 't'), verify) == []


def test_backup_whose_wal_is_not_archived_is_not_verified():
    info = copy.deepcopy(REAL)
    info[0]['archive'][0]['max'] = '000000010000000000000002'  # the full needs ..03
    entry = pbb.stanza_info(info, 't')
    checks = pbb.backup_checks(entry)
    assert not checks['20261202-005147F']['verified']
    assert 'not all in the archive' in checks['20261202-005147F']['reasons'][0]
    verify = pbb.parse_verify_text(VERIFY_TEXT)
    assert '20261202-005147F_20261202-005153D' not in pbb.to_annotate(entry, verify)


def test_backup_with_errors_is_not_verified_and_taints_its_diff():
    info = copy.deepcopy(REAL)
    info[0]['backup'][0]['error'] = True
    info[0]['backup'][1]['annotation'] = {'greenflow-verified': 'x'}
    checks = pbb.backup_checks(pbb.stanza_info(info, 't'))
    assert not checks['20261202-005147F']['verified']
    assert 'depends on 20261202-005147F, which is not verified' in checks[
        '20261202-005147F_20261202-005153D']['reasons'][0]


def test_unknown_stanza_and_malformed_reports():
    with pytest.raises(pbb.PgBackRestReportError, match="stanza 'other' is not in"):
        pbb.stanza_info(REAL, 'other')
    with pytest.raises(pbb.PgBackRestReportError):
        pbb.stanza_info({'not': 'a list'}, 't')
    bad = copy.deepcopy(REAL)
    bad[0]['backup'][0]['archive']['stop'] = 'nonsense'
    with pytest.raises(pbb.PgBackRestReportError, match='not a WAL segment name'):
        pbb.backup_checks(pbb.stanza_info(bad, 't'))


def test_time_retention_keeps_the_newest_full_from_before_the_window():
    info = history(('F1', 'full', 50, 2, True, None), ('F1_D1', 'diff', 45, 6, True, 'F1'),
                   ('F2', 'full', 40, 10, True, None), ('F2_D1', 'diff', 35, 14, True, 'F2'),
                   ('F3', 'full', 10, 20, True, None))
    plan = pbb.expire_plan(info, 't', 30, NOW)
    assert plan['remove'] == ['F1', 'F1_D1']
    assert plan['keep'] == ['F2', 'F2_D1', 'F3']
    assert plan['allowed'] is True and plan['verified_after'] == ['F2', 'F2_D1', 'F3']


def test_expire_that_would_leave_no_verified_backup_is_refused():
    # The newer backups were never verified (e.g. verify keeps failing): only old, verified ones exist.
    info = history(('F1', 'full', 50, 2, True, None), ('F2', 'full', 40, 10, False, None),
                   ('F3', 'full', 10, 20, False, None))
    plan = pbb.expire_plan(info, 't', 30, NOW)
    assert plan['remove'] == ['F1']
    assert plan['allowed'] is False and plan['verified_after'] == []
    assert 'leave 0 verified backup(s)' in plan['reason'] and 'nothing was removed' in plan['reason']


def test_min_verified_can_ask_for_more():
    info = history(('F1', 'full', 50, 2, True, None), ('F2', 'full', 40, 10, True, None),
                   ('F3', 'full', 10, 20, False, None))
    assert pbb.expire_plan(info, 't', 30, NOW)['allowed'] is True
    assert pbb.expire_plan(info, 't', 30, NOW, min_verified=2)['allowed'] is False


def test_nothing_to_expire_inside_the_window():
    info = history(('F1', 'full', 20, 2, False, None), ('F2', 'full', 10, 10, False, None))
    plan = pbb.expire_plan(info, 't', 30, NOW)
    assert plan == dict(plan, allowed=True, remove=[], reason='nothing to expire')


def test_a_single_old_full_is_never_expired():
    info = history(('F1', 'full', 400, 2, False, None))
    assert pbb.expire_plan(info, 't', 30, NOW)['remove'] == []


def test_zero_or_bad_retention_is_refused():
    info = history(('F1', 'full', 50, 2, True, None))
    with pytest.raises(pbb.PgBackRestReportError, match='0 would remove every backup'):
        pbb.expire_plan(info, 't', 0, NOW)
    with pytest.raises(pbb.PgBackRestReportError):
        pbb.expire_plan(info, 't', 'a month', NOW)
    with pytest.raises(pbb.PgBackRestReportError):
        pbb.expire_plan(info, 't', 30, NOW, min_verified=0)


def test_diff_whose_full_is_gone_from_the_report_is_not_verified():
    info = history(('F2', 'full', 10, 10, True, None), ('F2_D1', 'diff', 5, 14, True, 'F1'))
    checks = pbb.backup_checks(pbb.stanza_info(info, 't'))
    assert not checks['F2_D1']['verified'] and 'which is gone' in checks['F2_D1']['reasons'][0]


def test_archive_on_a_later_timeline_still_covers_older_backups():
    info = history(('F1', 'full', 10, 2, True, None), archive_max=seg(40, tli=2))
    assert pbb.verified_labels(pbb.stanza_info(info, 't')) == ['F1']


# --- restore set, archiver health, metrics -----------------------------------------------------------------

def _both_verified():
    info = copy.deepcopy(REAL)
    info[0]['backup'][1]['annotation'] = {'greenflow-verified': '2026-12-02T01:00:00Z'}
    return info


def test_pg_time_with_offset_is_read_and_without_refused():
    assert pbb.parse_pg_time('1970-01-01 00:00:10+00') == 10
    assert pbb.parse_pg_time('1970-01-01T01:00:00.5+01:00') == 0.5
    assert pbb.parse_pg_time('1970-01-01 00:00:00-0130') == 5400
    assert pbb.parse_pg_time('1970-01-01 00:00:00Z') == 0
    for bad in ('1970-01-01 00:00:00', 'yesterday', '2026-02-30 00:00:00+00', ''):
        with pytest.raises(pbb.PgBackRestReportError):
            pbb.parse_pg_time(bad)


def test_latest_restore_takes_the_newest_verified_backup():
    assert pbb.restore_set(REAL, 't')['set'] == '20261202-005147F'  # the diff is not verified yet
    chosen = pbb.restore_set(_both_verified(), 't')
    assert chosen['set'] == '20261202-005147F_20261202-005153D' and chosen['verified']
    assert pbb.restore_set(REAL, 't', allow_unverified=True)['set'] == '20261202-005147F_20261202-005153D'


def test_restore_to_a_time_takes_a_backup_that_ended_before_it():
    info = _both_verified()
    assert pbb.restore_set(info, 't', target_time='2026-12-02 00:51:54+00')['set'] == '20261202-005147F'
    # 1796172715 = 2026-12-02 00:51:55 UTC: the diff stopped exactly then, so it cannot serve that time
    assert pbb.restore_set(info, 't', target_time='2026-12-02 00:51:55+00')['set'] == '20261202-005147F'
    assert pbb.restore_set(info, 't', target_time='2026-12-02 00:51:56+00')['set'].endswith('D')
    with pytest.raises(pbb.PgBackRestReportError, match='no verified backup was consistent before time'):
        pbb.restore_set(info, 't', target_time='2026-12-02 00:51:52+00')


def test_restore_to_an_lsn_takes_a_backup_consistent_at_or_before_it():
    info = _both_verified()
    assert pbb.restore_set(info, 't', target_lsn='0/3000050')['set'] == '20261202-005147F'
    assert pbb.restore_set(info, 't', target_lsn='0/4FFFFFF')['set'] == '20261202-005147F'
    assert pbb.restore_set(info, 't', target_lsn='0/5000100')['set'].endswith('D')
    with pytest.raises(pbb.PgBackRestReportError, match='before LSN 0/3000000'):
        pbb.restore_set(info, 't', target_lsn='0/3000000')
    with pytest.raises(pbb.PgBackRestReportError, match='not an LSN'):
        pbb.restore_set(info, 't', target_lsn='3000000')
    with pytest.raises(pbb.PgBackRestReportError, match='not both'):
        pbb.restore_set(info, 't', target_lsn='0/1', target_time='2026-12-02 00:51:56+00')


def test_a_named_backup_must_exist_be_verified_and_serve_the_target():
    diff = '20261202-005147F_20261202-005153D'
    with pytest.raises(pbb.PgBackRestReportError, match='is not verified'):
        pbb.restore_set(REAL, 't', label=diff)
    assert pbb.restore_set(REAL, 't', label=diff, allow_unverified=True)['set'] == diff
    with pytest.raises(pbb.PgBackRestReportError, match='not in the repository'):
        pbb.restore_set(REAL, 't', label='20261202-005147F_20261202-005200I')
    with pytest.raises(pbb.PgBackRestReportError, match='label like'):
        pbb.restore_set(REAL, 't', label='20261202T005147Z')
    with pytest.raises(pbb.PgBackRestReportError, match='recovery cannot go back'):
        pbb.restore_set(_both_verified(), 't', label=diff, target_lsn='0/4000000')


def test_archiver_health():
    good = {'archived_count': 10, 'failed_count': 2, 'last_archived_wal': seg(9), 'last_failed_wal': seg(5),
            'last_archived_time': 200.0, 'last_failed_time': 100.0, 'archive_mode': 'on'}
    assert pbb.archiver_health(good)['ok'] is True
    stopped = dict(good, last_failed_time=300.0, last_failed_wal=seg(10))
    health = pbb.archiver_health(stopped)
    assert health['ok'] is False and seg(10) in health['reasons'][0] and health['failed_count'] == 2
    never = dict(good, archived_count=0, last_archived_time=None, last_archived_wal=None)
    assert pbb.archiver_health(never)['ok'] is False
    assert pbb.archiver_health(dict(good, archive_mode='off'))['ok'] is False
    assert pbb.archiver_health({'error': 'connection refused'})['reasons'][0].endswith('connection refused')
    assert pbb.archiver_health(None)['ok'] is False


def test_metrics_text_has_the_known_values_only():
    status = {'stanza': 'main', 'result': 'failed', 'finished_epoch': 1000, 'verified': ['a', 'b'],
              'newest_verified': {'label': 'b', 'stop': 900}, 'check': {'exit': 0},
              'archiver': {'ok': False, 'failed_count': 7, 'last_archived_time': 800.5},
              'restore_test': {'result': 'ok', 'finished_epoch': 950, 'duration_s': 12.25}}
    text = pbb.prometheus_text(status)
    assert 'greenflow_backup_last_run_ok{stanza="main"} 0\n' in text
    assert 'greenflow_backup_verified_backups{stanza="main"} 2\n' in text
    assert 'greenflow_backup_last_verified_backup_timestamp_seconds{stanza="main"} 900\n' in text
    assert 'greenflow_backup_archiver_ok{stanza="main"} 0\n' in text
    assert 'greenflow_backup_archiver_failed_count{stanza="main"} 7\n' in text
    assert 'greenflow_backup_archiver_last_archived_timestamp_seconds{stanza="main"} 800.500\n' in text
    assert 'greenflow_backup_restore_test_ok{stanza="main"} 1\n' in text
    assert 'greenflow_backup_last_success_timestamp_seconds' not in text  # unknown: left out
    assert '# TYPE greenflow_backup_archiver_failed_count counter' in text


def test_a_verified_backup_verify_finds_damaged_is_withdrawn():
    entry = pbb.stanza_info(REAL, 't')
    verify = {'status': 'error', 'archives': {},
              'backups': {'20261202-005147F': 'invalid', '20261202-005147F_20261202-005153D': 'valid'}}
    assert pbb.to_withdraw(entry, verify) == ['20261202-005147F']
    verify['backups']['20261202-005147F'] = 'valid'
    assert pbb.to_withdraw(entry, verify) == []
    assert pbb.to_withdraw(entry, {'status': 'ok', 'archives': {}, 'backups': {}}) == []


# --- Several repositories ---------------------------------------------------------------------------------

GLOBAL_TWO_REPOS = [('repo1-path', '/var/lib/pgbackrest'), ('repo1-retention-full-type', 'time'),
                    ('repo1-retention-full', '30'), ('repo1-cipher-type', 'aes-256-cbc'),
                    ('repo1-cipher-pass', 'x' * 24), ('repo2-type', 's3'), ('repo2-path', '/greenflow'),
                    ('repo2-s3-bucket', 'backups'), ('repo2-retention-full-type', 'time'),
                    ('repo2-retention-full', '90'), ('compress-type', 'zst'), ('archive-async', 'y')]


def test_configured_repos_from_the_global_options():
    assert pbb.configured_repos(GLOBAL_TWO_REPOS) == [1, 2]
    assert pbb.configured_repos(dict(GLOBAL_TWO_REPOS)) == [1, 2]
    assert pbb.configured_repos([('repo1-host', 'backup-1'), ('compress-type', 'zst')]) == [1]
    assert pbb.configured_repos([('compress-type', 'zst')]) == []
    # an option that only starts like a repository option is not one
    assert pbb.configured_repos([('repository', 'x'), ('repo-x', 'y')]) == []


def test_each_repository_has_its_own_time_retention():
    assert pbb.repo_retention_days(GLOBAL_TWO_REPOS, 1) == 30
    assert pbb.repo_retention_days(GLOBAL_TWO_REPOS, 2) == 90
    assert pbb.repo_retention_days([('repo2-type', 'posix')], 2, default=30) == 30
    with pytest.raises(pbb.PgBackRestReportError, match='expires by time only'):
        pbb.repo_retention_days([('repo2-retention-full-type', 'count'), ('repo2-retention-full', '4')], 2)
    with pytest.raises(pbb.PgBackRestReportError, match='repo2-retention-full must be at least 1'):
        pbb.repo_retention_days([('repo2-retention-full', '0')], 2)
    with pytest.raises(pbb.PgBackRestReportError, match='whole number'):
        pbb.repo_retention_days([('repo2-type', 'posix')], 2)  # no retention and no default


def test_limit_to_repo_keeps_the_other_options_and_drops_the_other_repository():
    only2 = pbb.limit_to_repo(GLOBAL_TWO_REPOS, 2)
    assert pbb.configured_repos(only2) == [2]
    assert ('compress-type', 'zst') in only2 and ('archive-async', 'y') in only2
    assert not [k for k, _v in only2 if k.startswith('repo1-')]
    only1 = pbb.limit_to_repo(GLOBAL_TWO_REPOS, 1)
    assert pbb.configured_repos(only1) == [1] and ('repo1-cipher-pass', 'x' * 24) in only1
    assert [k for k, _v in only1] == [k for k, _v in GLOBAL_TWO_REPOS if not k.startswith('repo2-')]  # order kept


def test_repo_problem_tells_an_unreadable_repository_from_an_empty_one():
    entry = {'name': 's', 'repo': [
        {'key': 1, 'status': {'code': 0, 'message': 'ok'}},
        {'key': 2, 'status': {'code': 99, 'message': "[PathOpenError] unable to list file info for path "
                                                     "'/r2/backup': [13] Permission denied"}}]}
    assert pbb.repo_problem(entry, 1) is None
    problem = pbb.repo_problem(entry, 2)
    assert problem.startswith('pgbackrest info reports repo2 as [PathOpenError]') and '(code 99)' in problem
    entry['repo'][1]['status'] = {'code': 2, 'message': 'no valid backups'}
    assert pbb.repo_problem(entry, 2) is None
    assert pbb.repo_problem(REAL[0], 1) is None  # the real report: repo1 ok


def test_run_outcome_fails_when_any_repository_failed_and_names_it():
    assert pbb.run_outcome({1: None, 2: None}) == ('ok', None, [])
    assert pbb.run_outcome({}) == ('ok', None, [])
    result, error, failed = pbb.run_outcome({1: None, 2: 'pgbackrest backup --repo=2 failed (exit 41): denied'})
    assert result == 'failed' and failed == [2]
    assert error == 'repo2: pgbackrest backup --repo=2 failed (exit 41): denied'
    assert pbb.run_outcome({2: 'b', 1: 'a'}) == ('failed', 'repo1: a; repo2: b', [1, 2])


def test_expire_plans_each_repository_with_its_own_retention():
    # The same history in two repositories: 30 days of retention remove the 50-day-old full in repo1 (the
    # 40-day-old one covers the window's start), repo2's 90 days keep both.
    info = history(('20260101-000000F', 'full', 50, 10, True, None), ('20260111-000000F', 'full', 40, 15, True, None),
                   ('20260201-000000F', 'full', 10, 20, True, None))
    repo1 = pbb.expire_plan(info, 't', pbb.repo_retention_days(GLOBAL_TWO_REPOS, 1), NOW)
    repo2 = pbb.expire_plan(info, 't', pbb.repo_retention_days(GLOBAL_TWO_REPOS, 2), NOW)
    assert repo1['remove'] == ['20260101-000000F'] and repo1['allowed']
    assert repo2['remove'] == [] and repo2['reason'] == 'nothing to expire'


def test_prometheus_text_keeps_the_repo1_metrics_and_adds_one_series_per_repository():
    status = {'stanza': 'main', 'result': 'failed', 'finished_epoch': 1000, 'verified': ['a', 'b'],
              'newest_verified': {'stop': 900}, 'last_backup': {'result': 'ok'}, 'check': {'exit': 0},
              'repos': {'1': {'result': 'ok', 'last_backup': {'result': 'ok'}, 'verified': ['a', 'b'],
                              'newest_verified': {'stop': 900}, 'check': {'exit': 0}},
                        '2': {'result': 'failed', 'last_backup': {'result': 'failed'}, 'verified': ['c'],
                              'newest_verified': {'stop': 500}, 'check': {'exit': 41}}}}
    text = pbb.prometheus_text(status)
    # repo1's metrics as before: same names, same labels
    assert 'greenflow_backup_last_run_ok{stanza="main"} 0\n' in text
    assert 'greenflow_backup_last_backup_ok{stanza="main"} 1\n' in text
    assert 'greenflow_backup_verified_backups{stanza="main"} 2\n' in text
    assert 'greenflow_backup_last_verified_backup_timestamp_seconds{stanza="main"} 900\n' in text
    # per repository
    assert 'greenflow_backup_repo_last_run_ok{stanza="main",repo="1"} 1\n' in text
    assert 'greenflow_backup_repo_last_run_ok{stanza="main",repo="2"} 0\n' in text
    assert 'greenflow_backup_repo_last_backup_ok{stanza="main",repo="2"} 0\n' in text
    assert 'greenflow_backup_repo_verified_backups{stanza="main",repo="2"} 1\n' in text
    assert 'greenflow_backup_repo_last_verified_backup_timestamp_seconds{stanza="main",repo="2"} 500\n' in text
    assert 'greenflow_backup_repo_archive_check_ok{stanza="main",repo="2"} 0\n' in text
    assert text.count('# TYPE greenflow_backup_repo_last_run_ok gauge') == 1  # one HELP/TYPE per metric
    # no repos in the status (written by an older wrapper): no per-repository series
    del status['repos']
    assert 'greenflow_backup_repo_' not in pbb.prometheus_text(status)
