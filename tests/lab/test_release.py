"""Releases end to end on a private lab, under load: deploy.yml (good, bad, unhealthy), rollback.yml,
history.yml and the webhook.

    .venv/bin/pytest -q -s tests/lab/test_release.py        # about 10-12 minutes

The session brings up its own lab (prefix ci-rel-, loopback ports 45281 / 45644), provisions the swarm
and the load balancer, loads the demo images, and removes the lab at the end. The load generator
(tests/lab/loadgen.py) sends 250 requests/s to https://127.0.0.1:45644/version during each release;
every load is bounded in requests and seconds. Figures are printed (-s), never asserted on time.
With GREENFLOW_LAB_REUSE=1 it runs on an already provisioned lab instead (see conftest.py).
"""
import hashlib
import json
import os
import re
import secrets
import signal
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from loadgen import LoadGen
from shared_lab import database_turn

pytestmark = pytest.mark.lab

PREFIX = "ci-rel-"
PORTS = (45281, 45644)  # other lab tests use other ports: keep them distinct
RATE = 250
THREADS = 32
MIN_RATE = 200
APP = "demo"
# short cutover settings: 4 s per step, judged on at least 20 requests of the new colour
FAST = ["-e", "cutover_step_seconds=4", "-e", "cutover_min_requests=20"]
# deploys that only set up a state for the next test: one step straight to 100 %
QUICK = ["-e", '{"cutover_steps": [100]}', "-e", "cutover_step_seconds=2", "-e", "cutover_min_requests=5"]


# The backup gate (deploy.yml) reads this status file on the backup host, written by the tests (a fresh
# verified backup unless a test says otherwise); inventories/lab/group_vars/all/pg_backup.yml picks it up.
BACKUP_HOST = "pg-replica-1"
BACKUP_STATUS = "/tmp/greenflow-release-tests-backup-status.json"


