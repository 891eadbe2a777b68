"""Parsing nginx's JSON access log: attribution, garbage, retries, percentiles, windows, rotation."""
import json
import os

import pytest

from ansible_collections.greenflow.platform.plugins.module_utils import _traffic_stats as ts
from ansible_collections.greenflow.platform.plugins.module_utils._traffic_stats import (
    TrafficStats, candidate_view, last_element, percentile_of_list, read_window,
)

POOLS = {"blue": ["127.0.0.1:8081", "127.0.0.1:8082"], "green": ["127.0.0.1:9091"]}
T0 = 1700000000.0


def line(msec=T0, status="200", addr="127.0.0.1:8081", ustatus=None, urt="0.010", **extra):
    rec = {"msec": "%.3f" % msec, "time": "2023-11-14T22:13:20+00:00", "status": status,
           "request_time": "0.011", "upstream_addr": addr,
           "upstream_status": status if ustatus is None else ustatus,
           "upstream_response_time": urt, "request_id": "abc", "host": "demo.local",
           "request": "GET / HTTP/1.1"}
    rec.update(extra)
    return json.dumps(rec, separators=(",", ":"))


def stats_of(lines, **kw):
    st = TrafficStats(pools=POOLS, **kw)
    st.add_lines(list(lines))
    return st.result(thresholds_ms=(500, 1000))


def write(path, lines, end="\n"):
    with open(path, "a") as fh:
        fh.write("".join(x + end for x in lines))


# -- helpers ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("value,expected", [
    ("127.0.0.1:8081", "127.0.0.1:8081"),
    ("127.0.0.1:8081, 127.0.0.1:8082", "127.0.0.1:8082"),
    ("127.0.0.1:8081, 127.0.0.1:8082 : 127.0.0.1:9091", "127.0.0.1:9091"),
    ("502, 200", "200"),
    ("0.001, -", "-"),
    ("-", "-"),
    (None, None),
    (200, "200"),
])
def test_last_element(value, expected):
    assert last_element(value) == expected


def test_percentiles_nearest_rank():
    values = list(range(1, 101))  # 1..100
    assert percentile_of_list(values, 50) == 50
    assert percentile_of_list(values, 95) == 95
    assert percentile_of_list(values, 99) == 99
    assert percentile_of_list([7], 95) == 7
    assert percentile_of_list([], 95) is None
    # 20 samples: p95 is the 19th smallest; 21 samples: the 20th
    assert percentile_of_list(list(range(1, 21)), 95) == 19
    assert percentile_of_list(list(range(1, 22)), 95) == 20
    assert percentile_of_list([5, 1, 3], 50) == 3


# -- attribution and counts -----------------------------------------------------------------------
def test_attribution_and_error_rate():
    lines = [line(addr="127.0.0.1:8081")] * 6 + [line(addr="127.0.0.1:8082", status="500")] * 2 \
        + [line(addr="127.0.0.1:9091", status="503")] + [line(addr="127.0.0.1:9091")] * 3
    r = stats_of(lines)
    blue, green = r["pools"]["blue"], r["pools"]["green"]
    assert blue["requests"] == 8 and blue["errors_5xx"] == 2 and blue["error_rate"] == 0.25
    assert green["requests"] == 4 and green["errors_5xx"] == 1 and green["error_rate"] == 0.25
    assert blue["statuses"]["2xx"] == 6 and blue["statuses"]["5xx"] == 2
    assert r["unattributed"]["requests"] == 0
    assert r["lines"] == 12 and r["malformed"] == 0


def test_unattributed_no_upstream_and_unknown_address():
    lines = [line(addr="-", status="502", ustatus="-", urt="-"),
             line(addr="10.9.9.9:80", status="200"),
             line(addr="-", status="404", ustatus="-", urt="-")]
    r = stats_of(lines)
    un = r["unattributed"]
    assert un["requests"] == 3 and un["errors_5xx"] == 1 and un["latency_samples"] == 1
    assert r["pools"]["blue"]["requests"] == 0 and r["pools"]["green"]["requests"] == 0
    assert r["pools"]["green"]["error_rate"] is None and r["pools"]["green"]["p95_ms"] is None


