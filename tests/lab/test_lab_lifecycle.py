"""The lab itself: lab-up creates the six hosts, a second lab-up changes nothing, lab-down removes
exactly what the lab made. Runs in its own prefixed lab so that it never touches another one."""
import json
import os
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.lab

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)
PREFIX = "ci-lifecycle-"
LABEL = "greenflow.lab=%sgreenflow-lab" % PREFIX
HOSTS = ["lb-1", "pg-primary-1", "pg-replica-1", "swarm-manager-1", "swarm-worker-1", "swarm-worker-2"]
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


def test_lab_up_creates_six_systemd_hosts_with_loopback_ports(lab):
    first, _ = lab
    assert first["localhost"] > 0
    names = sorted(_docker("ps", "--filter", "label=" + LABEL, "--format", "{{.Names}}"))
    assert names == sorted(PREFIX + host for host in HOSTS)
    inspect = json.loads(subprocess.run(["docker", "inspect", PREFIX + "lb-1"], capture_output=True, text=True,
                                        check=True).stdout)[0]
    bindings = [b for port in inspect["HostConfig"]["PortBindings"].values() for b in port]
    assert sorted(b["HostPort"] for b in bindings) == ["48080", "48443"]
    assert {b["HostIp"] for b in bindings} == {"127.0.0.1"}
    for host in HOSTS:
        state = subprocess.run(["docker", "exec", PREFIX + host, "systemctl", "is-system-running"],
                               capture_output=True, text=True).stdout.strip()
        assert state in ("running", "degraded"), (host, state)


def test_second_lab_up_changes_nothing(lab):
    again = _playbook("lab/lab-up.yml")
    assert set(again) == set(HOSTS) | {"localhost"}
    assert all(changed == 0 for changed in again.values()), again


def test_lab_status_lists_every_host(lab):
    out = subprocess.run([os.path.join(REPO_ROOT, "lab", "lab-status.sh")], env=ENV, capture_output=True,
                         text=True, check=True).stdout
    for host in HOSTS:
        assert re.search(r"^%s\s+running\s+(running|degraded)" % re.escape(PREFIX + host), out, re.M), out


def test_lab_down_removes_the_lab_and_nothing_else(lab):
    _, before = lab
    _playbook("lab/lab-down.yml")
    assert _docker("ps", "-aq", "--filter", "label=" + LABEL) == []
    assert _docker("volume", "ls", "-q", "--filter", "label=" + LABEL) == []
    assert _docker("network", "ls", "-q", "--filter", "label=" + LABEL) == []
    after = _everything_else()
    # what existed before this lab still exists (others may have added things meanwhile)
    assert before[0] <= after[0] and before[1] <= after[1] and before[2] <= after[2]
