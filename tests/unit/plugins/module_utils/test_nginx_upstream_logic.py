"""Unit tests of the pure logic behind greenflow.platform.nginx_upstream."""

import os
import random
import re
import shutil
import subprocess

import pytest

from ansible_collections.greenflow.platform.plugins.module_utils import _nginx_upstream as nu

POOLS = {"blue": ["10.0.0.1:8081", "10.0.0.2:8081"], "green": ["10.0.0.1:8082"]}


# ----------------------------------------------------------------- app names


@pytest.mark.parametrize("app", ["demo", "a", "shop_api2", "x" * 48, "de-mo", "my-shop"])
def test_app_ok(app):
    assert nu.validate_app(app) == app


@pytest.mark.parametrize("app", ["", "Demo", "1app", "de mo", "demo;", "x" * 49, None, 5, "_x", "-x",
                                 "demo\n"])
def test_app_bad(app):
    with pytest.raises(nu.UpstreamError, match="not a valid name"):
        nu.validate_app(app)


# ----------------------------------------------------------------- shares


@pytest.mark.parametrize("green", [0, 1, 5, 25, 50, 75, 95, 99, 100])
def test_shares_edges_ok(green):
    assert nu.normalize_shares({"blue": 100 - green, "green": green}) == {"blue": 100 - green, "green": green}


def test_missing_colour_is_zero_and_strings_accepted():
    assert nu.normalize_shares({"blue": 100}) == {"blue": 100, "green": 0}
    assert nu.normalize_shares({"blue": "95", "green": "5"}) == {"blue": 95, "green": 5}
    assert nu.normalize_shares({"blue": 95.0, "green": 5}) == {"blue": 95, "green": 5}


@pytest.mark.parametrize("shares,msg", [
    ({"blue": 90, "green": 5}, r"add up to 100, got 95 \(blue=90, green=5\)"),
    ({"blue": 60, "green": 50}, "add up to 100, got 110"),
    ({}, "add up to 100, got 0"),
    ({"blue": 105, "green": -5}, r"shares.blue must be between 0 and 100 percent, got 105"),
    ({"blue": 110, "green": -10}, "shares.blue must be between 0 and 100"),
    ({"blue": 100, "green": -1}, "shares.green must be between 0 and 100 percent, got -1"),
    ({"blue": 50, "red": 50}, "unknown colour 'red'"),
    ({"blue": 94.5, "green": 5.5}, "shares.blue must be an integer"),
    ({"blue": True, "green": 0}, "shares.blue must be an integer"),
    ({"blue": "lots"}, "shares.blue must be an integer"),
    ([100, 0], "shares must be a dict"),
])
def test_shares_bad(shares, msg):
    with pytest.raises(nu.UpstreamError, match=msg):
        nu.normalize_shares(shares)


# ----------------------------------------------------------------- pools / servers


@pytest.mark.parametrize("addr", ["127.0.0.1:1", "10.0.0.1:65535", "app-1.internal:8080", "localhost:80",
                                  "[::1]:8080", "[2001:db8::1]:443", " 10.0.0.1:80 "])
def test_server_ok(addr):
    assert nu.validate_server(addr) == addr.strip()


@pytest.mark.parametrize("addr", ["10.0.0.1", "10.0.0.1:0", "10.0.0.1:65536", "10.0.0.256:80", ":80",
                                  "host:", "host:http", "a b:80", "h;evil:80", "h:80;", "h}:80",
                                  "[::1]80", "[zz]:80", "::1:80", "-bad.host:80", "1.2.3:80", "", None, 80])
def test_server_bad(addr):
    with pytest.raises(nu.UpstreamError, match="host:port"):
        nu.validate_server(addr, "pools.blue[0]")


