"""greenflow.platform.smoke_checks for real: ansible runs the module against HTTP servers on 127.0.0.1
(the backends of the nginx fixture, with fault knobs). Each check sends one request per endpoint."""
import nginx_fixture

MODULE = "greenflow.platform.smoke_checks"


def run(**args):
    return nginx_fixture.run_ansible(args, module=MODULE)


def test_every_check_passes_on_every_healthy_endpoint(backend_factory):
    green = [backend_factory("green"), backend_factory("green")]
    result = run(endpoints=[b.address for b in green], checks=[
        {"path": "/version", "body_regex": '"version": "green"', "response_headers": {"X-Pool": "^green$"}},
        {"name": "echo", "path": "/echo?x=1", "method": "POST", "body": '{"a": 1}',
         "headers": {"X-Request-Id": "smoke-1", "Content-Type": "application/json"},
         "body_regex": '"request_id": "smoke-1"'},
        {"name": "health", "path": "/health", "status": [200, 204]},
    ])
    assert not result.get("failed"), result.get("msg")
    assert result["changed"] is False
    assert len(result["results"]) == 6 and all(r["ok"] for r in result["results"])
    assert result["msg"] == "3 smoke checks passed on 2 endpoints"


def test_a_failing_check_names_the_check_and_the_endpoint(backend_factory):
    good, bad = backend_factory("green"), backend_factory("green", healthy=False)
    result = run(endpoints=[good.address, bad.address], checks=[
        {"name": "health", "path": "/health"},
        {"path": "/version", "response_headers": {"X-Missing": "."}},
    ])
    assert result.get("failed")
    msg = result["msg"]
    assert "smoke checks failed (3 of 4)" in msg
    assert "health on %s: HTTP 503, expected 200" % bad.address in msg
    assert "health on %s" % good.address not in msg
    assert "GET /version on %s: no X-Missing header" % good.address in msg
    assert [(r["check"], r["endpoint"]) for r in result["failed_checks"]] == [
        ("health", bad.address), ("GET /version", good.address), ("GET /version", bad.address)]


def test_an_endpoint_that_does_not_answer_fails_within_its_timeout(backend_factory):
    slow = backend_factory("green", latency_ms=3000)
    closed = "127.0.0.1:%d" % nginx_fixture.free_port()
    result = run(endpoints=[slow.address, closed], checks=[{"path": "/", "timeout": 1}])
    assert result.get("failed")
    reasons = dict((r["endpoint"], r["reasons"][0]) for r in result["failed_checks"])
    assert reasons[slow.address].startswith("no answer") and "timed out" in reasons[slow.address]
    assert reasons[closed].startswith("no answer") and "refused" in reasons[closed].lower()


def test_bad_checks_are_refused_before_anything_is_sent(backend_factory):
    backend = backend_factory("green")
    result = run(endpoints=[backend.address], checks=[{"path": "version", "body_regex": "("}])
    assert result.get("failed")
    assert "nothing was sent" in result["msg"] and "path must start with /" in result["msg"]
    assert "not a valid regular expression" in result["msg"]
    valid = run(checks=[{"path": "/version"}], validate_only=True)
    assert not valid.get("failed") and valid["checks"][0]["name"] == "GET /version"
    assert "results" not in valid