def write_backup_status(lab, age_hours=1.0, last_result="ok", error=None):
    """A status document as greenflow-pgbackrest writes it: the newest verified backup `age_hours` old."""
    stop = int(time.time() - age_hours * 3600)
    label = time.strftime("%Y%m%d-%H%M%SF", time.gmtime(stop))
    status = {"action": "backup", "stanza": "main", "result": "failed" if error else "ok",
              "finished_epoch": int(time.time()),
              "last_backup": {"result": last_result, "type": "diff", "label": label,
                              "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stop - 60))},
              "newest_verified": {"label": label, "type": "full", "stop": stop}, "verified": [label]}
    if error:
        status["error"] = error
    write = ["docker", "exec", "-i", lab.container(BACKUP_HOST), "sh", "-c", "cat > %s" % BACKUP_STATUS]
    subprocess.run(write, input=json.dumps(status), text=True, check=True, timeout=30)
    return label


class Webhook:
    """A Slack-compatible webhook receiver on 127.0.0.1: keeps every JSON body posted to it."""

    def __init__(self):
        events = self.events = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                events.append(json.loads(body or b"{}"))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d/hook" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def since(self, n):
        return [(e.get("event"), e.get("version")) for e in self.events[n:]]


@pytest.fixture(scope="session")
def release_lab(prefixed_lab):
    lab = prefixed_lab(PREFIX, PORTS)
    started = time.monotonic()
    if lab.reused:  # provisioned by site.yml already (GREENFLOW_LAB_REUSE=1)
        lab.playbook("lab/load-images.yml")
    else:
        # the load balancer does not need the swarm provisioned (only its hosts' addresses): side by side
        lb = lab.playbook_background("playbooks/lb.yml")
        # the database of the migration tests (the demo app's PostgreSQL mode): the primary alone, waited
        # for by the release_db fixture
        lab.db_provisioning = lab.playbook_background("playbooks/postgresql.yml", "--limit", "pg_primary")
        lab.playbook("playbooks/swarm.yml")
        lab.playbook("lab/load-images.yml")
        lab.wait_background(lb)
        # node exporter and greenflow-container-stats on the swarm nodes: the cutover's CPU and memory lines
        lab.playbook("playbooks/monitoring.yml", "--limit", "swarm_managers:swarm_workers")
    lab.webhook = Webhook()
    lab.hook = ["-e", "release_webhook_url=%s" % lab.webhook.url]
    lab.env["GREENFLOW_LAB_BACKUP_STATUS_FILE"] = BACKUP_STATUS
    lab.backup_label = write_backup_status(lab)
    # light load: on a reused lab with a live release, this deploy is a cutover that needs requests to judge
    with LoadGen(lab.url("/version"), rate=60, threads=4, max_requests=60 * 300, max_seconds=300):
        first = lab.playbook("playbooks/deploy.yml", "-e", "release_version=1", *QUICK, *lab.hook)
    # On a first release the light load above reached blue's servers while they started: nginx counts them as
    # failed for its fail_timeout, and a fast deploy ends inside that window. The tests start once v1 answers.
    deadline = time.monotonic() + 60
    while LoadGen(lab.url("/version"), rate=50, threads=1, max_requests=5, max_seconds=10).start().wait().failures():
        assert time.monotonic() < deadline, "v1 does not answer through the load balancer 60 s after its release"
        time.sleep(1)
    print("\n[release lab] provisioned and v1 deployed in %.0f s (deploy v1 %.0f s)"
          % (time.monotonic() - started, first.seconds))
    yield lab
    lab.webhook.server.shutdown()
    db = getattr(lab, "db_provisioning", None)
    if db is not None and db.poll() is None:  # no migration test ran: do not leave it behind
        os.killpg(db.pid, signal.SIGKILL)
        db.wait(timeout=60)


def record(lab):
    return json.loads(lab.exec("lb-1", "cat", "/var/lib/greenflow/releases/%s.json" % APP))


def last_entry(lab):
    return record(lab)["releases"][-1]


def nginx_shares(lab):
    text = lab.exec("lb-1", "cat", "/etc/nginx/conf.d/greenflow-upstream-%s.conf" % APP)
    state = json.loads(re.search(r"^# greenflow-state: (.*)$", text, re.M).group(1))
    return dict((c, s) for c, s in state["shares"].items() if s)


def replicas(lab, colour):
    return int(lab.exec("swarm-manager-1", "docker", "service", "inspect", "%s-%s" % (APP, colour),
                        "--format", "{{.Spec.Mode.Replicated.Replicas}}").strip())


def versions_now(lab, n=20):
    """What n fresh requests through the load balancer answer (after a release)."""
    load = LoadGen(lab.url("/version"), rate=50, threads=2, max_requests=n, max_seconds=20).start().wait()
    assert not load.failures(), load.summary()
    return dict(load.versions())


def run_under_load(lab, playbook, *args, check=True):
    load = LoadGen(lab.url("/version"), rate=RATE, threads=THREADS, max_requests=RATE * 400,
                   max_seconds=400)
    load.start()
    time.sleep(2)  # steady traffic before the release starts
    try:
        started = time.monotonic() - load.t0  # on the load's clock
        proc = lab.playbook(playbook, *args, check=False)
        proc.started_on_load = started
        time.sleep(2)  # and after it
    finally:
        load.stop()
    if check and proc.returncode != 0:
        pytest.fail("%s failed:\n%s" % (playbook, proc.stdout[-5000:]))
    summary = load.summary()
    print("\n[%s %s] rc %d, %.1f s; load: %s" % (playbook, " ".join(args), proc.returncode,
                                                 proc.seconds, json.dumps(summary)))
    assert summary["rate"] >= MIN_RATE, "the load generator did not reach %d req/s" % MIN_RATE
    return proc, load, summary


def test_first_release_puts_v1_on_blue(release_lab):
    lab = release_lab
    assert versions_now(lab) == {"1": 20}
    entry = last_entry(lab)
    assert (entry["action"], entry["version"], entry["color"], entry["outcome"]) == ("deploy", "1", "blue", "succeeded")
    assert nginx_shares(lab) == {"blue": 100}
    assert lab.webhook.since(0) == [("start", "1"), ("success", "1")]


@pytest.mark.parametrize("case", ["stale", "failed", "missing"])
def test_the_backup_gate_refuses_a_release_without_a_fresh_verified_backup(release_lab, case):
    lab = release_lab
    before = (record(lab), nginx_shares(lab), replicas(lab, "blue"))
    hooks = len(lab.webhook.events)
    if case == "stale":
        label = write_backup_status(lab, age_hours=30)
        why = r"the newest verified backup %s finished \S+, 30\.0 h ago: older than 26 h" % label
    elif case == "failed":
        write_backup_status(lab, last_result="failed", error="WAL archiving does not work (pgbackrest check failed)")
        why = r"the last backup run \(diff, started \S+\) failed: WAL archiving does not work"
    else:
        lab.exec(BACKUP_HOST, "rm", "-f", BACKUP_STATUS)
        why = r"there is no backup status on the repository host: no backup has run there yet \(%s does not exist\)" % BACKUP_STATUS
    try:
        proc = lab.playbook("playbooks/deploy.yml", "-e", "release_version=2", *QUICK, *lab.hook, check=False)
    finally:
        lab.backup_label = write_backup_status(lab)
    out = " ".join(proc.stdout.split())  # the callback wraps long lines
    print("\n[backup gate, %s] rc %d in %.1f s" % (case, proc.returncode, proc.seconds))
    assert proc.returncode != 0
    assert "No release without a backup to go back to" in out, proc.stdout[-3000:]
    assert re.search(why, out), out[-3000:]
    assert "Nothing was changed; no traffic moved" in out
    # nothing moved, nothing started, nothing recorded, nobody told
    assert (record(lab), nginx_shares(lab), replicas(lab, "blue")) == before
    assert lab.webhook.since(hooks) == []


def test_good_release_v1_to_v2_drops_no_request(release_lab):
    lab = release_lab
    hooks = len(lab.webhook.events)
    proc, load, summary = run_under_load(lab, "playbooks/deploy.yml", "-e", "release_version=2", *FAST, *lab.hook)
    assert summary["failed"] == 0, summary
    assert summary["versions"].get("1") and summary["versions"].get("2"), summary
    for step in (1, 2, 3, 4):
        assert re.search(r"step %d/4: green .* -> pass" % step, proc.stdout), proc.stdout[-3000:]
    assert versions_now(lab) == {"2": 20}
    entry = last_entry(lab)
    assert (entry["version"], entry["color"], entry["outcome"]) == ("2", "green", "succeeded")
    assert [e["verdict"] for e in entry["timeline"] if e.get("event") == "step"] == ["pass"] * 4
    # the restore point: the backup the gate let the release through on
    assert entry["backup"]["label"] == lab.backup_label and entry["backup"]["taken_first"] is False, entry["backup"]
    assert nginx_shares(lab) == {"green": 100}
    assert replicas(lab, "blue") == 2  # the previous colour keeps running: instant rollback
    assert lab.webhook.since(hooks) == [("start", "2"), ("success", "2")]


def test_rollback_right_after_a_good_release_drops_no_request(release_lab):
    lab = release_lab
    hooks = len(lab.webhook.events)
    proc, load, summary = run_under_load(lab, "playbooks/rollback.yml", *lab.hook)
    assert summary["failed"] == 0, summary
    flat = " ".join(proc.stdout.split())  # the YAML callback folds long messages
    switch = re.search(r"switch on the load balancer ([0-9.]+) s, of which write \+ nginx -t \+ switch ([0-9.]+) s",
                       flat)
    window = load.switch_window("2", "1", since=proc.started_on_load)
    # speed is bench/bench_rollback.py's to judge; printed here for the record of this run
    print("[rollback] time-to-switch %.2f s (playbook start -> first answer of v1), wall %.1f s; on the load "
          "balancer %s s (nginx %s s); clients saw v2 -> v1 %s"
          % (window["first_new"] - proc.started_on_load if window else -1, proc.seconds,
             switch and switch.group(1), switch and switch.group(2), window))
    assert switch and "switched at once" in flat, proc.stdout[-3000:]
    assert versions_now(lab) == {"1": 20}
    entry = last_entry(lab)
    assert (entry["action"], entry["version"], entry["color"], entry["outcome"]) == ("rollback", "1", "blue", "succeeded")
    assert "instant switch" in entry["reason"]
    assert nginx_shares(lab) == {"blue": 100}
    assert [e for e, _ in lab.webhook.since(hooks)] == ["rollback", "success"]


def test_bad_release_is_aborted_at_the_first_step(release_lab):
    lab = release_lab
    hooks = len(lab.webhook.events)
    proc, load, summary = run_under_load(
        lab, "playbooks/deploy.yml", "-e", "release_version=2", "-e", '{"release_env": {"DEMO_ERROR_RATE": "0.3"}}',
        *FAST, *lab.hook, check=False)
    assert proc.returncode != 0
    assert "Release 2 of demo FAILED" in proc.stdout and "Traffic: 100 % on blue (1)" in proc.stdout
    entry = last_entry(lab)
    assert (entry["version"], entry["color"], entry["outcome"]) == ("2", "green", "failed")
    assert "step 1/4" in entry["reason"] and "abort" in entry["reason"]
    steps = [e for e in entry["timeline"] if e.get("event") == "step"]
    revert = [e for e in entry["timeline"] if e.get("event") == "revert"]
    assert [s["verdict"] for s in steps] == ["abort"] and steps[0]["share"] == 5 and revert and revert[0]["ok"]
    # failures: only the 500s of the new colour, no more than its 5 % share of the window's traffic
    fails = load.failures()
    assert fails and set(s.status for s in fails) == {500}, summary
    start = min(steps[0]["started_epoch"], load.epoch0 + min(s.sent for s in fails)) - load.epoch0
    end = revert[0]["time_epoch"] + revert[0]["seconds"] - load.epoch0
    in_window = load.summary(since=start, until=end + 0.5)
    print("[bad release] step-1 window %.1f s: %d requests, %d failed (%.2f %%), all failures %d; "
          "time to detect %.1f s, revert %.2f s" % (
              end - start, in_window["requests"], in_window["failed"],
              100.0 * in_window["failed"] / max(1, in_window["requests"]), summary["failed"],
              steps[0]["seconds"], revert[0]["seconds"]))
    assert summary["failed"] <= 0.05 * in_window["requests"], (summary, in_window)
    assert versions_now(lab) == {"1": 20}
    assert nginx_shares(lab) == {"blue": 100}
    assert replicas(lab, "green") == 0
    assert [e for e, _ in lab.webhook.since(hooks)] == ["start", "failure"]


def test_release_that_never_gets_healthy_moves_no_traffic(release_lab):
    lab = release_lab
    proc, load, summary = run_under_load(
        lab, "playbooks/deploy.yml", "-e", "release_version=2", "-e", '{"release_env": {"DEMO_HEALTHY": "false"}}',
        "-e", "app_release_wait_timeout=30", *FAST, check=False)
    assert proc.returncode != 0
    assert summary["failed"] == 0, summary
    assert set(summary["versions"]) == {"1"}, summary
    assert "TASK [Shift traffic in gated steps]" not in proc.stdout
    entry = last_entry(lab)
    assert entry["outcome"] == "failed" and "converge" in entry["reason"]  # did not / will not converge
    assert not entry.get("timeline")
    assert nginx_shares(lab) == {"blue": 100}
    assert replicas(lab, "green") == 0


def test_second_rollback_goes_one_release_further_back(release_lab):
    lab = release_lab
    # live: 1 on blue. Release 2 (green), then "3" (image 1 with DEMO_VERSION=3) on blue.
    # light traffic, so that the one-step cutovers have requests to judge
    with LoadGen(lab.url("/version"), rate=60, threads=4, max_requests=60 * 400, max_seconds=400):
        lab.playbook("playbooks/deploy.yml", "-e", "release_version=2", *QUICK)
        lab.playbook("playbooks/deploy.yml", "-e", "release_version=3", "-e", "release_image=greenflow/demo-app:1",
                     "-e", '{"release_env": {"DEMO_VERSION": "3"}}', *QUICK)
    assert versions_now(lab) == {"3": 20}
    first = lab.playbook("playbooks/rollback.yml")
    assert "switched at once" in " ".join(first.stdout.split())
    assert versions_now(lab) == {"2": 20}
    # release 1's colour (blue) now holds "3": the rollback deploys release 1 there again first
    second = lab.playbook("playbooks/rollback.yml")
    flat = " ".join(second.stdout.split())
    assert "the colour was brought back first (blue holds another release since" in flat, flat[-3000:]
    assert versions_now(lab) == {"1": 20}
    print("\n[rollbacks] instant %.1f s, with redeploy %.1f s" % (first.seconds, second.seconds))
    third = lab.playbook("playbooks/rollback.yml", check=False)
    assert third.returncode != 0 and "Nothing to roll back to" in third.stdout
    assert versions_now(lab) == {"1": 20}


def test_interrupted_deploy_is_undone_by_a_forced_rollback(release_lab):
    lab = release_lab
    # live: 1 on blue. A deploy of 2 is killed (controller and all) while green has its first 5 %.
    with LoadGen(lab.url("/version"), rate=60, threads=4, max_requests=60 * 300, max_seconds=300) as load:
        # a lease longer than this test: the LB's watchdog stays out of it (the next test is about it)
        deploy = lab.playbook_background("playbooks/deploy.yml", "-e", "release_version=2",
                                         "-e", "cutover_step_seconds=120", "-e", "cutover_min_requests=5",
                                         "-e", "cutover_lease_ttl=300")
        deadline = time.monotonic() + 240
        while nginx_shares(lab).get("green", 0) == 0:
            assert deploy.poll() is None, "the deploy ended before it moved traffic:\n" + deploy.stdout.read()[-3000:]
            assert time.monotonic() < deadline, "the deploy never moved traffic to green"
            time.sleep(0.5)
        os.killpg(deploy.pid, signal.SIGKILL)
        deploy.wait(timeout=30)
        stranded = nginx_shares(lab)
        assert stranded == {"blue": 95, "green": 5}, stranded
        assert last_entry(lab)["outcome"] == "in_progress"

        refused = lab.playbook("playbooks/rollback.yml", check=False)
        assert refused.returncode != 0 and "release_force=true" in refused.stdout, refused.stdout[-3000:]
        assert nginx_shares(lab) == stranded  # refused: nothing changed

        forced = lab.playbook("playbooks/rollback.yml", "-e", "release_force=true")
        time.sleep(1)
    summary = load.summary()
    print("\n[interrupted deploy] forced rollback %.1f s; load: %s" % (forced.seconds, json.dumps(summary)))
    assert summary["failed"] == 0, summary
    assert nginx_shares(lab) == {"blue": 100}
    assert versions_now(lab) == {"1": 20}
    entry = last_entry(lab)
    assert (entry["action"], entry["version"], entry["outcome"]) == ("deploy", "2", "failed")
    assert "interrupted" in entry["reason"], entry["reason"]
    # rollback.yml took the open entry over as its lock, and switched at once (blue still ran 1)
    assert entry["claimed_by"]["user"] and "switched at once" in " ".join(forced.stdout.split())


@pytest.mark.parametrize("sig, at_share", [(signal.SIGINT, 5), (signal.SIGKILL, 25)],
                         ids=["sigint-at-step-1", "sigkill-at-step-2"])
def test_lost_controller_the_lb_watchdog_puts_traffic_back(release_lab, sig, at_share):
    lab = release_lab
    # live: 1 on blue. A deploy of 2 loses its controller (Ctrl-C, or killed with all its workers) at a
    # step: nobody runs rollback.yml; the load balancer's watchdog acts once the lease (10 s) runs out.
    with LoadGen(lab.url("/version"), rate=60, threads=4, max_requests=60 * 300, max_seconds=300) as load:
        deploy = lab.playbook_background("playbooks/deploy.yml", "-e", "release_version=2", "-e", "cutover_lease_ttl=10",
                                         "-e", "cutover_step_seconds=20", "-e", "cutover_min_requests=5")
        deadline = time.monotonic() + 240
        while nginx_shares(lab).get("green", 0) != at_share:
            assert deploy.poll() is None, "the deploy ended before green had %d %%:\n%s" % (
                at_share, deploy.stdout.read()[-3000:])
            assert time.monotonic() < deadline, "the deploy never gave green %d %%" % at_share
            time.sleep(0.2)
        os.killpg(deploy.pid, sig)
        lost_at = time.monotonic()
        deploy.wait(timeout=60)
        while nginx_shares(lab) != {"blue": 100} and time.monotonic() < lost_at + 40:
            time.sleep(0.2)
        back_after = time.monotonic() - lost_at
        time.sleep(2)
    summary = load.summary()
    print("\n[%s at green %d %%] traffic back on blue %.1f s after the signal; load: %s"
          % (signal.Signals(sig).name, at_share, back_after, json.dumps(summary)))
    assert nginx_shares(lab) == {"blue": 100}
    assert summary["failed"] == 0, summary
    assert versions_now(lab) == {"1": 20}
    entry = last_entry(lab)
    assert (entry["action"], entry["version"], entry["outcome"]) == ("deploy", "2", "failed")
    assert entry["reason"].startswith("controller lost"), entry["reason"]


def test_cleanup_release_then_rollback_scales_the_previous_colour_back_up(release_lab):
    lab = release_lab
    # live: 1 on blue. Release 2 with release_cleanup: blue is scaled to 0 once green is live.
    with LoadGen(lab.url("/version"), rate=60, threads=4, max_requests=60 * 400, max_seconds=400) as load:
        lab.playbook("playbooks/deploy.yml", "-e", "release_version=2", "-e", "release_cleanup=true", *QUICK)
        assert replicas(lab, "blue") == 0
        assert nginx_shares(lab) == {"green": 100}
        # the load balancer role run again (blue 100 % is what it writes for a new app) keeps the live split
        lab.playbook("playbooks/lb.yml")
        assert nginx_shares(lab) == {"green": 100}
        # the previous colour was scaled down: the rollback scales it up, waits healthy, then switches
        back = lab.playbook("playbooks/rollback.yml")
        time.sleep(1)
    summary = load.summary()
    print("\n[rollback after cleanup] %.1f s (scale up, wait healthy, switch); load: %s"
          % (back.seconds, json.dumps(summary)))
    assert "the colour was brought back first" in " ".join(back.stdout.split())
    assert summary["failed"] == 0, summary
    assert replicas(lab, "blue") == 2
    assert nginx_shares(lab) == {"blue": 100}
    assert versions_now(lab) == {"1": 20}


def test_history_shows_every_release_newest_first(release_lab):
    proc = release_lab.playbook("playbooks/history.yml", "-e", "history_limit=20")
    rows = re.findall(r"^\s+- '?(\d+)\s+(deploy|rollback)\s+(\S+)\s+(blue|green)\s+(\w+)( \(live\))?", proc.stdout, re.M)
    assert [int(r[0]) for r in rows] == sorted((int(r[0]) for r in rows), reverse=True)
    assert len(rows) == len(record(release_lab)["releases"])
    live = [r for r in rows if r[5]]
    assert len(live) == 1 and live[0][2] == "1"
    assert "Live: 1 on blue" in proc.stdout


def test_two_deploys_started_together_exactly_one_proceeds(release_lab):
    lab = release_lab
    # live: 1 on blue. Two operators start the same release at the same moment: the record is read and
    # its lock taken under the record's own lock, compare-and-set on the live entry, so exactly one of
    # them proceeds; the other stops with a clear message before changing anything.
    with LoadGen(lab.url("/version"), rate=60, threads=4, max_requests=60 * 400, max_seconds=400) as load:
        runs = [lab.playbook_background("playbooks/deploy.yml", "-e", "release_version=2", *QUICK) for _ in range(2)]
        outputs = [run.communicate(timeout=900)[0] for run in runs]
        time.sleep(1)
    summary = load.summary()
    codes = [run.returncode for run in runs]
    print("\n[two deploys together] exit codes %s; load: %s" % (codes, json.dumps(summary)))
    assert sorted(codes) != [0, 0] and 0 in codes, codes
    refused = " ".join(outputs[codes.index(0) ^ 1].split())
    assert "still in progress" in refused or "live release changed since this run read the record" in refused, \
        refused[-3000:]
    assert "Nothing was changed" in refused or "nothing was changed" in refused.lower(), refused[-3000:]
    assert summary["failed"] == 0, summary
    assert nginx_shares(lab) == {"green": 100}
    assert versions_now(lab) == {"2": 20}
    deploys = [e for e in record(lab)["releases"] if e["action"] == "deploy" and e["version"] == "2"]
    assert deploys[-1]["outcome"] == "succeeded"
    assert not [e for e in record(lab)["releases"] if e["outcome"] == "in_progress"]


def _get_through_lb(lab, path):
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # the lab's self-signed certificate
    with urllib.request.urlopen(lab.url(path), timeout=10, context=context) as resp:
        return resp.read().decode().strip()


def test_a_release_reads_its_swarm_secret_and_never_shows_it(release_lab):
    lab = release_lab
    value = "tok-" + secrets.token_hex(16)
    lab.exec("swarm-manager-1", "sh", "-c", "printf %%s '%s' | docker secret create demo_api_token -" % value)
    # where the file is: the app's own setting (app_release_env, group_vars; not recorded). The name
    # looks like a secret to the release_env rule, which is right to refuse it there.
    app_env = {"DEMO_SECRET_FILE": "/run/secrets/demo_api_token"}
    before = versions_now(lab)
    with LoadGen(lab.url("/version"), rate=60, threads=4, max_requests=60 * 400, max_seconds=400) as load:
        # a release naming a secret the swarm does not have fails before any traffic moves
        missing = lab.playbook("playbooks/deploy.yml", "-e", "release_version=5", "-e", "release_image=greenflow/demo-app:2",
                               "-e", json.dumps({"release_env": {"DEMO_VERSION": "5"}, "app_release_env": app_env,
                                                 "app_release_secrets": ["no_such_secret"]}),
                               *QUICK, check=False)
        assert missing.returncode != 0 and "no_such_secret" in missing.stdout, missing.stdout[-3000:]
        assert versions_now(lab) == before
        good = lab.playbook("playbooks/deploy.yml", "-e", "release_version=5", "-e", "release_image=greenflow/demo-app:2",
                            "-e", json.dumps({"release_env": {"DEMO_VERSION": "5"}, "app_release_env": app_env,
                                              "app_release_secrets": ["demo_api_token"]}),
                            *QUICK)
    summary = load.summary()
    print("\n[swarm secret] missing secret refused in %.1f s; release with its secret %.1f s; load: %s"
          % (missing.seconds, good.seconds, json.dumps(summary)))
    assert summary["failed"] == 0, summary
    assert versions_now(lab) == {"5": 20}
    # the app read the secret swarm mounted (it answers its digest; /health needs the file)
    assert _get_through_lb(lab, "/secret-digest") == hashlib.sha256(value.encode()).hexdigest()
    # and the value shows nowhere: playbook output, release record, the service's spec
    colour = last_entry(lab)["color"]
    spec = lab.exec("swarm-manager-1", "docker", "service", "inspect", "%s-%s" % (APP, colour))
    assert "demo_api_token" in spec
    for where, text in (("deploy output", good.stdout + missing.stdout), ("release record", json.dumps(record(lab))),
                        ("service spec", spec)):
        assert value not in text, "the secret's value is in the %s" % where


def test_keepalive_clients_lose_nothing_through_a_release_and_a_rollback(release_lab, tmp_path):
    lab = release_lab
    # Debian's wrk: HTTP/1.1, 32 keep-alive connections, paced by its Lua delay() to ~180 requests/s,
    # through a full release (4 steps) and a rollback. Bounded: -d caps it, SIGINT ends it (wrk then
    # prints its figures).
    conns, rate = 32, 180
    script = tmp_path / "pace.lua"
    script.write_text("function delay()\n  return %d\nend\n" % int(conns * 1000 / rate))
    workers_before = lab.exec("lb-1", "pgrep", "-f", "nginx: worker").split()
    wrk = subprocess.Popen(["wrk", "-t", "2", "-c", str(conns), "-d", "300s", "--timeout", "5s", "-s", str(script),
                            lab.url("/version")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           start_new_session=True)
    try:
        time.sleep(3)
        deploy = lab.playbook("playbooks/deploy.yml", "-e", "release_version=2", *FAST)
        back = lab.playbook("playbooks/rollback.yml")
        time.sleep(2)
    finally:
        os.killpg(wrk.pid, signal.SIGINT)
        out, _ = wrk.communicate(timeout=60)
    workers_after = lab.exec("lb-1", "pgrep", "-f", "nginx: worker").split()
    requests = re.search(r"(\d+) requests in", out)
    print("\n[wrk keep-alive] deploy %.1f s, rollback %.1f s; nginx workers %s (%s); wrk:\n%s"
          % (deploy.seconds, back.seconds, "unchanged: no reload" if workers_before == workers_after else "replaced",
             " ".join(workers_after), out))
    assert requests and int(requests.group(1)) > 1000, out
    assert "Socket errors" not in out, out        # wrk prints the line only when there are some
    assert "Non-2xx or 3xx responses" not in out, out
    assert "switched at once" in " ".join(back.stdout.split())
    assert versions_now(lab) == {"5": 20}


def live_colour(lab):
    shares = nginx_shares(lab)
    assert list(shares.values()) == [100], shares
    return list(shares)[0]


def test_a_failing_smoke_check_stops_the_release_before_any_traffic(release_lab):
    lab = release_lab
    before, live = versions_now(lab), live_colour(lab)
    idle = "green" if live == "blue" else "blue"
    hooks = len(lab.webhook.events)
    # the release's /version is broken, its /health is fine: only the smoke check sees it
    checks = [{"name": "home", "path": "/", "body_regex": '"app": "demo"'},
              {"path": "/version", "body_regex": r"^\d+\s*$"}]
    proc, load, summary = run_under_load(
        lab, "playbooks/deploy.yml", "-e", "release_version=6", "-e", "release_image=greenflow/demo-app:2",
        "-e", json.dumps({"release_env": {"DEMO_VERSION": "6", "DEMO_BROKEN_PATHS": "/version"},
                          "release_smoke_checks": checks}), *FAST, *lab.hook, check=False)
    flat = " ".join(proc.stdout.split())
    assert proc.returncode != 0
    assert "TASK [Shift traffic in gated steps]" not in proc.stdout
    failed = re.findall(r"GET /version on ([0-9.]+:\d+): HTTP 500, expected 200", flat)
    assert len(set(failed)) == 2, flat[-3000:]           # both servers of the new colour named
    assert "home on" not in flat                          # the check that passed is not blamed
    assert summary["failed"] == 0 and set(summary["versions"]) == set(before), summary
    entry = last_entry(lab)
    assert (entry["version"], entry["color"], entry["outcome"]) == ("6", idle, "failed")
    assert "smoke checks failed" in entry["reason"] and not entry.get("timeline")
    assert nginx_shares(lab) == {live: 100}
    assert replicas(lab, idle) == 0
    assert [e for e, _ in lab.webhook.since(hooks)] == ["start", "failure"]
    # and bad checks are refused before anything changes (no entry, nothing started)
    entries = len(record(lab)["releases"])
    bad = lab.playbook("playbooks/deploy.yml", "-e", "release_version=6",
                       "-e", json.dumps({"release_smoke_checks": [{"path": "version"}]}), check=False)
    assert bad.returncode != 0 and "path must start with /" in bad.stdout
    assert len(record(lab)["releases"]) == entries


def test_a_release_that_needs_approval_moves_nothing_without_it(release_lab):
    lab = release_lab
    before, live = versions_now(lab), live_colour(lab)
    idle = "green" if live == "blue" else "blue"
    # no terminal here: the prompt does not wait, and no answer is no approval
    proc, load, summary = run_under_load(
        lab, "playbooks/deploy.yml", "-e", "release_version=8", "-e", "release_image=greenflow/demo-app:2",
        "-e", json.dumps({"release_env": {"DEMO_VERSION": "8"}}), "-e", "release_require_approval=true",
        *QUICK, check=False)
    flat = " ".join(proc.stdout.split())
    assert proc.returncode != 0
    assert "Not approved (release_require_approval is on" in flat and "no traffic was moved" in flat, flat[-3000:]
    assert "TASK [Shift traffic in gated steps]" not in proc.stdout
    assert summary["failed"] == 0 and set(summary["versions"]) == set(before), summary
    entry = last_entry(lab)
    assert (entry["version"], entry["color"], entry["outcome"]) == ("8", idle, "failed")
    assert "Not approved" in entry["reason"]
    # the lock is released: nothing in progress, and the next release (approved) goes ahead (next test)
    assert not [e for e in record(lab)["releases"] if e["outcome"] == "in_progress"]
    assert nginx_shares(lab) == {live: 100} and replicas(lab, idle) == 0


@pytest.mark.parametrize("line, limits, env", [
    # a child process spins: the task sits at its 0.1-core limit (100 %), the app still answers
    ("cpu_percent", {"cpus": 0.1, "memory": "256M"}, {"DEMO_BURN_CPU": "1"}),
    # 104 MiB held under a 128 MiB limit: about 90 % with the interpreter
    ("memory_percent", {"cpus": 1.0, "memory": "128M"}, {"DEMO_HOLD_MEMORY_MB": "104"}),
], ids=["cpu", "memory"])
def test_a_release_over_its_cpu_or_memory_line_is_aborted_at_the_first_step(release_lab, line, limits, env):
    lab = release_lab
    before, live = versions_now(lab), live_colour(lab)
    idle = "green" if live == "blue" else "blue"
    version = "10" if line == "cpu_percent" else "11"
    hooks = len(lab.webhook.events)
    proc, load, summary = run_under_load(
        lab, "playbooks/deploy.yml", "-e", "release_version=%s" % version, "-e", "release_image=greenflow/demo-app:2",
        "-e", json.dumps({"release_env": dict(env, DEMO_VERSION=version), "app_release_limits": limits,
                          "cutover_step_seconds": 12, "cutover_min_requests": 20}),
        # a lease longer than a busy machine's module runs (the burning tasks add load; this test is about the
        # resource lines, not the watchdog, which put traffic back when the lease ran out in stop 24's local CI)
        "-e", "cutover_lease_ttl=60", *lab.hook, check=False)
    flat = " ".join(proc.stdout.split())
    assert proc.returncode != 0, flat[-3000:]
    entry = last_entry(lab)
    assert (entry["version"], entry["color"], entry["outcome"]) == (version, idle, "failed")
    steps = [e for e in entry["timeline"] if e.get("event") == "step"]
    revert = [e for e in entry["timeline"] if e.get("event") == "revert"]
    assert [s["verdict"] for s in steps] == ["abort"] and steps[0]["share"] == 5, entry["reason"]
    assert revert and revert[0]["ok"]
    assert "%s " % line in entry["reason"] and "samples in a row" in entry["reason"], entry["reason"]
    breach = [b for b in steps[0]["breaches"] if b["metric"] == line]
    assert breach and breach[0]["value"] >= (80 if line == "cpu_percent" else 85), steps[0]["breaches"]
    cost = steps[0]["resource_read_ms"]
    print("\n[%s line] aborted %.1f s into step 1 (%s %.0f %%), %d polls; reading the tasks took %.0f ms per poll "
          "(median, both nodes in parallel, beside the log read; max %.0f ms); load: %s" % (
              line, steps[0]["seconds"], line, breach[0]["value"], cost["reads"], cost["median"], cost["max"],
              json.dumps(summary)))
    # the release answered every request it got: no client saw the abort
    assert summary["failed"] == 0, summary
    assert nginx_shares(lab) == {live: 100} and replicas(lab, idle) == 0
    assert versions_now(lab) == before
    assert [e for e, _ in lab.webhook.since(hooks)] == ["start", "failure"]


def test_without_cpu_and_memory_readings_a_release_moves_no_traffic(release_lab):
    lab = release_lab
    before, live = versions_now(lab), live_colour(lab)
    idle = "green" if live == "blue" else "blue"
    # on every swarm node: the new colour's tasks may land on any of them (the manager too)
    nodes = ("swarm-manager-1", "swarm-worker-1", "swarm-worker-2")
    for node in nodes:
        lab.exec(node, "systemctl", "stop", "greenflow-container-stats")
        # its last page would still list tasks for up to 30 s (then it is refused as stale, a unit test's case)
        lab.exec(node, "rm", "-f", "/var/lib/prometheus/node-exporter/greenflow_container_stats.prom")
    try:
        proc, load, summary = run_under_load(
            lab, "playbooks/deploy.yml", "-e", "release_version=12", "-e", "release_image=greenflow/demo-app:2",
            "-e", json.dumps({"release_env": {"DEMO_VERSION": "12"}}), *FAST, check=False)
    finally:
        for node in nodes:
            lab.exec(node, "systemctl", "start", "greenflow-container-stats")
    flat = " ".join(proc.stdout.split())
    assert proc.returncode != 0
    # the stale page of the stopped sampler does not show the new colour's tasks: said, and nothing moved
    assert re.search(r"cannot read the CPU and memory of %s's tasks.*no greenflow_container_\* metrics" % idle, flat), \
        flat[-3000:]
    assert "greenflow-container-stats" in flat and "cutover_abort_cpu_percent=0" in flat
    assert summary["failed"] == 0 and set(summary["versions"]) == set(before), summary
    entry = last_entry(lab)
    assert (entry["version"], entry["outcome"]) == ("12", "failed")
    assert not [e for e in entry.get("timeline") or [] if e.get("event") == "step"]
    assert nginx_shares(lab) == {live: 100} and replicas(lab, idle) == 0


def _task_containers(lab, service):
    """(node, container id) of the running tasks of a swarm service, from the nodes' own engines."""
    out = []
    for node in ("swarm-manager-1", "swarm-worker-1", "swarm-worker-2"):
        ids = lab.exec(node, "docker", "ps", "-q", "--filter", "label=com.docker.swarm.service.name=%s" % service)
        out.extend((node, cid) for cid in ids.split())
    return out


def test_the_watch_after_100_rolls_back_a_release_that_breaks_late(release_lab):
    lab = release_lab
    before, live = versions_now(lab), live_colour(lab)
    idle = "green" if live == "blue" else "blue"
    hooks = len(lab.webhook.events)
    env = {"DEMO_VERSION": "7", "DEMO_ERROR_RATE": "0.3", "DEMO_ERRORS_WHILE_FILE": "/tmp/break-now"}
    with LoadGen(lab.url("/version"), rate=RATE, threads=THREADS, max_requests=RATE * 300, max_seconds=300) as load:
        deploy = lab.playbook_background(
            "playbooks/deploy.yml", "-e", "release_version=7", "-e", "release_image=greenflow/demo-app:2",
            "-e", json.dumps({"release_env": env, "cutover_steps": [50, 100], "cutover_step_seconds": [3, 3],
                              "cutover_watch_seconds": 120, "cutover_watch_window_seconds": 10}),
            # a lease longer than a busy machine's module runs (this test is about the watch, not the watchdog)
            "-e", "cutover_min_requests=20", "-e", "cutover_lease_ttl=60",
            "-e", "release_require_approval=true", "-e", "release_approved=true",
            *lab.hook)
        lines = []
        reader = threading.Thread(target=lambda: lines.extend(deploy.stdout), daemon=True)
        reader.start()
        deadline = time.monotonic() + 300
        # the watch has begun (every step passed, 100 % on the new colour): the cutover says so
        while not any("  watch: %s at 100%%" % idle in line for line in lines):
            assert deploy.poll() is None, "the deploy ended before its watch:\n%s" % (
                "".join(lines)[-3000:])
            assert time.monotonic() < deadline, "the deploy never reached its watch:\n%s" % "".join(lines)[-3000:]
            time.sleep(0.3)
        assert nginx_shares(lab) == {idle: 100}
        time.sleep(3)  # live at 100 % for a moment, then it breaks
        tasks = _task_containers(lab, "%s-%s" % (APP, idle))
        assert len(tasks) == 2, tasks
        for node, cid in tasks:
            lab.exec(node, "docker", "exec", cid, "touch", "/tmp/break-now")
        broke_at = time.time()
        deploy.wait(timeout=300)
        reader.join(30)
        out = "".join(lines)
        time.sleep(1)
    summary = load.summary()
    assert deploy.returncode != 0, out[-3000:]
    entry = last_entry(lab)
    revert = [e for e in entry["timeline"] if e.get("event") == "revert"]
    watch = [e for e in entry["timeline"] if e.get("event") == "watch"]
    detection = revert[0]["time_epoch"] - broke_at
    print("\n[watch] a release broken 3 s after 100 %%: traffic back on %s %.1f s after the break (window 10 s, "
          "poll 2 s); load: %s" % (live, detection, json.dumps(summary)))
    assert [s["verdict"] for s in entry["timeline"] if s.get("event") == "step"] == ["pass", "pass"]
    assert watch and watch[0]["verdict"] == "abort" and revert[0]["ok"] and revert[0]["after"] == "watch"
    assert (entry["version"], entry["outcome"]) == ("7", "failed")
    assert entry["reason"].startswith("automatic rollback after 100 %"), entry["reason"]
    assert "during the watch after 100 %: an automatic rollback" in " ".join(out.split())
    assert nginx_shares(lab) == {live: 100}
    assert versions_now(lab) == before
    # the clients saw the broken release's 500s only between the break and the switch back
    assert set(s.status for s in load.failures()) <= {500}, summary
    events = lab.webhook.events[hooks:]
    assert [e.get("event") for e in events] == ["start", "failure"]
    assert "automatic rollback" in json.dumps(events[-1])


def test_retire_scales_the_previous_colour_down_only_when_it_is_old_enough(release_lab):
    lab = release_lab
    # a good release first, so that the previous colour runs the release before it (instant rollback)
    with LoadGen(lab.url("/version"), rate=60, threads=4, max_requests=60 * 300, max_seconds=300) as load:
        lab.playbook("playbooks/deploy.yml", "-e", "release_version=9", "-e", "release_image=greenflow/demo-app:2",
                     "-e", json.dumps({"release_env": {"DEMO_VERSION": "9"}}), *QUICK)
        live = live_colour(lab)
        previous = "green" if live == "blue" else "blue"
        assert replicas(lab, previous) == 2
        entries = len(record(lab)["releases"])
        kept = lab.playbook("playbooks/retire.yml")               # default: kept 72 h
        assert "not yet retired" in kept.stdout and replicas(lab, previous) == 2
        assert len(record(lab)["releases"]) == entries
        retired = lab.playbook("playbooks/retire.yml", "-e", "release_keep_previous_hours=0")
        again = lab.playbook("playbooks/retire.yml", "-e", "release_keep_previous_hours=0")
        time.sleep(1)
    summary = load.summary()
    print("\n[retire] kept %.1f s, retired %.1f s; load: %s" % (kept.seconds, retired.seconds, json.dumps(summary)))
    assert summary["failed"] == 0, summary
    assert replicas(lab, previous) == 0 and replicas(lab, live) == 2
    assert nginx_shares(lab) == {live: 100} and versions_now(lab) == {"9": 20}
    entry = last_entry(lab)
    assert (entry["action"], entry["color"], entry["outcome"]) == ("retire", previous, "succeeded")
    assert "the instant rollback to it is gone" in entry["reason"]
    assert "was retired already" in again.stdout and len(record(lab)["releases"]) == entries + 1
    assert record(lab)["releases"][-2]["version"] == "9"  # the live release is still the deploy of 9


# --- database migrations (deploy.yml's release_migrate_command), on the demo app's PostgreSQL mode ---------------

MIGRATE = ["-e", json.dumps({"release_migrate_command": ["python3", "/opt/demo/app.py", "migrate"]})]
NOTES = "/notes/add"  # every request writes a row: the live release uses the database under load


@pytest.fixture(scope="session")
def release_db(release_lab):
    """The lab's primary (on its own lab: provisioned beside it by the release_lab fixture), the app's password as
    the swarm secret demo_db_password, and the settings that put the demo app on the database. On the shared lab
    of `make test` the data scenario restores and fails over this cluster meanwhile: these tests (the last ones of
    the module) wait for their turn (shared_lab.database_turn) and keep it to the end."""
    lab = release_lab
    if getattr(lab, "db_provisioning", None) is not None:
        lab.wait_background(lab.db_provisioning)
    with database_turn(lab.prefix) as waited:
        print("\n[release db] the database's turn after %.0f s" % waited)
        yield _database_settings(lab)


def _primary(lab):
    """The PostgreSQL host that is not in recovery (after the data scenario's failovers it may be either)."""
    for host in ("pg-primary-1", "pg-replica-1"):
        answer = lab.exec(host, "su", "postgres", "-c", "psql -XAtq -c 'SELECT pg_is_in_recovery()'", check=False)
        if answer.strip() == "f":
            return host
    pytest.fail("no PostgreSQL host of the lab answers as the primary")


def _database_settings(lab):
    lab.primary = _primary(lab)
    ip = subprocess.run(["docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                         lab.container(lab.primary)], capture_output=True, text=True, check=True).stdout.strip()
    with open(os.path.join(os.path.dirname(__file__), "..", "..", "lab", ".secrets", "pg_app_password")) as f:
        password = f.read().split()[0]
    lab.exec("swarm-manager-1", "sh", "-c", "docker secret inspect demo_db_password >/dev/null 2>&1 || "
             "printf %%s '%s' | docker secret create demo_db_password -" % password)
    # the password's file is the app's setting (app_release_env); the database's address is the release's
    return {"release_env": {"DEMO_DB_HOST": ip, "DEMO_DB_NAME": "app", "DEMO_DB_USER": "app"},
            "app_release_env": {"DEMO_DB_PASSWORD_FILE": "/run/secrets/demo_db_password"},
            "app_release_secrets": ["demo_db_password"]}


def psql(lab, sql):
    return lab.exec(lab.primary, "su", "postgres", "-c", "psql -XAtq -d app -c \"%s\"" % sql).strip()


def db_deploy_args(db, version, image, env=None, **extra):
    settings = dict(db, release_env=dict(db["release_env"], **(env or {})), **extra)
    return ["-e", "release_version=%s" % version, "-e", "release_image=greenflow/demo-app:%s" % image,
            "-e", json.dumps(settings)] + MIGRATE


def idle_state(lab, colour):
    return lab.exec("swarm-manager-1", "docker", "service", "inspect", "%s-%s" % (APP, colour), "--format",
                    "{{.Spec.TaskTemplate.ContainerSpec.Image}} {{.Spec.Mode.Replicated.Replicas}} {{.Version.Index}}")


def test_a_release_migrates_its_database_once_while_the_live_release_keeps_serving(release_lab, release_db):
    lab, db = release_lab, release_db
    # v1 on the database: its migration creates the table it writes
    with LoadGen(lab.url("/version"), rate=60, threads=4, max_requests=60 * 400, max_seconds=400):
        first = lab.playbook("playbooks/deploy.yml", *db_deploy_args(db, "1-db", 1), *QUICK)
    assert "0001_notes" in psql(lab, "SELECT string_agg(id, ',') FROM demo_schema_migrations")
    live = live_colour(lab)
    # v2 under load on a page that writes: its migration (a slow step, then an added column) runs while v1 writes
    proc, load, summary = run_notes_load(lab, "playbooks/deploy.yml",
                                         *db_deploy_args(db, "2-db", 2, {"DEMO_MIGRATE_SECONDS": "5"}), *FAST)
    flat = " ".join(proc.stdout.split())
    entry = last_entry(lab)
    migration = entry["migration"]
    v1 = record(lab)["releases"][-2]["migration"]
    print("\n[migration] v1's: job %.1f s, added to the release %.1f s; v2's (a 5 s step): job %.1f s, added %.1f s, %s; "
          "restore point %s; deploy %.1f s (v1 deploy %.1f s); load: %s" % (
              v1["seconds"], v1["release_seconds"], migration["seconds"], migration["release_seconds"],
              migration["status"], migration["restore_point"], proc.seconds, first.seconds, json.dumps(summary)))
    assert proc.returncode == 0, flat[-3000:]
    assert summary["failed"] == 0, summary
    assert (entry["version"], entry["outcome"], migration["status"], migration["exit_code"]) == ("2-db", "succeeded",
                                                                                                  "succeeded", 0)
    assert migration["seconds"] >= 5 and "applied 0002_notes_version" in migration["output"], migration
    assert re.match(r"^\d+/[0-9A-F]+$", migration["restore_point"]["lsn"]), migration["restore_point"]
    assert migration["restore_point"]["backup"] == lab.backup_label
    assert "restore_target_lsn=%s" % migration["restore_point"]["lsn"] in flat
    # v1 wrote all along; v2 writes the new column
    assert psql(lab, "SELECT count(*) FROM demo_migrate_runs WHERE version = '2'") == "1"
    assert int(psql(lab, "SELECT count(*) FROM demo_notes WHERE version IS NULL")) > 100
    assert int(psql(lab, "SELECT count(*) FROM demo_notes WHERE version = '2'")) > 0
    assert nginx_shares(lab) == {"green" if live == "blue" else "blue": 100}

    # a rollback says which migration it crosses; the same version again does not migrate again
    with LoadGen(lab.url("/version"), rate=60, threads=4, max_requests=60 * 400, max_seconds=400):
        back = lab.playbook("playbooks/rollback.yml")
        again = lab.playbook("playbooks/deploy.yml", *db_deploy_args(db, "2-db", 2), *QUICK)
    back_flat = " ".join(back.stdout.split())
    assert "The schema is NOT rolled back: 1 migration(s) ran after 1-db was deployed" in back_flat, back_flat[-3000:]
    again_flat = " ".join(again.stdout.split())
    entry = last_entry(lab)
    assert entry["migration"]["status"] == "skipped" and entry["migration"]["ran_in"] == record(lab)["releases"][-3]["id"]
    assert "the migration of version 2-db ran already" in again_flat, again_flat[-3000:]
    assert psql(lab, "SELECT count(*) FROM demo_migrate_runs WHERE version = '2'") == "1"


def run_notes_load(lab, playbook, *args):
    """A playbook under writing load: 100 requests/s on /notes/add, bounded in count and time."""
    load = LoadGen(lab.url(NOTES), rate=100, threads=16, max_requests=100 * 400, max_seconds=400)
    load.start()
    time.sleep(2)
    try:
        proc = lab.playbook(playbook, *args, check=False)
        time.sleep(2)
    finally:
        load.stop()
    summary = load.summary()
    # every answer is a note's own JSON: count them by the version that wrote them
    written = {}
    for body, count in summary["versions"].items():
        version = json.loads(body)["version"]
        written[version] = written.get(version, 0) + count
    summary["versions"] = written
    return proc, load, summary


def on_the_database(lab, db):
    """Make sure a release on the database is live (the test before leaves 2-db live; a run of one test alone
    deploys it: its migration ran, or runs now)."""
    try:
        _get_through_lb(lab, "/notes")
        return
    except urllib.error.HTTPError:  # 404: the live release does not use the database
        pass
    with LoadGen(lab.url("/version"), rate=60, threads=4, max_requests=60 * 400, max_seconds=400):
        lab.playbook("playbooks/deploy.yml", *db_deploy_args(db, "2-db", 2), *QUICK)


def test_a_failing_migration_stops_the_release_before_any_traffic_moves(release_lab, release_db):
    lab, db = release_lab, release_db
    on_the_database(lab, db)
    live = live_colour(lab)
    idle = "green" if live == "blue" else "blue"
    before_idle, before_versions = idle_state(lab, idle), versions_now(lab)
    hooks = len(lab.webhook.events)
    # version 3 of the app: the image of 2 told it is 3 (the lab loads images 1 and 2)
    proc, load, summary = run_notes_load(lab, "playbooks/deploy.yml", *db_deploy_args(
        db, "3-db", 2, {"DEMO_VERSION": "3", "DEMO_MIGRATE_FAIL": "the new index does not fit"}), *FAST, *lab.hook)
    flat = " ".join(proc.stdout.split())
    entry = last_entry(lab)
    print("\n[failing migration] rc %d in %.1f s; migration %s after %.1f s; load: %s"
          % (proc.returncode, proc.seconds, entry["migration"]["status"], entry["migration"]["seconds"],
             json.dumps(summary)))
    assert proc.returncode != 0
    assert "The database migration of 3-db failed" in flat and "No traffic moved" in flat, flat[-3000:]
    assert "DEMO_MIGRATE_FAIL: the new index does not fit" in flat
    assert (entry["version"], entry["outcome"], entry["migration"]["status"]) == ("3-db", "failed", "failed")
    assert entry["migration"]["exit_code"] == 1 and "rolled back" in entry["migration"]["output"]
    assert not [e for e in entry.get("timeline") or [] if e.get("event") == "step"]
    # nothing moved, the idle colour (the instant rollback) untouched, every write answered
    assert summary["failed"] == 0 and set(summary["versions"]) <= {"2"}, summary
    assert nginx_shares(lab) == {live: 100} and idle_state(lab, idle) == before_idle
    assert versions_now(lab) == before_versions
    assert psql(lab, "SELECT count(*) FROM demo_migrate_runs WHERE version = '3' AND outcome = 'failed'") == "1"
    assert [e for e, _ in lab.webhook.since(hooks)] == ["start", "failure"]
    # the same version again is refused before anything: its migration may have been partly applied
    entries = len(record(lab)["releases"])
    refused = lab.playbook("playbooks/deploy.yml", *db_deploy_args(db, "3-db", 2, {"DEMO_VERSION": "3"}), *QUICK,
                           check=False)
    refused_flat = " ".join(refused.stdout.split())
    assert refused.returncode != 0
    assert "the migration of version 3-db failed" in refused_flat and "release_migrate_rerun=true" in refused_flat, \
        refused_flat[-3000:]
    assert len(record(lab)["releases"]) == entries and idle_state(lab, idle) == before_idle
    assert psql(lab, "SELECT count(*) FROM demo_migrate_runs WHERE version = '3'") == "1"


def test_a_rollback_across_a_migration_marked_not_reversible_needs_the_operators_word(release_lab, release_db):
    lab, db = release_lab, release_db
    on_the_database(lab, db)
    with LoadGen(lab.url("/version"), rate=60, threads=4, max_requests=60 * 400, max_seconds=400) as load:
        lab.playbook("playbooks/deploy.yml", *db_deploy_args(db, "3-db", 2, {"DEMO_VERSION": "3"}),
                     "-e", "release_migrate_rerun=true",
                     "-e", "release_migrate_reversible=false", *QUICK)
        live = live_colour(lab)
        refused = lab.playbook("playbooks/rollback.yml", check=False)
        assert nginx_shares(lab) == {live: 100}
        accepted = lab.playbook("playbooks/rollback.yml", "-e", "rollback_accept_schema=true")
        time.sleep(1)
    summary = load.summary()
    flat, accepted_flat = " ".join(refused.stdout.split()), " ".join(accepted.stdout.split())
    print("\n[schema guard] refused in %.1f s, accepted rollback %.1f s; load: %s"
          % (refused.seconds, accepted.seconds, json.dumps(summary)))
    assert refused.returncode != 0 and "Rollback to 2-db refused" in flat and "NOT reversible" in flat, flat[-3000:]
    assert "rollback_accept_schema=true" in flat and "Nothing was changed" in flat
    assert "accepted: rollback_accept_schema=true" in accepted_flat, accepted_flat[-3000:]
    assert summary["failed"] == 0, summary
    assert versions_now(lab) == {"2": 20}
