"""Monitoring on the lab: the exporters are scraped, the live release is in Prometheus (the release record's
metrics), and each injected fault reaches a webhook receiver as a firing alert, then as a resolved one after the
repair. Prints the time from fault to notification and from repair to the resolved one.

    .venv/bin/pytest -q -s tests/lab/test_monitoring.py

The session brings up its own lab (prefix ci-mon-, loopback ports 45481 / 45844) and provisions it with
site.yml; with GREENFLOW_LAB_REUSE=1 it runs on the provisioned lab of the environment. The lab's
group_vars/monitoring.yml shortens the durations (scrape and evaluation every 5 s, critical alerts after
10 s, group_wait 5 s) and points Alertmanager at http://127.0.0.1:9099/alerts on mon-1 with the plain
webhook format. The receiver is a small Python HTTP server this test starts on mon-1 (the control node
reaches the lab only through docker exec): it appends every POST body as one line to a file the test reads,
after the time it got it (the lab's containers share this machine's clock): the times printed are from the
fault (or the repair) to the notification's arrival, whenever the test looks.

When no release is live, the module deploys the demo app's v1 (lab/load-images.yml, then deploy.yml: a first
release, no cutover); a live release is used as it is. The faults: PostgreSQL stopped on the replica, the demo
app answering 30 % 500s on the live colour under a bounded load from the load balancer to itself, a filesystem
on swarm-worker-1 filled past 90 % (a 64 MB ext4 image on a loop device), Docker stopped on a swarm worker,
WAL archiving broken on the primary.
"""
import json
import os
import subprocess
import time

import pytest

from ansible_collections.greenflow.platform.plugins.module_utils import _release_metrics as release_metrics
from ansible_collections.greenflow.platform.plugins.module_utils import _release_model as release_model
from ansible_collections.greenflow.platform.plugins.module_utils import _release_record as rr

pytestmark = pytest.mark.lab

PREFIX = os.environ.get("GREENFLOW_MON_LAB_PREFIX", "ci-mon-")
PORTS = (45481, 45844)  # other lab tests use other ports: keep them distinct
MON = "mon-1"
RECEIVED = "/tmp/greenflow-alerts.jsonl"
RECEIVER = r'''
import http.server, sys, time
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with open(sys.argv[1], "ab") as f:
            f.write(b"%.3f " % time.time() + body.replace(b"\n", b" ") + b"\n")
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
    """(time received, notification) of every POST the receiver got, oldest first."""
    out = lab.exec(MON, "sh", "-c", "cat %s 2>/dev/null || true" % RECEIVED)
    received = []
    for line in out.splitlines():
        if line.strip():
            at, body = line.split(" ", 1)
            received.append((float(at), json.loads(body)))
    return received


def wait_for_notification(lab, alertname, match, status, since, timeout):
    """Seconds from `since` (time.time()) until the receiver got `alertname` with the labels of `match` (a
    dict; a plain string: the instance) and `status`, by the receiver's clock; only notifications received
    after `since` count."""
    match = {"instance": match} if isinstance(match, str) else dict(match)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for received, group in notifications(lab):
            for alert in group.get("alerts", []):
                labels = alert.get("labels", {})
                if (received >= since and labels.get("alertname") == alertname and alert.get("status") == status
                        and all(labels.get(k) == v for k, v in match.items())):
                    return received - since
        time.sleep(1)
    pytest.fail("no %s notification of %s on %s within %d s; received: %s"
                % (status, alertname, match, timeout, json.dumps([n for _, n in notifications(lab)])[-3000:]))


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


APP = "demo"
RECORD = "/var/lib/greenflow/releases/%s.json" % APP
TEXTFILE = "/var/lib/prometheus/node-exporter/" + release_metrics.textfile_name(APP)


def release_record(lab):
    text = lab.exec("lb-1", "sh", "-c", "cat %s 2>/dev/null || true" % RECORD)
    return rr.parse_record(text, APP)


@pytest.fixture(scope="module")
def live_release(mon_lab):
    """The live release of the demo app (deployed here, v1 as a first release, when there is none)."""
    live = rr.live_release(release_record(mon_lab))
    if live is None:
        started = time.monotonic()
        mon_lab.playbook("lab/load-images.yml", "-e", '{"demo_versions": ["1"]}')
        # the backup gate is the release tests' subject; a fresh monitoring lab has no backup yet
        mon_lab.playbook("playbooks/deploy.yml", "-e", "release_version=1", "-e", "release_skip_backup_check=true")
        live = rr.live_release(release_record(mon_lab))
        print("\n[monitoring] no release was live: v1 deployed on %s in %.0f s" % (live["color"], time.monotonic() - started))
    return live


def test_the_live_release_is_in_prometheus(mon_lab, live_release):
    """The textfile on the load balancer is the record's metrics, and Prometheus has them from node exporter."""
    record = release_record(mon_lab)
    assert mon_lab.exec("lb-1", "cat", TEXTFILE) == release_metrics.render(record)
    expected = {(name, tuple(labels)): value for name, labels, value in release_metrics.samples(record)}
    deadline = time.monotonic() + 60
    while True:
        live = query(mon_lab, 'greenflow_release_info{app="%s",role="live"}' % APP)
        last = query(mon_lab, 'greenflow_release_last_result{app="%s"} == 1' % APP)
        if [(r["metric"]["version"], r["metric"]["color"]) for r in live] == [(live_release["version"], live_release["color"])] \
                and len(last) == 1:
            break
        if time.monotonic() > deadline:
            pytest.fail("Prometheus does not show the live release %s on %s: %s; last result %s"
                        % (live_release["version"], live_release["color"], live, last))
        time.sleep(2)
    assert live[0]["metric"]["instance"] == "lb-1" and live[0]["metric"]["job"] == "node"
    result = last[0]["metric"]["result"]
    assert expected[("greenflow_release_last_result", (("app", APP), ("result", result)))] == 1
    print("\n[monitoring] live release in Prometheus: %s %s on %s; last cutover result %s"
          % (APP, live_release["version"], live_release["color"], result))


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


LOAD = r'''
import json, os, ssl, sys, time, urllib.error, urllib.request
url, rate, max_requests, max_seconds, stop, out = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), sys.argv[5], sys.argv[6]
ctx = ssl._create_unverified_context()
start, sent, counts = time.monotonic(), 0, {}
while sent < max_requests and time.monotonic() - start < max_seconds and not os.path.exists(stop):
    try:
        with urllib.request.urlopen(url, timeout=5, context=ctx) as answer:
            code = answer.status
    except urllib.error.HTTPError as exc:
        code = exc.code
    except Exception:
        code = 0
    counts[code] = counts.get(code, 0) + 1
    sent += 1
    delay = start + sent / rate - time.monotonic()
    if delay > 0:
        time.sleep(delay)
