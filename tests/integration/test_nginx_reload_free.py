"""Reload-free switching on a real nginx (issue #16): the nginx_lb role's lua setup in the fixture
(Debian's lua module, the role's greenflow_split.lua, the control socket), driven by nginx_upstream.

Skipped when libnginx-mod-http-lua / lua-resty-core are not installed. 127.0.0.1 and a unix socket
only; every load is bounded in count and time.
"""

import math
import os
import socket
import threading

import nginx_fixture as nf
from ansible_collections.greenflow.platform.plugins.module_utils import _nginx_switch as switch
from ansible_collections.greenflow.platform.plugins.module_utils import _nginx_upstream as nu


def shares(green):
    return {"blue": 100 - green, "green": green}


def held(lab):
    status, body = lab.control("GET", "app=%s" % lab.nginx_id)
    assert status == 200, body
    return nu.parse_control_answer(body)["shares"]


def read(path):
    with open(path, "rb") as f:
        return f.read()


def test_keepalive_clients_through_five_changes_lose_nothing(lua_lab):
    lab = lua_lab
    reloads = lab.reload_count()
    workers = lab.worker_pids()
    load = nf.Load(lab.url, threads=16, keepalive=True, pause=0.02, max_requests=20000, max_seconds=40).start()
    results = []
    try:
        for green in (5, 25, 50, 100, 0):
            threading.Event().wait(0.6)
            results.append(nf.run_module(lab.module_args(shares=shares(green))))
        threading.Event().wait(0.6)
    finally:
        got = load.stop()
    for res in results:
        assert not res.get("failed"), res
        assert res["changed"] and res["applied"] == "live" and res["reloaded"] is False, res
        assert res["applied_reason"] == "only the shares changed"
        assert "control_seconds" in res["timings"] and "reload_seconds" not in res["timings"]
    assert got.requests > 500, got.summary()
    # no request failed, and no keep-alive connection was closed under a client: not even retried
    assert got.failed == 0 and got.stale_retries == 0 and got.dropped_idle == 0, got.summary()
    assert lab.reload_count() == reloads and lab.worker_pids() == workers
    assert held(lab) == shares(0) and nu.parse_state(read(lab.upstream_conf).decode())["shares"] == shares(0)


def test_first_install_pool_change_and_mode_change_reload(lua_lab, backend_factory, tmp_path):
    lab = lua_lab
    # pools changed: an upstream block, so a reload (which seeds the dict from the new file)
    new_green = [backend_factory("green").address]
    res = nf.run_module(lab.module_args(pools={"blue": lab.pools["blue"], "green": new_green}, shares=shares(50)))
    assert res["applied"] == "reload" and res["reloaded"] and res["applied_reason"] == "pool members changed", res
    assert held(lab) == shares(50)
    # settings changed: a reload too
    res = nf.run_module(lab.module_args(keepalive=8, shares=shares(50)))
    assert res["applied"] == "reload" and "keepalive" in res["applied_reason"]
    # same input again: nothing at all
    res = nf.run_module(lab.module_args(shares=shares(50)))
    assert res["changed"] is False and res["applied"] == "none"
    # back to split_clients: the vhost's set_by_lua_block still wins, nginx -t passes, a reload
    res = nf.run_module(lab.module_args(split="split_clients", shares=shares(25)))
    assert res["applied"] == "reload" and res["split"] == "split_clients", res
    assert "split_clients" in read(lab.upstream_conf).decode()
    # and to lua again: the dict seeded from the file by that reload
    res = nf.run_module(lab.module_args(split="lua"))
    assert res["applied"] == "reload" and res["applied_reason"] == "split mode changed to lua", res
    assert held(lab) == shares(25)
    # a second app, first install: a reload; this main config does not seed it, so the next change,
    # which could go live, finds the app unknown to the control path and reloads instead
    path = os.path.join(lab.conf_dir, "greenflow-upstream-shop.conf")
    res = nf.run_module(lab.module_args(app="shop", conf_path=path, split="lua",
                                        pools={"blue": lab.pools["blue"]}, shares=shares(0)))
    assert res["applied"] == "reload" and res["applied_reason"] == "first install of the file", res
    res = nf.run_module(lab.module_args(app="shop", conf_path=path, pools={"blue": lab.pools["blue"],
                                                                           "green": new_green}))
    assert res["applied"] == "reload"


def test_lua_mode_needs_the_vhost(nginx_lab):
    """A plain (split_clients) nginx refuses a file without split_clients: nothing changes."""
    lab = nginx_lab
    before = read(lab.upstream_conf)
    res = nf.run_module(lab.module_args(split="lua"))
    assert res.get("failed") and "nginx -t failed" in res["msg"], res
    assert read(lab.upstream_conf) == before


def test_no_control_socket_means_a_reload(lua_lab):
    lab = lua_lab
    res = nf.run_module(lab.module_args(shares=shares(25), control_socket=os.path.join(lab.prefix, "none.sock")))
    assert res["applied"] == "reload" and res["applied_reason"].startswith("no control socket"), res
    assert held(lab) == shares(25)  # the reload seeded the dict from the new file


