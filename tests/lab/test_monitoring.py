"""Monitoring on the lab: the exporters are scraped, and an injected fault reaches a webhook receiver as a
firing alert, then as a resolved one after the repair. Prints the time from fault to notification.

    .venv/bin/pytest -q -s tests/lab/test_monitoring.py

The session brings up its own lab (prefix ci-mon-, loopback ports 45481 / 45844) and provisions it with
site.yml; with GREENFLOW_LAB_REUSE=1 it runs on the provisioned lab of the environment. The lab's
group_vars/monitoring.yml shortens the durations (scrape and evaluation every 5 s, critical alerts after
10 s, group_wait 5 s) and points Alertmanager at http://127.0.0.1:9099/alerts on mon-1 with the plain
webhook format. The receiver is a small Python HTTP server this test starts on mon-1 (the control node
reaches the lab only through docker exec): it appends every POST body as one line to a file the test reads.
"""
import json
import os
import subprocess
import time

import pytest

pytestmark = pytest.mark.lab

PREFIX = os.environ.get("GREENFLOW_MON_LAB_PREFIX", "ci-mon-")
PORTS = (45481, 45844)  # other lab tests use other ports: keep them distinct
MON = "mon-1"
RECEIVED = "/tmp/greenflow-alerts.jsonl"
RECEIVER = r'''
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with open(sys.argv[1], "ab") as f:
            f.write(body.replace(b"\n", b" ") + b"\n")
        self.send_response(200)
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", 9099), H).serve_forever()
'''


@pytest.fixture(scope="module")
def mon_lab(prefixed_lab):
    lab = prefixed_lab(PREFIX, PORTS)
    if not lab.reused:
        started = time.monotonic()
        lab.playbook("playbooks/site.yml", timeout=2400)
        print("\n[monitoring lab] provisioned in %.0f s" % (time.monotonic() - started))
    return lab


@pytest.fixture(scope="module")
def receiver(mon_lab):
    """The webhook receiver on mon-1 (stopped at the end)."""
    mon_lab.exec(MON, "rm", "-f", RECEIVED)
    write = ["docker", "exec", "-i", mon_lab.container(MON), "sh", "-c", "cat > /tmp/greenflow-receiver.py"]
    subprocess.run(write, input=RECEIVER, text=True, check=True, timeout=30)
    mon_lab.exec(MON, "sh", "-c", "nohup python3 /tmp/greenflow-receiver.py %s >/dev/null 2>&1 & "
                 "echo $! > /tmp/greenflow-receiver.pid" % RECEIVED)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        out = mon_lab.exec(MON, "sh", "-c", "ss -ltn 'sport = :9099' | tail -n +2", check=False)
        if out.strip():
            break
        time.sleep(0.5)
    else:
        pytest.fail("the webhook receiver did not start on mon-1")
    yield
    mon_lab.exec(MON, "sh", "-c", 'kill "$(cat /tmp/greenflow-receiver.pid)"', check=False)


def query(lab, expr):
    out = lab.exec(MON, "curl", "-sf", "--get", "--data-urlencode", "query=" + expr,
                   "http://127.0.0.1:9090/api/v1/query")
    doc = json.loads(out)
    assert doc["status"] == "success", doc
    return doc["data"]["result"]


