"""Bad input to nginx_upstream: each refused with a clear message, no traceback, nothing written.

Server addresses are written into the nginx file verbatim, so a line break (which "$" in a regex lets
through at the end), a tab or a digit of another script (which str.isdigit() and "\\d" accept) must
never get past the check. '127.0.0.1:8\u00b2' (superscript two) used to crash with a ValueError
traceback: isdigit() said yes, int() said no.
"""

import json
import os
import subprocess
import sys

import pytest

from ansible_collections.greenflow.platform.plugins.module_utils import _nginx_upstream as nu

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
COLLECTIONS = os.path.join(REPO, "collections")
GOOD = "127.0.0.1:8081"


def run(args):
    payload = {"ANSIBLE_MODULE_ARGS": dict(args, _ansible_check_mode=False, _ansible_diff=False)}
    proc = subprocess.run(
        [sys.executable, "-m", "ansible_collections.greenflow.platform.plugins.modules.nginx_upstream"],
        input=json.dumps(payload), capture_output=True, text=True, timeout=60,
        env=dict(os.environ, PYTHONPATH=COLLECTIONS),
    )
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


HOSTPORT = "is not host:port (host: IPv4, hostname or [IPv6]; port: 1-65535)"
CONTROL = "(it contains a line break or another control character)"
NON_ASCII = "(it contains a non-ASCII character; digits must be 0-9)"

BAD = [
    # id, options, what the message says
    ("server_trailing_newline", dict(pools={"blue": [GOOD + "\n"]}), [HOSTPORT, CONTROL, "pools.blue[0]"]),
    ("server_trailing_crlf", dict(pools={"blue": [GOOD + "\r\n"]}), [HOSTPORT, CONTROL]),
    ("server_tab", dict(pools={"blue": ["\t" + GOOD]}), [HOSTPORT, CONTROL]),
    ("host_newline", dict(pools={"blue": ["app\n:8081"]}), [HOSTPORT, CONTROL]),
    ("ipv6_newline", dict(pools={"blue": ["[::1\n]:8081"]}), [HOSTPORT, CONTROL]),
    ("port_arabic_indic", dict(pools={"blue": ["127.0.0.1:\u0668\u0660\u0668\u0661"]}), [HOSTPORT, NON_ASCII]),
    ("port_superscript", dict(pools={"blue": ["127.0.0.1:8\u00b2"]}), [HOSTPORT, NON_ASCII]),
    ("port_fullwidth", dict(pools={"blue": ["127.0.0.1:\uff18\uff10"]}), [HOSTPORT, NON_ASCII]),
    ("ipv6_port_arabic_indic", dict(pools={"blue": ["[::1]:\u0668\u0660"]}), [HOSTPORT, NON_ASCII]),
    ("ipv4_arabic_indic", dict(pools={"blue": ["\u0661\u0662\u0667.0.0.1:8081"]}), [HOSTPORT, NON_ASCII]),
    ("green_server_newline", dict(pools={"blue": [GOOD], "green": ["127.0.0.1:8082\n"]}),
     [HOSTPORT, CONTROL, "pools.green[0]"]),
    ("share_arabic_indic", dict(shares={"blue": "\u0661\u0660\u0660"}), ["shares.blue must be an integer", NON_ASCII]),
    ("share_trailing_newline", dict(shares={"blue": "100\n"}), ["shares.blue must be an integer", CONTROL]),
    ("share_superscript", dict(shares={"blue": "10\u00b2"}), ["shares.blue must be an integer", NON_ASCII]),
    # the int options go through Ansible's own int check first: it refuses what int() cannot read
    ("keepalive_superscript", dict(keepalive="\u00b2"), ["keepalive", "unable to convert to int"]),
    ("max_fails_superscript", dict(max_fails="\u00b3"), ["max_fails", "unable to convert to int"]),
    ("keepalive_range", dict(keepalive=10001), ["keepalive must be between 0 (off) and 10000"]),
    ("reload_timeout_range", dict(reload_timeout=0), ["reload_timeout must be between 1 and 3600, got 0"]),
    ("app_trailing_newline", dict(app="demo\n"), ["is not a valid name"]),
]


@pytest.mark.parametrize("options,expected", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_is_refused_clearly_and_touches_nothing(tmp_path, options, expected):
    conf = tmp_path / "greenflow-upstream-demo.conf"
    args = dict(app="demo", conf_path=str(conf), nginx_bin="/nonexistent/nginx",
                nginx_conf=str(tmp_path / "nginx.conf"), pools={"blue": [GOOD]}, shares={"blue": 100})
    args.update(options)
    res = run(args)
    assert res.get("failed") and "exception" not in res, res
    for text in expected:
        assert text in res["msg"], res["msg"]
    assert os.listdir(str(tmp_path)) == []  # not even the lock file


# Ansible converts the int options before the module sees them (its int check reads any Unicode
# digit, like int()); validate_settings, which also checks what the file's header holds, refuses
# anything but ASCII digits itself.
@pytest.mark.parametrize("option", ["keepalive", "max_fails", "fail_timeout"])
@pytest.mark.parametrize("value,why", [("\u0663", NON_ASCII), ("\u00b3", NON_ASCII), ("3\n", CONTROL),
                                       ("\uff13", NON_ASCII), ("1_0", "")])
def test_settings_take_ascii_digits_only(option, value, why):
    settings = dict(keepalive=32, max_fails=1, fail_timeout=10)
    settings[option] = value
    with pytest.raises(nu.UpstreamError) as info:
        nu.validate_settings(**settings)
    assert str(info.value) == "%s must be an integer, got %r%s" % (option, value, " " + why if why else "")


def test_surrounding_spaces_are_still_forgiven():
    assert nu.validate_server(" %s " % GOOD) == GOOD
    assert nu.normalize_shares({"blue": " 100 "}) == {"blue": 100, "green": 0}
    assert nu.validate_settings(" 16 ", "2", 30) == (16, 2, 30)