def test_upstream_group_name_can_be_listed_in_a_pool():
    st = TrafficStats(pools={"blue": ["127.0.0.1:8081"], "green": ["127.0.0.1:9091", "demo_green"]})
    st.add_lines([line(addr="demo_green", status="502", ustatus="502", urt="0.000")])
    assert st.result()["pools"]["green"]["errors_5xx"] == 1


def test_retries_take_the_last_element():
    # first server refused (502), retried on the green server which answered 200
    r = stats_of([line(addr="127.0.0.1:8081, 127.0.0.1:9091", status="200", ustatus="502, 200",
                       urt="0.001, 0.250")])
    assert r["pools"]["green"]["requests"] == 1
    assert r["pools"]["green"]["errors_5xx"] == 0
    assert r["pools"]["green"]["retried"] == 1
    assert r["pools"]["green"]["p50_ms"] == 250.0
    assert r["pools"]["blue"]["requests"] == 0
    # internal redirect separator " : ", last element failed
    r = stats_of([line(addr="127.0.0.1:9091 : 127.0.0.1:8082", status="504", ustatus="200 : 504",
                       urt="0.002 : 1.000")])
    assert r["pools"]["blue"]["errors_5xx"] == 1 and r["pools"]["blue"]["p95_ms"] == 1000.0


def test_status_falls_back_when_upstream_status_is_not_a_number():
    r = stats_of([line(addr="127.0.0.1:8081", status="502", ustatus="-", urt="-")])
    assert r["pools"]["blue"]["errors_5xx"] == 1
    assert r["pools"]["blue"]["latency_samples"] == 0


def test_latency_percentiles_and_over_counts():
    lines = [line(urt="%.3f" % (i / 1000.0), addr="127.0.0.1:9091") for i in range(1, 101)]
    lines.append(line(urt="-", addr="127.0.0.1:9091"))
    lines.append(line(urt="nonsense", addr="127.0.0.1:9091"))
    g = stats_of(lines)["pools"]["green"]
    assert g["requests"] == 102 and g["latency_samples"] == 100
    assert (g["p50_ms"], g["p95_ms"], g["p99_ms"], g["max_ms"]) == (50.0, 95.0, 99.0, 100.0)
    assert g["over_ms"] == {"500": 0, "1000": 0}
    lines = [line(urt="0.499")] * 10 + [line(urt="0.500")] * 3 + [line(urt="1.000")] * 2
    b = stats_of(lines)["pools"]["blue"]
    assert b["over_ms"] == {"500": 5, "1000": 2}


# -- garbage -------------------------------------------------------------------------------------
GARBAGE = [
    "",                                           # blank
    "   ",
    "not json at all",
    '{"msec":"1700000000.000","status":"200",',  # cut line
    '{"msec":"1700000000.000"}',                 # no status
    '{"status":"200"}',                          # no msec
    '{"msec":"soon","status":"200"}',
    '{"msec":"nan","status":"200"}',
    '{"msec":"inf","status":"200"}',
    '[1, 2, 3]',
    '{"msec":"1700000000.000","status":"200"} trailing',
    '{"msec":"1700000000.000","status":"200"}{"msec":"1","status":"200"}',
    '\x00\x01\x02',
]


def test_garbage_is_counted_not_fatal():
    good = [line(addr="127.0.0.1:9091")] * 5
    r = stats_of(good + GARBAGE + good)
    assert r["pools"]["green"]["requests"] == 10
    assert r["blank"] == 2
    assert r["malformed"] == len(GARBAGE) - 2
    assert r["lines"] == 10 + len(GARBAGE)
    assert r["malformed_samples"] and len(r["malformed_samples"]) <= 5


