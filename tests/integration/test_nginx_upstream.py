"""greenflow.platform.nginx_upstream against a real nginx on 127.0.0.1 (fixtures: conftest.py).

Traffic goes to 127.0.0.1 only; every load is bounded in count and time. No timing assertions
(speed is measured by bench/bench_nginx_switch.py).
"""

import json
import os
import signal
import subprocess
import threading
import time

import pytest

import nginx_fixture as nf
from ansible_collections.greenflow.platform.plugins.module_utils import _atomic_file as af
from ansible_collections.greenflow.platform.plugins.module_utils import _nginx_upstream as nu

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the test nginx runs as root (CI runs as root)")


def shares(green):
    return {"blue": 100 - green, "green": green}


def snapshot(lab):
    """What must not move when the module refuses: file bytes, directory listings of the managed
    file's directory and of nginx.conf's (lock files, which persist by design once a run has taken
    them, aside: no candidate, no test config left), nginx processes."""
    workers = lab.settle()
    with open(lab.upstream_conf, "rb") as f:
        content = f.read()
    listing = sorted(n for n in os.listdir(lab.conf_dir) if not n.endswith(".lock"))
    main_listing = sorted(os.listdir(os.path.dirname(lab.main_conf)))
    return dict(content=content, listing=listing, main_listing=main_listing, master=lab.master_pid(),
                workers=workers, reloads=lab.reload_count())


def pools_seen(lab, entries):
    """Pool of each logged request, from the upstream address nginx actually used."""
    where = {}
    for colour, addrs in lab.pools.items():
        for a in addrs:
            where[a] = colour
    return [where.get(e["upstream_addr"].split(",")[-1].strip(), "?") for e in entries]


# ----------------------------------------------------------------- main path through ansible


def test_main_path_through_ansible(nginx_lab):
    lab = nginx_lab
    args = lab.module_args(pools=lab.pools, shares=shares(5))
    before = snapshot(lab)

    res = nf.run_ansible(args, check=True, diff=True)
    assert res["changed"] is True and res["reloaded"] is False, res
    assert "5%    demo_green;" in res["diff"][0]["after"] if isinstance(res["diff"], list) \
        else "5%    demo_green;" in res["diff"]["after"]
    assert snapshot(lab) == before, "check mode touched something"

    res = nf.run_ansible(args)
    assert res["changed"] is True and res["reloaded"] is True and res["validated"] is True, res
    assert res["previous_shares"] == {"blue": 100, "green": 0}
    assert res["shares"] == {"blue": 95, "green": 5}
    assert res["proxy_pass_target"] == "http://$demo_backend"
    assert res["upstreams"] == ["demo_blue", "demo_green"]
    assert nu.parse_state(open(lab.upstream_conf).read())["shares"] == {"blue": 95, "green": 5}
    reloads, workers = lab.reload_count(), lab.worker_pids()

    res = nf.run_ansible(args)
    assert res["changed"] is False and res["reloaded"] is False, res
    assert lab.reload_count() == reloads and lab.worker_pids() == workers

    res = nf.run_ansible(lab.module_args())  # neither shares nor pools: read only
    assert res["changed"] is False and res["read_only"] is True
    assert res["shares"] == {"blue": 95, "green": 5} and res["pools"] == lab.pools
    assert lab.reload_count() == reloads


# ----------------------------------------------------------------- share accuracy


@pytest.mark.parametrize("green,requests", [(0, 2000), (5, 2000), (25, 10000), (50, 10000), (75, 10000),
                                            (95, 2000), (100, 2000)])
