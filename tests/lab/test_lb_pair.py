"""Two load balancers behind a floating address (nginx_lb_vip, keepalived), under load from a client inside the
lab network: the address moves when nginx stops on the master, stays where it is when nginx comes back
(nopreempt), moves again when keepalived stops on the new master, and when the master is cut off the network.

    .venv/bin/pytest -q -s tests/lab/test_lb_pair.py        # about 9-10 min on 2 cores (16 beside make test)

The session brings up its own lab from inventories/lab-lbpair (prefix ci-lbp-, loopback ports 46280 / 46643):
one swarm manager, one worker, lb-1 and lb-2, and client-1, a bare lab host that sends the load
(tests/lab/vip_client.py, bounded in requests and seconds) to the floating address, which the control node
cannot reach. It provisions the firewall on the load balancers (VRRP must pass it), the swarm, the load
balancers with the address (a free one at the high end of the lab network, lab/lab-vip.sh), and releases v1 of
the demo app; the lab is removed at the end. Move times and failed requests are printed (-s), never asserted
on time; asserted: the address moved, requests resumed, the failures stayed under a bound.
"""
import collections
import contextlib
import json
import os
import re
import shlex
import subprocess
import sys
import time

import pytest

from loadgen import LoadGen

pytestmark = pytest.mark.lab

PREFIX = "ci-lbp-"
PORTS = (46280, 46643)  # other lab tests use other ports: keep them distinct
INVENTORY = "inventories/lab-lbpair"
LBS = ("lb-1", "lb-2")
CLIENT = "client-1"
HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))
# the client's load: new TLS connections per request, paced; under nginx's per-client rate limit (50 r/s)
RATE = 40
# a move is expected in about 2-3 s (2 failed health checks 1 s apart, then VRRP and gratuitous ARP): the
# failed requests of one move must stay under 10 s worth of load
MAX_FAILED = RATE * 10


def holders(lab):
    """The load balancers that have the floating address on an interface now."""
    out = []
    for host in LBS:
        text = lab.exec(host, "ip", "-4", "-o", "addr", "show", check=False)
        if re.search(r"inet %s/" % re.escape(lab.vip), text):
            out.append(host)
    return out


def wait_for_holder(lab, host, seconds=30):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        now = holders(lab)
        if now == [host]:
            return time.time()
        time.sleep(0.1)
    raise AssertionError("the address is not (only) on %s after %d s: on %s" % (host, seconds, holders(lab)))


