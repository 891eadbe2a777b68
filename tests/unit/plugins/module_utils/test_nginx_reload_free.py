"""Unit tests of reload-free switching (split mode lua): rendering, the Lua seed's line, the plan
(live or reload) and the control socket client against a fake control path."""

import os
import socket
import threading
import zlib

import pytest

from ansible_collections.greenflow.platform.plugins.module_utils import _nginx_switch as switch
from ansible_collections.greenflow.platform.plugins.module_utils import _nginx_upstream as nu

POOLS = {"blue": ["10.0.0.1:8081", "10.0.0.2:8081"], "green": ["10.0.0.1:8082"]}
SHARES = {"blue": 95, "green": 5}


def desired(pools=None, shares=None, split="lua", keepalive=32, max_fails=1, fail_timeout=10):
    return dict(pools=nu.normalize_pools(pools or POOLS), shares=nu.normalize_shares(shares or SHARES),
                keepalive=keepalive, max_fails=max_fails, fail_timeout=fail_timeout, split=split)


def state_of(text):
    return nu.parse_state(text)


# ----------------------------------------------------------------- rendering


def test_split_clients_rendering_has_no_mode_key():
    """Files of the split_clients mode stay byte for byte what they were before the lua mode."""
    text = nu.render("demo", nu.normalize_pools(POOLS), SHARES)
    assert "split_clients" in text and nu.SPLIT_PREFIX not in text
    assert "split" not in state_of(text)
    assert nu.split_mode(state_of(text)) == "split_clients"
    assert text == nu.render("demo", nu.normalize_pools(POOLS), SHARES, split="split_clients")


def test_lua_rendering():
    text = nu.render("demo", nu.normalize_pools(POOLS), SHARES, split="lua")
    assert "split_clients" not in text.replace("(no split_clients)", "")
    assert "upstream demo_blue {" in text and "upstream demo_green {" in text
    lines = text.splitlines()
    assert lines[2] == "# greenflow-split: app=demo blue=95 green=5 pools=blue,green"
    state = state_of(text)
    assert state["split"] == "lua" and nu.split_mode(state) == "lua"
    assert nu.parse_split_line(text, "demo") == {"app": "demo", "blue": 95, "green": 5, "pools": ["blue", "green"]}


def test_lua_rendering_one_pool_and_dashed_app():
    pools = nu.normalize_pools({"blue": ["10.0.0.1:80"]})
    text = nu.render("my-shop", pools, {"blue": 100, "green": 0}, split="lua")
    assert "# greenflow-split: app=my_shop blue=100 green=0 pools=blue\n" in text
    assert nu.parse_split_line(text, "my-shop")["pools"] == ["blue"]
    assert "upstream my_shop_green" not in text


@pytest.mark.parametrize("line, match", [
    (None, "no 'greenflow-split' line"),
    ("# greenflow-split: app=demo blue=90 green=5 pools=blue,green", "add up to 95"),
    ("# greenflow-split: app=demo blue=0 green=100 pools=blue", "green 100 % without servers"),
    ("# greenflow-split: app=other blue=100 green=0 pools=blue", "names app other"),
    ("# greenflow-split: app=demo blue=100 green=0 pools=", "malformed"),
    ("# greenflow-split: app=demo blue=100 green=0 pools=blue ", "malformed"),
    ("# greenflow-split: app=demo blue=1000 green=0 pools=blue", "malformed"),
    ("# greenflow-split: app=Demo blue=100 green=0 pools=blue", "malformed"),
])
def test_parse_split_line_refuses(line, match):
    text = "# title\n" + (line + "\n" if line else "") + "upstream x {}\n"
    with pytest.raises(nu.UpstreamError, match=match):
        nu.parse_split_line(text, "demo")


def test_parse_control_answer():
    assert nu.parse_control_answer("app=demo blue=75 green=25 serial=3\n") == {
        "app": "demo", "shares": {"blue": 75, "green": 25}, "serial": 3}
    for bad in ("", "unknown app demo", "app=demo blue=75 green=25", "app=demo blue=x green=25 serial=1"):
        assert nu.parse_control_answer(bad) is None