def test_odd_but_valid_json_lines():
    odd = [
        # escapes in values (request with a quote): falls back to full JSON parsing
        line(addr="127.0.0.1:9091", request='GET /?q=\\"x\\" HTTP/1.1'),
        # numbers instead of strings, spaces after separators
        '{"msec": 1700000000.5, "status": 500, "upstream_addr": "127.0.0.1:9091", '
        '"upstream_status": 500, "upstream_response_time": 0.02}',
        # no upstream fields at all: unattributed
        '{"msec":"1700000000.000","status":"200"}',
        # a list where a string belongs
        '{"msec":"1700000000.000","status":"200","upstream_addr":["a"]}',
    ]
    r = stats_of(odd)
    g = r["pools"]["green"]
    assert g["requests"] == 2 and g["errors_5xx"] == 1
    assert sorted([g["p50_ms"], g["max_ms"]]) == [10.0, 20.0]
    assert r["unattributed"]["requests"] == 2
    assert r["malformed"] == 0


def test_fast_and_slow_paths_agree(monkeypatch):
    lines = []
    for i in range(3000):
        addr = ["127.0.0.1:8081", "127.0.0.1:9091", "-", "127.0.0.1:8081, 127.0.0.1:9091"][i % 4]
        lines.append(line(msec=T0 + i, addr=addr, status="500" if i % 7 == 0 else "200",
                          urt="%.3f" % ((i % 50) / 100.0)))
        if i % 300 == 0:
            lines.append(GARBAGE[i % len(GARBAGE)])
    fast = stats_of(lines, since=T0 + 100)
    monkeypatch.setattr(TrafficStats, "_split_block", lambda self, block: False)
    monkeypatch.setattr(TrafficStats, "_json_block", lambda self, block: False)
    slow = stats_of(lines, since=T0 + 100)
    for r in (fast, slow):
        r.pop("malformed_samples")
    assert fast == slow
    assert fast["before_since"] == 100


# -- windows ------------------------------------------------------------------------------------
def test_since_filter_and_host_filter():
    lines = [line(msec=T0 + i) for i in range(10)] + [line(msec=T0 + 20, host="other")]
    r = stats_of(lines, since=T0 + 5)
    assert r["pools"]["blue"]["requests"] == 6 and r["before_since"] == 5
    assert r["first_msec"] == T0 + 5 and r["last_msec"] == T0 + 20
    r = stats_of(lines, since=T0 + 5, host="demo.local")
    assert r["pools"]["blue"]["requests"] == 5 and r["unmatched"] == 1


@pytest.mark.parametrize("slow", [False, True])
def test_match_filter_shared_log(monkeypatch, slow):
    if slow:
        monkeypatch.setattr(TrafficStats, "_split_block", lambda self, block: False)
        monkeypatch.setattr(TrafficStats, "_json_block", lambda self, block: False)
    lines = [line(app="demo")] * 4 + [line(app="shop", addr="-", status="502", ustatus="-")] * 3
    lines.append(fixture_format_line(0))
    r = stats_of(lines, match={"app": "demo"})
    assert r["pools"]["blue"]["requests"] == 4 and r["unmatched"] == 4
    assert r["unattributed"]["requests"] == 0
    # unquoted numbers compare as the text nginx wrote
    r = stats_of([fixture_format_line(1), fixture_format_line(5)], match={"status": 200})
    assert r["unmatched"] == 1 and r["pools"]["green"]["requests"] == 1


def test_empty_and_missing_log(tmp_path):
    log = str(tmp_path / "access.log")
    r = read_window(log, pools=POOLS)
    assert r["position"] is None and r["lines"] == 0
    assert r["pools"]["blue"]["requests"] == 0 and r["pools"]["blue"]["error_rate"] is None
    open(log, "w").close()
    r = read_window(log, pools=POOLS)
    assert r["position"]["offset"] == 0 and r["lines"] == 0
    r2 = read_window(log, pools=POOLS, position=r["position"])
    assert r2["position"] == r["position"] and not r2["rotated"]


def test_position_continues_and_partial_last_line_is_reread(tmp_path):
    log = str(tmp_path / "access.log")
    write(log, [line(msec=T0 + i) for i in range(3)])
    r1 = read_window(log, pools=POOLS)
    assert r1["pools"]["blue"]["requests"] == 3
    # nginx is in the middle of writing a line
    whole = line(msec=T0 + 3, addr="127.0.0.1:9091")
    with open(log, "a") as fh:
        fh.write(whole[:25])
    r2 = read_window(log, pools=POOLS, position=r1["position"])
    assert r2["lines"] == 0 and r2["malformed"] == 0
    assert r2["position"] == r1["position"]
    with open(log, "a") as fh:
        fh.write(whole[25:] + "\n")
    r3 = read_window(log, pools=POOLS, position=r2["position"])
    assert r3["pools"]["green"]["requests"] == 1 and r3["malformed"] == 0
    assert r3["position"]["offset"] == os.path.getsize(log)