class Client:
    """vip_client.py running in the client container, in the background."""

    def __init__(self, lab, seconds, path="/version", stoppable=False):
        self.lab = lab
        self.stop_file = "/tmp/greenflow-vip-client.stop" if stoppable else ""
        if stoppable:
            lab.exec(CLIENT, "rm", "-f", self.stop_file)
        with open(os.path.join(HERE, "vip_client.py"), "rb") as script:
            self.proc = subprocess.Popen(
                ["docker", "exec", "-i", lab.container(CLIENT), "python3", "-", "https://%s%s" % (lab.vip, path),
                 "--rate", str(RATE), "--seconds", str(seconds), "--requests", str(int(RATE * seconds) + 10),
                 "--stop-file", self.stop_file],
                stdin=script, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.seconds = seconds

    def stop(self):
        """End the load now (a stoppable client); result() then returns what it sent."""
        self.lab.exec(CLIENT, "touch", self.stop_file)

    def result(self):
        out, err = self.proc.communicate(timeout=self.seconds + 60)
        assert self.proc.returncode == 0, "the client failed: %s" % err[-2000:]
        return json.loads(out)["samples"]


def became_master(lab, host, since):
    """When keepalived on `host` said it entered MASTER state (wall clock), the first time after `since`."""
    text = lab.exec(host, "journalctl", "-u", "keepalived", "-o", "short-unix", "--no-pager",
                    "--since", "@%d" % int(since - 1))
    for line in text.splitlines():
        if "Entering MASTER STATE" in line:
            stamp = float(line.split()[0])
            if stamp >= since - 0.01:
                return stamp
    return None


def analyse(samples, t_event, new_master):
    """Figures of one move: from the event (nginx or keepalived stopped) to the first answer the new master gave
    through the address; the failed requests from 1 s before the event on (in flight at that moment)."""
    ok_new = [s for s in samples if s[0] >= t_event and s[2] == 200 and s[3] == new_master]
    failed = [s for s in samples if s[0] >= t_event - 1 and s[2] != 200]
    failed_earlier = [s for s in samples if s[0] < t_event - 1 and s[2] != 200]
    kinds = collections.Counter((str(s[2]) if s[2] else s[4].split(":")[0]) for s in failed)
    first_ok = min((s[1] for s in ok_new), default=None)
    last_failed = max((s[1] for s in failed), default=None)
    # after the first answer of the new master, which load balancers answered, and the failures among them
    after = [s for s in samples if first_ok is not None and s[0] > first_ok]
    return {
        "requests": len(samples),
        "failed": len(failed),
        "failed_kinds": dict(kinds),
        "failed_before_event": len(failed_earlier),
        "first_answer_s": None if first_ok is None else round(first_ok - t_event, 3),
        "last_failure_s": None if last_failed is None else round(last_failed - t_event, 3),
        "after": dict(collections.Counter("%s %s" % (s[2], s[3] or "-") for s in after)),
    }


def move(lab, what, master, other, seconds=24, lead=5, action=None):
    """Stop `what` (nginx or keepalived) on the master under load, or run `action` (what it does is `what`);
    return the figures."""
    client = Client(lab, seconds)
    time.sleep(lead)  # steady load through the master first
    t_event = time.time()
    if action is None:
        lab.exec(master, "systemctl", "stop", what)
    else:
        action()
    t_holder = wait_for_holder(lab, other)
    samples = client.result()
    figures = analyse(samples, t_event, other)
    master_at = became_master(lab, other, t_event)
    figures["master_state_s"] = None if master_at is None else round(master_at - t_event, 3)
    figures["address_seen_on_backup_s"] = round(t_holder - t_event, 3)
    print("\n[lb pair] %s on %s under %d req/s: %s MASTER after %s s (address seen there after %s s), "
          "first answer through the address after %s s; %d of %d requests failed %s; after the move: %s"
          % (what if action else what + " stopped", master, RATE, other, figures["master_state_s"],
             figures["address_seen_on_backup_s"], figures["first_answer_s"], figures["failed"], figures["requests"],
             figures["failed_kinds"], figures["after"]))
    return figures


def assert_moved(figures, new_master):
    assert figures["failed_before_event"] == 0, figures
    assert figures["first_answer_s"] is not None, "no answer from %s through the address after the move: %s" % (
        new_master, figures)
    assert figures["failed"] <= MAX_FAILED, figures
    # once the new master answered, every request was answered by it
    assert set(figures["after"]) == {"200 %s" % new_master}, figures


def playbook_recap(proc):
    """{host: changed count} from a playbook's recap."""
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\S+)\s+:\s+ok=\d+\s+changed=(\d+)", proc.stdout, re.M)}


