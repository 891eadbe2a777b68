"""Unit tests of plugins/module_utils/_keepalived.py: the floating address's VRRP plan per load balancer."""

import pytest

from ansible_collections.greenflow.platform.plugins.filter.keepalived_plan import keepalived_plan
from ansible_collections.greenflow.platform.plugins.module_utils import _keepalived as ka


def lb(name, *addresses, iface="eth0", **extra):
    entry = {"name": name, "addresses": {iface: list(addresses), "lo": ["127.0.0.1/8"]}}
    entry.update(extra)
    return entry


PAIR = [lb("lb-1", "10.0.0.4/24"), lb("lb-2", "10.0.0.5/24")]


def plan(vip="10.0.0.100", hosts=None, **settings):
    hosts = PAIR if hosts is None else hosts
    return ka.plan(vip, [(h["name"], h) for h in hosts], settings)


def test_pair_by_default_unicast_peers_priorities_by_position_and_subnet_prefix():
    out = plan()
    assert out["lb-1"] == {"interface": "eth0", "address": "10.0.0.4", "vip": "10.0.0.100", "prefix": 24,
                           "router_id": ka.derive_router_id("10.0.0.100"), "priority": 150,
                           "unicast_peers": ["10.0.0.5"]}
    assert out["lb-2"]["priority"] == 140
    assert out["lb-2"]["unicast_peers"] == ["10.0.0.4"]
    assert out["lb-1"]["router_id"] == out["lb-2"]["router_id"]


def test_a_single_load_balancer_with_a_floating_address_is_allowed():
    out = plan(hosts=PAIR[:1])
    assert out["lb-1"]["unicast_peers"] == []
    assert out["lb-1"]["priority"] == 150


def test_three_hosts_each_peers_with_the_two_others():
    hosts = PAIR + [lb("lb-3", "10.0.0.6/24")]
    out = plan(hosts=hosts)
    assert [out[h]["priority"] for h in ("lb-1", "lb-2", "lb-3")] == [150, 140, 130]
    assert out["lb-2"]["unicast_peers"] == ["10.0.0.4", "10.0.0.6"]


def test_per_host_priority_wins_over_the_position():
    hosts = [lb("lb-1", "10.0.0.4/24", priority=100), lb("lb-2", "10.0.0.5/24", priority=200)]
    out = plan(hosts=hosts)
    assert (out["lb-1"]["priority"], out["lb-2"]["priority"]) == (100, 200)


def test_router_id_is_derived_in_range_or_taken_as_given():
    for vip in ("10.0.0.1", "10.0.0.254", "192.168.255.254", "172.18.255.254"):
        assert 1 <= ka.derive_router_id(vip) <= 255
    assert ka.derive_router_id("10.0.0.100") != ka.derive_router_id("10.0.0.101")
    assert plan(router_id=42)["lb-1"]["router_id"] == 42


def test_vip_with_its_own_prefix_keeps_it():
    assert plan(vip="10.0.0.100/32")["lb-1"]["prefix"] == 32


def test_interface_is_found_by_the_subnet_among_several():
    host = {"name": "lb-1", "addresses": {"eth0": ["192.0.2.4/24"], "eth1": ["10.0.0.4/24"], "lo": ["127.0.0.1/8"]}}
    out = plan(hosts=[host, lb("lb-2", "10.0.0.5/24")])
    assert (out["lb-1"]["interface"], out["lb-1"]["address"]) == ("eth1", "10.0.0.4")


def test_the_address_held_already_does_not_count_as_the_hosts_own():
    # the master's facts show the floating address as a secondary of its interface
    host = lb("lb-1", "10.0.0.100/24", "10.0.0.4/24")
    out = plan(hosts=[host, PAIR[1]])
    assert out["lb-1"]["address"] == "10.0.0.4"
    assert out["lb-1"]["interface"] == "eth0"


def test_given_interface_and_address_are_used_as_they_are():
    host = lb("lb-1", "192.0.2.4/24", iface="ens3", interface="ens3", address="192.0.2.4")
    out = plan(hosts=[host, lb("lb-2", "192.0.2.5/24", iface="ens3", interface="ens3")])
    assert out["lb-1"]["interface"] == "ens3"
    assert out["lb-1"]["prefix"] == 32      # the address is outside the interface's subnet
    assert out["lb-2"]["unicast_peers"] == ["192.0.2.4"]


def test_explicit_peers_and_multicast():
    out = plan(peers=["10.0.0.4", "10.0.0.5", "10.0.0.9"])
    assert out["lb-1"]["unicast_peers"] == ["10.0.0.5", "10.0.0.9"]
    assert plan(unicast=False)["lb-2"]["unicast_peers"] == []


