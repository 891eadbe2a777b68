"""The lab's demo app, run as a real process on 127.0.0.1: endpoints, fault knobs, graceful stop."""
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
APP = os.path.join(REPO_ROOT, "lab", "images", "demo-app", "app.py")


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(port, path, timeout=5):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


@pytest.fixture
def demo_app():
    """Start the app with the given environment; stop every process at the end."""
    procs = []

    def start(**env):
        port = _free_port()
        full_env = dict(os.environ, DEMO_PORT=str(port), DEMO_VERSION="7", **env)
        proc = subprocess.Popen([sys.executable, APP], env=full_env, stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        proc.stdout.readline()  # "demo app version ... on :port" once it listens
        return proc, port

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def test_version_health_and_root(demo_app):
    _, port = demo_app()
    assert _get(port, "/version") == (200, "7\n")
    assert _get(port, "/health") == (200, "ok\n")
    status, body = _get(port, "/")
    assert status == 200 and '"version": "7"' in body


def test_error_rate_knob_fails_requests_but_not_health(demo_app):
    _, port = demo_app(DEMO_ERROR_RATE="1")
    assert [_get(port, "/version")[0] for _ in range(20)] == [500] * 20
    assert _get(port, "/health")[0] == 200


def test_error_rate_knob_is_a_fraction(demo_app):
    _, port = demo_app(DEMO_ERROR_RATE="0.5")
    failures = sum(_get(port, "/")[0] == 500 for _ in range(400))
    assert 120 < failures < 280  # binomial(400, 0.5): far outside 6 sigma otherwise


def test_unhealthy_knob(demo_app):
    _, port = demo_app(DEMO_HEALTHY="false")
    assert _get(port, "/health")[0] == 503
    assert _get(port, "/version")[0] == 200


def test_latency_knob_delays_requests(demo_app):
    _, port = demo_app(DEMO_LATENCY_MS="300")
    started = time.monotonic()
    assert _get(port, "/version")[0] == 200
    assert time.monotonic() - started >= 0.3


def test_sigterm_finishes_the_request_in_flight(demo_app):
    proc, port = demo_app(DEMO_LATENCY_MS="700")
    result = {}
    client = threading.Thread(target=lambda: result.update(answer=_get(port, "/version", timeout=10)))
    client.start()
    time.sleep(0.2)  # the request is now inside its 700 ms delay
    proc.send_signal(signal.SIGTERM)
    client.join(timeout=10)
    assert result.get("answer") == (200, "7\n")
    assert proc.wait(timeout=10) == 0


def test_secret_file_knob_gives_a_digest_never_the_secret(demo_app, tmp_path):
    import hashlib
    secret = tmp_path / "demo_api_token"
    secret.write_text("s3cr3t-value")
    _, port = demo_app(DEMO_SECRET_FILE=str(secret))
    assert _get(port, "/health") == (200, "ok\n")
    status, body = _get(port, "/secret-digest")
    assert status == 200 and body.strip() == hashlib.sha256(b"s3cr3t-value").hexdigest()
    assert "s3cr3t" not in body
    secret.unlink()  # the secret is gone: unhealthy, and it says why
    status, body = _get(port, "/health")
    assert status == 503 and "cannot read DEMO_SECRET_FILE" in body


def test_without_a_secret_file_there_is_no_digest(demo_app):
    _, port = demo_app()
    assert _get(port, "/secret-digest")[0] == 404


def test_broken_paths_knob_breaks_only_those_paths(demo_app):
    _, port = demo_app(DEMO_BROKEN_PATHS="/version, /orders")
    assert _get(port, "/version")[0] == 500
    assert _get(port, "/orders?x=1")[0] == 500
    assert _get(port, "/")[0] == 200
    assert _get(port, "/health") == (200, "ok\n")


def test_errors_while_file_knob_breaks_a_running_release_on_demand(demo_app, tmp_path):
    switch = tmp_path / "break"
    _, port = demo_app(DEMO_ERROR_RATE="1", DEMO_ERRORS_WHILE_FILE=str(switch))
    assert [_get(port, "/version")[0] for _ in range(10)] == [200] * 10
    switch.touch()
    assert [_get(port, "/version")[0] for _ in range(10)] == [500] * 10
    assert _get(port, "/health")[0] == 200
    switch.unlink()
    assert _get(port, "/version")[0] == 200


def _children(pid):
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def _cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def test_burn_cpu_knob_keeps_a_child_busy_and_the_app_answering(demo_app):
    proc, port = demo_app(DEMO_BURN_CPU="1")
    (burner,) = _children(proc.pid)
    first, t0 = _cpu_seconds(burner), time.monotonic()
    time.sleep(2)
    used = (_cpu_seconds(burner) - first) / (time.monotonic() - t0)
    assert used > 0.3, "the burner used %.2f of a core" % used  # all of one core when the machine is idle
    assert _get(port, "/version") == (200, "7\n")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    time.sleep(0.5)
    assert not os.path.exists("/proc/%d" % burner) or open("/proc/%d/stat" % burner).read().split()[2] == "Z"


def test_hold_memory_knob_keeps_that_much_resident(demo_app):
    proc, port = demo_app(DEMO_HOLD_MEMORY_MB="64")
    with open("/proc/%d/status" % proc.pid) as f:
        rss_kb = int(re.search(r"^VmRSS:\s+(\d+) kB", f.read(), re.M).group(1))
    assert rss_kb >= 64 * 1024, rss_kb
    assert _get(port, "/health") == (200, "ok\n")