@pytest.fixture(scope="module")
def pair_lab(prefixed_lab):
    lab = prefixed_lab(PREFIX, PORTS, inventory=INVENTORY)
    started = time.monotonic()
    network = lab.prefix + "greenflow-lab"
    lab.vip = subprocess.run([os.path.join(REPO_ROOT, "lab", "lab-vip.sh"), network], capture_output=True,
                             text=True, check=True, timeout=60).stdout.strip()
    lab.env["GREENFLOW_LAB_VIP"] = lab.vip
    # the swarm beside the load balancers (no host in common); on the load balancers the firewall first, so that
    # keepalived's VRRP has to pass it from the start
    swarm = lab.playbook_background("playbooks/swarm.yml")
    lab.playbook("playbooks/host_security.yml", "--limit", "lb")
    lab.wait_background(swarm)
    lab.lb_run = lab.playbook("playbooks/lb.yml")
    lab.playbook("lab/load-images.yml", "-e", '{"demo_versions": ["1", "2"]}')
    # No PostgreSQL in this inventory: no backup gate (release_skip_backup_check; pg_backup_host only names a host
    # that exists - deploy.yml's delegate_to of the skipped backup tasks is templated even when they are skipped,
    # and an empty name fails under ansible-core 2.19); no node exporter on the swarm nodes: no CPU and memory
    # lines. deploy.yml reads lb-1's access log (lb[0]): the light load goes there, through its loopback port.
    with LoadGen(lab.url("/version"), rate=20, threads=2, max_requests=20 * 300, max_seconds=300):
        lab.playbook("playbooks/deploy.yml", "-e", "release_version=1", "-e", '{"cutover_steps": [100]}',
                     "-e", "cutover_step_seconds=2", "-e", "cutover_min_requests=5",
                     "-e", "cutover_abort_cpu_percent=0", "-e", "cutover_abort_memory_percent=0",
                     "-e", "release_skip_backup_check=true", "-e", "pg_backup_host=swarm-manager-1")
    # v1 answers through the address (nginx's fail_timeout after a first release: see test_release.py)
    deadline = time.monotonic() + 90
    while True:
        samples = Client(lab, 2).result()
        if samples and all(s[2] == 200 for s in samples):
            break
        assert time.monotonic() < deadline, "v1 does not answer through %s: %s" % (lab.vip, samples[-3:])
        time.sleep(2)
    print("\n[lb pair] provisioned (firewall on the load balancers, swarm, both load balancers with %s, v1 released)"
          " in %.0f s" % (lab.vip, time.monotonic() - started))
    return lab


def test_one_load_balancer_holds_the_address_and_serves_the_app(pair_lab):
    lab = pair_lab
    # keepalived starts in the group's order: lb-1 (priority 150) takes the address, lb-2 (140) waits
    assert holders(lab) == ["lb-1"]
    samples = Client(lab, 3).result()
    assert samples and {(s[2], s[3]) for s in samples} == {(200, "lb-1")}, samples[:5]
    for host in LBS:
        rules = lab.exec(host, "nft", "list", "table", "inet", "greenflow")
        assert re.search(r"meta l4proto (vrrp|112) accept", rules), rules
        conf = lab.exec(host, "stat", "-c", "%a %U", "/etc/keepalived/keepalived.conf").split()
        assert conf == ["600", "root"]


def test_lb_yml_again_changes_nothing_and_check_mode_passes(pair_lab):
    lab = pair_lab
    again = lab.playbook("playbooks/lb.yml")
    changed = playbook_recap(again)
    print("\n[lb pair] lb.yml again in %.0f s: changed %s" % (again.seconds, changed))
    assert changed["lb-1"] == 0 and changed["lb-2"] == 0, again.stdout[-4000:]
    check = lab.playbook("playbooks/lb.yml", "--check")
    assert playbook_recap(check)["lb-1"] == 0
    # the VRRP password is never printed
    password = lab.exec("lb-1", "sed", "-n", "s/^ *auth_pass //p", "/etc/keepalived/keepalived.conf").strip()
    assert len(password) == 8
    for run in (lab.lb_run, again, check):
        assert password not in run.stdout


def test_nginx_stopped_on_the_master_moves_the_address(pair_lab):
    lab = pair_lab
    assert holders(lab) == ["lb-1"]
    figures = move(lab, "nginx", "lb-1", "lb-2")
    assert holders(lab) == ["lb-2"]
    assert_moved(figures, "lb-2")


def test_nginx_back_on_the_old_master_does_not_take_the_address_back(pair_lab):
    lab = pair_lab
    assert holders(lab) == ["lb-2"]
    client = Client(lab, 14)
    time.sleep(2)
    lab.exec("lb-1", "systemctl", "start", "nginx")
    time.sleep(8)  # the health check's rise (2 s) and many VRRP adverts later
    samples = client.result()
    states = lab.exec("lb-1", "journalctl", "-u", "keepalived", "-o", "cat", "--no-pager", "-n", "5")
    kinds = collections.Counter((s[2], s[3]) for s in samples)
    print("\n[lb pair] nginx back on lb-1: the address stays on %s; answers %s" % (holders(lab), dict(kinds)))
    assert holders(lab) == ["lb-2"]
    assert "Entering BACKUP STATE" in states, states
    assert set(kinds) == {(200, "lb-2")}, kinds


