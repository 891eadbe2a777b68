"""Gate decisions of the cutover at and around every threshold."""
import pytest

from ansible_collections.greenflow.platform.plugins.module_utils._cutover_gates import (
    ABORT, FAIL, PASS, WAIT, WATCH, DEFAULT_GATES, GateError, check_gates, evaluate, evaluate_watch,
    latency_thresholds, rolling_start,
)

G = check_gates({})


def stats(requests=100, errors=0, p95=100.0, samples=None, slow_abort=None, slow_max=None):
    samples = requests if samples is None else samples
    over = {}
    if slow_abort is not None:
        over["1000"] = slow_abort
    if slow_max is not None:
        over["500"] = slow_max
    return {"requests": requests, "errors_5xx": errors,
            "error_rate": errors / requests if requests else None,
            "p95_ms": p95 if samples else None, "latency_samples": samples, "over_ms": over}


def verdict(s, **kw):
    return evaluate(s, G, **kw)["verdict"]


def test_defaults_match_the_issue():
    assert G["max_error_rate"] == 0.01
    assert G["max_p95_ms"] == 500
    assert G["abort_error_rate"] == 0.05
    assert G["abort_p95_ms"] == 1000
    assert G["min_requests"] == 50
    assert DEFAULT_GATES["abort_min_failures"] == 5
    assert latency_thresholds(G) == [500.0, 1000.0]


# -- pass line for the error rate (<= passes) ---------------------------------------------
@pytest.mark.parametrize("requests,errors,expected", [
    (1000, 9, PASS),     # 0.9 %
    (1000, 10, PASS),    # exactly 1 %: at the line passes
    (1000, 11, FAIL),    # 1.1 %
    (100, 0, PASS),
    (100, 1, PASS),      # 1 %
    (100, 2, FAIL),      # 2 %: between the lines -> inconclusive at end of dwell
    (100, 4, FAIL),      # 4 % still below abort
])
def test_error_rate_pass_line(requests, errors, expected):
    assert verdict(stats(requests, errors), final=True) == expected


def test_between_lines_is_only_judged_at_end_of_dwell():
    s = stats(100, 3)
    assert verdict(s) == WATCH
    out = evaluate(s, G, final=True)
    assert out["verdict"] == FAIL
    assert out["breaches"][0]["metric"] == "error_rate"
    assert "inconclusive" in out["reasons"][0]


# -- abort line for the error rate (>= aborts, at any poll) ----------------------------------
@pytest.mark.parametrize("requests,errors,expected", [
    (1000, 49, WATCH),   # 4.9 %
    (1000, 50, ABORT),   # exactly 5 %
    (1000, 51, ABORT),
    (100, 5, ABORT),     # 5 % with 5 failures
    (100, 4, WATCH),     # 4 %
    (101, 5, WATCH),     # 4.95 %
])
def test_error_rate_abort_line(requests, errors, expected):
    assert verdict(stats(requests, errors)) == expected


@pytest.mark.parametrize("requests,errors,expected", [
    (1, 1, WATCH),       # one request, one 500: 100 % but no evidence
    (3, 3, WATCH),
    (4, 4, WATCH),
    (5, 5, ABORT),       # a pool failing everything aborts at its 5th failure
    (6, 5, ABORT),
    (20, 4, WATCH),      # 20 % but only 4 failures
    (60, 5, ABORT),
])
def test_abort_needs_minimum_failures(requests, errors, expected):
    assert verdict(stats(requests, errors)) == expected


def test_abort_min_failures_is_configurable():
    g = check_gates({"abort_min_failures": 1})
    assert evaluate(stats(1, 1), g)["verdict"] == ABORT


def test_abort_also_wins_at_end_of_dwell():
    assert verdict(stats(100, 10), final=True) == ABORT


# -- latency ---------------------------------------------------------------------------------
@pytest.mark.parametrize("p95,expected", [
    (499.9, PASS), (500.0, PASS), (500.1, FAIL), (999.9, FAIL),
])
def test_p95_pass_line(p95, expected):
    assert verdict(stats(100, 0, p95=p95, slow_abort=0), final=True) == expected


