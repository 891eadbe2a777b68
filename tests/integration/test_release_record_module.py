"""The release_record module run by Ansible on this machine, against a record file in a temp dir."""
import json
import os
import subprocess
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ANSIBLE = os.path.join(os.path.dirname(sys.executable), "ansible")


def _run(path, check=False, **args):
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO_ROOT, "ansible.cfg"),
               ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json")
    # the release metrics beside the record (never the machine's own node exporter directory)
    args = dict(dict(metrics_dir=os.path.join(os.path.dirname(str(path)), "node-exporter")), **args)
    args.update(app="demo", path=str(path))
    cmd = [ANSIBLE, "localhost", "-i", "localhost,", "-c", "local", "-m", "greenflow.platform.release_record",
           "-e", "ansible_python_interpreter=" + sys.executable, "-a", json.dumps(args)] + (["--check"] if check else [])
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
    result = json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]
    return result


def test_deploy_lock_finish_and_read(tmp_path):
    record = tmp_path / "releases" / "demo.json"
    began = _run(record, action="begin", version="1", color="blue", user="ci")
    assert began["changed"] and began["entry"]["outcome"] == "in_progress"

    blocked = _run(record, action="begin", version="2", color="green")
    assert blocked.get("failed") and "still in progress" in blocked["msg"]

    _run(record, action="finish", id=began["entry"]["id"], outcome="succeeded")
    second = _run(record, action="begin", version="2", color="green")
    _run(record, action="finish", id=second["entry"]["id"], outcome="succeeded",
         timeline=[{"step": 1, "share": 5, "verdict": "pass"}])

    read = _run(record)
    assert read["changed"] is False
    assert read["live"]["version"] == "2" and read["rollback_target"]["version"] == "1"
    assert read["live"]["timeline"][0]["verdict"] == "pass"
    assert "(live)" in read["history_table"][1]


def test_check_mode_writes_nothing(tmp_path):
    record = tmp_path / "demo.json"
    result = _run(record, check=True, action="begin", version="1", color="blue")
    assert result["changed"] and not record.exists()


def test_a_damaged_record_is_refused_and_left_as_it_was(tmp_path):
    record = tmp_path / "demo.json"
    record.write_text("{broken")
    result = _run(record, action="begin", version="1", color="blue")
    assert result.get("failed") and "not valid JSON" in result["msg"]
    assert record.read_text() == "{broken"


def test_plan_with_nginx_shares_and_env_values_only_where_rollback_needs_them(tmp_path):
    record = tmp_path / "demo.json"
    for version, color in (("1", "blue"), ("2", "green")):
        began = _run(record, action="begin", version=version, color=color, env={"FEATURE_X": version})
        assert began["entry"]["env_keys"] == ["FEATURE_X"] and "env" not in began["entry"]
        _run(record, action="finish", id=began["entry"]["id"], outcome="succeeded")

    read = _run(record)
    assert "plan" not in read and "env" not in read["live"] and "env" not in read["history"][0]

    plan = _run(record, nginx_shares={"blue": 0, "green": 100})["plan"]
    assert plan["kind"] == "normal" and (plan["from_color"], plan["to_color"]) == ("green", "blue")
    assert plan["rollback"]["target"]["version"] == "1" and plan["rollback"]["target"]["env"] == {"FEATURE_X": "1"}

    split = _run(record, nginx_shares={"blue": 25, "green": 75})["plan"]
    assert split["kind"] == "interrupted" and split["deploy_allowed"] is False
    assert split["rollback"]["restore_live"] and split["rollback"]["target"]["version"] == "2"


def test_a_secret_in_env_is_refused_on_read_and_begin_and_never_stored(tmp_path):
    record = tmp_path / "demo.json"
    for action in ("read", "begin"):
        result = _run(record, action=action, version="1", color="blue", env={"DB_PASSWORD": "hunter2"})
        assert result.get("failed") and "DB_PASSWORD" in result["msg"] and "app_release_secrets" in result["msg"]
        assert "hunter2" not in result["msg"]
    assert not record.exists()