def notifications(lab):
    out = lab.exec(MON, "sh", "-c", "cat %s 2>/dev/null || true" % RECEIVED)
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def wait_for_notification(lab, alertname, instance, status, since, timeout):
    """Seconds from `since` (monotonic) until the receiver got `alertname` on `instance` with `status`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for group in notifications(lab):
            for alert in group.get("alerts", []):
                labels = alert.get("labels", {})
                if (labels.get("alertname") == alertname and labels.get("instance") == instance
                        and alert.get("status") == status):
                    return time.monotonic() - since
        time.sleep(1)
    pytest.fail("no %s notification of %s on %s within %d s; received: %s"
                % (status, alertname, instance, timeout, json.dumps(notifications(lab))[-3000:]))


def test_every_target_is_scraped(mon_lab):
    deadline = time.monotonic() + 90
    while True:
        results = query(mon_lab, "up")
        down = sorted("%s/%s" % (r["metric"]["job"], r["metric"]["instance"]) for r in results
                      if r["value"][1] != "1")
        jobs = {r["metric"]["job"] for r in results}
        if not down and {"node", "postgres", "nginx", "mtail", "docker", "blackbox", "prometheus",
                         "alertmanager"} <= jobs:
            break
        if time.monotonic() > deadline:
            pytest.fail("targets down: %s; jobs: %s" % (down, sorted(jobs)))
        time.sleep(3)
    nodes = {r["metric"]["instance"] for r in results if r["metric"]["job"] == "node"}
    assert nodes == {"swarm-manager-1", "swarm-worker-1", "swarm-worker-2", "lb-1", "pg-primary-1",
                     "pg-replica-1", "mon-1"}
    roles = {r["metric"]["instance"]: r["metric"]["pg_role"] for r in query(mon_lab, "pg_up")}
    assert roles == {"pg-primary-1": "primary", "pg-replica-1": "replica"}
    assert [r["value"][1] for r in query(mon_lab, 'greenflow_pg_replica_streaming{instance="pg-replica-1"}')] == ["1"]


def test_per_colour_traffic_from_the_access_log(mon_lab):
    for _ in range(20):
        mon_lab.exec("lb-1", "curl", "-sk", "-o", "/dev/null", "https://127.0.0.1/", check=False)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        results = query(mon_lab, "sum by (app, pool) (greenflow_http_requests_total)")
        if results:
            break
        time.sleep(2)
    assert results, "mtail counted no requests"
    print("\n[monitoring] requests per app and colour: %s"
          % {(r["metric"].get("app"), r["metric"].get("pool")): r["value"][1] for r in results})


def psql(lab, host, sql):
    return lab.exec(host, "su", "postgres", "-c", "psql -XAtqc %s" % json.dumps(sql)).strip()


def running_postgresql(lab, host):
    service = lab.exec(host, "sh", "-c", "systemctl list-units --type=service --state=running --no-legend "
                       "'postgresql@*' | awk '{print $1}' | head -1").strip()
    assert service, "no running postgresql@ unit on %s" % host
    return service


def break_replica(lab):
    service = running_postgresql(lab, "pg-replica-1")
    lab.exec("pg-replica-1", "systemctl", "stop", service)
    return lambda: lab.exec("pg-replica-1", "systemctl", "start", service)


def break_swarm_worker(lab):
    lab.exec("swarm-worker-2", "systemctl", "stop", "docker.socket", "docker.service")
    return lambda: lab.exec("swarm-worker-2", "systemctl", "start", "docker.socket", "docker.service")


def break_wal_archiving(lab):
    """archive_command fails (ALTER SYSTEM, reset at the repair); a WAL switch makes it try at once."""
    psql(lab, "pg-primary-1", "ALTER SYSTEM SET archive_command = 'false'")
    psql(lab, "pg-primary-1", "SELECT pg_reload_conf()")
    psql(lab, "pg-primary-1", "CREATE TABLE IF NOT EXISTS greenflow_monitoring_probe (at timestamptz)")
    psql(lab, "pg-primary-1", "INSERT INTO greenflow_monitoring_probe VALUES (now())")
    psql(lab, "pg-primary-1", "SELECT pg_switch_wal()")

    def repair():
        psql(lab, "pg-primary-1", "ALTER SYSTEM RESET archive_command")
        psql(lab, "pg-primary-1", "SELECT pg_reload_conf()")
        psql(lab, "pg-primary-1", "DROP TABLE IF EXISTS greenflow_monitoring_probe")
    return repair


FAULTS = [
    # (fault, alert, instance it names, inject -> repair)
    ("PostgreSQL stopped on the replica", "PostgresqlDown", "pg-replica-1", break_replica),
    ("Docker stopped on a swarm worker", "SwarmNodeDown", "swarm-worker-2", break_swarm_worker),
    ("WAL archiving broken on the primary", "WalArchivingFailing", "pg-primary-1", break_wal_archiving),
]


@pytest.mark.parametrize("fault,alert,instance,inject", FAULTS, ids=[f[1] for f in FAULTS])
def test_fault_alerts_and_resolves(mon_lab, receiver, fault, alert, instance, inject):
    started = time.monotonic()
    repair = inject(mon_lab)
    try:
        fired = wait_for_notification(mon_lab, alert, instance, "firing", started, 240)
        print("\n[monitoring] %s: %s on %s, fault to firing notification %.1f s" % (fault, alert, instance, fired))
    finally:
        repaired = time.monotonic()
        repair()
    resolved = wait_for_notification(mon_lab, alert, instance, "resolved", repaired, 240)
    print("[monitoring] %s: repair to resolved notification %.1f s" % (alert, resolved))


# The backup tool writes greenflow_backup_* only once it has run (scheduled by cron): on a fresh lab these
# panels have no series yet. They must still evaluate without error.
NEEDS_BACKUP_RUN = "greenflow_backup_"


def test_every_dashboard_panel_evaluates_on_the_lab(mon_lab):
    here = os.path.dirname(os.path.abspath(__file__))
    boards = os.path.join(os.path.dirname(os.path.dirname(here)), "roles", "monitoring", "files", "grafana")
    empty, checked = [], 0
    for name in sorted(os.listdir(boards)):
        with open(os.path.join(boards, name)) as f:
            board = json.load(f)
        for panel in board["panels"]:
            for target in panel["targets"]:
                results = query(mon_lab, target["expr"])  # asserts status success
                checked += 1
                if not results:
                    empty.append("%s / %s: %s" % (name, panel["title"], target["expr"]))
    print("\n[monitoring] %d dashboard queries evaluated; without series: %s" % (checked, empty or "none"))
    assert [e for e in empty if NEEDS_BACKUP_RUN not in e] == []