# ----------------------------------------------------------------- mode and plan


def test_resolve_desired_keeps_or_changes_the_mode():
    lua_file = state_of(nu.render("demo", nu.normalize_pools(POOLS), SHARES, split="lua"))
    plain_file = state_of(nu.render("demo", nu.normalize_pools(POOLS), SHARES))
    assert nu.resolve_desired("demo", None, {"blue": 50, "green": 50}, None, None, None, lua_file)["split"] == "lua"
    assert nu.resolve_desired("demo", None, None, None, None, None, plain_file)["split"] == "split_clients"
    assert nu.resolve_desired("demo", None, None, None, None, None, plain_file, split="lua")["split"] == "lua"
    assert nu.resolve_desired("demo", POOLS, SHARES, None, None, None, None)["split"] == "split_clients"
    with pytest.raises(nu.UpstreamError, match="split must be one of"):
        nu.resolve_desired("demo", POOLS, SHARES, None, None, None, None, split="njs")


def test_plan_apply():
    lua_file = state_of(nu.render("demo", nu.normalize_pools(POOLS), SHARES, split="lua"))
    plain_file = state_of(nu.render("demo", nu.normalize_pools(POOLS), SHARES))
    assert nu.plan_apply(lua_file, desired(shares={"blue": 50, "green": 50})) == ("live", "only the shares changed")
    assert nu.plan_apply(None, desired())[0] == "reload"
    assert nu.plan_apply(plain_file, desired()) == ("reload", "split mode changed to lua")
    assert nu.plan_apply(lua_file, desired(split="split_clients"))[0] == "reload"
    assert nu.plan_apply(plain_file, desired(split="split_clients", shares={"blue": 50, "green": 50}))[0] == "reload"
    new_pools = {"blue": POOLS["blue"], "green": ["10.0.0.3:8082"]}
    assert nu.plan_apply(lua_file, desired(pools=new_pools)) == ("reload", "pool members changed")
    assert nu.plan_apply(lua_file, desired(keepalive=8)) == ("reload", "upstream settings changed (keepalive)")
    assert nu.plan_apply(lua_file, desired(fail_timeout=3))[1] == "upstream settings changed (fail_timeout)"


# ----------------------------------------------------------------- the pick


def test_lua_pick_is_crc32_of_the_request_id():
    rid = "0123456789abcdef0123456789abcdef"
    bucket = zlib.crc32(rid.encode()) % 10000
    assert nu.lua_pick(rid, "demo", 0) == "demo_blue"
    assert nu.lua_pick(rid, "demo", 100) == "demo_green"
    below = bucket // 100 + 1  # the smallest share whose threshold is above this bucket
    assert nu.lua_pick(rid, "demo", below) == "demo_green"
    if below > 1:
        assert nu.lua_pick(rid, "demo", below - 1) == "demo_blue"


@pytest.mark.parametrize("green", [5, 25, 50])
def test_lua_pick_split_is_binomial(green):
    rnd = __import__("random").Random(green)
    n = 20000
    got = sum(nu.lua_pick("%032x" % rnd.getrandbits(128), "demo", green) == "demo_green" for _ in range(n))
    p = green / 100.0
    sd = (p * (1 - p) / n) ** 0.5
    assert abs(got / float(n) - p) < 4 * sd


# ----------------------------------------------------------------- the control socket client