def test_keepalived_stopped_on_the_master_moves_the_address_and_its_return_does_not(pair_lab):
    lab = pair_lab
    assert holders(lab) == ["lb-2"]
    figures = move(lab, "keepalived", "lb-2", "lb-1")
    assert holders(lab) == ["lb-1"]
    assert_moved(figures, "lb-1")
    lab.exec("lb-2", "systemctl", "start", "keepalived")
    client = Client(lab, 8)
    time.sleep(6)
    samples = client.result()
    assert holders(lab) == ["lb-1"]
    assert {(s[2], s[3]) for s in samples} == {(200, "lb-1")}


def test_master_cut_off_from_the_network_moves_the_address(pair_lab):
    """The host is lost (its lab network link removed): no FAULT advert, the backup takes over after three missed
    adverts. Back on the network, a run of lb.yml makes it a backup again (Docker names the new link eth1: the
    role's plan finds the interface by the address's subnet)."""
    lab = pair_lab
    network = lab.prefix + "greenflow-lab"
    assert holders(lab) == ["lb-1"]

    def cut():
        subprocess.run(["docker", "network", "disconnect", network, lab.container("lb-1")], check=True, timeout=60)

    figures = move(lab, "network cut", "lb-1", "lb-2", action=cut)
    assert_moved(figures, "lb-2")
    subprocess.run(["docker", "network", "connect", network, lab.container("lb-1")], check=True, timeout=60)
    again = lab.playbook("playbooks/lb.yml")
    time.sleep(3)
    states = lab.exec("lb-1", "journalctl", "-u", "keepalived", "-o", "cat", "--no-pager", "-n", "4")
    print("\n[lb pair] lb-1 back on the network, lb.yml in %.0f s (changed %s): the address stays on %s"
          % (again.seconds, playbook_recap(again), holders(lab)))
    assert "Entering BACKUP STATE" in states, states
    samples = Client(lab, 4).result()
    assert holders(lab) == ["lb-2"]
    assert {(s[2], s[3]) for s in samples} == {(200, "lb-2")}


def test_bad_floating_address_settings_are_refused_before_any_change(pair_lab):
    lab = pair_lab
    holding = holders(lab)
    cases = [
        (["-e", "nginx_lb_vip=10.0.0.300"], "nginx_lb_vip must be an IPv4 address"),
        (["-e", "nginx_lb_keepalived_auth_pass=''"], "need a VRRP password"),
        (["-e", "nginx_lb_keepalived_auth_pass=toolongpassword"], "need a VRRP password"),
        (["-e", "nginx_lb_keepalived_check_weight=-50"], "a negative weight needs nginx_lb_keepalived_nopreempt false"),
        (["-e", "nginx_lb_vip=192.0.2.10"], "no interface has an IPv4 subnet that holds nginx_lb_vip 192.0.2.10"),
    ]
    before = lab.exec("lb-1", "md5sum", "/etc/keepalived/keepalived.conf")
    for extra, message in cases:
        proc = lab.playbook("playbooks/lb.yml", *extra, check=False)
        out = " ".join(proc.stdout.split())
        assert proc.returncode != 0, extra
        assert message in out, (extra, out[-3000:])
        assert "toolongpassword" not in out.replace("nginx_lb_keepalived_auth_pass=toolongpassword", "")
    assert lab.exec("lb-1", "md5sum", "/etc/keepalived/keepalived.conf") == before
    assert holders(lab) == holding


# -- releases across both load balancers (deploy.yml and rollback.yml switch every load balancer of the group) ----

