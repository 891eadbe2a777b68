"""The firewall rule set of every host of inventories/lab, rendered through the filter plugin and checked
with `nft -c -f` (a dry run: nothing is loaded into the kernel). Skips when nft is missing (Debian's
nftables package; the Makefile's DEBIAN_PACKAGES installs it)."""
import json
import os
import shutil
import subprocess

import pytest
import yaml

from ansible_collections.greenflow.platform.plugins.filter.firewall_ruleset import firewall_ruleset

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))
NFT = shutil.which("nft") or ("/usr/sbin/nft" if os.path.exists("/usr/sbin/nft") else None)


def lab_inventory():
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO_ROOT, "ansible.cfg"))
    out = subprocess.run(["ansible-inventory", "-i", os.path.join(REPO_ROOT, "inventories", "lab"), "--list"],
                         cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=True, timeout=120)
    data = json.loads(out.stdout)
    hostvars = data["_meta"]["hostvars"]
    groups = {}

    def walk(name):
        node = data.get(name, {})
        hosts = list(node.get("hosts", []))
        for child in node.get("children", []):
            hosts += [h for h in walk(child) if h not in hosts]
        groups[name] = hosts
        return hosts

    walk("all")
    assert "lb-1" in hostvars, "inventories/lab not read: %s" % out.stderr
    return groups, hostvars


GROUPS, HOSTVARS = lab_inventory()
# The lab's addresses come from Docker at lab-up: made-up ones here (one a host, as facts would give).
ADDRESSES = {h: "172.30.0.%d" % (10 + i) for i, h in enumerate(sorted(GROUPS["all"]))}
SETTINGS = {
    "admin_cidrs": ["192.0.2.0/24"],
    "backup_hosts": [HOSTVARS["lb-1"]["pg_backup_host"]],
    "published_ports": sorted(HOSTVARS["lb-1"]["app_release_published_ports"].values()),
    "exporter_ports": {"all": [9100], "postgresql": [9187], "lb": [9113]},
    "backup_ports": [8432],
    "db_backup_ports": [8432],
}


def test_backup_hosts_open_only_pgbackrest_by_default():
    """The role's defaults: the backup hosts open pgBackRest's TLS port to the database hosts and nothing
    else (0.1.x's greenflow-pg-backup also opened ssh there; it was removed in 0.2.0)."""
    with open(os.path.join(REPO_ROOT, "roles", "firewall", "defaults", "main.yml")) as f:
        defaults = yaml.safe_load(f)
    pgbackrest_only = ["{{ pgbackrest_tls_port | default(8432) }}"]
    assert defaults["firewall_backup_ports"] == pgbackrest_only
    assert defaults["firewall_db_backup_ports"] == pgbackrest_only


@pytest.mark.parametrize("host", sorted(GROUPS["all"]))
def test_lab_rule_set_passes_nft_check(host, tmp_path):
    text = firewall_ruleset(host, GROUPS, ADDRESSES, SETTINGS)
    assert "flush ruleset" not in text
    if NFT is None:
        pytest.skip("nft is not installed (apt-get install nftables): rendered, not checked")
    path = tmp_path / ("%s.nft" % host)
    path.write_text(text)
    result = subprocess.run([NFT, "-c", "-f", str(path)], capture_output=True, text=True, timeout=60, check=False)
    if result.returncode != 0 and "Operation not permitted" in result.stderr:
        pytest.skip("nft -c needs CAP_NET_ADMIN here: rendered, not checked")
    assert result.returncode == 0, "%s\n%s" % (result.stderr, text)


def test_a_load_balancer_pair_rule_set_with_vrrp_passes_nft_check(tmp_path):
    """Two load balancers with the floating address on (inventories/lab-lbpair): the VRRP rule is valid nft."""
    groups = dict(GROUPS, lb=["lb-1", "lb-2"], all=GROUPS["all"] + ["lb-2"])
    addresses = dict(ADDRESSES, **{"lb-2": "172.30.0.99"})
    text = firewall_ruleset("lb-2", groups, addresses, dict(SETTINGS, lb_vrrp=True))
    assert "meta l4proto 112 accept" in text
    if NFT is None:
        pytest.skip("nft is not installed (apt-get install nftables): rendered, not checked")
    path = tmp_path / "lb-2.nft"
    path.write_text(text)
    result = subprocess.run([NFT, "-c", "-f", str(path)], capture_output=True, text=True, timeout=60, check=False)
    if result.returncode != 0 and "Operation not permitted" in result.stderr:
        pytest.skip("nft -c needs CAP_NET_ADMIN here: rendered, not checked")
    assert result.returncode == 0, "%s\n%s" % (result.stderr, text)


def test_lab_workers_guard_the_published_ports_and_the_lb_does_not():
    worker = firewall_ruleset("swarm-worker-1", GROUPS, ADDRESSES, SETTINGS)
    assert "fib daddr type local tcp dport { 8001, 8002 } jump published_guard" in worker
    assert "ip saddr %s/32 tcp dport { 8001, 8002 } return" % ADDRESSES["lb-1"] in worker
    lb = firewall_ruleset("lb-1", GROUPS, ADDRESSES, SETTINGS)
    assert "jump published_guard" not in lb
    assert "tcp dport { 80, 443 } accept" in lb


def test_a_host_without_address_fails_with_its_name():
    from ansible.errors import AnsibleFilterError
    addresses = dict(ADDRESSES)
    del addresses["pg-replica-1"]
    with pytest.raises(AnsibleFilterError, match="pg-replica-1"):
        firewall_ruleset("pg-primary-1", GROUPS, addresses, SETTINGS)
