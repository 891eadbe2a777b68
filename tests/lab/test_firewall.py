"""The host firewall on the lab: a reachability matrix from every lab host, and from one container that is
no part of the platform, to every port of the policy (docs/firewall.md) must equal the policy, allowed
and denied; Docker's forwarding must not let a published app port through to anyone but the load
balancer; restarting Docker, restarting nftables and rebooting a host keep both Docker's rules and ours;
bad input changes nothing.

    .venv/bin/pytest -q -s tests/lab/test_firewall.py

The session brings up its own lab (prefix ci-fw-, loopback ports 45381 / 45744), provisions it with
site.yml (the firewall is on in inventories/lab), deploys v1 and removes the lab at the end. With
GREENFLOW_LAB_REUSE=1 it runs on an already provisioned lab with a release (`make test` runs it last on
the shared lab, after the release and data scenarios: it restarts Docker on a worker and reboots one).

How reachability is measured (tests/lab/reach_probe.py, run inside the source host):
- TCP: a connect. `reachable` = connected, or refused (a reset: the packet got in, nothing listens);
  `blocked` = no answer in 2 s (dropped). So a port counts even where no service listens.
- UDP (swarm's 7946 and 4789): datagrams give no answer either way, so the target counts them with a
  probe table of its own: one counter per source before every other input chain (priority -300: the
  packets arrived) and one after them (priority 300: our input chain did not drop them).
"""
import json
import os
import re
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

pytestmark = pytest.mark.lab

HERE = os.path.dirname(os.path.abspath(__file__))
PREFIX = "ci-fw-"
PORTS = (45381, 45744)  # other lab tests use other ports: keep them distinct
QUICK = ["-e", '{"cutover_steps": [100]}', "-e", "cutover_step_seconds=2", "-e", "cutover_min_requests=5"]

# the lab's groups (inventories/lab/hosts.yml) and the ports of the policy
LB = ["lb-1"]
MANAGERS = ["swarm-manager-1"]
WORKERS = ["swarm-worker-1", "swarm-worker-2"]
SWARM = MANAGERS + WORKERS
DB = ["pg-primary-1", "pg-replica-1"]
BACKUP = ["pg-replica-1"]  # pg_backup_host
MONITORING = ["mon-1"]
HOSTS = LB + SWARM + DB + MONITORING
OUTSIDER = "outsider"  # a plain container on the lab network, no part of the platform
PUBLISHED = [8001, 8002]  # app_release_published_ports
# exporters: node 9100 (every host), postgres 9187, nginx 9113 and mtail 3903 (lb), Docker engine 9323 (swarm)
TCP_PORTS = [22, 80, 443, 2377, 7946, 5432, 8432, 9100, 9113, 9187, 3903, 9323, 9090, 9093] + PUBLISHED
UDP_PORTS = [7946, 4789]
UDP_DATAGRAMS = 3


def expected(source, target, protocol, port):
    """The policy of docs/firewall.md, written out for the lab (no admin networks; mon-1 is the monitoring host):
    True when `source` may reach `port` on `target`."""
    if protocol == "udp":  # gossip and VXLAN between swarm nodes
        return source in SWARM and target in SWARM
    if port in (80, 443):
        return target in LB
    if port == 2377:
        return target in MANAGERS and source in SWARM
    if port == 7946:
        return target in SWARM and source in SWARM
    if port in PUBLISHED:
        return target in SWARM and source in LB
    if port == 5432:
        return target in DB and source in SWARM + DB + BACKUP + MONITORING
    if port == 22:  # admin networks only, and the lab has none
        return False
    if port == 8432:  # pgBackRest's TLS servers: the repository's from database hosts, and the reverse
        return (target in BACKUP and source in DB) or (target in DB and source in BACKUP)
    if port == 9100:  # node exporter on every host, from monitoring; on the swarm nodes also from the load
        return source in MONITORING or (target in SWARM and source in LB)  # balancers (the cutover's CPU gate)
    if port == 9187:
        return target in DB and source in MONITORING
    if port in (9113, 3903):
        return target in LB and source in MONITORING
    if port == 9323:
        return target in SWARM and source in MONITORING
    return False  # Prometheus 9090 and Alertmanager 9093 listen on mon-1's loopback: no rule opens them


# ------------------------------------------------------------------------------------------ the lab