def test_share_accuracy(nginx_lab, green, requests):
    """Observed share within 2 points; a pool at 0 % gets nothing; every request lands exactly
    where split_clients' hash of its request_id says.

    split_clients on $request_id is a per-request random split: over n requests the observed
    share has a standard deviation of sqrt(p(1-p)/n) points. At 5/95 % that is 0.49 points over
    2,000 requests (2 points = 4 sigma); at 25-75 % it is up to 1.1 points, so a 2-point bound over
    2,000 would fail ~7 % of runs by chance alone: there we send 10,000 (0.5 points, 4 sigma).
    """
    lab = nginx_lab
    res = nf.run_module(lab.module_args(shares=shares(green)))
    assert not res.get("failed"), res
    offset = lab.log_offset()
    result = nf.fire(lab.url, requests, threads=4, max_seconds=180)
    assert result.requests == requests and result.failed == 0, result.summary()

    entries, _ = lab.read_access_log_until(offset, requests)
    assert len(entries) == requests
    seen = pools_seen(lab, entries)
    for colour, target in (("green", green), ("blue", 100 - green)):
        observed = 100.0 * seen.count(colour) / requests
        assert abs(observed - target) <= 2.0, (colour, target, observed)
        assert abs(result.share(colour) - observed) < 1e-9  # client's X-Pool agrees with the log
        if target == 0:
            assert seen.count(colour) == 0 and result.by_pool[colour] == 0
    assert "?" not in seen

    entries_cfg = nu.split_entries("demo", shares(green))
    mismatched = [e for e in entries if nu.split_pick(e["request_id"], entries_cfg) != e["upstream_name"]]
    assert not mismatched, mismatched[:3]
    first = seen[:2000]
    print("green %d%%: observed %.2f%% over %d requests (first 2,000: %.2f%%)"
          % (green, 100.0 * seen.count("green") / requests, requests, 100.0 * first.count("green") / len(first)))


# ----------------------------------------------------------------- switches under load


def test_fifty_switches_under_load_drop_nothing(nginx_lab):
    lab = nginx_lab
    steps = [5, 25, 50, 75, 95, 100, 0]
    offset = lab.log_offset()
    reloads0 = lab.reload_count()
    keepalive = nf.Load(lab.url, threads=3, keepalive=True, max_requests=400000, max_seconds=240).start()
    fresh = nf.Load(lab.url, threads=1, keepalive=False, max_requests=100000, max_seconds=240).start()
    idle = nf.Load(lab.url, threads=2, keepalive=True, max_requests=20000, max_seconds=240, pause=0.05).start()
    results = []
    try:
        time.sleep(0.3)
        for i in range(50):
            results.append(nf.run_module(lab.module_args(shares=shares(steps[i % len(steps)]))))
        time.sleep(0.3)
    finally:
        ka, fr, idl = keepalive.stop(), fresh.stop(), idle.stop()
    bad = [r.get("msg") for r in results if r.get("failed") or not r.get("reloaded")]
    assert not bad, bad
    assert lab.reload_count() - reloads0 == 50

    entries, _ = lab.read_access_log(offset)
    nginx_5xx = [e for e in entries if int(e["status"]) >= 500]
    print("\n50 switches: keep-alive %s\n fresh %s\n idle keep-alive %s\n nginx 5xx: %d of %d logged"
          % (ka.summary(), fr.summary(), idl.summary(), len(nginx_5xx), len(entries)))
    assert not nginx_5xx, nginx_5xx[:3]
    for r in (ka, fr, idl):
        assert r.requests > 0
        assert r.failed == 0 and not r.errors, r.summary()
    # fresh connections never need a retry: a reload drops no request there
    assert fr.stale_retries == 0


# ----------------------------------------------------------------- failures roll back


def _assert_serving_only(lab, colour, n=300):
    res = nf.fire(lab.url, n, threads=2)
    assert res.failed == 0 and set(res.by_pool) == {colour}, res.summary()


def test_bad_directive_elsewhere_keeps_old_config_live(nginx_lab):
    lab = nginx_lab
    before = snapshot(lab)
    bad = os.path.join(lab.vhost_dir, "broken.conf")
    with open(bad, "w") as f:
        f.write("bogus_directive on;\n")
    try:
        res = nf.run_module(lab.module_args(shares=shares(50)))
        assert res.get("failed") and res["changed"] is False, res
        assert "nginx -t failed" in res["msg"] and 'unknown directive "bogus_directive"' in res["msg"]
        assert "The new version was not put in place: %s is unchanged;" % lab.upstream_conf in res["msg"]
        assert snapshot(lab) == before
        _assert_serving_only(lab, "blue")
    finally:
        os.unlink(bad)
    res = nf.run_module(lab.module_args(shares=shares(100)))
    assert res["reloaded"] is True
    _assert_serving_only(lab, "green")