@pytest.mark.parametrize("p95,slow,expected", [
    (999.9, 0, WATCH),
    (1000.0, 5, ABORT),    # at the abort line
    (1000.1, 6, ABORT),
    (1500.0, 4, WATCH),    # too few slow responses to act on
    (1500.0, 5, ABORT),
])
def test_p95_abort_line(p95, slow, expected):
    assert verdict(stats(100, 0, p95=p95, slow_abort=slow)) == expected


def test_p95_abort_without_counts_uses_sample_size():
    assert verdict(stats(3, 0, p95=2000.0)) == WATCH
    assert verdict(stats(20, 0, p95=2000.0)) == ABORT


def test_both_breaches_reported():
    out = evaluate(stats(100, 10, p95=3000.0, slow_abort=50), G)
    assert out["verdict"] == ABORT
    assert {b["metric"] for b in out["breaches"]} == {"error_rate", "p95_ms"}
    assert any("10 of 100" in r for r in out["reasons"])


# -- too few requests ------------------------------------------------------------------------
@pytest.mark.parametrize("requests,expected", [(0, WAIT), (1, WAIT), (49, WAIT), (50, PASS),
                                               (51, PASS)])
def test_min_requests(requests, expected):
    assert verdict(stats(requests, 0), final=True) == expected


def test_too_few_requests_is_never_a_pass_and_fails_when_wait_is_over():
    out = evaluate(stats(49, 0), G, final=True, wait_over=True)
    assert out["verdict"] == FAIL
    assert out["breaches"][0]["metric"] == "requests"
    assert "too few" in out["reasons"][0]


def test_too_few_requests_with_errors_waits_rather_than_judging():
    assert verdict(stats(10, 1), final=True) == WAIT


def test_empty_window():
    empty = {"requests": 0, "errors_5xx": 0, "error_rate": None, "p95_ms": None,
             "latency_samples": 0, "over_ms": {}}
    assert verdict(empty) == WATCH
    assert verdict(empty, final=True) == WAIT
    assert verdict(empty, final=True, wait_over=True) == FAIL


def test_no_latency_samples_is_not_a_pass():
    assert verdict(stats(100, 0, samples=0), final=True) == WAIT


# -- health ------------------------------------------------------------------------------------
def test_failed_health_probe_aborts_even_without_traffic():
    out = evaluate(stats(0, 0), G, health=[
        {"url": "http://127.0.0.1:1/health", "ok": True, "status": 200},
        {"url": "http://127.0.0.1:2/health", "ok": False, "error": "connection refused"}])
    assert out["verdict"] == ABORT
    assert out["breaches"][0]["metric"] == "health"
    assert "127.0.0.1:2" in out["reasons"][0]


def test_healthy_probes_do_not_change_verdict():
    ok = [{"url": "http://x/health", "ok": True, "status": 200}]
    assert verdict(stats(100, 0), final=True, health=ok) == PASS


# -- settings validation ---------------------------------------------------------------------
@pytest.mark.parametrize("bad", [
    {"max_error_rate": 0.05},                       # not below abort
    {"max_error_rate": 0.1, "abort_error_rate": 0.05},
    {"max_p95_ms": 1000},
    {"abort_error_rate": 1.5},
    {"max_error_rate": -0.1},
    {"max_p95_ms": 0},
    {"min_requests": 0},
    {"min_requests": 2.5},
    {"min_requests": "many"},
    {"abort_min_failures": 0},
    {"nonsense": 1},
])
def test_bad_gates_rejected(bad):
    with pytest.raises(GateError):
        check_gates(bad)


def test_gates_coerced():
    g = check_gates({"min_requests": "20", "max_p95_ms": "250", "max_error_rate": None})
    assert g["min_requests"] == 20 and g["max_p95_ms"] == 250.0 and g["max_error_rate"] == 0.01