def test_pools_normalised_and_checked():
    assert nu.normalize_pools({"blue": ["10.0.0.1:80"]}) == {"blue": ["10.0.0.1:80"], "green": []}
    assert nu.normalize_pools({"blue": ["10.0.0.1:80"], "green": None})["green"] == []
    with pytest.raises(nu.UpstreamError, match="unknown colour 'red'"):
        nu.normalize_pools({"red": ["10.0.0.1:80"]})
    with pytest.raises(nu.UpstreamError, match=r"pools.green\[1\]: 'nope' is not host:port"):
        nu.normalize_pools({"green": ["10.0.0.1:80", "nope"]})
    with pytest.raises(nu.UpstreamError, match="must be a list"):
        nu.normalize_pools({"blue": "10.0.0.1:80"})
    with pytest.raises(nu.UpstreamError, match="lists 10.0.0.1:80 twice"):
        nu.normalize_pools({"blue": ["10.0.0.1:80", "10.0.0.1:80"]})
    with pytest.raises(nu.UpstreamError, match="in both blue and green"):
        nu.normalize_pools({"blue": ["10.0.0.1:80"], "green": ["10.0.0.1:80"]})


def test_share_for_empty_pool_is_bad_zero_is_fine():
    pools = nu.normalize_pools({"blue": ["10.0.0.1:80"]})
    nu.check_shares_against_pools({"blue": 100, "green": 0}, pools)
    with pytest.raises(nu.UpstreamError, match="shares.green is 5% but pools.green has no servers"):
        nu.check_shares_against_pools({"blue": 95, "green": 5}, pools)


@pytest.mark.parametrize("kw,msg", [
    (dict(keepalive=-1, max_fails=1, fail_timeout=10), "keepalive"),
    (dict(keepalive=1, max_fails=-1, fail_timeout=10), "max_fails"),
    (dict(keepalive=1, max_fails=1, fail_timeout=0), "fail_timeout"),
])
def test_settings_bad(kw, msg):
    with pytest.raises(nu.UpstreamError, match=msg):
        nu.validate_settings(**kw)


# ----------------------------------------------------------------- split arithmetic


@pytest.mark.parametrize("green,expected", [
    (0, [("*", "demo_blue")]),
    (100, [("*", "demo_green")]),
    (5, [("5%", "demo_green"), ("*", "demo_blue")]),
    (95, [("95%", "demo_green"), ("*", "demo_blue")]),
    (50, [("50%", "demo_green"), ("*", "demo_blue")]),
])
def test_split_entries(green, expected):
    assert nu.split_entries("demo", {"blue": 100 - green, "green": green}) == expected


def test_murmurhash2_basics():
    # nginx's ngx_murmur_hash2 (seed 0 xor length); checked against nginx itself in
    # tests/integration/test_nginx_upstream.py (every logged request_id lands where it predicts).
    assert nu.murmurhash2(b"") == 0
    assert nu.murmurhash2("abcd") == nu.murmurhash2(b"abcd")
    values = {nu.murmurhash2("%032x" % i) for i in range(1000)}
    assert len(values) == 1000 and all(0 <= v <= 0xFFFFFFFF for v in values)
    for tail in ("x", "xy", "xyz"):  # the 1-3 byte tails
        assert nu.murmurhash2("abcd" + tail) != nu.murmurhash2("abcd")


@pytest.mark.parametrize("green", [0, 1, 5, 25, 50, 75, 95, 99, 100])
def test_split_bounds_cover_exact_share(green):
    """The hash range given to green is exactly green % of the 32-bit space (to 1e-6)."""
    entries = nu.split_entries("demo", {"blue": 100 - green, "green": green})
    bounds = nu.split_bounds(entries)
    if green in (0, 100):
        assert bounds == [(None, "demo_green" if green == 100 else "demo_blue")]
        return
    assert bounds[0][1] == "demo_green" and bounds[-1] == (None, "demo_blue")
    assert abs(bounds[0][0] / 0xFFFFFFFF - green / 100.0) < 1e-6


