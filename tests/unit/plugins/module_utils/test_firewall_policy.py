"""Unit tests of plugins/module_utils/_firewall_policy.py: the policy matrix and its nftables rendering."""

import pytest

from ansible_collections.greenflow.platform.plugins.module_utils import _firewall_policy as fp

GROUPS = {
    "all": ["mgr-1", "app-1", "app-2", "lb-1", "db-1", "db-2", "backup-1", "mon-1"],
    "swarm_managers": ["mgr-1"],
    "swarm_workers": ["app-1", "app-2"],
    "lb": ["lb-1"],
    "pg_primary": ["db-1"],
    "pg_replica": ["db-2"],
    "postgresql": ["db-1", "db-2"],
    "pg_backup": ["backup-1"],
    "monitoring": ["mon-1"],
}
ADDR = {
    "mgr-1": "10.0.0.1", "app-1": "10.0.0.2", "app-2": "10.0.0.3", "lb-1": ["10.0.0.4", "fd00::4"],
    "db-1": "10.0.0.5", "db-2": "10.0.0.6", "backup-1": "10.0.0.7", "mon-1": "10.0.0.8",
}
SETTINGS = {
    "admin_cidrs": ["192.0.2.0/24"],
    "backup_hosts": ["backup-1"],
    "published_ports": [8001, 8002],
    "swarm_stats_ports": [9100],
    "exporter_ports": {"all": [9100], "postgresql": [9187], "lb": [9113]},
    "backup_ports": [8432],
    "db_backup_ports": [8432],
}
OUTSIDER = "198.51.100.9"


def policy(**changes):
    settings = dict(SETTINGS)
    settings.update(changes)
    rules, missing = fp.build_policy(GROUPS, ADDR, settings)
    assert missing == []
    return rules


def addr(host):
    a = ADDR[host]
    return a[0] if isinstance(a, list) else a


def may(rules, src, host, proto, port):
    source = src if src[0].isdigit() or ":" in src else addr(src)
    return fp.allows(rules, host, proto, port, source)


# The matrix of the issue, source group x port x target group, allowed and denied.
MATRIX = [
    # (source, target, protocol, port, allowed)
    (OUTSIDER, "lb-1", "tcp", 80, True),
    (OUTSIDER, "lb-1", "tcp", 443, True),
    (OUTSIDER, "app-1", "tcp", 80, False),
    ("app-1", "mgr-1", "tcp", 2377, True),
    ("mgr-1", "mgr-1", "tcp", 2377, True),
    ("lb-1", "mgr-1", "tcp", 2377, False),
    (OUTSIDER, "mgr-1", "tcp", 2377, False),
    ("app-1", "app-2", "tcp", 2377, False),          # 2377 only on managers
    ("app-1", "app-2", "tcp", 7946, True),
    ("app-1", "app-2", "udp", 7946, True),
    ("mgr-1", "app-2", "udp", 4789, True),
    ("db-1", "app-2", "udp", 4789, False),
    ("lb-1", "app-1", "tcp", 7946, False),
    ("lb-1", "app-1", "tcp", 8001, True),
    ("lb-1", "app-2", "tcp", 8002, True),
    ("lb-1", "mgr-1", "tcp", 8001, True),            # managers may run tasks too
    ("mon-1", "app-1", "tcp", 8001, False),
    ("db-1", "app-1", "tcp", 8002, False),
    (OUTSIDER, "app-1", "tcp", 8001, False),
    ("app-1", "db-1", "tcp", 5432, True),
    ("mgr-1", "db-1", "tcp", 5432, True),
    ("db-2", "db-1", "tcp", 5432, True),
    ("db-1", "db-2", "tcp", 5432, True),
    ("backup-1", "db-2", "tcp", 5432, True),
    ("mon-1", "db-1", "tcp", 5432, True),
    ("lb-1", "db-1", "tcp", 5432, False),
    (OUTSIDER, "db-1", "tcp", 5432, False),
    ("app-1", "backup-1", "tcp", 5432, False),       # no PostgreSQL on the backup host
    ("mon-1", "app-1", "tcp", 9100, True),
    ("mon-1", "db-1", "tcp", 9187, True),
    ("mon-1", "lb-1", "tcp", 9113, True),
    ("mon-1", "app-1", "tcp", 9187, False),
    ("app-1", "db-1", "tcp", 9100, False),
    # the cutover on the load balancer reads the new colour's CPU and memory from the swarm nodes' node exporter
    ("lb-1", "app-1", "tcp", 9100, True),
    ("lb-1", "mgr-1", "tcp", 9100, True),
    ("lb-1", "db-1", "tcp", 9100, False),
    ("app-1", "app-2", "tcp", 9100, False),
    # ssh to the backup host from admin networks only (0.1.x's greenflow-pg-backup pushed WAL over it; gone)
    ("db-1", "backup-1", "tcp", 22, False),
    ("db-2", "backup-1", "tcp", 22, False),
    ("app-1", "backup-1", "tcp", 22, False),
    ("192.0.2.10", "backup-1", "tcp", 22, True),
    # pgBackRest's TLS servers: the repository's from the database hosts, the database hosts' from the repository
    ("db-1", "backup-1", "tcp", 8432, True),
    ("app-1", "backup-1", "tcp", 8432, False),
    ("backup-1", "db-1", "tcp", 8432, True),
    ("backup-1", "db-2", "tcp", 8432, True),
    ("db-2", "db-1", "tcp", 8432, False),
    ("lb-1", "db-1", "tcp", 8432, False),
    ("192.0.2.10", "app-1", "tcp", 22, True),
    ("192.0.2.10", "db-1", "tcp", 22, True),
    (OUTSIDER, "db-1", "tcp", 22, False),
    ("lb-1", "db-1", "tcp", 22, False),
]