def test_from_end_marks_a_window_start(tmp_path):
    log = str(tmp_path / "access.log")
    write(log, [line()] * 4)
    with open(log, "a") as fh:
        fh.write('{"msec":')
    mark = read_window(log, pools=POOLS, from_end=True)
    assert mark["lines"] == 0
    assert mark["position"]["offset"] == os.path.getsize(log) - len('{"msec":')
    with open(log, "a") as fh:
        fh.write('"%.3f","status":"200","upstream_addr":"127.0.0.1:9091"}\n' % T0)
    r = read_window(log, pools=POOLS, position=mark["position"])
    assert r["pools"]["green"]["requests"] == 1 and r["pools"]["blue"]["requests"] == 0


def test_rotation_by_rename(tmp_path):
    log = str(tmp_path / "access.log")
    write(log, [line()] * 2)
    r1 = read_window(log, pools=POOLS)
    write(log, [line(addr="127.0.0.1:9091")] * 3)        # after our read, before rotation
    with open(log, "a") as fh:
        fh.write('{"msec":"17')                            # nginx never finishes this one there
    os.rename(log, log + ".1")
    write(log, [line(addr="127.0.0.1:8082")] * 4)         # the new file after USR1
    r2 = read_window(log, pools=POOLS, position=r1["position"])
    assert r2["rotated"] and not r2["rotation_gap"]
    assert r2["pools"]["green"]["requests"] == 3
    assert r2["pools"]["blue"]["requests"] == 4
    assert r2["partial"] == 1 and r2["malformed"] == 0
    assert r2["position"]["inode"] == os.stat(log).st_ino
    assert r2["position"]["offset"] == os.path.getsize(log)
    r3 = read_window(log, pools=POOLS, position=r2["position"])
    assert r3["lines"] == 0 and not r3["rotated"]


def test_rotation_by_copytruncate(tmp_path):
    log = str(tmp_path / "access.log")
    write(log, [line()] * 2)
    r1 = read_window(log, pools=POOLS)
    write(log, [line(addr="127.0.0.1:9091")] * 3)
    with open(log) as src, open(log + ".1", "w") as dst:
        dst.write(src.read())
    open(log, "w").close()                                 # truncate: same inode, shorter
    write(log, [line(addr="127.0.0.1:8082")])
    r2 = read_window(log, pools=POOLS, position=r1["position"])
    assert r2["rotated"]
    assert r2["pools"]["green"]["requests"] == 3 and r2["pools"]["blue"]["requests"] == 1


def test_rotated_and_live_log_not_yet_reopened(tmp_path):
    log = str(tmp_path / "access.log")
    write(log, [line()] * 2)
    r1 = read_window(log, pools=POOLS)
    os.rename(log, log + ".1")                              # nginx still writes to .1
    write(log + ".1", [line(addr="127.0.0.1:9091")])
    r2 = read_window(log, pools=POOLS, position=r1["position"])
    assert r2["pools"]["green"]["requests"] == 1
    assert r2["position"]["inode"] == os.stat(log + ".1").st_ino
    write(log + ".1", [line(addr="127.0.0.1:9091")])       # one more before the reopen
    write(log, [line(addr="127.0.0.1:8082")])
    r3 = read_window(log, pools=POOLS, position=r2["position"])
    assert r3["pools"]["green"]["requests"] == 1 and r3["pools"]["blue"]["requests"] == 1


def test_rotation_without_rotated_file_reads_new_log_from_start(tmp_path):
    log = str(tmp_path / "access.log")
    write(log, [line()] * 5)
    r1 = read_window(log, pools=POOLS)
    os.unlink(log)
    write(log, [line(addr="127.0.0.1:9091")])
    r2 = read_window(log, pools=POOLS, position=r1["position"])
    assert r2["rotated"] and r2["rotation_gap"]
    assert r2["pools"]["green"]["requests"] == 1