APP = "demo"
UPSTREAM_CONF = "/etc/nginx/conf.d/greenflow-upstream-%s.conf" % APP
# deploy.yml in this lab: no PostgreSQL (no backup gate), no node exporter on the swarm nodes (no CPU and memory
# lines); steps short enough for a test, with enough requests per step from the two sources of load below
RELEASE = ["-e", "release_skip_backup_check=true", "-e", "pg_backup_host=swarm-manager-1",
           "-e", "cutover_abort_cpu_percent=0", "-e", "cutover_abort_memory_percent=0",
           "-e", '{"cutover_steps": [10, 50, 100]}', "-e", "cutover_step_seconds=6", "-e", "cutover_min_requests=20"]


def shares_on(lab, host):
    """The split the app's upstream file on ``host`` holds (colours with a share above 0)."""
    text = lab.exec(host, "cat", UPSTREAM_CONF)
    state = json.loads(re.search(r"^# greenflow-state: (.*)$", text, re.M).group(1))
    return dict((c, v) for c, v in state["shares"].items() if v)


def both_shares(lab):
    return dict((host, shares_on(lab, host)) for host in LBS)


def release_record(lab):
    return json.loads(lab.exec("lb-1", "cat", "/var/lib/greenflow/releases/%s.json" % APP))


def lease_copy(lab):
    """lb-2's copy of the lease of the newest cutover (deploy.yml runs on lb-1: lb-2 is the peer)."""
    return json.loads(lab.exec("lb-2", "cat", "/var/lib/greenflow/releases/peers/%s.json" % APP))["releases"][-1]


def colours(lab):
    """(live, idle): the colour both load balancers send everything to, and the other one."""
    shares = both_shares(lab)
    live = list(shares["lb-1"])
    assert len(live) == 1 and shares["lb-2"] == shares["lb-1"], shares
    return live[0], "green" if live[0] == "blue" else "blue"


def service_version(lab, colour):
    """The swarm's version of a colour's service (it changes with every update of the service)."""
    return lab.exec("swarm-manager-1", "docker", "service", "inspect", "%s-%s" % (APP, colour),
                    "--format", "{{.Version.Index}}").strip()


@contextlib.contextmanager
def stopping(client):
    """The client's load ends with the block, whatever happens in it."""
    try:
        yield client
    finally:
        client.stop()


def under_load(lab, playbook, *args, check=True):
    """``playbook`` under two loads at once: the client through the floating address (whichever load balancer holds
    it) and the control node through lb-1's loopback port, so that both load balancers carry traffic. Returns
    (proc, client samples, control node load)."""
    client = Client(lab, 400, stoppable=True)
    try:
        with LoadGen(lab.url("/version"), rate=20, threads=2, max_requests=20 * 400, max_seconds=400) as load:
            time.sleep(2)
            proc = lab.playbook(playbook, *args, check=check)
            time.sleep(2)
    finally:
        client.stop()  # also when the playbook failed: no load left running for the next test
    return proc, client.result(), load


def by_lb(samples):
    """{(load balancer, answer): count} of the client's samples (answer: the release for a 200, else the status or
    error)."""
    return dict(collections.Counter((s[3] or "-", s[5] if s[2] == 200 else str(s[2] or s[4].split(":")[0]))
                                    for s in samples))


