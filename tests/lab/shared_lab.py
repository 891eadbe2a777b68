"""Which lab a lab test module runs on: its own prefixed lab, or (GREENFLOW_LAB_REUSE=1) a lab that is
already up and provisioned by site.yml, named by GREENFLOW_LAB_PREFIX and GREENFLOW_LAB_HTTP_PORT /
GREENFLOW_LAB_HTTPS_PORT (by default the default lab on 8080 / 8443). On a reused lab nothing is
brought up, provisioned or taken down: `make test` runs the release and data scenarios this way on
the lab molecule has just converged and verified (scripts/test-shared-lab.sh)."""
import contextlib
import fcntl
import os
import subprocess
import tempfile
import time

import pytest

REUSE_LAB = os.environ.get("GREENFLOW_LAB_REUSE") == "1"
LAB_HOSTS = ("swarm-manager-1", "swarm-worker-1", "swarm-worker-2", "lb-1", "pg-primary-1", "pg-replica-1", "mon-1")


def lab_address(prefix, ports):
    """(prefix, http_port, https_port, reused) of the lab a test module runs on: its own prefixed lab,
    or with GREENFLOW_LAB_REUSE=1 the provisioned lab the environment names."""
    if not REUSE_LAB:
        return prefix, int(ports[0]), int(ports[1]), False
    return (os.environ.get("GREENFLOW_LAB_PREFIX", ""), int(os.environ.get("GREENFLOW_LAB_HTTP_PORT") or 8080),
            int(os.environ.get("GREENFLOW_LAB_HTTPS_PORT") or 8443), True)


def assert_lab_running(prefix):
    """A reused lab must be there: every host of it running (else the tests would fail one by one)."""
    label = "label=greenflow.lab=%sgreenflow-lab" % prefix
    proc = subprocess.run(["docker", "ps", "--filter", label, "--filter", "status=running", "--format",
                           "{{.Names}}"], capture_output=True, text=True, timeout=60, check=False)
    running = set(proc.stdout.split())
    missing = [host for host in LAB_HOSTS if prefix + host not in running]
    if missing:
        pytest.fail("GREENFLOW_LAB_REUSE=1 but the lab %r is not up (not running: %s); bring it up and "
                    "provision it (make lab-up, site.yml) or unset GREENFLOW_LAB_REUSE"
                    % (prefix, ", ".join(missing)))


@contextlib.contextmanager
def database_turn(prefix, timeout=5400):
    """Exclusive use of a lab's PostgreSQL among the test processes on it. On the shared lab of `make test` the
    data scenario restores and fails over the cluster while the release scenario runs beside it; the release
    scenario's migration tests write to the database and read its WAL position, so they take their turn after
    it (a lock file per lab prefix, released when its holder ends, however it ends). Yields the seconds waited."""
    path = os.path.join(tempfile.gettempdir(), "greenflow-lab-%sdatabase.lock" % (prefix or "default-"))
    started = time.monotonic()
    with open(path, "w") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() - started > timeout:
                    pytest.fail("the database of lab %r was not free within %d s (%s)" % (prefix, timeout, path))
                time.sleep(2)
        try:
            yield time.monotonic() - started
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