def test_max_lines_limits_and_position_resumes(tmp_path, monkeypatch):
    monkeypatch.setattr(ts, "READ_CHUNK", 64)   # many small chunks: lines cross chunk borders
    log = str(tmp_path / "access.log")
    write(log, [line(msec=T0 + i) for i in range(25)])
    total, pos, rounds = 0, None, 0
    while rounds < 10:
        r = read_window(log, pools=POOLS, position=pos, max_lines=10)
        total += r["pools"]["blue"]["requests"]
        pos = r["position"]
        rounds += 1
        if not r["truncated"]:
            break
    assert total == 25 and rounds == 3
    assert pos["offset"] == os.path.getsize(log)


def test_candidate_view_charges_5xx_without_upstream():
    lines = [line(addr="127.0.0.1:9091")] * 95
    lines += [line(addr="-", status="502", ustatus="-", urt="-")] * 5
    lines += [line(addr="-", status="404", ustatus="-", urt="-")] * 7
    lines += [line(addr="10.1.1.1:80", status="500")] * 9      # another app's server: not ours
    window = stats_of(lines)
    assert window["unattributed"]["requests"] == 21
    assert window["unattributed"]["errors_5xx"] == 14
    assert window["unattributed"]["no_upstream"] == 12
    assert window["unattributed"]["no_upstream_5xx"] == 5
    view = candidate_view(window, "green")
    assert view["requests"] == 100 and view["errors_5xx"] == 5 and view["error_rate"] == 0.05
    assert view["unattributed_5xx"] == 5
    plain = candidate_view(window, "green", count_unattributed_5xx=False)
    assert plain["requests"] == 95 and plain["errors_5xx"] == 0
    assert candidate_view(window, "nosuch")["requests"] == 5


def fixture_format_line(i):
    """The integration fixture's log_format: status and request_time are unquoted numbers."""
    addr = ["127.0.0.1:8081", "127.0.0.1:9091", "-"][i % 3]
    return ('{"msec":"%.3f","time":"2023-11-14T22:13:20+00:00","status":%d,"request_time":%.3f,'
            '"upstream_addr":"%s","upstream_status":"%s","upstream_response_time":"%s",'
            '"request_id":"abc","upstream_name":"demo_blue","uri":"/"}'
            % (T0 + i, 500 if i % 5 == 0 else 200, 0.01, addr,
               "-" if addr == "-" else ("500" if i % 5 == 0 else "200"),
               "-" if addr == "-" else "0.0%02d" % (i % 90)))


def test_unquoted_numbers_take_the_fast_path_and_agree(monkeypatch):
    lines = [fixture_format_line(i) for i in range(600)]
    calls = []
    real_json_block = TrafficStats._json_block
    monkeypatch.setattr(TrafficStats, "_json_block",
                        lambda self, block: calls.append(len(block)) or real_json_block(self, block))
    fast = stats_of(lines)
    assert calls == []          # parsed by the split path
    monkeypatch.setattr(TrafficStats, "_split_block", lambda self, block: False)
    monkeypatch.setattr(TrafficStats, "_json_block", lambda self, block: False)
    slow = stats_of(lines)
    assert fast == slow
    assert fast["pools"]["blue"]["requests"] == 200 and fast["unattributed"]["requests"] == 200
    assert fast["pools"]["green"]["errors_5xx"] == 40


@pytest.mark.parametrize("bad", [
    '{"msec":"1700000000.000","status":abc,"upstream_addr":"127.0.0.1:9091"}',
    '{"msec":"1700000000.000","status":200 "upstream_addr":"127.0.0.1:9091"}',
    '{"msec":"1700000000.000","status":,"upstream_addr":"127.0.0.1:9091"}',
])
def test_broken_unquoted_values_are_malformed(bad):
    good = '{"msec":"1700000000.000","status":200,"upstream_addr":"127.0.0.1:9091"}'
    r = stats_of([good, bad, good])
    assert r["malformed"] == 1 and r["pools"]["green"]["requests"] == 2