class FakeControl:
    """A unix socket that answers like greenflow_split.lua's control(), or misbehaves."""

    def __init__(self, path, mode="ok", green=5):
        self.path = path
        self.mode = mode
        self.green = green
        self.calls = []
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(path)
        self.srv.listen(8)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.srv.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                line = data.split(b"\r\n", 1)[0].decode()
                method, target = line.split(" ")[:2]
                query = dict(kv.split("=", 1) for kv in target.split("?", 1)[1].split("&"))
                self.calls.append((method, query))
                if self.mode == "drop" or (self.mode == "drop_put" and method == "PUT"):
                    continue  # closed without an answer
                if self.mode == "drop_put_taken" and method == "PUT":
                    self.green = int(query["green"])
                    continue
                if self.mode == "unknown":
                    status, body = 404, "unknown app %s" % query["app"]
                elif self.mode == "refuse" and method == "PUT":
                    status, body = 409, "a pool without servers cannot take traffic"
                else:
                    if method == "PUT":
                        self.green = int(query["green"])
                    status, body = 200, "app=%s blue=%d green=%d serial=1" % (query["app"], 100 - self.green, self.green)
                body = (body + "\n").encode()
                conn.sendall(b"HTTP/1.1 %d X\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % (status, len(body)) + body)

    def close(self):
        self.srv.close()


@pytest.fixture
def control(tmp_path):
    made = []

    def make(mode="ok", green=5):
        path = str(tmp_path / ("ctl-%d.sock" % len(made)))
        fake = FakeControl(path, mode, green)
        made.append(fake)
        return fake
    yield make
    for fake in made:
        fake.close()


def test_put_live_ok(control):
    fake = control()
    outcome, held = switch._put_live(fake.path, "demo", {"blue": 75, "green": 25}, 2)
    assert outcome == "live" and held["shares"] == {"blue": 75, "green": 25}
    assert fake.calls == [("PUT", {"app": "demo", "blue": "75", "green": "25"})]
    assert switch.control_get(fake.path, "demo", 2)["shares"] == {"blue": 75, "green": 25}


def test_put_live_uses_the_nginx_id(control):
    fake = control()
    assert switch._put_live(fake.path, "my-shop", {"blue": 0, "green": 100}, 2)[0] == "live"
    assert fake.calls[0][1]["app"] == "my_shop"


def test_put_live_refused_and_unknown_app(control):
    fake = control("refuse")
    outcome, detail = switch._put_live(fake.path, "demo", {"blue": 0, "green": 100}, 2)
    assert outcome == "refused" and "409" in detail and fake.green == 5
    assert switch._put_live(control("unknown").path, "demo", SHARES, 2)[0] == "unknown_app"


def test_put_live_without_answer_asks(control):
    # the PUT was taken but its answer lost: the GET shows the new split, so it went live
    fake = control("drop_put_taken")
    assert switch._put_live(fake.path, "demo", {"blue": 50, "green": 50}, 2)[0] == "live"
    assert [c[0] for c in fake.calls] == ["PUT", "GET"]
    # the PUT was not taken: the GET shows the old split
    fake = control("drop_put")
    outcome, detail = switch._put_live(fake.path, "demo", {"blue": 50, "green": 50}, 2)
    assert outcome == "unknown" and "green=5" in detail
    # nothing answers at all
    outcome, detail = switch._put_live(control("drop").path, "demo", SHARES, 2)
    assert outcome == "unknown" and "did not answer" in detail


def test_put_live_no_socket(tmp_path):
    outcome, detail = switch._put_live(str(tmp_path / "absent.sock"), "demo", SHARES, 1)
    assert outcome == "unknown" and "did not answer" in detail


def test_split_option_checked_and_read_only():
    p = dict(switch.DEFAULTS, app="demo", split="lua")
    switch.check_params(p)
    assert not switch.is_read_only(p)
    assert switch.is_read_only(dict(switch.DEFAULTS, app="demo"))
    with pytest.raises(nu.UpstreamError, match="split must be one of"):
        switch.check_params(dict(switch.DEFAULTS, app="demo", split="njs"))


def test_the_role_ships_the_lua_module_the_docs_name():
    here = os.path.dirname(os.path.abspath(__file__))
    lua = os.path.join(here, "..", "..", "..", "..", "roles", "nginx_lb", "files", "greenflow_split.lua")
    with open(lua) as f:
        text = f.read()
    # the line the Lua seed matches is the one the renderer writes
    assert "# greenflow%-split: app=" in text and nu.SPLIT_PREFIX == "# greenflow-split: "
    for name in ("function _M.seed", "function _M.pick", "function _M.control", "crc32_short"):
        assert name in text
