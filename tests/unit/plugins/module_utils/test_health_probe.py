"""The parallel health probe shared by the cutover (traffic_window on the load balancer) and the rollback."""
import threading
import time

from ansible_collections.greenflow.platform.plugins.module_utils._health_probe import failure_reason, probe_urls


def test_every_url_gets_its_own_result_in_order():
    answers = {"http://a/h": 200, "http://b/h": 503, "http://c/h": ConnectionRefusedError("refused"),
               "http://d/h": 299, "http://e/h": 300}
    together = threading.Barrier(len(answers), timeout=5)  # breaks unless all fetches run at once

    def fetch(url, timeout):
        together.wait()
        answer = answers[url]
        if isinstance(answer, Exception):
            raise answer
        return answer

    results = probe_urls(list(answers), 10.0, fetch)
    assert [r["url"] for r in results] == list(answers)
    assert [r["ok"] for r in results] == [True, False, False, True, False]
    assert results[1]["status"] == 503 and "error" not in results[1]
    assert results[2]["error"] == "refused" and "status" not in results[2]
    assert [failure_reason(r) for r in results if not r["ok"]] == [
        "HTTP 503", "no answer (refused)", "HTTP 300"]


def test_an_exception_without_text_is_named_by_its_class():
    def fetch(url, timeout):
        raise TimeoutError()

    [result] = probe_urls(["http://a/h"], 1.0, fetch)
    assert result["error"] == "TimeoutError" and failure_reason(result) == "no answer (TimeoutError)"


def test_a_fetch_that_hangs_past_the_timeout_is_a_failed_probe():
    release = threading.Event()

    def fetch(url, timeout):
        release.wait(10)
        return 200

    try:
        [result] = probe_urls(["http://a/h"], 0.1, fetch)
    finally:
        release.set()
    assert result["ok"] is False and result["timed_out"] is True
    assert failure_reason(result) == "no answer within 0.1 s"


def test_no_urls_no_results():
    assert probe_urls([], 1.0, lambda url, timeout: time.sleep(5)) == []