with open(out, "w") as f:
    json.dump({"sent": sent, "seconds": round(time.monotonic() - start, 1), "statuses": counts}, f)
'''
# The load on the load balancer, from itself to 127.0.0.1 (exempt from the per-client rate limit): bounded in
# requests and seconds, and stopped by the test through a stop file.
LOAD_RATE, LOAD_MAX_REQUESTS, LOAD_MAX_SECONDS = 20, 20 * 420, 420


def start_load(lab):
    write = ["docker", "exec", "-i", lab.container("lb-1"), "sh", "-c", "cat > /tmp/greenflow-load.py"]
    subprocess.run(write, input=LOAD, text=True, check=True, timeout=30)
    lab.exec("lb-1", "sh", "-c", "rm -f /tmp/greenflow-load.stop /tmp/greenflow-load.json; nohup python3 "
             "/tmp/greenflow-load.py https://127.0.0.1/version %d %d %d /tmp/greenflow-load.stop "
             "/tmp/greenflow-load.json >/dev/null 2>&1 &" % (LOAD_RATE, LOAD_MAX_REQUESTS, LOAD_MAX_SECONDS))

    def stop():
        lab.exec("lb-1", "touch", "/tmp/greenflow-load.stop")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            out = lab.exec("lb-1", "sh", "-c", "cat /tmp/greenflow-load.json 2>/dev/null || true")
            if out.strip():
                print("[monitoring] load from lb-1 to itself: %s" % out.strip())
                return
            time.sleep(1)
    return stop


def service_env(lab, service):
    out = lab.exec("swarm-manager-1", "docker", "service", "inspect", service, "--format",
                   "{{json .Spec.TaskTemplate.ContainerSpec.Env}}")
    return dict(item.split("=", 1) for item in json.loads(out) or [])


SWARM_HOSTS = ("swarm-manager-1", "swarm-worker-1", "swarm-worker-2")
ERRORS_FILE = "/tmp/greenflow-monitoring-errors"
# DEMO_ERROR_RATE applies only while this file exists in the task's container (the demo app's
# DEMO_ERRORS_WHILE_FILE): the fault and its repair are a touch and an rm, at once on every task.
FAULT_ENV = {"DEMO_ERROR_RATE": "0.3", "DEMO_ERRORS_WHILE_FILE": ERRORS_FILE}


def set_service_env(lab, service, env):
    """Set (value) or remove (None) environment variables of a swarm service: a rolling restart of its tasks
    (stop-first; each old task takes up to its stop grace period), waited for. Returns the seconds it took."""
    args = []
    for key, val in sorted(env.items()):
        args += ["--env-rm", key] if val is None else ["--env-add", "%s=%s" % (key, val)]
    started = time.monotonic()
    lab.exec("swarm-manager-1", "docker", "service", "update", "--detach=false", "--quiet", *args, service,
             timeout=300)
    return time.monotonic() - started


def on_every_task(lab, service, *cmd):
    """Run cmd in every running container of the swarm service, on whichever node it runs; returns how many."""
    done = 0
    for host in SWARM_HOSTS:
        ids = lab.exec(host, "docker", "ps", "-q", "--filter", "label=com.docker.swarm.service.name=" + service,
                       check=False).split()
        for cid in ids:
            lab.exec(host, "docker", "exec", cid, *cmd)
            done += 1
    return done


def break_live_colour(lab):
    """30 % 500s on the live colour, with no release: first (not timed) its swarm service gets DEMO_ERROR_RATE=0.3
    armed by DEMO_ERRORS_WHILE_FILE (a rolling restart of its tasks; no errors yet), and the load balancer starts
    sending itself a bounded load; the fault is the file created in every task at once. The repair removes it;
    after the resolved notification the load stops and the service's environment is put back as it was (a second
    rolling restart)."""
    live = rr.live_release(release_record(lab))
    service = "%s-%s" % (APP, live["color"])
    before = dict((key, service_env(lab, service).get(key)) for key in FAULT_ENV)
    seconds = set_service_env(lab, service, FAULT_ENV)
    print("\n[monitoring] %s: DEMO_ERROR_RATE=0.3 armed (DEMO_ERRORS_WHILE_FILE=%s): every task restarted in %.1f s"
          % (service, ERRORS_FILE, seconds))
    stop_load = start_load(lab)
    try:
        time.sleep(3)  # steady traffic before the fault
        fault_at = time.time()
        tasks = on_every_task(lab, service, "touch", ERRORS_FILE)
        assert tasks > 0, "no running task of %s found on the swarm nodes" % service
    except BaseException:
        stop_load()
        set_service_env(lab, service, before)
        raise

    def cleanup():
        stop_load()
        put_back = set_service_env(lab, service, before)
        print("[monitoring] %s: environment put back as it was: every task restarted in %.1f s" % (service, put_back))

    def repair():
        on_every_task(lab, service, "rm", "-f", ERRORS_FILE)
        return cleanup
    repair.fault_at = fault_at  # the fault is the file, not the preparation before it
    return repair


DISK_MOUNT = "/srv/greenflow-disk-fault"
DISK_IMAGE = "/var/tmp/greenflow-disk-fault.img"
# The lab's hosts are containers: their filesystems are the control node's (overlay, bind mounts), with no disk
# of their own to fill. A 64 MB ext4 image on a loop device is one. The container may use loop devices once its
# device cgroup allows them (cgroup v1: its devices.allow, writable here since the lab mounts /sys/fs/cgroup
# read-write; the exec'd shell is in the container's own cgroup), and the device nodes are made with mknod (the
# container's /dev is its own). mkfs -m 0: no blocks reserved for root, so "used" is what fallocate filled.
DISK_SETUP = r'''
set -e
cg=$(awk -F: '$2 == "devices" {{print $3}}' /proc/self/cgroup)
if [ -n "$cg" ] && [ -w "/sys/fs/cgroup/devices$cg/devices.allow" ]; then
  echo 'c 10:237 rwm' > "/sys/fs/cgroup/devices$cg/devices.allow"
  echo 'b 7:* rwm' > "/sys/fs/cgroup/devices$cg/devices.allow"
