"""The cutover's resource lines: CPU and memory of the new colour's tasks, judged on samples in a row."""
import pytest

from ansible_collections.greenflow.platform.plugins.module_utils._cutover_gates import (
    ABORT, PASS, WATCH, GateError, check_gates, resource_breaches, resources_judged, with_resource_breaches,
)

G = check_gates({})


def task(ts, cpu=None, mem=None, node="10.0.0.2:9100", container="abc123", name="demo-green.1.x"):
    t = {"node": node, "container": container, "task": name, "timestamp": ts}
    if cpu is not None:
        t["cpu_percent"] = cpu
    if mem is not None:
        t["memory_percent"] = mem
    return t


def run(samples, gates=G):
    """Feed one poll per sample list; returns the breaches of each poll."""
    streaks = {}
    return [resource_breaches(tasks, gates, streaks) for tasks in samples]


def test_defaults_are_the_runbooks_lines():
    assert G["abort_cpu_percent"] == 80.0
    assert G["abort_memory_percent"] == 85.0
    assert G["abort_resource_samples"] == 3
    assert resources_judged(G)
    assert not resources_judged(check_gates({"abort_cpu_percent": 0, "abort_memory_percent": 0}))


def test_cpu_over_the_line_on_three_samples_in_a_row_breaches_on_the_third():
    out = run([[task(1, cpu=95)], [task(2, cpu=96)], [task(3, cpu=97)]])
    assert out[0] == [] and out[1] == []
    (b,) = out[2]
    assert (b["metric"], b["value"], b["op"], b["threshold"], b["samples"]) == ("cpu_percent", 97, ">=", 80.0, 3)
    assert b["task"] == "demo-green.1.x" and b["node"] == "10.0.0.2:9100"


def test_at_the_line_counts_below_it_resets_the_streak():
    assert run([[task(1, cpu=80)], [task(2, cpu=80)], [task(3, cpu=80)]])[2]
    assert run([[task(1, cpu=90)], [task(2, cpu=79.9)], [task(3, cpu=90)], [task(4, cpu=90)]]) == [[], [], [], []]


def test_a_sample_read_twice_is_counted_once():
    # polls (2 s) can be as fast as the sampler: the same timestamp is the same sample
    out = run([[task(1, cpu=99)], [task(1, cpu=99)], [task(1, cpu=99)], [task(2, cpu=99)]])
    assert out == [[], [], [], []]
    assert run([[task(1, cpu=99)], [task(1, cpu=99)], [task(2, cpu=99)], [task(3, cpu=99)]])[3]


def test_memory_line_and_tasks_without_a_limit():
    out = run([[task(t, mem=90)] for t in (1, 2, 3)])
    assert out[2][0]["metric"] == "memory_percent"
    # no memory_percent (no limit) and no cpu_percent yet (first sample): nothing to judge
    assert run([[task(t)] for t in (1, 2, 3, 4)]) == [[], [], [], []]


def test_each_task_has_its_own_streak():
    a = dict(container="aaa", node="n1:9100")
    b = dict(container="bbb", node="n2:9100")
    out = run([[task(1, cpu=95, **a), task(1, cpu=10, **b)],
               [task(2, cpu=10, **a), task(2, cpu=95, **b)],
               [task(3, cpu=95, **a), task(3, cpu=95, **b)]])
    assert out == [[], [], []]


def test_a_task_that_is_gone_is_forgotten():
    streaks = {}
    resource_breaches([task(1, cpu=95)], G, streaks)
    resource_breaches([task(2, cpu=95)], G, streaks)
    resource_breaches([], G, streaks)
    assert streaks == {}
    assert resource_breaches([task(3, cpu=95)], G, streaks) == []


def test_a_line_set_to_zero_is_off_and_samples_is_configurable():
    gates = check_gates({"abort_cpu_percent": 0, "abort_resource_samples": 1})
    assert run([[task(1, cpu=5000, mem=10)]], gates) == [[]]
    assert run([[task(1, mem=86)]], gates)[0][0]["metric"] == "memory_percent"


def test_a_breach_turns_any_decision_into_an_abort_and_keeps_other_aborts():
    (b,) = run([[task(t, cpu=99)] for t in (1, 2, 3)])[2]
    for verdict in (WATCH, PASS):
        d = with_resource_breaches({"verdict": verdict, "breaches": [], "reasons": []}, [b])
        assert d["verdict"] == ABORT
        assert "cpu_percent 99.0 % >= 80.0 %" in d["reasons"][0]
        assert "task demo-green.1.x on 10.0.0.2:9100, 3 samples in a row" in d["reasons"][0]
    prior = {"verdict": ABORT, "breaches": [{"metric": "health", "value": 503, "op": "failed", "threshold": "u"}],
             "reasons": ["x"]}
    assert [x["metric"] for x in with_resource_breaches(prior, [b])["breaches"]] == ["health", "cpu_percent"]
    same = {"verdict": WATCH, "breaches": [], "reasons": []}
    assert with_resource_breaches(same, []) is same


