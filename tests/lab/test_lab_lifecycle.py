"""The lab itself: lab-up creates every host of the inventory, a second lab-up changes nothing, lab-down removes
exactly what the lab made. While its hosts are still bare, site.yml is given bad input (no manager, a
replica without primary, a port out of range, a missing password, the removed backup engine) and must fail
in its preflight with a message naming the problem, with no host changed. Runs in its own prefixed lab so that it never touches
another one."""
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from shared_lab import LAB_HOSTS

pytestmark = pytest.mark.lab

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)
PREFIX = "ci-lifecycle-"
LABEL = "greenflow.lab=%sgreenflow-lab" % PREFIX
ENV = dict(os.environ, GREENFLOW_LAB_PREFIX=PREFIX, GREENFLOW_LAB_HTTP_PORT="48080",
           GREENFLOW_LAB_HTTPS_PORT="48443", ANSIBLE_CONFIG=os.path.join(REPO_ROOT, "ansible.cfg"),
           ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0")


def _playbook(name):
    proc = subprocess.run([os.path.join(BIN, "ansible-playbook"), "-i", "inventories/lab", name],
                          cwd=REPO_ROOT, env=ENV, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    return dict((host, int(changed)) for host, changed in
                re.findall(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)", proc.stdout, re.M))


def _docker(*args):
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True, timeout=60).stdout.split()


def _everything_else():
    """Containers, volumes and networks that do not belong to this test's lab."""
    ours = set(_docker("ps", "-aq", "--no-trunc", "--filter", "label=" + LABEL))
    return (set(_docker("ps", "-aq", "--no-trunc")) - ours,
            set(_docker("volume", "ls", "-q")) - set(_docker("volume", "ls", "-q", "--filter", "label=" + LABEL)),
            set(_docker("network", "ls", "-q")) - set(_docker("network", "ls", "-q", "--filter", "label=" + LABEL)))


@pytest.fixture(scope="module")
def lab():
    before = _everything_else()
    first = _playbook("lab/lab-up.yml")
    yield first, before
    _playbook("lab/lab-down.yml")


def test_lab_up_creates_every_host_as_a_systemd_container_with_loopback_ports(lab):
    first, _ = lab
    assert first["localhost"] > 0
    names = sorted(_docker("ps", "--filter", "label=" + LABEL, "--format", "{{.Names}}"))
    assert names == sorted(PREFIX + host for host in LAB_HOSTS)
    inspect = json.loads(subprocess.run(["docker", "inspect", PREFIX + "lb-1"], capture_output=True, text=True,
                                        check=True).stdout)[0]
    bindings = [b for port in inspect["HostConfig"]["PortBindings"].values() for b in port]
    assert sorted(b["HostPort"] for b in bindings) == ["48080", "48443"]
    assert {b["HostIp"] for b in bindings} == {"127.0.0.1"}
    for host in LAB_HOSTS:
        state = subprocess.run(["docker", "exec", PREFIX + host, "systemctl", "is-system-running"],
                               capture_output=True, text=True).stdout.strip()
        assert state in ("running", "degraded"), (host, state)


def test_second_lab_up_changes_nothing(lab):
    again = _playbook("lab/lab-up.yml")
    assert set(again) == set(LAB_HOSTS) | {"localhost"}
    assert all(changed == 0 for changed in again.values()), again


def test_lab_status_lists_every_host(lab):
    out = subprocess.run([os.path.join(REPO_ROOT, "lab", "lab-status.sh")], env=ENV, capture_output=True,
                         text=True, check=True).stdout
    for host in LAB_HOSTS:
        assert re.search(r"^%s\s+running\s+(running|degraded)" % re.escape(PREFIX + host), out, re.M), out


def _inventory_without(tmp_path, edit):
    """A copy of inventories/lab whose hosts.yml went through edit(text) -> text."""
    copy = tmp_path / "lab"
    shutil.copytree(os.path.join(REPO_ROOT, "inventories", "lab"), copy)
    hosts = copy / "hosts.yml"
    before = hosts.read_text()
    hosts.write_text(edit(before))
    assert hosts.read_text() != before
    return str(copy)


def _bare(host, path):
    return subprocess.run(["docker", "exec", PREFIX + host, "test", "-e", path]).returncode != 0


# Bad input: site.yml fails in its preflight play, names the problem, and no host has changed (the
# hosts of this lab are bare: nothing of Docker, nginx or PostgreSQL may appear on them).
BAD_INPUT = {
    "no manager": (
        lambda tmp: ["-i", _inventory_without(tmp, lambda t: re.sub(
            r"(swarm_managers:\n\s+hosts:)\n\s+swarm-manager-1:\n\s+ansible_host: .*\n", r"\1 {}\n", t))],
        r"No swarm manager in the inventory: group 'swarm_managers' is missing or empty"),
    "replica without primary": (
        lambda tmp: ["-i", _inventory_without(tmp, lambda t: re.sub(
            r"(pg_primary:\n\s+hosts:)\n\s+pg-primary-1:\n\s+ansible_host: .*\n", r"\1 {}\n", t))],
        r"replica\(s\) pg-replica-1 have no primary: group 'pg_primary' is empty or missing"),
    "port out of range": (
        lambda tmp: ["-i", "inventories/lab", "-e", "nginx_lb_https_port=70000"],
        r"lb-1: a port is out of range \(1-65535\) or used twice: nginx_lb_http_port=\d+,\s+nginx_lb_https_port=70000"),
    "missing password": (
        lambda tmp: ["-i", "inventories/lab", "-e", "pg_app_password="],
        r"PostgreSQL on pg-primary-1: missing password\(s\) pg_app_password"),
    # an inventory still on 0.1.x's backup engine (docs/upgrade-0.2.md)
    "removed backup engine": (
        lambda tmp: ["-i", "inventories/lab", "-e", "pg_backup_engine=greenflow-pg-backup"],
        r"pg_backup_engine is greenflow-pg-backup, the backup engine of greenflow\.platform 0\.1\.x, which was "
        r"removed in 0\.2\.0.* Read docs/upgrade-0\.2\.md first\. Nothing was changed\."),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_bad_input_fails_before_any_host_changes(lab, tmp_path, case):
    inventory, message = BAD_INPUT[case]
    secrets = ["-e", "postgresql_lab_secrets_dir=%s" % os.path.join(REPO_ROOT, "lab", ".secrets")]
    proc = subprocess.run([os.path.join(BIN, "ansible-playbook"), *inventory(tmp_path), *secrets,
                           "playbooks/site.yml"], cwd=REPO_ROOT, env=ENV, capture_output=True, text=True,
                          timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    assert re.search(message, re.sub(r"\s+", " ", out)), out[-3000:]
    recap = re.findall(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)", proc.stdout, re.M)
    assert recap and all(changed == "0" for _, changed in recap), recap
    assert re.search(r"^PLAY \[.*preflight", proc.stdout, re.M) and "PLAY [Provision" not in proc.stdout
    for host, path in (("swarm-manager-1", "/etc/docker"), ("lb-1", "/etc/nginx"),
                       ("pg-primary-1", "/etc/postgresql"), ("pg-replica-1", "/etc/postgresql")):
        assert _bare(host, path), "%s appeared on %s" % (path, host)


def test_lab_down_removes_the_lab_and_nothing_else(lab):
    _, before = lab
    _playbook("lab/lab-down.yml")
    assert _docker("ps", "-aq", "--filter", "label=" + LABEL) == []
    assert _docker("volume", "ls", "-q", "--filter", "label=" + LABEL) == []
    assert _docker("network", "ls", "-q", "--filter", "label=" + LABEL) == []
    after = _everything_else()
    # what existed before this lab still exists (others may have added things meanwhile)
    assert before[0] <= after[0] and before[1] <= after[1] and before[2] <= after[2]
