"""Unit tests of plugins/module_utils/_nginx_test_config.py: nginx -t on a candidate before it is live."""

import os
import shutil
import subprocess

import pytest

from ansible_collections.greenflow.platform.plugins.module_utils import _nginx_test_config as tc
from ansible_collections.greenflow.platform.plugins.module_utils import _nginx_upstream as nu

LIVE = "greenflow-upstream-demo.conf"


def words_of(text):
    return [w for w, _, _ in tc.statements(text)]


# ----------------------------------------------------------------- the reader


def test_statements_read_like_nginx():
    text = (
        "# include /not/this.conf;\n"
        "user www-data; # a comment; include /nor/this;\n"
        "http {\n"
        "    log_format j '{\"a\":\"$a\"} # not a comment';\n"
        "    set $x a#b;\n"
        "    split_clients \"${request_id}\" $demo_backend { 5% demo_green; * demo_blue; }\n"
        "    return 200 ${var}x;\n"
        "    include \"/a dir/with \\\"quotes\\\".conf\";\n"
        "    include 'conf.d/*.conf';\n"
        "}\n"
    )
    found = words_of(text)
    assert ["user", "www-data"] in found
    assert ["log_format", "j", '{"a":"$a"} # not a comment'] in found
    assert ["set", "$x", "a#b"] in found
    assert ["5%", "demo_green"] in found and ["*", "demo_blue"] in found
    assert ["return", "200", "${var}x"] in found
    assert ["include", '/a dir/with "quotes".conf'] in found
    assert ["include", "conf.d/*.conf"] in found
    assert not any("/not/this.conf" in w or "/nor/this" in w for ws in found for w in ws)
    # spans cover the directive through its ';'
    spans = [text[s:e] for w, s, e in tc.statements(text) if w[0] == "include"]
    assert spans == ['include "/a dir/with \\"quotes\\".conf";', "include 'conf.d/*.conf';"]


def test_statements_refuse_an_unbalanced_quote():
    with pytest.raises(tc.ConfSyntaxError):
        tc.statements('include "conf.d/*.conf;\n')


# ----------------------------------------------------------------- the test configuration


@pytest.fixture
def tree(tmp_path):
    """/conf/nginx.conf with a relative glob include of conf.d, the live file and two neighbours."""
    conf = tmp_path / "conf"
    (conf / "conf.d").mkdir(parents=True)
    for name in ("a.conf", LIVE, "z.conf", ".hidden.conf", "notes.txt"):
        (conf / "conf.d" / name).write_text("# %s\n" % name)
    main = conf / "nginx.conf"
    main.write_text("events {}\nhttp {\n    include conf.d/*.conf;\n    server { listen 1; }\n}\n")
    cand = conf / "conf.d" / (".%s.abc.candidate" % LIVE)
    cand.write_text("# candidate\n")
    return dict(conf=conf, main=main, live=conf / "conf.d" / LIVE, cand=cand)


def build(tree, main=None):
    cfg = tc.NginxTestConfig(str(main or tree["main"]), str(tree["live"]), str(tree["cand"]))
    return cfg, cfg.build()


def test_glob_spelled_out_with_the_candidate_in_the_live_files_place(tree):
    cfg, path = build(tree)
    d = str(tree["conf"] / "conf.d")
    assert os.path.dirname(path) == str(tree["conf"])  # relative paths resolve as for nginx.conf
    assert os.path.basename(path).startswith(".greenflow-nginx-test-")
    text = open(path).read()
    line = 'include "%s/a.conf"; include "%s"; include "%s/z.conf";' % (d, tree["cand"], d)
    assert text == "events {}\nhttp {\n    %s\n    server { listen 1; }\n}\n" % line
    cfg.cleanup()
    assert not os.path.exists(path) and cfg.written == []


def test_first_write_the_candidate_goes_where_the_glob_would_put_the_file(tree):
    tree["live"].unlink()
    cfg, path = build(tree)
    d = str(tree["conf"] / "conf.d")
    assert 'include "%s/a.conf"; include "%s"; include "%s/z.conf";' % (d, tree["cand"], d) in open(path).read()
    cfg.cleanup()