@pytest.mark.parametrize("src,host,proto,port,allowed", MATRIX)
def test_matrix(src, host, proto, port, allowed):
    assert may(policy(), src, host, proto, port) is allowed


def test_ipv6_address_of_a_load_balancer_is_a_source_too():
    rules = policy()
    assert fp.allows(rules, "app-1", "tcp", 8001, "fd00::4")
    assert not fp.allows(rules, "app-1", "tcp", 8001, "fd00::5")


def test_published_rules_are_marked_and_only_on_swarm_nodes():
    rules = policy()
    published = [r for r in rules if r["published"]]
    assert len(published) == 1
    assert published[0]["targets"] == ["mgr-1", "app-1", "app-2"]
    assert published[0]["ports"] == [8001, 8002]


def test_published_extra_cidrs_let_the_deploy_controller_probe():
    rules = policy(published_extra_cidrs=["203.0.113.7"])
    assert fp.allows(rules, "app-1", "tcp", 8001, "203.0.113.7")
    assert not fp.allows(rules, "db-1", "tcp", 8001, "203.0.113.7")


def test_missing_addresses_are_named_not_skipped():
    addresses = dict(ADDR)
    del addresses["app-2"]
    del addresses["mon-1"]
    _, missing = fp.build_policy(GROUPS, addresses, SETTINGS)
    assert sorted(missing) == ["app-2", "mon-1"]


def test_absent_groups_give_no_rules_and_no_error():
    rules, missing = fp.build_policy({"all": ["lb-1"], "lb": ["lb-1"]}, {"lb-1": "10.0.0.4"}, {})
    assert missing == []
    assert [r["name"] for r in rules] == ["http and https from anywhere"]   # no admin CIDRs: no ssh rule


def test_no_admin_cidrs_means_no_ssh_from_anywhere():
    rules = policy(admin_cidrs=[])
    assert not fp.allows(rules, "db-1", "tcp", 22, "192.0.2.10")


@pytest.mark.parametrize("bad", ["10.0.0.300", "10.0.0.1/24", "not-an-address", ""])
def test_bad_admin_cidrs_are_refused(bad):
    with pytest.raises(fp.FirewallPolicyError, match="firewall_admin_cidrs"):
        policy(admin_cidrs=[bad])


@pytest.mark.parametrize("ports", [[0], [65536], ["http"], [True], {"a": 1}])
def test_bad_ports_are_refused(ports):
    with pytest.raises(fp.FirewallPolicyError):
        policy(published_ports=ports)


def test_extra_rules_targets_sources_and_protocols():
    extra = [
        {"name": "statsd", "groups": ["swarm_workers"], "protocol": ["tcp", "udp"], "ports": [8125],
         "source_groups": ["monitoring"], "sources": ["192.0.2.0/28"]},
        {"name": "public api", "hosts": ["mgr-1"], "ports": 9443},
    ]
    rules = policy(extra_rules=extra)
    assert fp.allows(rules, "app-1", "udp", 8125, addr("mon-1"))
    assert fp.allows(rules, "app-2", "tcp", 8125, "192.0.2.3")
    assert not fp.allows(rules, "app-1", "udp", 8125, "192.0.2.30")
    assert not fp.allows(rules, "db-1", "udp", 8125, addr("mon-1"))
    assert fp.allows(rules, "mgr-1", "tcp", 9443, OUTSIDER)
    assert not fp.allows(rules, "app-1", "tcp", 9443, OUTSIDER)


@pytest.mark.parametrize("extra,message", [
    ({"ports": [1], "protocol": "icmp"}, "protocol"),
    ({"name": "x"}, "ports is required"),
    ({"ports": [1], "port": 2}, "unknown keys port"),
    ("tcp/80", "must be a mapping"),
    ({"ports": [1], "sources": ["10.0.0.1/8"]}, "sources"),
])
def test_bad_extra_rules_are_refused(extra, message):
    with pytest.raises(fp.FirewallPolicyError, match=message):
        policy(extra_rules=[extra])