def test_candidate_failing_nginx_t_leaves_the_live_file_byte_identical(nginx_lab):
    lab = nginx_lab
    before = snapshot(lab)
    mtime = os.stat(lab.upstream_conf).st_mtime_ns
    pools = dict(lab.pools, green=["nosuchhost.invalid:8080"])
    res = nf.run_module(lab.module_args(pools=pools, shares=shares(50)))
    assert res.get("failed") and "host not found in upstream" in res["msg"], res
    # nginx's message names the managed file (the candidate stood in its place)
    assert "in %s:" % lab.upstream_conf in res["msg"] and ".candidate" not in res["msg"], res["msg"]
    assert snapshot(lab) == before and os.stat(lab.upstream_conf).st_mtime_ns == mtime
    _assert_serving_only(lab, "blue")


SLOW_NGINX_T = """#!/bin/sh
# nginx whose -t takes a minute (the test kills the module meanwhile); anything else is nginx itself
case " $* " in
    *" -t "*) : > %(started)s; sleep 60 ;;
esac
exec %(nginx)s "$@"
"""


def test_killed_during_a_slow_nginx_t_the_live_file_stays_and_the_next_run_cleans_up(nginx_lab, tmp_path):
    lab = nginx_lab
    before = snapshot(lab)
    started = tmp_path / "nginx-t-started"
    slow = tmp_path / "nginx-slow"
    slow.write_text(SLOW_NGINX_T % dict(started=started, nginx=lab.nginx))
    slow.chmod(0o755)
    proc = nf.start_module(lab.module_args(shares=shares(50), nginx_bin=str(slow)))
    try:
        deadline = time.monotonic() + 30
        while not started.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert started.exists(), "the module never reached nginx -t (rc %s)" % proc.poll()
        # inside nginx -t: the candidate is written, the live file still the old one
        candidates = [n for n in os.listdir(lab.conf_dir) if n.endswith(".candidate")]
        assert len(candidates) == 1 and candidates[0].startswith(".greenflow-upstream-demo.conf.")
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(10) == -signal.SIGKILL
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the wrapper still sleeping in our nginx -t
        except OSError:
            pass
        proc.wait(10)

    with open(lab.upstream_conf, "rb") as f:
        assert f.read() == before["content"]
    # the killed run's leftovers: hidden, so nginx's includes never read them
    assert sorted(os.listdir(lab.conf_dir)) != before["listing"]
    assert [n for n in os.listdir(lab.conf_dir) if n.endswith(".candidate")] == candidates
    # what the next reload or restart would load is valid, and nginx still serves the old split
    check = subprocess.run([lab.nginx, "-t", "-c", lab.main_conf, "-p", lab.prefix], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    assert lab.master_pid() == before["master"] and lab.reload_count() == before["reloads"]
    _assert_serving_only(lab, "blue")

    res = nf.run_module(lab.module_args(shares=shares(50)))
    assert res["changed"] and res["validated"] and res["reloaded"], res
    assert "removed what an interrupted run left behind" in json.dumps(res.get("warnings")), res
    assert candidates[0] in json.dumps(res["warnings"])
    after = snapshot(lab)
    assert after["listing"] == before["listing"] and after["main_listing"] == before["main_listing"]
    res = nf.fire(lab.url, 400, threads=2)
    assert res.failed == 0 and set(res.by_pool) == {"blue", "green"}, res.summary()


def test_reload_failure_restores_previous_file(nginx_lab):
    """A change that passes nginx -t but that the master cannot load (a vhost on a port that is
    already taken): the module notices no new workers, puts the file back and fails."""
    lab = nginx_lab
    res = nf.run_module(lab.module_args(shares=shares(25)))
    assert res["reloaded"]
    before = snapshot(lab)
    taken = lab.backends["blue"][0].port
    vhost = os.path.join(lab.vhost_dir, "clash.conf")
    with open(vhost, "w") as f:
        f.write("server { listen 127.0.0.1:%d; return 204; }\n" % taken)
    try:
        res = nf.run_module(lab.module_args(shares=shares(75), reload_timeout=3))
        assert res.get("failed"), res
        assert "did not start workers" in res["msg"] and "restored" in res["msg"], res["msg"]
        assert open(lab.upstream_conf, "rb").read() == before["content"]
    finally:
        os.unlink(vhost)
    offset = lab.log_offset()
    nf.fire(lab.url, 1000, threads=2)
    entries, _ = lab.read_access_log_until(offset, 1000)
    green = pools_seen(lab, entries).count("green") / 10.0
    assert 15 <= green <= 35, green  # still the 25 % split, not 75 %


# ----------------------------------------------------------------- bad input


BAD_INPUTS = [
    ("sum", dict(shares={"blue": 90, "green": 5}), "must add up to 100, got 95"),
    ("negative", dict(shares={"blue": 110, "green": -10}), "between 0 and 100"),
    ("over100", dict(shares={"blue": 101, "green": 0}), "between 0 and 100 percent, got 101"),
    ("colour", dict(shares={"blue": 50, "red": 50}), "unknown colour 'red'"),
    ("pool_colour", dict(pools={"purple": ["127.0.0.1:1"]}, shares={"blue": 100}), "unknown colour 'purple'"),
    ("empty_pool", "EMPTY_GREEN", "shares.green is 50% but pools.green has no servers"),
    ("hostport", dict(pools={"blue": ["127.0.0.1"], "green": []}, shares={"blue": 100}), "is not host:port"),
    ("port", dict(pools={"blue": ["127.0.0.1:70000"]}, shares={"blue": 100}), "is not host:port"),
    ("app", dict(app="Bad-App", shares={"blue": 100}), "not a valid name"),
]


@pytest.mark.parametrize("name,args,msg", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_changes_nothing(nginx_lab, name, args, msg):
    lab = nginx_lab
    nf.run_module(lab.module_args(shares=shares(5)))
    before = snapshot(lab)
    if args == "EMPTY_GREEN":
        args = dict(pools={"blue": lab.pools["blue"], "green": []}, shares=shares(50))
    res = nf.run_module(lab.module_args(**args))
    assert res.get("failed") and msg in res["msg"], res
    assert snapshot(lab) == before


def test_unwritable_conf_dir_changes_nothing(nginx_lab):
    lab = nginx_lab
    before = snapshot(lab)
    if subprocess.run(["chattr", "+i", lab.conf_dir], capture_output=True).returncode != 0:
        pytest.skip("chattr +i not supported here")
    try:
        res = nf.run_module(lab.module_args(shares=shares(50)))
    finally:
        subprocess.run(["chattr", "-i", lab.conf_dir], check=True)
    assert res.get("failed") and "is not writable" in res["msg"], res
    assert snapshot(lab) == before
    res = nf.run_module(lab.module_args(conf_path=os.path.join(lab.prefix, "missing", "x.conf"), shares=shares(0)))
    assert res.get("failed") and "does not exist" in res["msg"], res
    _assert_serving_only(lab, "blue")


def test_foreign_file_is_never_overwritten(nginx_lab):
    lab = nginx_lab
    path = os.path.join(lab.conf_dir, "hand-written.conf")
    with open(path, "w") as f:
        f.write("# mine\n")
    res = nf.run_module(lab.module_args(conf_path=path, pools=lab.pools, shares=shares(0)))
    assert res.get("failed") and "refusing to overwrite" in res["msg"]
    assert open(path).read() == "# mine\n"


# ----------------------------------------------------------------- check mode, diff, idempotency


def test_check_mode_and_diff(nginx_lab):
    lab = nginx_lab
    before = snapshot(lab)
    res = nf.run_module(lab.module_args(shares=shares(50)), check=True, diff=True)
    assert res["changed"] is True and res["reloaded"] is False
    assert res["previous_shares"] == {"blue": 100, "green": 0} and res["shares"] == shares(50)
    assert "*     demo_blue;" in res["diff"]["before"] and "50%   demo_green;" in res["diff"]["after"]
    assert res["diff"]["before_header"] == lab.upstream_conf
    assert snapshot(lab) == before


def test_idempotent_no_reload(nginx_lab):
    lab = nginx_lab
    args = lab.module_args(pools=lab.pools, shares=shares(50), keepalive=16)
    first = nf.run_module(args)
    assert first["changed"] and first["reloaded"]
    before = snapshot(lab)
    mtime = os.stat(lab.upstream_conf).st_mtime_ns
    second = nf.run_module(args, diff=True)
    assert second["changed"] is False and second["reloaded"] is False and "diff" not in second
    assert snapshot(lab) == before and os.stat(lab.upstream_conf).st_mtime_ns == mtime


def test_new_app_file_with_empty_green_and_then_removed_on_failure(nginx_lab):
    """First install of a second app (no file yet): blue only, green empty at 0 %."""
    lab = nginx_lab
    path = os.path.join(lab.conf_dir, "greenflow-upstream-shop.conf")
    res = nf.run_module(lab.module_args(app="shop", conf_path=path, pools={"blue": lab.pools["blue"]},
                                        shares={"blue": 100}))
    assert res["changed"] and res["reloaded"] and res["previous_shares"] == {}, res
    assert res["upstreams"] == ["shop_blue"] and "upstream shop_green" not in open(path).read()
    # a first install that nginx rejects leaves no file behind
    path2 = os.path.join(lab.conf_dir, "greenflow-upstream-cart.conf")
    res = nf.run_module(lab.module_args(app="cart", conf_path=path2, pools={"blue": ["nosuchhost.invalid:1"]},
                                        shares={"blue": 100}))
    assert res.get("failed") and "unchanged (still absent)" in res["msg"] and not os.path.exists(path2), res
    assert not [n for n in os.listdir(lab.conf_dir)
                if n.startswith(".greenflow-upstream-cart.conf.") and not n.endswith(".lock")]


def test_lock_serializes_runs_on_same_app(nginx_lab):
    lab = nginx_lab
    lock = af.FileLock(af.lock_path_for(lab.upstream_conf), timeout=5).acquire()
    try:
        res = nf.run_module(lab.module_args(shares=shares(50), lock_timeout=1))
        assert res.get("failed") and "another run holds the lock" in res["msg"], res
        threading.Timer(1.0, lock.release).start()
        res = nf.run_module(lab.module_args(shares=shares(50), lock_timeout=20))
        assert res["changed"] and res["reloaded"], res
    finally:
        lock.release()


# ----------------------------------------------------------------- app names with '-'


def test_an_app_name_with_a_hyphen_works_end_to_end(nginx_lab_factory):
    """'my-shop' passes the role's check, so it must deploy: nginx names write '-' as '_'."""
    lab = nginx_lab_factory(app="my-shop")  # its vhost proxies to $my_shop_backend
    res = nf.run_ansible(lab.module_args(pools=lab.pools, shares=shares(50)))
    assert not res.get("failed"), res
    assert res["changed"] and res["reloaded"] and res["validated"], res
    assert res["proxy_pass_target"] == "http://$my_shop_backend"
    assert res["upstreams"] == ["my_shop_blue", "my_shop_green"]
    assert nu.parse_state(open(lab.upstream_conf).read())["app"] == "my-shop"

    offset = lab.log_offset()
    result = nf.fire(lab.url, 200, threads=2, max_seconds=60)
    assert result.requests == 200 and result.failed == 0, result.summary()
    entries, _ = lab.read_access_log_until(offset, 200)
    assert set(pools_seen(lab, entries)) == {"blue", "green"}

    # 'my_shop' would get the same nginx names: refused, the file and nginx untouched
    before = snapshot(lab)
    clash = nf.run_ansible(dict(lab.module_args(shares=shares(0)), app="my_shop"))
    assert clash.get("failed") and "both become 'my_shop' in nginx names" in clash["msg"], clash
    assert snapshot(lab) == before


def test_a_switch_after_the_callers_deadline_is_refused_and_changes_nothing(nginx_lab):
    lab = nginx_lab
    before = open(lab.upstream_conf).read()
    reloads = lab.reload_count()
    late = nf.run_module(lab.module_args(shares={"blue": 75, "green": 25}, not_after=time.time() - 2))
    assert late.get("failed") and "lease ran out" in late["msg"] and "refused" in late["msg"], late
    assert open(lab.upstream_conf).read() == before and lab.reload_count() == reloads
    assert not [f for f in os.listdir(lab.conf_dir) if f.startswith(".")  and "candidate" in f]
    on_time = nf.run_module(lab.module_args(shares={"blue": 75, "green": 25}, not_after=time.time() + 30))
    assert on_time.get("changed") and on_time["shares"] == {"blue": 75, "green": 25}, on_time