def test_explicit_include_and_a_symlink_to_the_live_file(tree):
    os.symlink(str(tree["live"]), str(tree["conf"] / "conf.d" / "m-link.conf"))
    tree["main"].write_text("events {}\nhttp { include %s; }\n" % tree["live"])
    cfg, path = build(tree)
    assert open(path).read() == 'events {}\nhttp { include "%s"; }\n' % tree["cand"]
    cfg.cleanup()
    tree["main"].write_text("events {}\nhttp { include conf.d/m-*.conf; }\n")
    cfg, path = build(tree)
    assert open(path).read() == 'events {}\nhttp { include "%s"; }\n' % tree["cand"]
    cfg.cleanup()


def test_a_file_on_the_way_is_rewritten_too_and_messages_name_the_real_files(tree):
    (tree["conf"] / "sites.conf").write_text("# sites\n\ninclude conf.d/*.conf;\nserver { listen 2; }\n")
    tree["main"].write_text("events {}\nhttp {\n    include /dev/null;\n    include sites.conf;\n}\n")
    cfg, path = build(tree)
    main_text = open(path).read()
    assert "include /dev/null;" in main_text  # untouched: does not reach the live file
    (copy,) = [p for p in cfg.written if p != path]
    assert main_text == 'events {}\nhttp {\n    include /dev/null;\n    include "%s";\n}\n' % copy
    copy_text = open(copy).read()
    assert copy_text.count("\n") == 4 and ('include "%s";' % tree["cand"]) in copy_text
    msg = "nginx: [emerg] bad in %s:3 (from %s:4) test failed for %s" % (tree["cand"], copy, path)
    assert cfg.translate(msg) == "nginx: [emerg] bad in %s:3 (from %s:4) test failed for %s" % (
        tree["live"], tree["conf"] / "sites.conf", tree["main"])
    cfg.cleanup()
    assert [n for n in os.listdir(str(tree["conf"])) if n.startswith(".")] == []


def test_include_loops_end_and_a_file_included_twice_gets_one_copy(tree):
    # every file of conf.d includes the whole of conf.d (nginx itself would loop): followed once
    for name in ("a.conf", "z.conf"):
        (tree["conf"] / "conf.d" / name).write_text("include conf.d/*.conf;\n")
    (tree["conf"] / "sites.conf").write_text("include conf.d/*.conf;\n")
    tree["main"].write_text("http { include sites.conf; include sites.conf; }\n")
    cfg, path = build(tree)
    copies = dict((cfg.stands_for[p], p) for p in cfg.written if p != path)
    assert sorted(os.path.basename(k) for k in copies) == ["a.conf", "sites.conf", "z.conf"]
    sites = copies[str(tree["conf"] / "sites.conf")]
    assert open(path).read() == 'http { include "%s"; include "%s"; }\n' % (sites, sites)
    cfg.cleanup()


def test_a_main_config_that_cannot_be_read(tree):
    tree["main"].write_text('http { include "conf.d/*.conf; }\n')
    cfg, path = build(tree)
    assert path is None and "unbalanced" in cfg.unreadable and cfg.written == []
    tree["main"].unlink()
    with pytest.raises(tc.ConfigBuildError, match="cannot read .*nginx.conf"):
        build(tree)


def test_copies_keep_every_byte(tree):
    raw = b"# caf\xe9 in latin-1, \xff\nevents {}\nhttp { include conf.d/*.conf; }\n"
    tree["main"].write_bytes(raw)
    cfg, path = build(tree)
    with open(path, "rb") as f:
        assert f.read().startswith(b"# caf\xe9 in latin-1, \xff\nevents {}\nhttp { include ")
    cfg.cleanup()


def test_not_reached_builds_nothing(tree):
    tree["main"].write_text("events {}\nhttp { include other.d/*.conf; }\n")
    cfg, path = build(tree)
    assert path is None and cfg.written == []