@pytest.fixture(scope="module")
def fw_lab(prefixed_lab):
    lab = prefixed_lab(PREFIX, PORTS)
    if not lab.reused:
        started = time.monotonic()
        lab.playbook("playbooks/site.yml", timeout=1800)
        lab.playbook("lab/load-images.yml")
        # a fresh lab has no backup yet; the backup gate is the release tests' subject, not this one's
        lab.playbook("playbooks/deploy.yml", "-e", "release_version=1", "-e", "release_skip_backup_check=true", *QUICK)
        print("\n[firewall lab] provisioned and v1 deployed in %.0f s" % (time.monotonic() - started))
    network = lab.prefix + "greenflow-lab"
    outsider = lab.prefix + OUTSIDER
    subprocess.run(["docker", "rm", "-f", outsider], capture_output=True, check=False)
    subprocess.run(["docker", "run", "-d", "--name", outsider, "--network", network,
                    "--label", "greenflow.lab=%s" % network, "--entrypoint", "sleep",
                    "greenflow-lab/host:bookworm", "1800"], capture_output=True, text=True, check=True)
    lab.addresses = addresses(lab, HOSTS + [OUTSIDER], network)
    yield lab
    subprocess.run(["docker", "rm", "-f", outsider], capture_output=True, check=False)


def addresses(lab, hosts, network):
    out = {}
    for host in hosts:
        proc = subprocess.run(["docker", "inspect", "-f", "{{json .NetworkSettings.Networks}}", lab.container(host)],
                              capture_output=True, text=True, check=True)
        out[host] = json.loads(proc.stdout)[network]["IPAddress"]
    return out