fi
[ -e /dev/loop-control ] || mknod -m 600 /dev/loop-control c 10 237
truncate -s 64M {image}
mkfs.ext4 -q -F -m 0 {image}
dev=$(losetup -f)
[ -e "$dev" ] || mknod -m 600 "$dev" b 7 "${{dev#/dev/loop}}"
losetup "$dev" {image}
mkdir -p {mount}
mount -t ext4 "$dev" {mount}
echo "$dev"
'''
DISK_CLEANUP = r'''
rm -f {mount}/fill
umount {mount} 2>/dev/null || umount -l {mount} 2>/dev/null
for dev in $(losetup -j {image} 2>/dev/null | cut -d: -f1); do losetup -d "$dev"; done
left=$(losetup -j {image} 2>/dev/null)
rm -f {image}
rmdir {mount} 2>/dev/null
[ -z "$left" ]
'''


def fill_disk(lab):
    """A filesystem of swarm-worker-1 filled past 90 %: a loop-mounted ext4 image under /srv, filled with
    fallocate to 2 MB short of full (about 96 %). The repair removes the fill; the image is unmounted and its
    loop device released after the resolved notification (and whatever happens)."""
    host = "swarm-worker-1"
    cleanup = lambda: lab.exec(host, "sh", "-c", DISK_CLEANUP.format(image=DISK_IMAGE, mount=DISK_MOUNT),
                               check=False)
    cleanup()  # what an interrupted run left
    try:
        dev = lab.exec(host, "sh", "-c", DISK_SETUP.format(image=DISK_IMAGE, mount=DISK_MOUNT)).strip()
        fault_at = time.time()  # the fault is the fill, not the new filesystem
        lab.exec(host, "sh", "-c", "avail=$(df -B1 --output=avail %s | tail -1); "
                 "fallocate -l $((avail - 2097152)) %s/fill" % (DISK_MOUNT, DISK_MOUNT))
        used = lab.exec(host, "df", "--output=pcent", DISK_MOUNT).split()[-1]
    except AssertionError as exc:
        cleanup()
        pytest.fail("could not make and fill a loop-mounted filesystem on %s (does its device cgroup allow loop "
                    "devices? cgroup v2 needs the container started with --device-cgroup-rule): %s" % (host, exc))
    print("\n[monitoring] %s: %s on %s filled to %s" % (host, DISK_MOUNT, dev, used))

    def repair():
        lab.exec(host, "rm", "-f", DISK_MOUNT + "/fill")
        return cleanup
    repair.fault_at = fault_at
    return repair


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


def live_pool(lab):
    """The live colour as mtail labels it: the nginx upstream of the app's colour (demo_blue, demo_green)."""
    return {"app": APP, "pool": release_model.upstream_name(APP, rr.live_release(release_record(lab))["color"])}


FAULTS = [
    # (fault, alert, the labels it must carry: an instance, or a function of the lab giving a dict,
    #  inject -> repair [-> cleanup after the resolved notification]). The swarm's faults come before Docker is
    # stopped on a worker (its tasks come back after that).
    ("PostgreSQL stopped on the replica", "PostgresqlDown", "pg-replica-1", break_replica),
    ("30 % 500s from the live colour", "HttpErrorRateHigh", live_pool, break_live_colour),
    ("a filesystem filled past 90 %", "DiskAlmostFull", {"instance": "swarm-worker-1", "mountpoint": DISK_MOUNT},
     fill_disk),
    ("Docker stopped on a swarm worker", "SwarmNodeDown", "swarm-worker-2", break_swarm_worker),
    ("WAL archiving broken on the primary", "WalArchivingFailing", "pg-primary-1", break_wal_archiving),
]


@pytest.mark.parametrize("fault,alert,labels,inject", FAULTS, ids=[f[1] for f in FAULTS])
def test_fault_alerts_and_resolves(mon_lab, receiver, live_release, fault, alert, labels, inject):
    match = labels(mon_lab) if callable(labels) else labels
    cleanup = None
    started = time.time()
    repair = inject(mon_lab)
    started = getattr(repair, "fault_at", started)  # when the setup before the fault is not part of it
    try:
        try:
            fired = wait_for_notification(mon_lab, alert, match, "firing", started, 240)
            print("\n[monitoring] %s: %s on %s, fault to firing notification %.1f s" % (fault, alert, match, fired))
        finally:
            repaired = time.time()
            cleanup = repair()
        resolved = wait_for_notification(mon_lab, alert, match, "resolved", repaired, 240)
        print("[monitoring] %s: repair to resolved notification %.1f s" % (alert, resolved))
    finally:
        if callable(cleanup):
            cleanup()


# The backup tool writes greenflow_backup_* only once it has run (scheduled by cron): on a fresh lab these
# panels have no series yet. They must still evaluate without error.
NEEDS_BACKUP_RUN = "greenflow_backup_"


def test_every_dashboard_panel_evaluates_on_the_lab(mon_lab, live_release):
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
