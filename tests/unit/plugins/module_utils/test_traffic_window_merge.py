"""merge_windows: the windows of several load balancers' access logs added up, with the percentiles of all the
traffic (not an average of each log's)."""
import json

from ansible_collections.greenflow.platform.plugins.module_utils._traffic_stats import (
    TrafficStats, candidate_view, merge_windows, read_window)

T0 = 1700000000.0
POOLS = {"blue": ["127.0.0.1:8081"], "green": ["127.0.0.1:9091"]}


def line(addr, ms, status="200", msec=T0):
    return json.dumps({"msec": "%.3f" % msec, "status": status, "upstream_addr": addr, "upstream_status": status,
                       "upstream_response_time": "%.3f" % (ms / 1000.0), "request_time": "0.001"})


def window(lines):
    stats = TrafficStats(pools=POOLS)
    stats.add_lines(lines)
    return stats.result(thresholds_ms=(500,), histogram=True)


def test_counts_add_up_and_percentiles_are_those_of_all_the_traffic():
    # lb-1: 90 fast green answers; lb-2: 10 slow ones. Each log's p95 is 10 ms and 900 ms; of all 100, 900 ms.
    one = window([line("127.0.0.1:9091", 10, msec=T0 + i) for i in range(90)])
    two = window([line("127.0.0.1:9091", 900, msec=T0 + 100 + i) for i in range(10)]
                 + [line("127.0.0.1:8081", 5, status="502")])
    merged = merge_windows([one, two], thresholds_ms=(500,))
    green = merged["pools"]["green"]
    assert (green["requests"], green["errors_5xx"], green["latency_samples"]) == (100, 0, 100)
    assert (green["p50_ms"], green["p95_ms"], green["p99_ms"], green["max_ms"]) == (10.0, 900.0, 900.0, 900.0)
    assert green["over_ms"] == {"500": 10}
    assert merged["pools"]["blue"]["errors_5xx"] == 1 and merged["pools"]["blue"]["error_rate"] == 1.0
    assert (merged["first_msec"], merged["last_msec"], merged["windows"]) == (T0, T0 + 109, 2)
    assert merged["lines"] == 101 and "position" not in merged


def test_one_window_merged_is_the_window_itself():
    lines = [line("127.0.0.1:9091", ms) for ms in range(1, 201)] + [line("127.0.0.1:9091", 3, status="500")]
    alone = window(lines)
    merged = merge_windows([alone], thresholds_ms=(500,))
    for key in ("requests", "errors_5xx", "error_rate", "p50_ms", "p95_ms", "p99_ms", "max_ms", "over_ms", "statuses"):
        assert merged["pools"]["green"][key] == alone["pools"]["green"][key], key


def test_the_gates_view_charges_the_5xx_nginx_answered_by_itself_on_every_load_balancer():
    # a 502 with no upstream on each load balancer: both are charged to the new colour
    no_upstream = json.dumps({"msec": "%.3f" % T0, "status": "502", "upstream_addr": "-", "request_time": "0.001"})
    one = window([line("127.0.0.1:9091", 10)] * 8 + [no_upstream])
    two = window([line("127.0.0.1:9091", 10)] * 8 + [no_upstream])
    view = candidate_view(merge_windows([one, two]), "green")
    assert (view["requests"], view["errors_5xx"], view["unattributed_5xx"]) == (18, 2, 2)


def test_read_window_gives_the_histogram_only_when_asked(tmp_path):
    log = tmp_path / "access.json"
    log.write_text("".join(line("127.0.0.1:9091", ms) + "\n" for ms in (5, 5, 7)))
    plain = read_window(str(log), pools=POOLS, position={"inode": log.stat().st_ino, "offset": 0})
    assert "latency_histogram" not in plain["pools"]["green"]
    full = read_window(str(log), pools=POOLS, position={"inode": log.stat().st_ino, "offset": 0}, histogram=True)
    assert full["pools"]["green"]["latency_histogram"] == [[5.0, 2], [7.0, 1]]
