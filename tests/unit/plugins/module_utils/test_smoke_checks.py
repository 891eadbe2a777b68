"""Smoke checks: validation of the operator's list, judging an answer, running them (a fake fetch)."""
import time

import pytest

from ansible_collections.greenflow.platform.plugins.module_utils import _smoke_checks as smoke


def test_a_bare_path_gets_every_default():
    (check,) = smoke.normalize_checks([{"path": "/version"}])
    assert check == {"name": "GET /version", "path": "/version", "method": "GET", "body": None, "headers": {},
                     "status": [200], "body_regex": None, "response_headers": {}, "timeout": 5.0}
    assert smoke.normalize_checks(None) == []
    assert smoke.normalize_checks([]) == []


def test_a_full_check_is_kept():
    (check,) = smoke.normalize_checks([{
        "name": "order", "path": "/api/orders", "method": "post", "body": '{"a": 1}',
        "headers": {"Content-Type": "application/json"}, "status": [200, "201"], "body_regex": "^ok",
        "response_headers": {"X-Demo-Version": r"^\d+$"}, "timeout": "2.5"}], default_timeout=9)
    assert check["method"] == "POST" and check["status"] == [200, 201] and check["timeout"] == 2.5
    assert check["headers"] == {"Content-Type": "application/json"}


@pytest.mark.parametrize("checks,msg", [
    ("GET /", "must be a list"),
    (["/version"], "must be a dict with at least a path"),
    ([{"path": "version"}], "path must start with /"),
    ([{"path": "/a b"}], "hold no spaces"),
    ([{}], "path must start with /"),
    ([{"path": "/", "verb": "GET"}], "unknown keys verb"),
    ([{"path": "/", "method": "FETCH"}], "method must be one of"),
    ([{"path": "/", "body": "x"}], "a GET request has no body"),
    ([{"path": "/", "method": "POST", "body": {"a": 1}}], "body must be a string"),
    ([{"path": "/", "status": "ok"}], "status must be an HTTP status"),
    ([{"path": "/", "status": 700}], "not an HTTP status"),
    ([{"path": "/", "status": []}], "must not be an empty list"),
    ([{"path": "/", "status": True}], "status must be an HTTP status"),
    ([{"path": "/", "body_regex": "(unclosed"}], "not a valid regular expression"),
    ([{"path": "/", "method": "HEAD", "body_regex": "x"}], "HEAD answer has no body"),
    ([{"path": "/", "response_headers": {"X-A": "[bad"}}], "response_headers.X-A: not a valid regular"),
    ([{"path": "/", "response_headers": ["X-A"]}], "response_headers must be a dict"),
    ([{"path": "/", "headers": "X-A: 1"}], "headers must be a dict"),
    ([{"path": "/", "timeout": 0}], "timeout must be > 0"),
    ([{"path": "/", "timeout": 500}], "timeout must be > 0"),
    ([{"path": "/a"}, {"path": "/a"}], "the name is used twice"),
])
def test_bad_checks_are_refused_naming_the_check(checks, msg):
    with pytest.raises(smoke.SmokeCheckError) as err:
        smoke.normalize_checks(checks)
    assert msg in str(err.value)
    assert "nothing was sent" in str(err.value)


def test_every_problem_is_named_at_once():
    with pytest.raises(smoke.SmokeCheckError) as err:
        smoke.normalize_checks([{"path": "/a", "status": 999}, {"name": "second", "path": "b"}])
    text = str(err.value)
    assert "check 1 (GET /a)" in text and "check 2 (second)" in text


def check(**kw):
    return smoke.normalize_checks([dict({"path": "/"}, **kw)])[0]


def test_judge_status_body_and_headers():
    assert smoke.judge(check(), 200, {}, "") == []
    assert smoke.judge(check(), 500, {}, "boom") == ["HTTP 500, expected 200"]
    assert smoke.judge(check(status=[200, 204]), 204, {}, "") == []
    reasons = smoke.judge(check(body_regex=r"^\d+\n$"), 200, {}, "oops\n")
    assert len(reasons) == 1 and "body does not match" in reasons[0] and "oops" in reasons[0]
    assert smoke.judge(check(body_regex=r"\d+"), 200, {}, "version 42") == []   # searched, not anchored
    c = check(response_headers={"Content-Type": "^application/json"})
    assert smoke.judge(c, 200, {"content-type": "application/json; charset=utf-8"}, "") == []   # any case
    assert smoke.judge(c, 200, {}, "") == ["no Content-Type header (expected to match '^application/json')"]
    assert "does not match" in smoke.judge(c, 200, {"Content-Type": "text/html"}, "")[0]


def test_run_checks_sends_every_check_to_every_endpoint_and_names_failures():
    checks = smoke.normalize_checks([{"path": "/version", "body_regex": r"^\d+$"}, {"name": "home", "path": "/"}])
    seen = []

    def fetch(url, c):
        seen.append((url, c["method"]))
        if url == "http://b:2/version":
            return 500, {}, "injected failure"
        if url.startswith("http://c:3"):
            raise OSError("connection refused")
        return 200, {}, "2" if url.endswith("/version") else "{}"

    results = smoke.run_checks(checks, ["a:1", "b:2", "c:3"], fetch)
    assert sorted(seen) == sorted([("http://%s%s" % (e, p), "GET") for p in ("/version", "/")
                                   for e in ("a:1", "b:2", "c:3")])
    assert [(r["check"], r["endpoint"], r["ok"]) for r in results] == [
        ("GET /version", "a:1", True), ("GET /version", "b:2", False), ("GET /version", "c:3", False),
        ("home", "a:1", True), ("home", "b:2", True), ("home", "c:3", False)]
    line = smoke.summary(results)
    assert "GET /version on b:2: HTTP 500, expected 200, body does not match" in line
    assert "home on c:3: no answer (connection refused)" in line
    assert "a:1" not in line
    assert smoke.summary([r for r in results if r["ok"]]) == ""


def test_a_hanging_server_is_bounded_by_the_timeout():
    checks = smoke.normalize_checks([{"path": "/", "timeout": 0.2}])

    def fetch(url, c):
        if "slow" in url:
            time.sleep(5)
        return 200, {}, ""

    began = time.monotonic()
    results = smoke.run_checks(checks, ["fast:1", "slow:2"], fetch, parallel=2)
    assert time.monotonic() - began < 3
    assert results[0]["ok"] and not results[1]["ok"]
    assert results[1]["reasons"] == ["no answer within 0.2 s"]
