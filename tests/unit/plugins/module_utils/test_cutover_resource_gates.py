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
