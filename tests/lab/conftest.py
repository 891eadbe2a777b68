"""Shared fixtures of the lab tests: a private, prefixed lab per test module.

    def test_x(prefixed_lab):
        lab = prefixed_lab("ci-mine-", (48280, 48643))   # lab-up now, lab-down at the session end
        lab.playbook("playbooks/swarm.yml")
        lab.playbook("playbooks/deploy.yml", "-e", "release_version=1")

Each lab has its own container names (the prefix), network and loopback ports, so it never touches
the default lab or another engineer's. GREENFLOW_KEEP_LAB=1 keeps the labs after the run (for
debugging; remove them with `GREENFLOW_LAB_PREFIX=<prefix> ansible-playbook lab/lab-down.yml`).

GREENFLOW_LAB_REUSE=1 runs the tests on a lab that is already up and provisioned instead (see
shared_lab.py).
"""
import os
import subprocess
import sys
import time

import pytest

from shared_lab import assert_lab_running, lab_address

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)


class PrefixedLab:
    def __init__(self, prefix, http_port, https_port, reused=False, inventory="inventories/lab"):
        self.prefix = prefix
        self.inventory = inventory
        self.reused = reused
        self.http_port = int(http_port)
        self.https_port = int(https_port)
        self.env = dict(
            os.environ, GREENFLOW_LAB_PREFIX=prefix, GREENFLOW_LAB_HTTP_PORT=str(self.http_port),
            GREENFLOW_LAB_HTTPS_PORT=str(self.https_port),
            ANSIBLE_CONFIG=os.path.join(REPO_ROOT, "ansible.cfg"), ANSIBLE_NOCOLOR="1",
            ANSIBLE_FORCE_COLOR="0", PATH=BIN + os.pathsep + os.environ.get("PATH", ""))

    def url(self, path="/"):
        return "https://127.0.0.1:%d%s" % (self.https_port, path)

    def container(self, host):
        return self.prefix + host

    def playbook(self, playbook, *args, check=True, timeout=900):
        """Run a playbook against this lab; returns the CompletedProcess (with .seconds)."""
        cmd = [os.path.join(BIN, "ansible-playbook"), "-i", self.inventory, playbook, *args]
        started = time.monotonic()
        proc = subprocess.run(cmd, cwd=REPO_ROOT, env=self.env, capture_output=True, text=True,
                              timeout=timeout)
        proc.seconds = time.monotonic() - started
        if check and proc.returncode != 0:
            pytest.fail("%s failed (rc %d):\n%s\n%s" % (" ".join(cmd[1:]), proc.returncode,
                                                       proc.stdout[-6000:], proc.stderr[-2000:]))
        return proc

    def playbook_background(self, playbook, *args):
        """Start a playbook without waiting for it (see wait_background). It runs in a session of
        its own, so that a test can kill it with all its workers: os.killpg(proc.pid, SIGKILL)."""
        cmd = [os.path.join(BIN, "ansible-playbook"), "-i", self.inventory, playbook, *args]
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
        proc.cmd = cmd
        return proc

    def wait_background(self, proc, timeout=900):
        out, _ = proc.communicate(timeout=timeout)
        if proc.returncode != 0:
            pytest.fail("%s failed (rc %d):\n%s" % (" ".join(proc.cmd[1:]), proc.returncode, out[-6000:]))
        return out

    def exec(self, host, *cmd, check=True, timeout=60):
        """Run a command inside a lab host; returns its stdout."""
        proc = subprocess.run(["docker", "exec", self.container(host), *cmd], capture_output=True,
                              text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError("%s on %s failed: %s" % (cmd, host, proc.stderr))
        return proc.stdout

    def up(self):
        if self.reused:
            assert_lab_running(self.prefix)
        else:
            self.playbook("lab/lab-up.yml")
        return self

    def down(self):
        if self.reused or os.environ.get("GREENFLOW_KEEP_LAB") == "1":
            return
        self.playbook("lab/lab-down.yml", check=False)


@pytest.fixture(scope="session")
def prefixed_lab(request):
    """Factory: prefixed_lab(prefix, (http_port, https_port)) brings that lab up once per session
    and tears it down at the end of the session (even when tests fail); with GREENFLOW_LAB_REUSE=1
    it hands out the provisioned lab of the environment instead (lab.reused is then True).
    inventory="inventories/lab-lbpair": a lab of another inventory (never reused: always its own)."""
    labs = {}

    def make(prefix, ports, inventory="inventories/lab"):
        if prefix not in labs:
            if inventory == "inventories/lab":
                lab = PrefixedLab(*lab_address(prefix, ports))
            else:
                lab = PrefixedLab(prefix, ports[0], ports[1], inventory=inventory)
            request.addfinalizer(lab.down)
            labs[prefix] = lab
            try:
                lab.up()
            except BaseException as exc:  # later tests fail at once instead of trying again
                lab.broken = exc
                raise
        lab = labs[prefix]
        if getattr(lab, "broken", None) is not None:
            pytest.fail("lab %s could not be brought up: %s" % (prefix, str(lab.broken)[:500]))
        return lab

    return make
