"""Which lab a lab test module runs on: its own prefixed lab, or (GREENFLOW_LAB_REUSE=1) a lab that is
already up and provisioned by site.yml, named by GREENFLOW_LAB_PREFIX and GREENFLOW_LAB_HTTP_PORT /
GREENFLOW_LAB_HTTPS_PORT (by default the default lab on 8080 / 8443). On a reused lab nothing is
brought up, provisioned or taken down: `make test` runs the release and data scenarios this way on
the lab molecule has just converged and verified (scripts/test-shared-lab.sh)."""
import os
import subprocess

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