def test_zero_share_pool_never_picked():
    rnd = random.Random(4)
    for green in (0, 100):
        entries = nu.split_entries("demo", {"blue": 100 - green, "green": green})
        picks = {nu.split_pick("%032x" % rnd.getrandbits(128), entries) for _ in range(5000)}
        assert picks == {"demo_green" if green else "demo_blue"}


def test_split_on_random_ids_converges_to_share():
    rnd = random.Random(7)
    ids = ["%032x" % rnd.getrandbits(128) for _ in range(40000)]
    for green in (5, 25, 50, 75, 95):
        entries = nu.split_entries("demo", {"blue": 100 - green, "green": green})
        got = sum(1 for i in ids if nu.split_pick(i, entries) == "demo_green") * 100.0 / len(ids)
        assert abs(got - green) < 1.0, (green, got)


# ----------------------------------------------------------------- rendering / parsing


def _render(shares, pools=POOLS, **kw):
    return nu.render("demo", nu.normalize_pools(pools), nu.normalize_shares(shares), **kw)


def test_render_canary():
    text = _render({"blue": 95, "green": 5}, keepalive=16, max_fails=3, fail_timeout=5)
    assert "upstream demo_blue {" in text and "upstream demo_green {" in text
    assert "    server 10.0.0.2:8081 max_fails=3 fail_timeout=5s;" in text
    assert text.count("keepalive 16;") == 2
    assert re.search(r'split_clients "\$\{request_id\}" \$demo_backend \{\n\s+5%\s+demo_green;\n\s+\*\s+demo_blue;\n\}',
                     text)
    assert "proxy_pass http://$demo_backend;" in text


def test_render_100_0_maps_to_one_pool_only():
    text = _render({"blue": 100, "green": 0})
    block = text[text.index("split_clients"):]
    assert "demo_green" not in block and "*     demo_blue;" in block


def test_render_empty_pool_has_no_upstream_block():
    text = _render({"blue": 100}, pools={"blue": ["10.0.0.1:80"]})
    assert "upstream demo_green" not in text and "upstream demo_blue {" in text
    assert nu.upstream_names("demo", nu.normalize_pools({"blue": ["10.0.0.1:80"]})) == ["demo_blue"]


def test_render_keepalive_zero_omits_directive():
    assert "keepalive" not in _render({"blue": 100}, keepalive=0).split("# Traffic")[1]


def test_render_is_deterministic_and_parses_back():
    a = _render({"blue": 75, "green": 25})
    assert a == _render({"green": 25, "blue": 75})
    state = nu.parse_state(a)
    assert state["shares"] == {"blue": 75, "green": 25}
    assert state["pools"] == nu.normalize_pools(POOLS)
    assert state["app"] == "demo" and state["keepalive"] == nu.DEFAULT_KEEPALIVE


def test_parse_state_none_and_foreign_files():
    assert nu.parse_state(None) is None
    with pytest.raises(nu.UpstreamError, match="not generated by greenflow.platform.nginx_upstream"):
        nu.parse_state("upstream x { server 1.2.3.4:80; }\n")
    with pytest.raises(nu.UpstreamError, match="not valid JSON"):
        nu.parse_state("# greenflow-state: {nope\n")


def test_resolve_desired_merges_with_current():
    current = nu.parse_state(_render({"blue": 100}, keepalive=8))
    d = nu.resolve_desired("demo", None, {"blue": 95, "green": 5}, None, None, None, current)
    assert d["pools"] == nu.normalize_pools(POOLS) and d["keepalive"] == 8
    d = nu.resolve_desired("demo", {"blue": ["10.0.0.9:80"], "green": ["10.0.0.9:81"]}, None, 4, None, None,
                           current)
    assert d["shares"] == {"blue": 100, "green": 0} and d["keepalive"] == 4
    with pytest.raises(nu.UpstreamError, match="shares is required"):
        nu.resolve_desired("demo", POOLS, None, None, None, None, None)
    with pytest.raises(nu.UpstreamError, match="pools is required"):
        nu.resolve_desired("demo", None, {"blue": 100}, None, None, None, None)
    with pytest.raises(nu.UpstreamError, match="belongs to app 'demo'"):
        nu.resolve_desired("other", None, {"blue": 100}, None, None, None, current)
    with pytest.raises(nu.UpstreamError, match="pools.green has no servers"):
        nu.resolve_desired("demo", {"blue": ["10.0.0.1:80"]}, {"blue": 50, "green": 50}, None, None, None, None)


