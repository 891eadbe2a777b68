"""The release record as Prometheus textfile metrics: live release, rollback target, last cutover result."""
import os
import re
from datetime import datetime, timezone

import pytest

from ansible_collections.greenflow.platform.plugins.module_utils import _release_lease as lease_mod
from ansible_collections.greenflow.platform.plugins.module_utils import _release_metrics as metrics
from ansible_collections.greenflow.platform.plugins.module_utils import _release_record as rr
from ansible_collections.greenflow.platform.plugins.module_utils import _release_store as store
from ansible_collections.greenflow.platform.plugins.module_utils import _release_watchdog as wd

T0 = 1_800_000_000.0


class Clock:
    def __init__(self):
        self.now = T0

    def tick(self, seconds=60.0):
        self.now += seconds
        return self.now


def _close(record, entry, outcome, reason, clock):
    rr.finish(record, entry["id"], outcome, {"reason": reason, "finished_epoch": clock.tick()})
    return entry


def _deploy(record, version, color, clock, outcome="succeeded", reason=None):
    entry = rr.begin(record, "deploy", {"version": version, "color": color}, clock.tick(), 7200)
    return _close(record, entry, outcome, reason, clock)


def _rollback(record, clock, outcome="succeeded"):
    target = rr.rollback_target(record)
    entry = rr.begin(record, "rollback", {"version": target["version"], "color": target["color"],
                                          "restores": target["id"]}, clock.tick(), 7200)
    return _close(record, entry, outcome, "rollback (instant switch, 0.2 s on nginx)", clock)


def parse(text):
    """{(name, frozenset(labels)): value} of an exposition text; checks HELP/TYPE come first."""
    out, typed = {}, set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            typed.add(line.split()[2])
            continue
        if line.startswith("#"):
            continue
        match = re.fullmatch(r'([a-z_]+)\{(.*)\} (\S+)', line)
        assert match, line
        name, labels, value = match.groups()
        assert name in typed, "sample of %s before its TYPE" % name
        pairs = frozenset(re.findall(r'([a-z_]+)="((?:[^"\\]|\\.)*)"', labels))
        out[(name, pairs)] = float(value)
    return out


def value(samples, name, **labels):
    labels.setdefault("app", "demo")
    return samples.get((name, frozenset(labels.items())))


def names(samples):
    return {name for name, _ in samples}


@pytest.fixture
def clock():
    return Clock()


def test_before_the_first_release_only_in_progress_is_written(clock):
    record = rr.empty_record("demo")
    samples = parse(metrics.render(record))
    assert samples == {("greenflow_release_in_progress", frozenset({("app", "demo")})): 0.0}


def test_first_release_is_live_and_ok(clock):
    record = rr.empty_record("demo")
    entry = _deploy(record, "1", "blue", clock)
    samples = parse(metrics.render(record))
    assert value(samples, "greenflow_release_info", role="live", version="1", color="blue") == 1
    assert not [k for k in samples if k[0] == "greenflow_release_info" and ("role", "rollback_target") in k[1]]
    assert value(samples, "greenflow_release_live_since_timestamp_seconds") == entry["finished_epoch"]
    assert value(samples, "greenflow_release_last_result", result="ok") == 1
    for other in ("aborted", "rolled_back", "rollback_failed"):
        assert value(samples, "greenflow_release_last_result", result=other) == 0
    assert value(samples, "greenflow_release_last_result_automatic") == 0
    assert value(samples, "greenflow_release_last_result_timestamp_seconds") == entry["finished_epoch"]
    assert value(samples, "greenflow_release_last_result_info", action="deploy", version="1", color="blue",
                 result="ok") == 1
    assert value(samples, "greenflow_release_in_progress") == 0


def test_second_release_names_the_rollback_target(clock):
    record = rr.empty_record("demo")
    _deploy(record, "1", "blue", clock)
    _deploy(record, "2", "green", clock)
    samples = parse(metrics.render(record))
    assert value(samples, "greenflow_release_info", role="live", version="2", color="green") == 1
    assert value(samples, "greenflow_release_info", role="rollback_target", version="1", color="blue") == 1