def pair_policy(**changes):
    """The same inventory with a second load balancer (lb-2) and the floating address on."""
    groups = dict(GROUPS, lb=["lb-1", "lb-2"], all=GROUPS["all"] + ["lb-2"])
    addresses = dict(ADDR, **{"lb-2": "10.0.0.9"})
    settings = dict(SETTINGS, lb_vrrp=True)
    settings.update(changes)
    rules, missing = fp.build_policy(groups, addresses, settings)
    assert missing == []
    return rules


def test_vrrp_between_the_load_balancers_only_when_the_floating_address_is_on():
    rules = pair_policy()
    assert fp.allows(rules, "lb-1", "vrrp", None, "10.0.0.9")
    assert fp.allows(rules, "lb-2", "vrrp", None, "10.0.0.4")
    assert fp.allows(rules, "lb-2", "vrrp", None, "fd00::4")
    assert not fp.allows(rules, "lb-1", "vrrp", None, OUTSIDER)
    assert not fp.allows(rules, "lb-1", "vrrp", None, addr("app-1"))
    assert not fp.allows(rules, "app-1", "vrrp", None, "10.0.0.4")
    assert not fp.allows(rules, "lb-1", "tcp", 112, "10.0.0.9")
    # off: no rule; the string the role's template may hand over counts like the bool
    assert not fp.allows(pair_policy(lb_vrrp=False), "lb-1", "vrrp", None, "10.0.0.9")
    assert not fp.allows(pair_policy(lb_vrrp="False"), "lb-1", "vrrp", None, "10.0.0.9")
    assert fp.allows(pair_policy(lb_vrrp="True"), "lb-1", "vrrp", None, "10.0.0.9")
    # a single load balancer has no peer to hear
    assert not [r for r in policy(lb_vrrp=True) if r["protocol"] == "vrrp"]


def test_render_of_vrrp_matches_the_ip_protocol_not_a_port():
    text = fp.render_nft(fp.rules_for(pair_policy(), "lb-1"))
    assert 'ip saddr { 10.0.0.4/32, 10.0.0.9/32 } meta l4proto 112 accept comment "vrrp between the load balancers"' in text
    assert 'ip6 saddr fd00::4/128 meta l4proto 112 accept' in text
    assert "dport" not in [line for line in text.splitlines() if "vrrp" in line][0]


# ----------------------------------------------------------------- rendering


def test_render_owns_one_table_and_never_flushes_the_ruleset():
    text = fp.render_nft(fp.rules_for(policy(), "app-1"))
    assert "flush ruleset" not in text
    lines = text.splitlines()
    assert lines[:2] == ["table inet greenflow", "delete table inet greenflow"]
    assert "ip filter" not in text and "ip nat" not in text


def test_render_input_drops_by_default_and_published_ports_are_guarded_before_dnat():
    text = fp.render_nft(fp.rules_for(policy(), "app-1"))
    assert "type filter hook input priority filter; policy drop;" in text
    assert "type filter hook prerouting priority dstnat - 10; policy accept;" in text
    assert "fib daddr type local tcp dport { 8001, 8002 } jump published_guard" in text
    guard = text.split("chain published_guard {", 1)[1]
    assert 'ip saddr 10.0.0.4/32 tcp dport { 8001, 8002 } return' in guard
    assert 'ip6 saddr fd00::4/128 tcp dport { 8001, 8002 } return' in guard
    assert guard.strip().splitlines()[-3].strip().startswith("drop")
    # on the input path (no task of the colour on this node, docker-proxy) the same sources only
    input_chain = text.split("chain published {", 1)[0]
    assert 'ip saddr 10.0.0.4/32 tcp dport { 8001, 8002 } accept' in input_chain
    assert [line for line in input_chain.splitlines() if "8001" in line] == [
        '        ip saddr 10.0.0.4/32 tcp dport { 8001, 8002 } accept comment "published app ports from the load balancers"',
        '        ip6 saddr fd00::4/128 tcp dport { 8001, 8002 } accept comment "published app ports from the load balancers"']


def test_render_of_a_database_host_has_no_published_jump():
    text = fp.render_nft(fp.rules_for(policy(), "db-1"))
    assert "jump published_guard" not in text
    assert "tcp dport 5432 accept" in text


def test_render_refuses_a_bad_table_name():
    with pytest.raises(fp.FirewallPolicyError, match="table name"):
        fp.render_nft([], table="bad name; flush ruleset")


def test_comments_cannot_break_out_of_their_quotes():
    rules = policy(extra_rules=[{"name": 'x" accept; flush ruleset #', "ports": [1]}])
    text = fp.render_nft(fp.rules_for(rules, "db-1"))
    assert 'comment "x_ accept_ flush ruleset _"' in text


def test_render_is_deterministic():
    assert fp.render_nft(fp.rules_for(policy(), "lb-1")) == fp.render_nft(fp.rules_for(policy(), "lb-1"))