def test_bad_control_input_leaves_the_split(lua_lab):
    lab = lua_lab
    assert nf.run_module(lab.module_args(shares=shares(25)))["applied"] == "live"
    bad = [("PUT", "app=demo&blue=90&green=5"), ("PUT", "app=demo&blue=50&green=x"),
           ("PUT", "app=demo&blue=-5&green=105"), ("PUT", "app=demo&blue=95&green=5&x=1"),
           ("PUT", "app=demo&blue=95&blue=95&green=5"), ("PUT", "app=nope&blue=100&green=0"),
           ("PUT", "app=Demo&blue=100&green=0"), ("PUT", "blue=100&green=0"),
           ("POST", "app=demo&blue=0&green=100"), ("DELETE", "app=demo")]
    codes = [lab.control(m, q)[0] for m, q in bad]
    assert codes == [400, 400, 400, 400, 400, 404, 400, 400, 405, 405], codes
    assert held(lab) == shares(25)
    # a pool without servers cannot take traffic
    nf.run_module(lab.module_args(pools={"blue": lab.pools["blue"]}, shares=shares(0)))
    assert lab.control("PUT", "app=demo&blue=0&green=100")[0] == 409
    assert held(lab) == shares(0)
    # traffic still flows as the split says
    got = nf.fire(lab.url, 50)
    assert got.failed == 0 and got.by_pool["blue"] == 50


class BrokenControl:
    """A unix socket standing in for nginx's control path: refuses (409) or drops every call."""

    def __init__(self, path, mode):
        self.mode = mode
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(path)
        self.srv.listen(4)
        self.srv.settimeout(30)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        for _ in range(10):
            try:
                conn, _ = self.srv.accept()
            except OSError:
                return
            with conn:
                conn.recv(4096)
                if self.mode == "refuse":
                    body = b"a pool without servers cannot take traffic\n"
                    conn.sendall(b"HTTP/1.1 409 Conflict\r\nContent-Length: %d\r\n\r\n" % len(body) + body)

    def close(self):
        self.srv.close()


def test_failing_socket_keeps_the_previous_file_and_split(lua_lab):
    lab = lua_lab
    assert nf.run_module(lab.module_args(shares=shares(25)))["applied"] == "live"
    before = read(lab.upstream_conf)
    for mode in ("refuse", "drop"):
        path = os.path.join(os.path.dirname(lab.control_socket), "broken-%s.sock" % mode)
        fake = BrokenControl(path, mode)
        reloads = lab.reload_count()
        try:
            res = nf.run_module(lab.module_args(shares=shares(75), control_socket=path))
        finally:
            fake.close()
        assert res.get("failed") and res["changed"] is False, res
        assert res["shares"] == shares(25)
        assert read(lab.upstream_conf) == before, mode
        assert held(lab) == shares(25), mode
        if mode == "refuse":
            assert "refused" in res["msg"] and lab.reload_count() == reloads, res["msg"]
        else:
            # nothing answered: previous file back, and a reload seeds nginx from it for sure
            assert "did not answer" in res["msg"] and "restored" in res["msg"], res["msg"]
            assert lab.reload_count() == reloads + 1
    got = nf.fire(lab.url, 400)
    assert got.failed == 0 and 0 < got.by_pool["green"] < 400


def test_split_accuracy_and_log_attribution(lua_lab):
    lab = lua_lab
    for green in (5, 25, 50):
        assert nf.run_module(lab.module_args(shares=shares(green)))["applied"] == "live"
        offset = lab.log_offset()
        n = 2000
        got = nf.fire(lab.url, n, threads=8)
        assert got.failed == 0 and got.requests == n, got.summary()
        p = green / 100.0
        sd = math.sqrt(p * (1 - p) / n)
        assert abs(got.by_pool["green"] / float(n) - p) < 4 * sd, (green, got.summary())
        entries, _ = lab.read_access_log_until(offset, n)
        assert len(entries) == n
        for e in entries:
            # the logged pool is the one the Lua pick gives for the logged request id, and the
            # server that answered belongs to it (what the gates rely on)
            assert e["upstream_name"] == nu.lua_pick(e["request_id"], lab.nginx_id, green), e
            colour = e["upstream_name"].rsplit("_", 1)[1]
            assert e["upstream_addr"].split(", ")[-1] in lab.pools[colour], e


def test_restart_comes_back_with_the_files_split(lua_lab):
    lab = lua_lab
    assert nf.run_module(lab.module_args(shares=shares(50)))["applied"] == "live"
    lab.quit()
    lab.start()
    assert held(lab) == shares(50)
    got = nf.fire(lab.url, 400)
    assert got.failed == 0 and got.by_pool["green"] > 100 and got.by_pool["blue"] > 100


def test_watchdog_put_back_goes_live(lua_lab):
    lab = lua_lab
    assert nf.run_module(lab.module_args(shares=shares(25)))["applied"] == "live"
    reloads = lab.reload_count()
    nginx = dict((k, v) for k, v in lab.module_args().items() if k in switch.DEFAULTS)
    host = switch.LocalHost()
    msg = switch.put_back("demo", {"from_color": "blue", "nginx": nginx}, host)
    assert "switched live, without a reload" in msg, msg
    assert held(lab) == shares(0) and lab.reload_count() == reloads