def test_a_gate_abort_is_aborted_and_leaves_the_live_release(clock):
    record = rr.empty_record("demo")
    good = _deploy(record, "1", "blue", clock)
    bad = _deploy(record, "2", "green", clock, "failed",
                  "Shift traffic in gated steps: release_cutover demo: step 1/4 (green 5 %) abort: error rate 30 %")
    samples = parse(metrics.render(record))
    assert value(samples, "greenflow_release_info", role="live", version="1", color="blue") == 1
    assert value(samples, "greenflow_release_live_since_timestamp_seconds") == good["finished_epoch"]
    assert value(samples, "greenflow_release_last_result", result="aborted") == 1
    assert value(samples, "greenflow_release_last_result", result="ok") == 0
    assert value(samples, "greenflow_release_last_result_automatic") == 0
    assert value(samples, "greenflow_release_last_result_timestamp_seconds") == bad["finished_epoch"]
    assert value(samples, "greenflow_release_last_result_info", action="deploy", version="2", color="green",
                 result="aborted") == 1


def test_the_watch_breaking_after_100_percent_is_an_automatic_rollback(clock):
    record = rr.empty_record("demo")
    _deploy(record, "1", "blue", clock)
    # deploy.yml's rescue: a folded scalar, so spacing and case are as the template makes them
    _deploy(record, "2", "green", clock, "failed",
            "Automatic  rollback after 100 % (the watch broke): Shift traffic in gated steps: watch abort")
    samples = parse(metrics.render(record))
    assert value(samples, "greenflow_release_last_result", result="rolled_back") == 1
    assert value(samples, "greenflow_release_last_result_automatic") == 1
    assert value(samples, "greenflow_release_info", role="live", version="1", color="blue") == 1


def test_a_watchdog_put_back_is_automatic_and_an_abort(clock):
    record = rr.empty_record("demo")
    _deploy(record, "1", "blue", clock)
    entry = rr.begin(record, "deploy", {"version": "2", "color": "green", "previous_color": "blue"}, clock.tick(), 7200)
    lease_mod.grant(entry, "ctl:1", "blue", "green", 10, clock.now)
    lease_mod.mark_lost(entry, clock.tick(), "100 % on blue")  # what the watchdog writes (finished_at only)
    samples = parse(metrics.render(record))
    assert value(samples, "greenflow_release_last_result", result="aborted") == 1
    assert value(samples, "greenflow_release_last_result_automatic") == 1
    assert value(samples, "greenflow_release_last_result_timestamp_seconds") == int(clock.now)
    assert value(samples, "greenflow_release_in_progress") == 0


def test_a_rollback_is_rolled_back_by_hand(clock):
    record = rr.empty_record("demo")
    _deploy(record, "1", "blue", clock)
    _deploy(record, "2", "green", clock)
    entry = _rollback(record, clock)
    samples = parse(metrics.render(record))
    assert value(samples, "greenflow_release_info", role="live", version="1", color="blue") == 1
    assert not [k for k in samples if k[0] == "greenflow_release_info" and ("role", "rollback_target") in k[1]]
    assert value(samples, "greenflow_release_live_since_timestamp_seconds") == entry["finished_epoch"]
    assert value(samples, "greenflow_release_last_result", result="rolled_back") == 1
    assert value(samples, "greenflow_release_last_result_automatic") == 0
    assert value(samples, "greenflow_release_last_result_info", action="rollback", version="1", color="blue",
                 result="rolled_back") == 1


def test_a_failed_rollback_is_rollback_failed(clock):
    record = rr.empty_record("demo")
    _deploy(record, "1", "blue", clock)
    _deploy(record, "2", "green", clock)
    _rollback(record, clock, outcome="failed")
    samples = parse(metrics.render(record))
    assert value(samples, "greenflow_release_last_result", result="rollback_failed") == 1
    assert value(samples, "greenflow_release_info", role="live", version="2", color="green") == 1


def test_an_open_entry_is_in_progress_and_the_last_result_stays(clock):
    record = rr.empty_record("demo")
    _deploy(record, "1", "blue", clock)
    entry = rr.begin(record, "deploy", {"version": "2", "color": "green"}, clock.tick(), 7200)
    samples = parse(metrics.render(record))
    assert value(samples, "greenflow_release_in_progress") == 1
    assert value(samples, "greenflow_release_in_progress_since_timestamp_seconds") == entry["started_epoch"]
    assert value(samples, "greenflow_release_last_result", result="ok") == 1


