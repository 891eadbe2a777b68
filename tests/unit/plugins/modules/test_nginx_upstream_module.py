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


# A fake nginx: records each -t it is asked for (the -c file and the files its includes name, with
# their content at that moment, in tested.json), then fails when a "fail" file exists.
FAKE_NGINX = """#!%(python)s
import json, os, re, sys
args = sys.argv[1:]
conf = args[args.index("-c") + 1]
text = open(conf).read()
seen = {}
for path in re.findall(r'include "([^"]+)";', text):
    seen[path] = open(path).read() if os.path.isfile(path) else None
with open(%(tmp)r + "/tested.json", "w") as f:
    json.dump({"args": args, "conf": conf, "text": text, "included": seen}, f)
if os.path.exists(%(tmp)r + "/fail"):
    sys.stderr.write("nginx: [emerg] fake failure in %%s:3\\n" %% list(seen or [conf])[-1])
    sys.exit(1)
sys.stderr.write("nginx: configuration file %%s test is successful\\n" %% conf)
"""


@pytest.fixture
def env(tmp_path):
    """A conf dir, a main nginx.conf (pid file, relative include of the conf dir) and a fake nginx
    whose -t outcome we set."""
    conf_dir = tmp_path / "conf.d"
    conf_dir.mkdir()
    fake = tmp_path / "nginx"
    fake.write_text(FAKE_NGINX % dict(python=sys.executable, tmp=str(tmp_path)))
    fake.chmod(0o755)
    main = tmp_path / "nginx.conf"
    main.write_text("pid %s/nginx.pid;\nevents {}\nhttp {\n    include conf.d/*.conf;\n}\n" % tmp_path)

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


def hidden_leftovers(env):
    """Candidates, temp files and test configs (lock files persist by design)."""
    names = os.listdir(str(env["conf_dir"])) + os.listdir(str(env["tmp"]))
    return [n for n in names if n.startswith(".") and not n.endswith(".lock")]


def test_validation_failure_leaves_the_live_file_unchanged(env):
    (env["tmp"] / "fail").write_text("")
    res = run(env["args"](pools=POOLS, shares={"blue": 100}))
    assert res["failed"] and "[emerg] fake failure" in res["msg"] and "unchanged (still absent)" in res["msg"]
    # nginx's message names the managed file, not the candidate it really read
    assert "fake failure in %s:3" % env["conf"] in res["msg"] and ".candidate" not in res["msg"]
    assert not env["conf"].exists() and hidden_leftovers(env) == []
    (env["tmp"] / "fail").unlink()
    run(env["args"](pools=POOLS, shares={"blue": 100}))
    before = env["conf"].read_bytes()
    os.chmod(str(env["conf"]), 0o600)
    (env["tmp"] / "fail").write_text("")
    res = run(env["args"](shares={"blue": 50, "green": 50}))
    assert res["failed"] and "is unchanged;" in res["msg"] and res["shares"] == {"blue": 100, "green": 0}
    assert env["conf"].read_bytes() == before and (os.stat(str(env["conf"])).st_mode & 0o777) == 0o600
    assert hidden_leftovers(env) == []


def test_nginx_t_reads_the_candidate_in_place_of_the_live_file(env):
    assert run(env["args"](pools=POOLS, shares={"blue": 100}))["changed"]
    old = env["conf"].read_text()
    res = run(env["args"](shares={"blue": 75, "green": 25}, reload=False))
    assert res["changed"] and res["validated"] and not res.get("warnings"), res
    tested = json.loads((env["tmp"] / "tested.json").read_text())
    # -c: a hidden test config next to nginx.conf (relative includes resolve from there)
    assert os.path.dirname(tested["conf"]) == str(env["tmp"])
    assert os.path.basename(tested["conf"]).startswith(".greenflow-nginx-test-")
    assert tested["args"][-1] == "-t" and "include conf.d/*.conf;" not in tested["text"]
    (candidate, content), = tested["included"].items()
    assert os.path.dirname(candidate) == str(env["conf_dir"]) and candidate.endswith(".candidate")
    assert os.path.basename(candidate).startswith(".greenflow-upstream-demo.conf.")
    # what nginx -t read is what went live, and the live file was the old one while it read it
    assert content == env["conf"].read_text() != old and "25%   demo_green;" in content
    assert hidden_leftovers(env) == []
    assert res["timings"]["total_seconds"] >= res["timings"]["validate_seconds"]


def test_leftovers_of_a_killed_run_are_removed_by_the_next(env):
    from ansible_collections.greenflow.platform.plugins.module_utils import _nginx_test_config as tc
    assert run(env["args"](pools=POOLS, shares={"blue": 100}))["changed"]
    stale = [env["conf_dir"] / ".greenflow-upstream-demo.conf.x1y2z3.candidate",
             env["conf_dir"] / ".greenflow-upstream-demo.conf.a1b2c3.tmp",
             env["tmp"] / (".greenflow-nginx-test-%s.q9w8e7" % tc.tag_for(str(env["conf"])))]
    for path in stale:
        path.write_text("upstream broken {\n")
    other = env["conf_dir"] / ".greenflow-upstream-shop.conf.x1y2z3.candidate"  # another app's
    other.write_text("")
    res = run(env["args"](shares={"blue": 100}))  # nothing to change: the cleanup still happens
    assert res["changed"] is False and not any(p.exists() for p in stale) and other.exists()
    assert "removed what an interrupted run left behind" in json.dumps(res["warnings"])


def test_a_file_nginx_does_not_include_is_written_with_a_warning(env):
    (env["tmp"] / "nginx.conf").write_text("pid %s/nginx.pid;\nevents {}\n" % env["tmp"])
    res = run(env["args"](pools=POOLS, shares={"blue": 100}))
    assert res["changed"] and res["validated"] and env["conf"].exists()
    assert "so nginx does not load it" in json.dumps(res["warnings"])
    assert json.loads((env["tmp"] / "tested.json").read_text())["conf"] == str(env["tmp"] / "nginx.conf")


def test_validate_false_skips_nginx_t(env):
    (env["tmp"] / "fail").write_text("")
    res = run(env["args"](pools=POOLS, shares={"blue": 100}, validate=False, reload=False))
    assert res["changed"] and res["validated"] is False and env["conf"].exists()


def test_a_main_config_the_module_cannot_follow_is_tested_as_it_is_with_a_warning(env):
    (env["tmp"] / "nginx.conf").write_text('events {}\nhttp { include "conf.d/*.conf; }\n')
    res = run(env["args"](pools=POOLS, shares={"blue": 100}, reload=False))
    assert res["changed"] and "could not follow the includes" in json.dumps(res["warnings"]), res
    assert json.loads((env["tmp"] / "tested.json").read_text())["conf"] == str(env["tmp"] / "nginx.conf")
    os.unlink(str(env["tmp"] / "nginx.conf"))
    res = run(env["args"](shares={"blue": 50, "green": 50}))
    assert res["failed"] and "cannot read %s" % (env["tmp"] / "nginx.conf") in res["msg"], res
    assert "is unchanged;" in res["msg"] and hidden_leftovers(env) == []