# -- the action plugin's option checks (pure, before anything is touched) ----------------------
from ansible.errors import AnsibleActionFail  # noqa: E402
from ansible_collections.greenflow.platform.plugins.action.release_cutover import (  # noqa: E402
    check_options,
)


def opts(**kw):
    base = dict(app="demo", from_color="blue", to_color="green", steps=[5, 25, 50, 100], step_seconds=60.0,
                poll_seconds=2.0, max_wait_seconds=300.0, health_timeout=2.0, health_urls=[],
                pools={"blue": ["127.0.0.1:1"], "green": ["127.0.0.1:2"]},
                max_error_rate=0.01, max_p95_ms=500.0, abort_error_rate=0.05, abort_p95_ms=1000.0,
                min_requests=50, abort_min_failures=5, watch_seconds=0.0, watch_window_seconds=30.0)
    base.update(kw)
    return base


def test_default_options_are_valid():
    assert check_options(opts(app="my-shop"))[1] == [5, 25, 50, 100]
    gates, steps, dwells = check_options(opts())
    assert steps == [5, 25, 50, 100] and gates["min_requests"] == 50 and dwells == [60.0] * 4
    assert check_options(opts(step_seconds=[30, 60, "90", 120.5]))[2] == [30.0, 60.0, 90.0, 120.5]
    assert check_options(opts(watch_seconds=600, watch_window_seconds=2))[2] == [60.0] * 4
    assert check_options(opts(steps=[100]))[1] == [100]
    assert check_options(opts(pools=None, poll_seconds=0.5))[1] == [5, 25, 50, 100]


@pytest.mark.parametrize("bad,msg", [
    ({"steps": []}, "must not be empty"),
    ({"steps": [25, 5, 100]}, "strictly ascending"),
    ({"steps": [5, 5, 100]}, "strictly ascending"),
    ({"steps": [0, 50, 100]}, "between 1 and 100"),
    ({"steps": [50, 101]}, "between 1 and 100"),
    ({"steps": [5, 50]}, "last step must be 100"),
    ({"to_color": "blue"}, "must differ"),
    ({"step_seconds": 0}, "step's dwell must be > 0"),
    ({"step_seconds": [60, 60]}, "step_seconds has 2 values for 4 steps"),
    ({"step_seconds": [60, 60, 0, 60]}, "step's dwell must be > 0"),
    ({"step_seconds": [60, 60, "x", 60]}, "step_seconds must be a number"),
    ({"step_seconds": "soon"}, "step_seconds must be a number"),
    ({"step_seconds": 3601}, "<= 3600"),
    ({"watch_seconds": -1}, "watch_seconds"),
    ({"watch_seconds": 86401}, "watch_seconds"),
    ({"watch_window_seconds": 1}, "watch_window_seconds must be between poll_seconds"),
    ({"poll_seconds": 2.5}, "poll_seconds"),
    ({"poll_seconds": 0}, "poll_seconds"),
    ({"max_wait_seconds": -1}, "max_wait_seconds"),
    ({"max_wait_seconds": 3601}, "max_wait_seconds"),
    ({"health_urls": ["127.0.0.1:8080/health"]}, "health_urls"),
    ({"health_timeout": 0}, "health_timeout"),
    ({"pools": {"blue": ["a:1"], "green": []}}, "pools.green (to_color) has no server"),
    ({"pools": {"blue": [], "green": ["a:1"]}}, "pools.blue (from_color) has no server"),
    ({"pools": {"blue": ["a:1"], "green": ["b:1"], "red": ["c:1"]}}, "unknown colour"),
    ({"abort_p95_ms": 400.0}, "below abort_p95_ms"),
    ({"min_requests": 0}, "min_requests"),
    ({"app": "My-Shop"}, "not a valid name"),
])
def test_bad_options_are_rejected_with_a_clear_message(bad, msg):
    with pytest.raises(AnsibleActionFail) as err:
        check_options(opts(**bad))
    assert msg in str(err.value)
    assert "nothing was changed" in str(err.value)