@pytest.mark.parametrize("vip, message", [
    ("", "empty"),
    ("lb.example.com", "must be an IPv4 address"),
    ("10.0.0.300", "must be an IPv4 address"),
    ("fd00::10", "IPv4"),
    ("127.0.0.5", "not an address clients can reach"),
    ("224.0.0.18", "not an address clients can reach"),
    ("10.0.0.100/33", "prefix must be 1-32"),
])
def test_bad_vips_are_refused(vip, message):
    with pytest.raises(ka.KeepalivedPlanError, match=message):
        plan(vip=vip)


def test_no_interface_in_the_subnet_says_what_to_set():
    with pytest.raises(ka.KeepalivedPlanError, match="lb-1: no interface .* set nginx_lb_keepalived_interface"):
        plan(vip="192.168.9.9")


def test_two_interfaces_in_the_subnet_are_ambiguous():
    host = {"name": "lb-1", "addresses": {"eth0": ["10.0.0.4/24"], "eth1": ["10.0.0.44/16"]}}
    with pytest.raises(ka.KeepalivedPlanError, match="several interfaces .*eth0, eth1"):
        plan(hosts=[host])


def test_unknown_given_interface_is_refused():
    with pytest.raises(ka.KeepalivedPlanError, match="lb-1: nginx_lb_keepalived_interface eth7 is not an interface"):
        plan(hosts=[lb("lb-1", "10.0.0.4/24", interface="eth7")])


def test_the_vip_may_not_be_a_hosts_own_address():
    with pytest.raises(ka.KeepalivedPlanError, match="is the address of the host itself"):
        plan(hosts=[lb("lb-1", "10.0.0.4/24", address="10.0.0.100")])


def test_two_hosts_with_one_address_are_refused():
    with pytest.raises(ka.KeepalivedPlanError, match="same VRRP address 10.0.0.4"):
        plan(hosts=[lb("lb-1", "10.0.0.4/24"), lb("lb-2", "10.0.0.4/24")])


@pytest.mark.parametrize("settings, message", [
    ({"router_id": 256}, "router_id must be 0-255"),
    ({"router_id": "x"}, "router_id must be a number"),
    ({"priority_top": 255}, "priority_top must be 1-254"),
    ({"check_weight": 5}, "check_weight must be -253-0"),
])
def test_bad_numbers_are_refused(settings, message):
    with pytest.raises(ka.KeepalivedPlanError, match=message):
        plan(**settings)


def test_priorities_by_position_that_fall_below_1_are_refused():
    hosts = [lb("lb-%d" % i, "10.0.0.%d/24" % (10 + i)) for i in range(1, 5)]
    with pytest.raises(ka.KeepalivedPlanError, match="lb-4: priority by position is -"):
        plan(hosts=hosts, priority_top=100, priority_step=40)


def test_per_host_priority_out_of_range_is_refused():
    with pytest.raises(ka.KeepalivedPlanError, match="lb-1: nginx_lb_keepalived_priority must be 1-254"):
        plan(hosts=[lb("lb-1", "10.0.0.4/24", priority=255)])


def test_a_negative_weight_needs_preemption():
    with pytest.raises(ka.KeepalivedPlanError, match="a backup never takes the address"):
        plan(check_weight=-50)
    assert plan(check_weight=-50, nopreempt=False)["lb-1"]["priority"] == 150


def test_a_negative_weight_must_take_the_master_below_the_others():
    with pytest.raises(ka.KeepalivedPlanError, match="more negative than -10"):
        plan(check_weight=-10, nopreempt=False)
    plan(check_weight=-11, nopreempt=False)


def test_flags_may_come_as_the_strings_templating_gives():
    assert plan(unicast="False")["lb-1"]["unicast_peers"] == []
    assert plan(check_weight="-50", nopreempt="False")["lb-1"]["priority"] == 150
    with pytest.raises(ka.KeepalivedPlanError, match="a backup never takes the address"):
        plan(check_weight="-50", nopreempt="True")


def test_bad_explicit_peer_is_refused():
    with pytest.raises(ka.KeepalivedPlanError, match="unicast_peers: not an IPv4 address"):
        plan(peers=["lb-2"])


def test_filter_wraps_errors_for_ansible():
    from ansible.errors import AnsibleFilterError
    assert keepalived_plan("10.0.0.100", PAIR)["lb-2"]["priority"] == 140
    with pytest.raises(AnsibleFilterError, match="keepalived_plan: nginx_lb_vip must be an IPv4"):
        keepalived_plan("nope", PAIR)