def test_a_deploy_plans_and_locks_in_one_step(tmp_path):
    record = tmp_path / "releases" / "demo.json"
    first = _run(record, action="begin", version="1", user="ci", nginx_shares={})
    assert first["entry"]["color"] == "blue" and first["plan"]["kind"] == "first_release", first
    _run(record, action="finish", id=first["entry"]["id"], outcome="succeeded")

    # the plan picks the colours: live 1 on blue, so the next deploy goes to green
    second = _run(record, action="begin", version="2", user="ci", nginx_shares={"blue": 100, "green": 0})
    assert (second["entry"]["color"], second["entry"]["previous_color"]) == ("green", "blue"), second
    assert second["plan"]["kind"] == "normal"      # the plan as it was before this entry
    _run(record, action="finish", id=second["entry"]["id"], outcome="succeeded")
    before = record.read_text()

    # nginx split (an interrupted cutover): refused, nothing changed
    split = _run(record, action="begin", version="3", user="ci", nginx_shares={"blue": 25, "green": 75})
    assert split.get("failed") and "cutover to blue stopped at 25 %" in split["msg"], split
    assert "Nothing was changed" in split["msg"] and record.read_text() == before
    # a colour that contradicts the plan: refused
    wrong = _run(record, action="begin", version="3", color="green", nginx_shares={"green": 100})
    assert wrong.get("failed") and "color green was asked for, but the plan says blue" in wrong["msg"], wrong
    assert record.read_text() == before


def test_each_change_rewrites_the_release_metrics_but_no_lease_renewal(tmp_path):
    record = tmp_path / "releases" / "demo.json"
    textfiles = tmp_path / "node-exporter"
    prom = textfiles / "greenflow_release_demo.prom"
    first = _run(record, action="begin", version="1", color="blue", metrics_dir=str(textfiles))
    assert first["metrics_path"] == "" and not textfiles.exists()   # no directory: no metrics, no error
    _run(record, action="finish", id=first["entry"]["id"], outcome="succeeded")
    textfiles.mkdir()
    began = _run(record, action="begin", version="2", color="green", previous_color="blue",
                 metrics_dir=str(textfiles))
    assert began["metrics_path"] == str(prom)
    assert 'greenflow_release_in_progress{app="demo"} 1' in prom.read_text()
    prom.unlink()
    leased = _run(record, action="lease", id=began["entry"]["id"], holder="ci:1", metrics_dir=str(textfiles))
    assert leased["changed"] and leased["metrics_path"] == "" and not prom.exists()
    _run(record, action="release", id=began["entry"]["id"], holder="ci:1", metrics_dir=str(textfiles))
    done = _run(record, action="finish", id=began["entry"]["id"], outcome="failed", metrics_dir=str(textfiles),
                reason="automatic rollback after 100 % (the watch broke): gates")
    assert done["metrics_path"] == str(prom)
    text = prom.read_text()
    assert 'greenflow_release_info{app="demo",role="live",version="1",color="blue"} 1' in text
    assert 'greenflow_release_last_result{app="demo",result="rolled_back"} 1' in text
    assert 'greenflow_release_last_result_automatic{app="demo"} 1' in text
    assert _run(record, metrics_dir=str(textfiles))["metrics_path"] == ""   # a read writes nothing


def test_a_versions_migration_is_decided_under_the_lock_and_recorded(tmp_path):
    record = tmp_path / "demo.json"
    first = _run(record, action="begin", version="2", color="blue", migrate=True, migrate_command=["app", "migrate"])
    assert first["migration"]["run"] is True and first["entry"]["migration"]["status"] == "planned"
    entry_id = first["entry"]["id"]
    running = _run(record, action="migration", id=entry_id,
                   migration={"status": "running", "restore_point": {"lsn": "0/3000060", "backup": "20261202-100000F"}})
    assert running["entry"]["migration"]["status"] == "running"
    _run(record, action="migration", id=entry_id, migration={"status": "failed", "exit_code": 1, "output": "boom"})
    _run(record, action="finish", id=entry_id, outcome="failed")
    # a failed migration of this version: the next begin is refused and writes nothing
    before = record.read_text()
    refused = _run(record, action="begin", version="2", color="blue", migrate=True)
    assert refused.get("failed") and "release_migrate_rerun=true" in refused["msg"]
    assert record.read_text() == before
    rerun = _run(record, action="begin", version="2", color="blue", migrate=True, migrate_rerun=True,
                 migrate_reversible=False)
    assert rerun["migration"]["run"] and rerun["migration"]["previous"] == entry_id
    _run(record, action="migration", id=rerun["entry"]["id"], migration={"status": "succeeded"})
    _run(record, action="finish", id=rerun["entry"]["id"], outcome="succeeded")
    # the same version once more: skipped, and where it ran is noted
    again = _run(record, action="begin", version="2", color="green", migrate=True)
    assert again["migration"]["run"] is False and again["entry"]["migration"] == {
        "status": "skipped", "command": [], "reversible": True, "ran_in": rerun["entry"]["id"]}
    bad = _run(record, action="migration", id=again["entry"]["id"], migration={"status": "done"})
    assert bad.get("failed") and "status is one of" in bad["msg"]