def test_multiline_include_keeps_the_line_count(tree):
    tree["main"].write_text("events {}\nhttp { include\n   conf.d/*.conf\n ; }\nuser x;\n")
    cfg, path = build(tree)
    lines = open(path).read().splitlines()
    # what followed the directive stays on its line: nginx's line numbers there stay right
    assert len(lines) == 5 and lines[1].startswith("http { include ") and lines[2:] == ["", " }", "user x;"]
    cfg.cleanup()


def test_remove_leftovers_only_of_its_own_file(tree):
    mine = tree["conf"] / (".greenflow-nginx-test-%s.x" % tc.tag_for(str(tree["live"])))
    other = tree["conf"] / (".greenflow-nginx-test-%s.x" % tc.tag_for(str(tree["conf"] / "other.conf")))
    mine.write_text("")
    other.write_text("")
    assert tc.remove_leftovers(str(tree["main"]), str(tree["live"])) == [mine.name]
    assert other.exists() and not mine.exists()


def test_unwritable_main_dir_is_a_clear_error(tree, monkeypatch):
    def refuse(*a, **kw):
        raise OSError(13, "Permission denied")
    monkeypatch.setattr(tc.tempfile, "mkstemp", refuse)
    with pytest.raises(tc.ConfigBuildError, match="directory of the main config"):
        build(tree)


# ----------------------------------------------------------------- with the real nginx -t


NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)


@pytest.mark.skipif(NGINX is None, reason="nginx is not installed")
def test_real_nginx_t_checks_the_candidate_not_the_live_file(tmp_path):
    """Relative include and relative pid: the test config resolves them as nginx.conf does; the live
    pid file keeps its content (nginx -t opens it without truncating or writing); a bad candidate
    fails although the live file is fine, and the reverse."""
    prefix = tmp_path
    (prefix / "conf" / "conf.d").mkdir(parents=True)
    (prefix / "logs").mkdir()
    (prefix / "conf" / "proxy.inc").write_text("proxy_http_version 1.1;\n")
    main = prefix / "conf" / "nginx.conf"
    main.write_text(
        "pid logs/nginx.pid;\nerror_log logs/error.log;\nevents {}\nhttp {\n"
        "    client_body_temp_path logs; proxy_temp_path logs; fastcgi_temp_path logs;\n"
        "    uwsgi_temp_path logs; scgi_temp_path logs; access_log off;\n"
        "    include conf.d/*.conf;\n"
        "    server { listen 127.0.0.1:1; location / { include proxy.inc; proxy_pass http://$demo_backend; } }\n"
        "}\n")
    live = prefix / "conf" / "conf.d" / LIVE
    good = nu.render("demo", nu.normalize_pools({"blue": ["127.0.0.1:8081"]}), nu.normalize_shares({"blue": 100}))
    live.write_text(good)
    cand = prefix / "conf" / "conf.d" / (".%s.x.candidate" % LIVE)
    (prefix / "logs" / "nginx.pid").write_text("4242\n")

    def nginx_t(candidate_text):
        cand.write_text(candidate_text)
        cfg = tc.NginxTestConfig(str(main), str(live), str(cand))
        try:
            path = cfg.build()
            proc = subprocess.run([NGINX, "-c", path, "-p", str(prefix), "-t"], capture_output=True, text=True)
            return proc.returncode, cfg.translate(proc.stderr)
        finally:
            cfg.cleanup()

    rc, err = nginx_t(good.replace("upstream demo_blue {", "upstream demo_blue {\n    bogus_directive;"))
    assert rc != 0 and 'unknown directive "bogus_directive" in %s:' % live in err, err
    assert live.read_text() == good
    live.write_text("this is broken;\n")  # the live file is not what nginx -t reads
    rc, err = nginx_t(good)
    assert rc == 0, err
    assert (prefix / "logs" / "nginx.pid").read_text() == "4242\n"
    assert [n for n in os.listdir(str(prefix / "conf")) if n.startswith(".")] == []