@pytest.mark.parametrize("gates,needle", [
    ({"abort_cpu_percent": -1}, "abort_cpu_percent must be between 0 (off) and 6400"),
    ({"abort_cpu_percent": "lots"}, "abort_cpu_percent must be a number"),
    ({"abort_cpu_percent": True}, "abort_cpu_percent must be a number"),
    ({"abort_memory_percent": 101}, "abort_memory_percent must be between 0 (off) and 100"),
    ({"abort_resource_samples": 0}, "abort_resource_samples must be >= 1"),
    ({"abort_resource_samples": 1.5}, "abort_resource_samples must be a whole number"),
])
def test_bad_resource_lines_are_refused(gates, needle):
    with pytest.raises(GateError) as err:
        check_gates(gates)
    assert needle in str(err.value)


def test_a_sampler_that_stopped_is_named_once_its_sample_is_old():
    from ansible_collections.greenflow.platform.plugins.module_utils._cutover_gates import stale_nodes
    seen = {}
    a = task(100.0, cpu=10, node="n1:9100")
    b = task(100.0, cpu=10, node="n2:9100")
    assert stale_nodes([a, b], seen, now=0.0) == []
    # n2's sampler goes on (new samples), n1's page keeps its last sample
    assert stale_nodes([a, task(102.0, cpu=10, node="n2:9100")], seen, now=10.0) == []
    assert stale_nodes([a, task(104.0, cpu=10, node="n2:9100")], seen, now=15.0) == []   # 15 s: not more
    assert stale_nodes([a, task(106.0, cpu=10, node="n2:9100")], seen, now=15.5) == [("n1:9100", 15.5)]
    # a slower sampler (interval 10 s) gets five intervals
    slow = task(200.0, cpu=10, node="n3:9100")
    slow["interval"] = 10.0
    stale_nodes([slow], seen, now=0.0)
    assert stale_nodes([slow], seen, now=49.0) == []
    assert stale_nodes([slow], seen, now=51.0) == [("n3:9100", 51.0)]


def test_the_cutover_turns_a_poll_with_hot_tasks_into_an_abort_and_names_a_stale_node(monkeypatch):
    """The action plugin's glue around the pure decisions, fed what traffic_window returns."""
    from ansible_collections.greenflow.platform.plugins.action import release_cutover as rc

    clock = {"now": 1000.0}
    monkeypatch.setattr(rc.time, "monotonic", lambda: clock["now"])
    warnings = []
    monkeypatch.setattr(rc.display, "warning", lambda msg, *a, **k: warnings.append(msg))
    cut = rc.ActionModule.__new__(rc.ActionModule)
    cut._args = {"app": "demo"}
    cut._gates = G
    cut._resources_on = True
    cut._streaks, cut._samples_seen, cut._resource_warned = {}, {}, set()

    def poll(ts_hot, ts_stale, errors=()):
        window = {"resources": {"ms": 12.5, "errors": list(errors), "tasks": [
            task(ts_hot, cpu=97, mem=40, node="n1:9100", container="hot"),
            task(ts_stale, cpu=5, mem=10, node="n2:9100", container="calm")]}}
        record = {}
        decision = cut._resource_decision(window, {"verdict": WATCH, "breaches": [], "reasons": []}, record)
        clock["now"] += 2.0
        return decision, record

    d1, r1 = poll(1.0, 50.0, errors=[{"url": "http://n3:9100/metrics", "error": "connection refused"}])
    assert d1["verdict"] == WATCH
    assert r1 == {"cpu_percent": 97, "memory_percent": 40, "resource_errors": 1, "resource_ms": 12.5}
    assert len(warnings) == 1 and "no CPU and memory reading from http://n3:9100/metrics" in warnings[0]
    poll(3.0, 50.0, errors=[{"url": "http://n3:9100/metrics", "error": "connection refused"}])
    assert len(warnings) == 1  # said once
    d3, _r3 = poll(5.0, 50.0)
    assert d3["verdict"] == ABORT and d3["breaches"][0]["task"] == "demo-green.1.x"
    for ts in range(7, 20, 2):
        _d, r = poll(float(ts), 50.0)
    assert any("n2:9100 has not changed" in w for w in warnings)
    # a failed log read is already an abort: the resources are not judged on top
    failed = {"verdict": ABORT, "breaches": [], "reasons": ["cannot read"]}
    assert cut._resource_decision({"failed": True}, failed, {}) is failed