def test_a_release_and_a_rollback_switch_both_load_balancers_together_under_load(pair_lab):
    lab = pair_lab
    live, idle = colours(lab)  # blue and green on a fresh lab (v1 is its first release)
    holder = holders(lab)
    proc, samples, load = under_load(lab, "playbooks/deploy.yml", "-e", "release_version=2", *RELEASE)
    flat = " ".join(proc.stdout.split())
    print("\n[lb pair release] deploy 1 -> 2 in %.0f s, address on %s; client: %s; control node (lb-1): %s"
          % (proc.seconds, holder, by_lb(samples), load.summary()))
    assert "2 load balancers switched together: lb-1, lb-2" in flat, flat[-4000:]
    assert both_shares(lab) == {"lb-1": {idle: 100}, "lb-2": {idle: 100}}
    failed = [s for s in samples if s[2] != 200]
    assert samples and not failed, failed[:10]
    assert load.summary()["failed"] == 0, load.summary()
    # the release went through the address holder's and lb-1's logs: both versions answered on each
    answered = set((lb, body) for lb, body in by_lb(samples))
    assert {(holder[0], "1"), (holder[0], "2")} <= answered, answered
    assert set(load.versions()) == {"1", "2"}, load.summary()
    entry = release_record(lab)["releases"][-1]
    assert (entry["action"], entry["version"], entry["outcome"]) == ("deploy", "2", "succeeded")
    steps = [e for e in entry["timeline"] if e.get("event") == "step"]
    assert [s["share"] for s in steps] == [10, 50, 100] and all(s["verdict"] == "pass" for s in steps), steps
    # the copy of the lease on lb-2 was renewed with lb-1's and given back when the cutover ended
    copy = lease_copy(lab)
    assert (copy["id"], copy["mirror_of"], copy["lease"]["state"]) == (entry["id"], "lb-1", "done"), copy

    # a load balancer that joins the group (here: lb-2 without the app's upstream file) starts on the group's split,
    # the first load balancer's, not on blue 100 %: lb.yml copies it
    lab.exec("lb-2", "mv", UPSTREAM_CONF, "/root/greenflow-upstream.moved")
    lab.playbook("playbooks/lb.yml")
    assert both_shares(lab) == {"lb-1": {idle: 100}, "lb-2": {idle: 100}}

    proc, samples, load = under_load(lab, "playbooks/rollback.yml")
    flat = " ".join(proc.stdout.split())
    print("[lb pair rollback] 2 -> 1 in %.1f s; client: %s; control node (lb-1): %s"
          % (proc.seconds, by_lb(samples), load.summary()))
    assert "switched at once" in flat, flat[-3000:]
    assert both_shares(lab) == {"lb-1": {live: 100}, "lb-2": {live: 100}}
    failed = [s for s in samples if s[2] != 200]
    assert samples and not failed, failed[:10]
    assert load.summary()["failed"] == 0, load.summary()
    tail = Client(lab, 3).result()
    assert {s[5] for s in tail} == {"1"}, by_lb(tail)


def test_a_load_balancer_with_a_broken_config_stops_the_release_before_any_traffic_moves(pair_lab):
    lab = pair_lab
    live, idle = colours(lab)
    before = both_shares(lab)
    idle_version = service_version(lab, idle)
    # a config nginx -t refuses, on the second load balancer only (what a bad hand edit leaves behind)
    lab.exec("lb-2", "sh", "-c", "echo 'this is not nginx;' > /etc/nginx/conf.d/zz-broken.conf")
    try:
        proc = lab.playbook("playbooks/deploy.yml", "-e", "release_version=2", *RELEASE, check=False)
    finally:
        lab.exec("lb-2", "rm", "-f", "/etc/nginx/conf.d/zz-broken.conf")
    flat = " ".join(proc.stdout.split())
    print("\n[lb pair] lb-2 with a broken config: deploy refused in %.0f s" % proc.seconds)
    assert proc.returncode != 0
    assert "Check that nginx on every load balancer has a valid config" in flat, flat[-3000:]
    assert "(item=lb-2)" in flat and "zz-broken.conf" in flat, flat[-3000:]
    assert both_shares(lab) == before
    assert release_record(lab)["releases"][-1]["action"] == "rollback"  # no entry was opened
    assert service_version(lab, idle) == idle_version  # the idle colour was not touched