def test_the_action_plugin_takes_its_gate_defaults_from_the_release_model():
    from ansible_collections.greenflow.platform.plugins.action.release_cutover import ARGUMENT_SPEC
    from ansible_collections.greenflow.platform.plugins.module_utils import _release_model as model
    for name, spec in model.GATE_SPEC.items():
        assert ARGUMENT_SPEC[name] == spec
    assert DEFAULT_GATES == dict((k, model.GATE_SPEC[k]["default"]) for k in model.JUDGING_GATES)


# -- the watch after the last step ---------------------------------------------------------------
def test_watch_polls_judge_the_recent_window_on_the_abort_lines_only():
    # over the pass line (2 %) but under the abort line: the watch goes on during its time
    assert evaluate_watch(stats(requests=500, errors=10), G)["verdict"] == WATCH
    # a late break: the recent window alone crosses the abort line with enough evidence
    decision = evaluate_watch(stats(requests=100, errors=40), G)
    assert decision["verdict"] == ABORT and decision["breaches"][0]["metric"] == "error_rate"
    # evidence minimum applies as in the steps
    assert evaluate_watch(stats(requests=10, errors=4), G)["verdict"] == WATCH
    # a failed probe aborts
    bad_probe = [{"url": "http://a/health", "ok": False, "status": 503}]
    assert evaluate_watch(stats(), G, health=bad_probe)["verdict"] == ABORT


def test_the_end_of_the_watch_judges_the_whole_watch_on_the_pass_lines():
    good = stats(requests=5000, errors=5, p95=100.0)
    assert evaluate_watch(stats(), G, whole=good)["verdict"] == PASS
    degraded = stats(requests=5000, errors=100, p95=100.0)   # 2 %: above the pass line
    decision = evaluate_watch(stats(), G, whole=degraded)
    assert decision["verdict"] == FAIL and "inconclusive" in decision["reasons"][0]
    slow = stats(requests=5000, p95=700.0)
    assert evaluate_watch(stats(), G, whole=slow)["verdict"] == FAIL
    # an abort in the last window wins over a good whole
    assert evaluate_watch(stats(requests=100, errors=50), G, whole=good)["verdict"] == ABORT


def test_thin_traffic_at_the_end_of_the_watch_passes_and_says_so():
    decision = evaluate_watch(stats(requests=3), G, whole=stats(requests=12))
    assert decision["verdict"] == PASS
    assert "12 requests in the watch" in decision["reasons"][0]
    assert evaluate_watch(stats(requests=0), G, whole=stats(requests=0, samples=0))["verdict"] == PASS


def test_rolling_start_takes_the_newest_mark_before_the_window():
    marks = [(10.0, "p10"), (12.0, "p12"), (14.0, "p14"), (16.0, "p16")]
    assert rolling_start([], 100.0, 30.0, "first") == "first"
    assert rolling_start(marks, 20.0, 30.0, "first") == "first"    # no mark old enough yet
    assert rolling_start(marks, 42.0, 30.0, "first") == "p12"      # 12 <= 42 - 30 < 14
    assert rolling_start(marks, 44.0, 30.0, "first") == "p14"      # exactly at the edge counts
    assert rolling_start(marks, 99.0, 30.0, "first") == "p16"


def test_resource_urls_must_be_http_and_their_timeout_positive():
    with pytest.raises(AnsibleActionFail) as err:
        check_options(opts(resource_urls=["10.0.0.2:9100/metrics"], resource_timeout=0))
    assert "resource_urls must be http:// or https:// URLs" in str(err.value)
    assert "resource_timeout must be > 0" in str(err.value)
    gates, _steps, _dwells = check_options(opts(resource_urls=["http://10.0.0.2:9100/metrics"]))
    assert (gates["abort_cpu_percent"], gates["abort_memory_percent"], gates["abort_resource_samples"]) == (80, 85, 3)