def test_an_interrupted_deploy_closed_later_is_the_newest_result(clock):
    """rollback.yml closes an interrupted deploy (claimed) after it was begun: the order of closing counts."""
    record = rr.empty_record("demo")
    _deploy(record, "1", "blue", clock)
    entry = rr.begin(record, "deploy", {"version": "2", "color": "green"}, clock.tick(), 7200)
    _close(record, entry, "failed", "interrupted; traffic put back on 1 (blue) by rollback.yml", clock)
    samples = parse(metrics.render(record))
    assert value(samples, "greenflow_release_last_result", result="aborted") == 1
    assert value(samples, "greenflow_release_last_result_info", action="deploy", version="2", color="green",
                 result="aborted") == 1


def test_a_forced_begin_abandons_an_entry_without_making_it_the_last_result(clock):
    record = rr.empty_record("demo")
    _deploy(record, "1", "blue", clock)
    rr.begin(record, "deploy", {"version": "2", "color": "green"}, clock.tick(), 7200)
    # a second deploy forces the lock: the first is closed as abandoned (no finish time)
    rr.begin(record, "deploy", {"version": "3", "color": "green"}, clock.tick(), 7200, force=True)
    samples = parse(metrics.render(record))
    assert value(samples, "greenflow_release_last_result", result="ok") == 1
    assert value(samples, "greenflow_release_in_progress") == 1


def test_retire_entries_are_not_cutover_results(clock):
    record = rr.empty_record("demo")
    _deploy(record, "1", "blue", clock)
    _deploy(record, "2", "green", clock)
    entry = rr.begin(record, "retire", {"version": "1", "color": "blue"}, clock.tick(), 7200)
    _close(record, entry, "succeeded", "blue is idle", clock)
    samples = parse(metrics.render(record))
    assert value(samples, "greenflow_release_last_result_info", action="deploy", version="2", color="green",
                 result="ok") == 1
    assert value(samples, "greenflow_release_info", role="rollback_target", version="1", color="blue") == 1


def test_old_entries_without_finished_epoch_use_finished_at(clock):
    record = rr.empty_record("demo")
    entry = rr.begin(record, "deploy", {"version": "1", "color": "blue"}, clock.tick(), 7200)
    rr.finish(record, entry["id"], "succeeded", {"finished_at": "2027-01-15T08:00:00Z"})
    samples = parse(metrics.render(record))
    at = datetime(2027, 1, 15, 8, 0, 0, tzinfo=timezone.utc).timestamp()
    assert value(samples, "greenflow_release_last_result_timestamp_seconds") == at
    assert value(samples, "greenflow_release_live_since_timestamp_seconds") == at


def test_label_values_are_escaped(clock):
    record = rr.empty_record("demo")
    _deploy(record, 'v1 "quoted" \\ back\nslash', "blue", clock)
    text = metrics.render(record)
    assert 'version="v1 \\"quoted\\" \\\\ back\\nslash"' in text
    samples = parse(text)
    assert value(samples, "greenflow_release_info", role="live", version='v1 \\"quoted\\" \\\\ back\\nslash',
                 color="blue") == 1


def test_every_metric_has_help_and_type_once(clock):
    record = rr.empty_record("demo")
    _deploy(record, "1", "blue", clock)
    _deploy(record, "2", "green", clock)
    rr.begin(record, "deploy", {"version": "3", "color": "blue"}, clock.tick(), 7200)
    text = metrics.render(record)
    helps = re.findall(r"^# HELP (\S+) ", text, re.M)
    types = re.findall(r"^# TYPE (\S+) gauge$", text, re.M)
    assert helps == types and len(helps) == len(set(helps))
    assert set(helps) == names(parse(text)) == {name for name, _ in metrics.METRICS}
    assert text.endswith("\n")


# --- writing the file ------------------------------------------------------------------------------------

def test_write_puts_the_file_in_an_existing_directory_only(tmp_path, clock):
    record = rr.empty_record("demo")
    _deploy(record, "1", "blue", clock)
    assert metrics.write(str(tmp_path / "missing"), record) is None
    assert metrics.write("", record) is None
    path = metrics.write(str(tmp_path), record)
    assert path == str(tmp_path / "greenflow_release_demo.prom")
    assert open(path).read() == metrics.render(record)
    assert oct(os.stat(path).st_mode & 0o777) == "0o644"
    assert sorted(os.listdir(str(tmp_path))) == ["greenflow_release_demo.prom"]  # no temp file left