def test_names():
    assert nu.proxy_pass_target("demo") == "http://$demo_backend"
    assert nu.backend_variable("demo") == "$demo_backend"
    assert nu.default_conf_path("demo") == "/etc/nginx/conf.d/greenflow-upstream-demo.conf"


def test_names_of_an_app_with_a_hyphen_are_nginx_identifiers():
    assert nu.upstream_name("my-shop", "green") == "my_shop_green"
    assert nu.proxy_pass_target("my-shop") == "http://$my_shop_backend"
    assert nu.default_conf_path("my-shop") == "/etc/nginx/conf.d/greenflow-upstream-my_shop.conf"
    text = nu.render("my-shop", nu.normalize_pools(POOLS), nu.normalize_shares({"blue": 100}))
    assert "upstream my_shop_blue {" in text and "$my_shop_backend" in text
    assert nu.parse_state(text)["app"] == "my-shop"


def test_two_apps_with_the_same_nginx_names_are_refused_clearly():
    current = {"app": "my_shop", "pools": {}, "shares": {"blue": 100}}
    with pytest.raises(nu.UpstreamError, match="both become 'my_shop' in nginx names"):
        nu.resolve_desired("my-shop", None, {"blue": 100}, None, None, None, current)
    with pytest.raises(nu.UpstreamError, match="both become"):
        nu.check_owner(current, "my-shop")
    nu.check_owner(current, "my_shop")
    nu.check_owner(None, "my-shop")


def test_main_directives_and_compiled_defaults():
    conf = ("user www-data;  # comment; pid nope;\npid /run/x.pid;\nerror_log logs/e.log notice;\n"
            "events {}\nhttp { server { error_log /other; } }\n")
    assert nu.main_directives(conf) == {"pid": "/run/x.pid", "error_log": "logs/e.log"}
    v = "configure arguments: --prefix=/usr/share/nginx --pid-path=/run/nginx.pid --error-log-path=stderr"
    assert nu.compiled_defaults(v) == {"prefix": "/usr/share/nginx", "pid-path": "/run/nginx.pid",
                                       "error-log-path": "stderr"}


@pytest.mark.skipif(not shutil.which("nginx") and not os.path.exists("/usr/sbin/nginx"), reason="no nginx")
@pytest.mark.parametrize("green", [0, 5, 50, 100])
def test_rendered_file_passes_nginx_t(tmp_path, green):
    """nginx itself accepts every shape we render, including an empty pool at 0 %."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    pools = POOLS if green else {"blue": ["127.0.0.1:8081"]}
    (tmp_path / "up.conf").write_text(_render({"blue": 100 - green, "green": green}, pools=pools))
    (tmp_path / "logs").mkdir()
    (tmp_path / "nginx.conf").write_text(
        "pid %s/nginx.pid;\nerror_log %s/logs/error.log;\nevents {}\nhttp {\n include %s/up.conf;\n"
        " server { listen 127.0.0.1:1; location / { proxy_pass http://$demo_backend; } }\n}\n"
        % (tmp_path, tmp_path, tmp_path))
    proc = subprocess.run([nginx, "-t", "-c", str(tmp_path / "nginx.conf"), "-p", str(tmp_path)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_past_deadline():
    from ansible_collections.greenflow.platform.plugins.module_utils import _nginx_switch as sw
    assert sw._past_deadline(None) is None
    assert sw._past_deadline(100.0, now=99.5) is None
    assert sw._past_deadline(100.0, now=100.0) is None
    assert sw._past_deadline(100.0, now=101.5) == 1.5