def probe_from(lab, source, targets, timeout=2.0):
    """Run reach_probe.py inside `source` for [host, port] or [host, port, "udp", n] targets."""
    wire = [[lab.addresses[t[0]]] + list(t[1:]) for t in targets]
    with open(os.path.join(HERE, "reach_probe.py"), encoding="utf-8") as script:
        code = script.read()
    proc = subprocess.run(["docker", "exec", "-i", lab.container(source), "python3", "-c", code, str(timeout)],
                          input=json.dumps(wire) + "\n", capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, "reach_probe on %s failed: %s" % (source, proc.stderr[-2000:])
    return [dict(r, source=source, host=t[0], port=t[1]) for t, r in zip(targets, json.loads(proc.stdout))]


def tcp_matrix(lab, targets=HOSTS, sources=HOSTS + [OUTSIDER]):
    """Every source to every TCP port of every target (itself excluded: that is loopback), in parallel."""
    with ThreadPoolExecutor(max_workers=len(sources)) as pool:
        runs = [pool.submit(probe_from, lab, source, [[t, p] for t in targets if t != source for p in TCP_PORTS])
                for source in sources]
        return [row for run in runs for row in run.result()]


def mismatches(rows):
    bad = []
    for row in rows:
        allowed = expected(row["source"], row["host"], "tcp", row["port"])
        if row["result"] == "error" or (row["result"] == "reachable") != allowed:
            bad.append("%s -> %s:%s/tcp: %s (%s), policy says %s" % (
                row["source"], row["host"], row["port"], row["result"], row["detail"],
                "allowed" if allowed else "denied"))
    return bad


def print_matrix(rows, title):
    """The matrix as a table (printed with -s): R reachable, . blocked, E error; * where it differs."""
    print("\n[firewall] %s: rows are sources, columns target:port" % title)
    targets = sorted({(r["host"], r["port"]) for r in rows}, key=lambda hp: (HOSTS.index(hp[0]), hp[1]))
    by = {(r["source"], r["host"], r["port"]): r for r in rows}
    for host in HOSTS:
        ports = [p for h, p in targets if h == host]
        if ports:
            print("  %-23s %s" % ("to " + host, " ".join("%5d" % p for p in ports)))
            for source in HOSTS + [OUTSIDER]:
                cells = []
                for port in ports:
                    row = by.get((source, host, port))
                    if row is None:
                        cells.append("%5s" % "-")
                        continue
                    mark = {"reachable": "R", "blocked": "."}.get(row["result"], "E")
                    wrong = (row["result"] == "reachable") != expected(source, host, "tcp", port)
                    cells.append("%5s" % (mark + ("*" if wrong else "")))
                print("    from %-16s %s" % (source, " ".join(cells)))


def nft(lab, host, *args, check=True):
    return lab.exec(host, "nft", *args, check=check)


def without_counters(listing):
    """An nft listing without its packet counters (they change with traffic)."""
    return re.sub(r"counter packets \d+ bytes \d+", "counter", listing)


def tables(lab, host):
    return set(line.strip() for line in nft(lab, host, "list", "tables").splitlines() if line.strip())


def wait_for(what, check, seconds):
    """Poll check() (bounded) until it returns something true; fail with `what` otherwise."""
    deadline = time.monotonic() + seconds
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except (AssertionError, subprocess.SubprocessError, OSError) as exc:
            last = exc
        time.sleep(2)
    pytest.fail("%s: not within %d s (last: %s)" % (what, seconds, last))


def assert_both_rule_sets(lab, host):
    found = tables(lab, host)
    assert "table inet greenflow" in found, "%s lost our table: %s" % (host, sorted(found))
    assert "table ip nat" in found and "table ip filter" in found, "%s lost Docker's tables: %s" % (host, sorted(found))
    # Docker's chains for published ports and ours are both there (not just empty tables)
    assert "DOCKER" in nft(lab, host, "list", "chain", "ip", "nat", "DOCKER")
    ours = nft(lab, host, "list", "table", "inet", "greenflow")
    assert "published_guard" in ours and "policy drop" in ours


def live_published(lab):
    """(node, port) pairs where a colour's task listens: the load balancer gets a connection there."""
    rows = probe_from(lab, LB[0], [[node, port] for node in SWARM for port in PUBLISHED])
    return [(r["host"], r["port"]) for r in rows if r["detail"] == "connected"]


# ------------------------------------------------------------------------------------------ the tests


def test_every_host_loaded_its_table_next_to_dockers(fw_lab):
    for host in HOSTS:
        found = tables(fw_lab, host)
        assert "table inet greenflow" in found, "%s: %s" % (host, sorted(found))
        assert fw_lab.exec(host, "systemctl", "is-enabled", "nftables").strip() == "enabled"
    for host in SWARM:
        assert_both_rule_sets(fw_lab, host)


def test_tcp_reachability_matrix_equals_the_policy(fw_lab):
    started = time.monotonic()
    rows = tcp_matrix(fw_lab)
    print_matrix(rows, "TCP matrix, measured in %.1f s" % (time.monotonic() - started))
    allowed = sum(1 for r in rows if r["result"] == "reachable")
    print("[firewall] %d probes: %d reachable, %d blocked" % (len(rows), allowed, len(rows) - allowed))
    assert not mismatches(rows), "\n".join(mismatches(rows))
    # the matrix is not trivially all-closed or all-open
    assert 0 < allowed < len(rows)


def test_udp_swarm_ports_only_between_swarm_nodes(fw_lab):
    sources = HOSTS + [OUTSIDER]
    lines = ["table inet gfprobe {"]
    for chain, priority in (("arrived", -300), ("passed", 300)):
        lines.append("  chain %s { type filter hook input priority %d; policy accept;" % (chain, priority))
        for source in sources:
            for port in UDP_PORTS:
                lines.append('    ip saddr %s udp dport %d counter comment "%s|%d"'
                             % (fw_lab.addresses[source], port, source, port))
        lines.append("  }")
    lines.append("}")
    ruleset = "\n".join(lines) + "\n"
    try:
        for target in HOSTS:
            subprocess.run(["docker", "exec", "-i", fw_lab.container(target), "nft", "-f", "-"],
                           input=ruleset, text=True, check=True, capture_output=True, timeout=30)
        with ThreadPoolExecutor(max_workers=len(sources)) as pool:
            list(pool.map(lambda s: probe_from(fw_lab, s, [[t, p, "udp", UDP_DATAGRAMS] for t in HOSTS if t != s
                                                          for p in UDP_PORTS]), sources))
        time.sleep(1)
        bad, checked = [], 0
        for target in HOSTS:
            counts = {}
            listing = json.loads(nft(fw_lab, target, "-j", "list", "table", "inet", "gfprobe"))
            for item in listing["nftables"]:
                rule = item.get("rule")
                if not rule:
                    continue
                packets = [e["counter"]["packets"] for e in rule["expr"] if "counter" in e]
                counts[(rule["chain"], rule["comment"])] = packets[0] if packets else 0
            for source in sources:
                if source == target:
                    continue
                for port in UDP_PORTS:
                    key = "%s|%d" % (source, port)
                    arrived, passed = counts[("arrived", key)], counts[("passed", key)]
                    allowed = expected(source, target, "udp", port)
                    checked += 1
                    if arrived < UDP_DATAGRAMS:
                        bad.append("%s -> %s:%d/udp: only %d of %d datagrams arrived" % (source, target, port, arrived, UDP_DATAGRAMS))
                    elif allowed and passed < UDP_DATAGRAMS:
                        bad.append("%s -> %s:%d/udp: %d of %d passed, policy says allowed" % (source, target, port, passed, arrived))
                    elif not allowed and passed:
                        bad.append("%s -> %s:%d/udp: %d passed, policy says denied" % (source, target, port, passed))
        print("\n[firewall] UDP: %d source/target/port triples counted on the targets, %d differ" % (checked, len(bad)))
        assert not bad, "\n".join(bad)
    finally:
        for target in HOSTS:
            nft(fw_lab, target, "delete", "table", "inet", "gfprobe", check=False)


def test_dockers_forwarding_does_not_let_a_published_port_through(fw_lab):
    live = live_published(fw_lab)
    assert live, "no colour task answers the load balancer on %s of %s: nothing to prove on" % (PUBLISHED, SWARM)
    for node, port in live:
        # Docker's NAT for it is there: without our prerouting guard this port would be open to all
        assert ("dport %d" % port) in nft(fw_lab, node, "list", "chain", "ip", "nat", "DOCKER")
    for source in [OUTSIDER] + [h for h in HOSTS if h not in LB]:
        rows = probe_from(fw_lab, source, [[node, port] for node, port in live if node != source])
        leaked = ["%s:%s (%s)" % (r["host"], r["port"], r["detail"]) for r in rows if r["result"] != "blocked"]
        assert not leaked, "%s reaches published app ports past the load balancer: %s" % (source, leaked)
    print("\n[firewall] published ports with a task (%s): load balancer connects, %d other sources blocked"
          % (", ".join("%s:%d" % lp for lp in live), len(HOSTS)))


def _after(fw_lab, host, what):
    """After `what` on `host`: both rule sets there, and the matrix rows to and from it equal the policy."""
    wait_for("docker and nftables active on %s after %s" % (host, what),
             lambda: fw_lab.exec(host, "systemctl", "is-active", "docker", "nftables", check=False).split()
             == ["active", "active"], 180)
    wait_for("Docker's tables back on %s after %s" % (host, what),
             lambda: "table ip nat" in tables(fw_lab, host), 60)
    assert_both_rule_sets(fw_lab, host)
    rows = tcp_matrix(fw_lab, targets=[host])
    rows += probe_from(fw_lab, host, [[t, p] for t in HOSTS if t != host for p in TCP_PORTS])
    assert not mismatches(rows), "after %s on %s:\n%s" % (what, host, "\n".join(mismatches(rows)))
    return rows


def test_restarting_docker_keeps_our_rules(fw_lab):
    host = WORKERS[0]
    fw_lab.exec(host, "systemctl", "restart", "docker", timeout=180)
    _after(fw_lab, host, "systemctl restart docker")


def test_restarting_nftables_keeps_dockers_rules(fw_lab):
    host = WORKERS[0]
    before = nft(fw_lab, host, "list", "chain", "ip", "nat", "DOCKER")
    fw_lab.exec(host, "systemctl", "restart", "nftables", timeout=120)
    _after(fw_lab, host, "systemctl restart nftables")
    assert without_counters(nft(fw_lab, host, "list", "chain", "ip", "nat", "DOCKER")) == without_counters(before)


def test_a_rebooted_host_comes_back_with_both_rule_sets(fw_lab):
    host = WORKERS[1]
    manager = MANAGERS[0]
    subprocess.run(["docker", "restart", "-t", "30", fw_lab.container(host)], check=True, capture_output=True,
                   timeout=180)
    wait_for("%s booted" % host,
             lambda: fw_lab.exec(host, "systemctl", "is-system-running", check=False).strip() in ("running", "degraded"),
             180)
    _after(fw_lab, host, "a reboot")
    # and it is a swarm node again (gossip and management got through the firewall)
    wait_for("%s Ready in the swarm" % host,
             lambda: [line for line in fw_lab.exec(manager, "docker", "node", "ls", "--format",
                                                   "{{.Hostname}} {{.Status}}", check=False).splitlines()
                      if host in line and line.endswith(" Ready")], 180)


def test_bad_input_is_refused_and_changes_nothing(fw_lab):
    host = WORKERS[0]
    table_before = without_counters(nft(fw_lab, host, "list", "table", "inet", "greenflow"))
    file_before = fw_lab.exec(host, "sha256sum", "/etc/nftables.conf")
    proc = fw_lab.playbook("playbooks/host_security.yml", "--limit", host, "-e",
                           '{"firewall_extra_rules": [{"name": "typo", "ports": [70000]}]}', check=False)
    assert proc.returncode != 0
    assert "70000" in proc.stdout, proc.stdout[-3000:]
    assert fw_lab.exec(host, "sha256sum", "/etc/nftables.conf") == file_before
    assert without_counters(nft(fw_lab, host, "list", "table", "inet", "greenflow")) == table_before


# ------------------------------------------------------------------------------------------ SSH hardening


SSHD_HOST = MONITORING[0]


@pytest.fixture(scope="module")
def sshd_lab(fw_lab):
    """A production host runs sshd (Ansible logs in through it). The lab's hosts are reached with docker exec
    and have none, so Debian's openssh-server goes onto one of them, and host_security.yml runs there as the
    first site.yml does on a real host (the role hardens sshd before or after it is installed)."""
    fw_lab.exec(SSHD_HOST, "sh", "-c", "apt-get update -qq && DEBIAN_FRONTEND=noninteractive "
                "apt-get install -y -qq --no-install-recommends openssh-server >/dev/null", timeout=600)
    fw_lab.playbook("playbooks/host_security.yml", "--limit", SSHD_HOST)
    return fw_lab


def test_sshd_where_it_runs_takes_keys_only(sshd_lab):
    """sshd hardened: password logins not even offered (tried on loopback: the lab has no admin network)."""
    effective = sshd_lab.exec(SSHD_HOST, "sshd", "-T").lower().splitlines()
    for line in ("passwordauthentication no", "kbdinteractiveauthentication no",
                 "permitrootlogin without-password", "permitemptypasswords no"):
        assert line in effective, "%s: sshd -T has no %r" % (SSHD_HOST, line)
    proc = subprocess.run(["docker", "exec", sshd_lab.container(SSHD_HOST), "ssh", "-o", "BatchMode=yes",
                           "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                           "-o", "PreferredAuthentications=password,keyboard-interactive", "-o", "ConnectTimeout=5",
                           "nobody@127.0.0.1", "true"], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "Permission denied (publickey)" in proc.stderr, proc.stderr


def test_a_bad_sshd_setting_is_refused_and_changes_nothing(sshd_lab):
    dropin = "/etc/ssh/sshd_config.d/10-greenflow-hardening.conf"
    before = sshd_lab.exec(SSHD_HOST, "sha256sum", dropin)
    proc = sshd_lab.playbook("playbooks/host_security.yml", "--limit", SSHD_HOST, "-e",
                             '{"security_sshd_extra_settings": {"NoSuchSetting": "yes"}}', check=False)
    assert proc.returncode != 0
    assert "NoSuchSetting" in proc.stdout, proc.stdout[-3000:]
    assert sshd_lab.exec(SSHD_HOST, "sha256sum", dropin) == before
    assert sshd_lab.exec(SSHD_HOST, "systemctl", "is-active", "ssh").strip() == "active"
    assert "passwordauthentication no" in sshd_lab.exec(SSHD_HOST, "sshd", "-T").lower()


# ------------------------------------------------------------------------------------------ security updates


def test_security_updates_only_and_database_hosts_never_reboot_together(fw_lab):
    windows = {}
    for host in HOSTS:
        origins = [line for line in fw_lab.exec(host, "apt-config", "dump", "Unattended-Upgrade::Origins-Pattern")
                   .splitlines() if line.startswith("Unattended-Upgrade::Origins-Pattern:: ")]
        assert origins == ['Unattended-Upgrade::Origins-Pattern:: '
                           '"origin=Debian,codename=${distro_codename}-security,label=Debian-Security";'], (host, origins)
        reboot = fw_lab.exec(host, "apt-config", "dump", "Unattended-Upgrade::Automatic-Reboot-Time")
        windows[host] = reboot.split('"')[1]
    hours = sorted(int(windows[h][:2]) * 60 + int(windows[h][3:]) for h in DB)
    print("\n[security] reboot windows: %s" % windows)
    assert hours[1] - hours[0] >= 120, "database hosts' reboot windows too close: %s" % windows