def test_every_record_write_rewrites_the_metrics(tmp_path, clock):
    textfiles = tmp_path / "node-exporter"
    textfiles.mkdir()
    path = str(tmp_path / "releases" / "demo.json")
    prom = textfiles / "greenflow_release_demo.prom"
    with store.RecordUpdate(path, "demo", metrics_dir=str(textfiles)) as update:
        entry = rr.begin(update.record, "deploy", {"version": "1", "color": "blue"}, clock.tick(), 7200)
        update.write()  # the lock on disk before a long step: the metrics follow
        assert value(parse(prom.read_text()), "greenflow_release_in_progress") == 1
        rr.finish(update.record, entry["id"], "succeeded", {"finished_epoch": clock.tick()})
    assert update.metrics_path == str(prom) and update.metrics_error is None
    samples = parse(prom.read_text())
    assert value(samples, "greenflow_release_in_progress") == 0
    assert value(samples, "greenflow_release_last_result", result="ok") == 1


def test_metrics_are_not_written_in_check_mode_nor_without_a_directory(tmp_path, clock):
    textfiles = tmp_path / "node-exporter"
    textfiles.mkdir()
    path = str(tmp_path / "demo.json")
    with store.RecordUpdate(path, "demo", dry_run=True, metrics_dir=str(textfiles)) as update:
        rr.begin(update.record, "deploy", {"version": "1", "color": "blue"}, clock.tick(), 7200)
    assert os.listdir(str(textfiles)) == []
    with store.RecordUpdate(path, "demo") as update:
        rr.begin(update.record, "deploy", {"version": "1", "color": "blue"}, clock.tick(), 7200)
    assert os.listdir(str(textfiles)) == [] and update.metrics_path is None


def test_a_metrics_failure_keeps_the_record_written(tmp_path, clock):
    textfiles = tmp_path / "node-exporter"
    textfiles.mkdir()
    (textfiles / "greenflow_release_demo.prom").mkdir()  # cannot be replaced by a file
    path = str(tmp_path / "demo.json")
    with store.RecordUpdate(path, "demo", metrics_dir=str(textfiles)) as update:
        rr.begin(update.record, "deploy", {"version": "1", "color": "blue"}, clock.tick(), 7200)
    assert update.metrics_path is None and "were not written" in update.metrics_error
    assert [e["version"] for e in store.read(path, "demo")["releases"]] == ["1"]


def test_the_watchdog_rewrites_the_metrics_when_it_puts_traffic_back(tmp_path, clock):
    records, textfiles = tmp_path / "releases", tmp_path / "node-exporter"
    records.mkdir()
    textfiles.mkdir()
    path = str(records / "demo.json")
    with store.RecordUpdate(path, "demo") as update:
        _deploy(update.record, "1", "blue", clock)
        entry = rr.begin(update.record, "deploy", {"version": "2", "color": "green", "previous_color": "blue"},
                         clock.tick(), 7200)
        lease_mod.grant(entry, "ctl:1", "blue", "green", 10, clock.now)
    logs = []
    acted = wd.scan(str(records), lambda: clock.now + 30, lambda app, lease: "100 % on blue", logs.append,
                    metrics_dir=str(textfiles))
    assert [a[:2] for a in acted] == [("demo", entry["id"])]
    samples = parse((textfiles / "greenflow_release_demo.prom").read_text())
    assert value(samples, "greenflow_release_last_result", result="aborted") == 1
    assert value(samples, "greenflow_release_last_result_automatic") == 1
    assert value(samples, "greenflow_release_in_progress") == 0


def test_the_watchdog_refreshes_every_record_at_start(tmp_path, clock):
    records, textfiles = tmp_path / "releases", tmp_path / "node-exporter"
    records.mkdir()
    textfiles.mkdir()
    for app in ("demo", "shop"):
        with store.RecordUpdate(str(records / ("%s.json" % app)), app) as update:
            _deploy(update.record, "1", "blue", clock)
    logs = []
    assert wd.refresh_metrics(str(records), str(tmp_path / "missing"), logs.append) == []
    assert wd.refresh_metrics(str(records), str(textfiles), logs.append) == ["demo", "shop"]
    assert sorted(os.listdir(str(textfiles))) == ["greenflow_release_demo.prom", "greenflow_release_shop.prom"]
    assert logs == []
