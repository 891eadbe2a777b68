"""The nginx_upstream module end to end with a fake nginx binary (no real nginx needed)."""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
COLLECTIONS = os.path.join(REPO, "collections")
POOLS = {"blue": ["127.0.0.1:8081"], "green": ["127.0.0.1:8082"]}


def run(args, check=False, diff=False):
    payload = {"ANSIBLE_MODULE_ARGS": dict(args, _ansible_check_mode=check, _ansible_diff=diff)}
    proc = subprocess.run(
        [sys.executable, "-m", "ansible_collections.greenflow.platform.plugins.modules.nginx_upstream"],
        input=json.dumps(payload), capture_output=True, text=True, timeout=60,
        env=dict(os.environ, PYTHONPATH=COLLECTIONS),
    )
    return json.loads(proc.stdout)


@pytest.fixture
def env(tmp_path):
    """A conf dir, a main nginx.conf naming a pid file, and a fake nginx whose -t outcome we set."""
    conf_dir = tmp_path / "conf.d"
    conf_dir.mkdir()
    fake = tmp_path / "nginx"
    fake.write_text("#!/bin/sh\n[ -f %s/fail ] && { echo 'nginx: [emerg] fake failure' >&2; exit 1; }\n"
                    "echo 'nginx: configuration file test is successful' >&2\n" % tmp_path)
    fake.chmod(0o755)
    main = tmp_path / "nginx.conf"
    main.write_text("pid %s/nginx.pid;\nevents {}\n" % tmp_path)

    def args(**kw):
        base = dict(app="demo", conf_path=str(conf_dir / "greenflow-upstream-demo.conf"),
                    nginx_bin=str(fake), nginx_conf=str(main))
        base.update(kw)
        return base
    return dict(tmp=tmp_path, conf_dir=conf_dir, args=args, conf=conf_dir / "greenflow-upstream-demo.conf")


def test_bad_input_creates_nothing(env):
    res = run(env["args"](pools=POOLS, shares={"blue": 90, "green": 5}))
    assert res["failed"] and "must add up to 100, got 95" in res["msg"]
    assert os.listdir(str(env["conf_dir"])) == []


def test_read_only_without_file(env):
    res = run(env["args"]())
    assert res["changed"] is False and res["read_only"] and res["shares"] == {} and res["upstreams"] == []


def test_first_write_without_running_nginx_warns(env):
    res = run(env["args"](pools=POOLS, shares={"blue": 100}))
    assert res["changed"] and res["validated"] and res["reloaded"] is False
    assert "nginx is not running" in json.dumps(res.get("warnings", []))  # str or 2.19 event dicts
    assert res["previous_shares"] == {} and env["conf"].exists()
    res = run(env["args"](shares={"blue": 95, "green": 5}), diff=True)
    assert res["previous_shares"] == {"blue": 100, "green": 0} and res["shares"] == {"blue": 95, "green": 5}
    assert "5%    demo_green;" in res["diff"]["after"]
    assert run(env["args"](shares={"blue": 95, "green": 5}))["changed"] is False


def test_check_mode_writes_nothing(env):
    res = run(env["args"](pools=POOLS, shares={"blue": 100}), check=True, diff=True)
    assert res["changed"] and res["diff"]["before"] == "" and "demo_blue" in res["diff"]["after"]
    assert os.listdir(str(env["conf_dir"])) == []


def test_validation_failure_restores_previous_or_removes_new(env):
    (env["tmp"] / "fail").write_text("")
    res = run(env["args"](pools=POOLS, shares={"blue": 100}))
    assert res["failed"] and "[emerg] fake failure" in res["msg"] and "removed" in res["msg"]
    assert not env["conf"].exists()
    (env["tmp"] / "fail").unlink()
    run(env["args"](pools=POOLS, shares={"blue": 100}))
    before = env["conf"].read_bytes()
    os.chmod(str(env["conf"]), 0o600)
    (env["tmp"] / "fail").write_text("")
    res = run(env["args"](shares={"blue": 50, "green": 50}))
    assert res["failed"] and "restored" in res["msg"] and res["shares"] == {"blue": 100, "green": 0}
    assert env["conf"].read_bytes() == before and (os.stat(str(env["conf"])).st_mode & 0o777) == 0o600


def test_validate_false_skips_nginx_t(env):
    (env["tmp"] / "fail").write_text("")
    res = run(env["args"](pools=POOLS, shares={"blue": 100}, validate=False, reload=False))
    assert res["changed"] and res["validated"] is False and env["conf"].exists()
