"""Task containers' CPU and memory: from the Docker engine's documents to metrics, and back for one service."""
import time

import pytest

from ansible_collections.greenflow.platform.plugins.module_utils import _container_stats as cs

INSPECT = {
    "Id": "0123456789abcdef0123",
    "Config": {"Labels": {cs.SERVICE_LABEL: "demo-green", cs.TASK_LABEL: "demo-green.1.k2j3"}},
    "HostConfig": {"NanoCpus": 250000000, "Memory": 64 * 1024 * 1024},
}


def stats(cpu_ns, usage, inactive=None, key="total_inactive_file"):
    mem = {"usage": usage}
    if inactive is not None:
        mem["stats"] = {key: inactive}
    return {"cpu_stats": {"cpu_usage": {"total_usage": cpu_ns}}, "memory_stats": mem}


def test_limits_from_nano_cpus_or_quota_and_none():
    assert cs.limits_of(INSPECT) == (0.25, 64 * 1024 * 1024)
    assert cs.limits_of({"HostConfig": {"CpuQuota": 50000, "CpuPeriod": 100000}}) == (0.5, 0)
    assert cs.limits_of({"HostConfig": {"CpuQuota": -1}}) == (0.0, 0)
    assert cs.limits_of({}) == (0.0, 0)


def test_identity_only_for_swarm_tasks():
    assert cs.identity_of(INSPECT) == {"container": "0123456789ab", "service": "demo-green",
                                       "task": "demo-green.1.k2j3"}
    assert cs.identity_of({"Id": "x", "Config": {"Labels": {}}}) is None


@pytest.mark.parametrize("key", ["total_inactive_file", "inactive_file"])
def test_memory_leaves_out_the_inactive_page_cache(key):
    assert cs.memory_used(stats(0, 1000, 300, key)) == 700
    assert cs.memory_used(stats(0, 1000, 2000, key)) == 1000  # nonsense cache: usage as is
    assert cs.memory_used(stats(0, 1000)) == 1000


def test_cpu_percent_is_of_the_limit_over_the_interval_and_needs_two_samples():
    ident, limits = cs.identity_of(INSPECT), cs.limits_of(INSPECT)
    first = cs.sample(ident, limits, stats(10 * 10**9, 32 * 1024 * 1024), now=100.0)
    assert "cpu_percent" not in first
    assert first["memory_percent"] == 50.0
    # 0.5 s of CPU in 2 s with a 0.25-core limit: 100 % of the limit
    second = cs.sample(ident, limits, stats(int(10.5 * 10**9), 0), now=102.0, previous=first)
    assert second["cpu_percent"] == 100.0
    assert second["cpu_seconds"] == 10.5
    # no limit: percent of one core
    nolimit = cs.sample(ident, (0.0, 0), stats(int(11.5 * 10**9), 5), now=104.0, previous=second)
    assert nolimit["cpu_percent"] == 50.0 and "memory_percent" not in nolimit
    # a counter that went back (a new container under the same id cannot, but never divide nonsense)
    back = cs.sample(ident, limits, stats(0, 0), now=106.0, previous=second)
    assert "cpu_percent" not in back


def test_stats_without_cpu_are_an_error():
    with pytest.raises(cs.ContainerStatsError):
        cs.cpu_seconds({"memory_stats": {}})


def _two_samples(service="demo-green", task="demo-green.1.k2j3", container="0123456789ab"):
    ident = {"service": service, "task": task, "container": container}
    a = cs.sample(ident, (1.0, 1000), stats(0, 400), now=0.0)
    return cs.sample(ident, (1.0, 1000), stats(10**9, 900), now=2.0, previous=a)


def test_textfile_round_trip_keeps_one_service():
    mine = _two_samples()
    other = _two_samples(service="demo-blue", task="demo-blue.1.q", container="fedcba987654")
    text = cs.render_textfile([mine, other], timestamp=1700000000.5, interval=2)
    assert "# TYPE greenflow_container_cpu_seconds_total counter" in text
    read = cs.readings_for_service(text + "node_textfile_scrape_error 0\n", "demo-green")
    assert read["timestamp"] == 1700000000.5 and read["interval"] == 2.0
    (t,) = read["tasks"]
    assert t == {"task": "demo-green.1.k2j3", "container": "0123456789ab", "cpu_percent": 50.0,
                 "cpu_limit_cores": 1.0, "memory_bytes": 900.0, "memory_limit_bytes": 1000.0,
                 "memory_percent": 90.0}
    assert cs.readings_for_service(text, "nobody")["tasks"] == []


def test_label_values_are_escaped_and_read_back():
    odd = _two_samples(task='we"ird\\task')
    read = cs.readings_for_service(cs.render_textfile([odd], 1.0, 2), "demo-green")
    assert read["tasks"][0]["task"] == 'we"ird\\task'


def test_a_malformed_line_of_ours_is_an_error_others_are_skipped():
    assert cs.parse_metrics("go_goroutines 7\nnode_load1 0.5 1700000000000\n") == []
    with pytest.raises(cs.ContainerStatsError):
        cs.parse_metrics('greenflow_container_cpu_percent{service="x" 5\n')
    with pytest.raises(cs.ContainerStatsError):
        cs.parse_metrics('greenflow_container_cpu_percent{service="x"} lots\n')


def test_read_nodes_reports_each_page_that_cannot_be_read():
    good = cs.render_textfile([_two_samples()], 1700000000.0, 2)
    pages = {
        "http://10.0.0.2:9100/metrics?collect[]=textfile": good,
        "http://10.0.0.3:9100/metrics?collect[]=textfile": "node_load1 0.1\n",  # the sampler never wrote
    }

    def fetch(url, timeout):
        if url not in pages:
            raise IOError("connection refused")
        if "hang" in url:
            time.sleep(5)
        return pages[url]

    urls = list(pages) + ["http://10.0.0.4:9100/metrics?collect[]=textfile"]
    out = cs.read_nodes(urls, "demo-green", 1.0, fetch)
    (t,) = out["tasks"]
    assert t["node"] == "10.0.0.2:9100" and t["timestamp"] == 1700000000.0 and t["cpu_percent"] == 50.0
    errors = dict((e["url"], e["error"]) for e in out["errors"])
    assert "no greenflow_container_* metrics" in errors[urls[1]]
    assert errors[urls[2]] == "connection refused"


def test_read_nodes_does_not_wait_past_its_timeout():
    def fetch(url, timeout):
        time.sleep(3)
        return ""

    started = time.monotonic()
    out = cs.read_nodes(["http://10.0.0.9:9100/metrics"], "demo-green", 0.2, fetch)
    assert time.monotonic() - started < 2.5
    assert out["errors"] == [{"url": "http://10.0.0.9:9100/metrics", "error": "no answer within 0.2 s"}]


def test_read_nodes_refuses_a_page_whose_sampler_stopped():
    page = cs.render_textfile([_two_samples()], 1000.0, 2)
    url = "http://10.0.0.2:9100/metrics"
    fresh = cs.read_nodes([url], "demo-green", 1.0, lambda u, t: page, now=1029.0)
    assert fresh["errors"] == [] and len(fresh["tasks"]) == 1
    stale = cs.read_nodes([url], "demo-green", 1.0, lambda u, t: page, now=1031.0)
    assert stale["tasks"] == []
    assert stale["errors"] == [{"url": url, "error": "its newest sample is 31 s old (has greenflow-container-stats "
                                                     "stopped there?)"}]
    # without a clock (the caller cannot compare), the page is taken as it is
    assert len(cs.read_nodes([url], "demo-green", 1.0, lambda u, t: page)["tasks"]) == 1