def test_a_rollback_names_a_load_balancer_it_cannot_switch_and_the_command_that_finishes_it(pair_lab):
    lab = pair_lab
    live, idle = colours(lab)
    proc, _samples, _load = under_load(lab, "playbooks/deploy.yml", "-e", "release_version=2", *RELEASE[:-4],
                                       "-e", '{"cutover_steps": [100]}', "-e", "cutover_step_seconds=2",
                                       "-e", "cutover_min_requests=5")
    assert both_shares(lab) == {"lb-1": {idle: 100}, "lb-2": {idle: 100}}
    lab.exec("lb-2", "sh", "-c", "echo 'this is not nginx;' > /etc/nginx/conf.d/zz-broken.conf")
    try:
        proc, samples, load = under_load(lab, "playbooks/rollback.yml", check=False)
    finally:
        lab.exec("lb-2", "rm", "-f", "/etc/nginx/conf.d/zz-broken.conf")
    flat = " ".join(proc.stdout.split())
    print("\n[lb pair] rollback with lb-2's config broken: rc %d in %.1f s; client: %s"
          % (proc.returncode, proc.seconds, by_lb(samples)))
    assert proc.returncode != 0
    assert "but lb-2 could not be switched" in flat, flat[-3000:]
    assert "do not run rollback.yml again" in flat
    # the first load balancer went back at once; lb-2 kept what it had; every request was answered
    assert both_shares(lab) == {"lb-1": {live: 100}, "lb-2": {idle: 100}}
    assert [s for s in samples if s[2] != 200] == [] and load.summary()["failed"] == 0
    # the very command the run printed (ad-hoc nginx_upstream on lb-2) finishes the rollback once lb-2 is fixed
    printed = re.search(r"finish with: (ansible lb-2 -m greenflow\.platform\.nginx_upstream -a '[^']*')", flat)
    assert printed, flat[-3000:]
    command = shlex.split(printed.group(1))
    finish = subprocess.run([os.path.join(os.path.dirname(sys.executable), command[0]), "-i", INVENTORY] + command[1:],
                            cwd=REPO_ROOT, env=lab.env, capture_output=True, text=True, timeout=300)
    assert finish.returncode == 0, finish.stdout[-2000:]
    assert both_shares(lab) == {"lb-1": {live: 100}, "lb-2": {live: 100}}


def test_a_lost_controller_is_undone_by_the_watchdog_of_each_load_balancer(pair_lab):
    """The controller is killed mid-cutover: lb-1's watchdog puts lb-1 back and closes the entry, lb-2's watchdog
    puts lb-2 back and closes its copy; the client through the address loses no request."""
    lab = pair_lab
    live, idle = colours(lab)
    client = Client(lab, 400, stoppable=True)
    with LoadGen(lab.url("/version"), rate=20, threads=2, max_requests=20 * 400, max_seconds=400) as load, \
            stopping(client):
        deploy = lab.playbook_background("playbooks/deploy.yml", "-e", "release_version=2", *RELEASE[:-4],
                                         "-e", '{"cutover_steps": [10, 50, 100]}', "-e", "cutover_step_seconds=30",
                                         "-e", "cutover_min_requests=5", "-e", "cutover_lease_ttl=10")
        deadline = time.monotonic() + 300
        while shares_on(lab, "lb-2").get(idle) != 10:
            assert deploy.poll() is None, "the deploy ended before lb-2 had %s 10 %%:\n%s" % (
                idle, deploy.stdout.read()[-3000:])
            assert time.monotonic() < deadline, "lb-2 never got %s 10 %%" % idle
            time.sleep(0.2)
        os.killpg(deploy.pid, 9)
        lost_at = time.monotonic()
        deploy.wait(timeout=60)
        while both_shares(lab) != {"lb-1": {live: 100}, "lb-2": {live: 100}} and time.monotonic() < lost_at + 60:
            time.sleep(0.2)
        back_after = time.monotonic() - lost_at
        time.sleep(2)
    samples = client.result()
    print("\n[lb pair] controller killed at %s 10 %%: both load balancers back on %s %.1f s later; client: %s; "
          "control node (lb-1): %s" % (idle, live, back_after, by_lb(samples), load.summary()))
    assert both_shares(lab) == {"lb-1": {live: 100}, "lb-2": {live: 100}}
    entry = release_record(lab)["releases"][-1]
    assert (entry["version"], entry["outcome"]) == ("2", "failed") and entry["reason"].startswith("controller lost")
    copy = lease_copy(lab)
    assert copy["id"] == entry["id"] and copy["outcome"] == "failed" and copy["lease"]["state"] == "lost", copy
    assert [s for s in samples if s[2] != 200] == []
    assert load.summary()["failed"] == 0, load.summary()
