"""Unit tests of plugins/module_utils/_monitoring_scrape.py: the scrape jobs derived from the inventory."""

import pytest

from ansible_collections.greenflow.platform.plugins.module_utils import _monitoring_scrape as ms

GROUPS = {
    "all": ["mgr-1", "app-1", "lb-1", "db-1", "db-2", "mon-1"],
    "swarm_managers": ["mgr-1"],
    "swarm_workers": ["app-1"],
    "lb": ["lb-1"],
    "pg_primary": ["db-1"],
    "pg_replica": ["db-2"],
    "monitoring": ["mon-1"],
}
ADDR = {"mgr-1": "10.0.0.1", "app-1": "10.0.0.2", "lb-1": ["fd00::4", "10.0.0.4"], "db-1": "10.0.0.5",
        "db-2": "10.0.0.6", "mon-1": "10.0.0.8"}


def jobs(**settings):
    return {j["job_name"]: j for j in ms.scrape_configs(GROUPS, ADDR, settings)}


def targets(job):
    return {sc["labels"]["instance"]: sc["targets"] for sc in job["static_configs"]}


def test_every_host_has_a_node_job_named_by_inventory():
    node = jobs()["node"]
    assert targets(node) == {
        "mgr-1": ["10.0.0.1:9100"], "app-1": ["10.0.0.2:9100"], "lb-1": ["[fd00::4]:9100"],
        "db-1": ["10.0.0.5:9100"], "db-2": ["10.0.0.6:9100"], "mon-1": ["10.0.0.8:9100"]}
    assert node["scrape_interval"] == "15s"


def test_role_jobs_only_on_their_groups():
    j = jobs()
    assert set(targets(j["postgres"])) == {"db-1", "db-2"}
    assert set(targets(j["nginx"])) == {"lb-1"} == set(targets(j["mtail"]))
    assert set(targets(j["docker"])) == {"mgr-1", "app-1"}
    assert targets(j["docker"])["app-1"] == ["10.0.0.2:9323"]
    assert targets(j["mtail"])["lb-1"] == ["[fd00::4]:3903"]


def test_postgres_targets_carry_their_role():
    labels = {sc["labels"]["instance"]: sc["labels"]["pg_role"] for sc in jobs()["postgres"]["static_configs"]}
    assert labels == {"db-1": "primary", "db-2": "replica"}


def test_blackbox_job_only_with_targets_and_relabelled_through_the_exporter():
    assert "blackbox" not in jobs()
    bb = jobs(blackbox_targets=["https://shop.example.com/"])["blackbox"]
    assert bb["metrics_path"] == "/probe"
    assert bb["params"] == {"module": ["https_2xx"]}
    assert bb["static_configs"] == [{"targets": ["https://shop.example.com/"]}]
    assert {"target_label": "__address__", "replacement": "127.0.0.1:9115"} in bb["relabel_configs"]
    assert {"source_labels": ["__param_target"], "target_label": "instance"} in bb["relabel_configs"]


def test_absent_groups_leave_their_jobs_out():
    out = {j["job_name"] for j in ms.scrape_configs({"all": ["h1"]}, {"h1": "192.0.2.1"})}
    assert out == {"prometheus", "alertmanager", "node"}


def test_settings_change_ports_and_intervals():
    j = jobs(node_port="9200", scrape_interval="5s", scrape_timeout="4s")
    assert targets(j["node"])["db-1"] == ["10.0.0.5:9200"]
    assert j["node"]["scrape_interval"] == "5s" and j["node"]["scrape_timeout"] == "4s"


def test_host_names_as_addresses_are_kept():
    assert ms.host_port("db-1.internal", 9100) == "db-1.internal:9100"


def test_missing_addresses_are_named_all_at_once():
    with pytest.raises(ms.MonitoringConfigError, match="no address known for db-2, mon-1"):
        ms.scrape_configs(GROUPS, {k: v for k, v in ADDR.items() if k not in ("db-2", "mon-1")})


@pytest.mark.parametrize("settings,message", [
    ({"node_port": 0}, "node_port: port out of range"),
    ({"docker_port": "x"}, "docker_port: not a port"),
    ({"node_port": True}, "node_port: port out of range"),
    ({"scrape_interval": "15"}, "scrape_interval: not a Prometheus duration"),
    ({"blackbox_targets": "https://x/"}, "blackbox_targets must be a list"),
    ({"blackbox_targets": ["ftp://x/"]}, "not an http"),
    ({"swarm_groups": "swarm"}, "swarm_groups must be a list"),
])
def test_bad_settings_are_refused_clearly(settings, message):
    with pytest.raises(ms.MonitoringConfigError, match=message):
        ms.scrape_configs(GROUPS, ADDR, settings)


def test_bad_address_is_refused():
    with pytest.raises(ms.MonitoringConfigError, match="not an address"):
        ms.scrape_configs({"all": ["h1"]}, {"h1": "a b"})


def test_docker_metrics_off_when_the_port_is_empty():
    assert "docker" not in jobs(docker_port="")


def test_addresses_from_hostvars_in_order_of_preference():
    hostvars = {
        "a": {"monitoring_address": "10.0.0.1", "firewall_address": "10.0.0.9"},
        "b": {"firewall_address": ["10.0.0.2", "fd00::2"], "postgresql_address": "10.0.0.9"},
        "c": {"postgresql_address": "10.0.0.3", "ansible_facts": {"default_ipv4": {"address": "10.0.0.9"}}},
        "d": {"nginx_lb_upstream_address": "10.0.0.4"},
        "e": {"ansible_facts": {"default_ipv4": {"address": "10.0.0.5"}}},
        "f": {"ansible_facts": {}},
    }
    assert ms.addresses_from_hostvars(list(hostvars) + ["unknown"], hostvars) == {
        "a": "10.0.0.1", "b": ["10.0.0.2", "fd00::2"], "c": "10.0.0.3", "d": "10.0.0.4", "e": "10.0.0.5"}


def test_the_order_of_the_inventory_does_not_change_the_result():
    shuffled = {k: list(reversed(v)) for k, v in GROUPS.items()}
    assert ms.scrape_configs(shuffled, ADDR) == ms.scrape_configs(GROUPS, ADDR)
    node = jobs()["node"]
    assert [sc["labels"]["instance"] for sc in node["static_configs"]] == sorted(GROUPS["all"])
