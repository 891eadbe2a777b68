"""The monitoring role's alert rules, checked and unit-tested with promtool (Debian's prometheus package).

The rule template is rendered with the role's defaults (its [[ ]] / [% %] delimiters, as the role's
template task does), then `promtool check rules` and `promtool test rules` run on it: every alert fires on
a series past its threshold only after its `for:`, and stays silent on a healthy one
(tests/integration/monitoring/rules_test.yml). Skipped when promtool is not installed.
"""
import json
import os
import shutil
import subprocess

import jinja2
import pytest
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ROLE = os.path.join(REPO, "roles", "monitoring")
HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "monitoring")
PROMTOOL = shutil.which("promtool")

pytestmark = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian package prometheus)")


def defaults():
    with open(os.path.join(ROLE, "defaults", "main.yml")) as f:
        values = yaml.safe_load(f)
    return {k: v for k, v in values.items() if k.startswith("monitoring_alert_") or k == "monitoring_extra_rule_groups"}


def render(**overrides):
    env = jinja2.Environment(variable_start_string="[[", variable_end_string="]]", block_start_string="[%",
                             block_end_string="%]", keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
    env.filters["to_nice_yaml"] = lambda v, indent=2: yaml.safe_dump(v, indent=indent, default_flow_style=False,
                                                                     sort_keys=False)
    with open(os.path.join(ROLE, "templates", "greenflow.rules.yml.j2")) as f:
        template = env.from_string(f.read())
    variables = defaults()
    variables.update(overrides, ansible_managed="test")
    return template.render(**variables)


def promtool(*args, cwd):
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.fixture
def rules_dir(tmp_path):
    (tmp_path / "greenflow.rules.yml").write_text(render())
    shutil.copy(os.path.join(HERE, "rules_test.yml"), tmp_path / "rules_test.yml")
    return tmp_path


def test_rules_pass_promtool_check(rules_dir):
    proc = promtool("check", "rules", "greenflow.rules.yml", cwd=rules_dir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: 18 rules found" in proc.stdout


def test_every_alert_has_a_firing_unit_test():
    rules = yaml.safe_load(render())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    with open(os.path.join(HERE, "rules_test.yml")) as f:
        tests = yaml.safe_load(f)
    fired = {case["alertname"] for t in tests["tests"] for case in t["alert_rule_test"] if case["exp_alerts"]}
    silent = {case["alertname"] for t in tests["tests"] for case in t["alert_rule_test"]}
    assert alerts == fired, "alerts without a firing test: %s" % sorted(alerts - fired)
    assert alerts == silent


def test_rules_unit_tests(rules_dir):
    proc = promtool("test", "rules", "rules_test.yml", cwd=rules_dir)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_short_durations_for_the_lab_render_and_check(tmp_path):
    (tmp_path / "r.yml").write_text(render(monitoring_alert_critical_for="10s", monitoring_alert_warning_for="30s",
                                           monitoring_alert_down_for="20s", monitoring_alert_http_window="1m"))
    proc = promtool("check", "rules", "r.yml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rules = yaml.safe_load((tmp_path / "r.yml").read_text())
    fors = {r["alert"]: r.get("for") for g in rules["groups"] for r in g["rules"]}
    assert fors["HttpErrorRateHigh"] == "10s" and fors["CpuBusy"] == "30s" and fors["PostgresqlDown"] == "10s"
    # the release event fires at its first evaluation (the metric is already the event)
    assert fors["ReleaseRolledBackAutomatically"] is None
    exprs = {r["alert"]: r["expr"] for g in rules["groups"] for r in g["rules"]}
    for alert in ("HttpErrorRateHigh", "ResponseTimeHigh"):
        assert "[1m]" in exprs[alert] and "[5m]" not in exprs[alert], exprs[alert]


def test_extra_rule_groups_are_appended(tmp_path):
    extra = [{"name": "mine", "rules": [{"alert": "Mine", "expr": "vector(1) > 0", "labels": {"severity": "warning"}}]}]
    (tmp_path / "r.yml").write_text(render(monitoring_extra_rule_groups=extra))
    proc = promtool("check", "rules", "r.yml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "19 rules found" in proc.stdout


def test_a_broken_expression_is_refused(tmp_path):
    (tmp_path / "r.yml").write_text(render(monitoring_alert_latency_seconds="3 +"))
    proc = promtool("check", "rules", "r.yml", cwd=tmp_path)
    assert proc.returncode != 0


# --- Alertmanager's configuration (amtool) and the mtail program (mtail --one_shot) -----------------------

AMTOOL = shutil.which("amtool")
MTAIL = shutil.which("mtail")


def render_plain(name, **variables):
    """A role template with Ansible's default delimiters and the few filters it uses."""
    env = jinja2.Environment(keep_trailing_newline=True, undefined=jinja2.StrictUndefined,
                             extensions=["jinja2.ext.do"])
    env.filters["to_nice_yaml"] = lambda v, indent=2, sort_keys=True, width=80: yaml.safe_dump(
        v, indent=indent, default_flow_style=False, sort_keys=sort_keys, width=width)
    env.filters["bool"] = bool
    with open(os.path.join(ROLE, "templates", name)) as f:
        return env.from_string(f.read()).render(ansible_managed="test", **variables)


def alertmanager_vars(**overrides):
    with open(os.path.join(ROLE, "defaults", "main.yml")) as f:
        values = {k: v for k, v in yaml.safe_load(f).items() if k.startswith("monitoring_alert_")}
    values.update(monitoring_alert_webhook_url="https://hooks.example.com/services/T0/B0/secret",
                  monitoring_alert_email_from="alertmanager@mon-1")
    values.update(overrides)
    return values


@pytest.mark.skipif(AMTOOL is None, reason="amtool not installed (Debian package prometheus-alertmanager)")
@pytest.mark.parametrize("overrides", [
    {},
    {"monitoring_alert_webhook_plain": True},
    {"monitoring_alert_email_to": ["ops@example.com"], "monitoring_alert_email_smarthost": "smtp.example.com:587",
     "monitoring_alert_email_username": "alerts", "monitoring_alert_email_password": "pw"},
], ids=["slack", "plain-webhook", "slack-and-email"])
def test_alertmanager_config_passes_amtool(tmp_path, overrides):
    text = render_plain("alertmanager.yml.j2", **alertmanager_vars(**overrides))
    (tmp_path / "alertmanager.yml").write_text(text)
    proc = subprocess.run([AMTOOL, "check-config", str(tmp_path / "alertmanager.yml")], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr + text
    conf = yaml.safe_load(text)
    assert conf["route"]["group_by"] == ["alertname", "instance"]
    assert conf["route"]["repeat_interval"] == "4h"
    assert conf["inhibit_rules"] == [{"source_matchers": ["severity = critical"],
                                      "target_matchers": ["severity = warning"], "equal": ["instance"]}]
    receiver = conf["receivers"][0]
    kind = "webhook_configs" if overrides.get("monitoring_alert_webhook_plain") else "slack_configs"
    target = receiver[kind][0]
    assert target["send_resolved"] is True
    assert target.get("url", target.get("api_url")) == "https://hooks.example.com/services/T0/B0/secret"
    assert ("email_configs" in receiver) == bool(overrides.get("monitoring_alert_email_to"))


@pytest.mark.skipif(AMTOOL is None, reason="amtool not installed (Debian package prometheus-alertmanager)")
def test_a_bad_alertmanager_config_is_refused_by_amtool(tmp_path):
    text = render_plain("alertmanager.yml.j2", **alertmanager_vars(monitoring_alert_group_wait="soon"))
    (tmp_path / "alertmanager.yml").write_text(text)
    proc = subprocess.run([AMTOOL, "check-config", str(tmp_path / "alertmanager.yml")], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode != 0


SAMPLE_LOG = [
    {"status": "200", "request_time": "0.012", "app": "shop", "pool": "blue"},
    {"status": "200", "request_time": "0.200", "app": "shop", "pool": "blue"},
    {"status": "500", "request_time": "4.000", "app": "shop", "pool": "green"},
    {"status": "404", "request_time": "0.000", "app": "", "pool": ""},     # no app: not counted
]


def access_log_line(entry):
    """One line in the nginx_lb role's log format (the keys in its order, every value a string)."""
    line = {"msec": "1700000000.123", "time": "2023-11-14T22:13:20+00:00", "status": entry["status"],
            "request_time": entry["request_time"], "upstream_addr": "10.0.0.2:8001", "upstream_status": entry["status"],
            "upstream_response_time": entry["request_time"], "upstream_connect_time": "0.001", "request_id": "abc",
            "host": "shop.example.com", "request": "GET / HTTP/1.1", "request_method": "GET",
            "remote_addr": "192.0.2.7", "body_bytes_sent": "12", "http_user_agent": "curl \"quoted\" ua",
            "http_referer": "", "app": entry["app"], "pool": entry["pool"]}
    return json.dumps(line, separators=(",", ":"))


def test_the_mtail_program_matches_the_nginx_log_format():
    """The mtail program's regular expression relies on the order of the keys of nginx_lb's log_format."""
    with open(os.path.join(REPO, "roles", "nginx_lb", "templates", "nginx.conf.j2")) as f:
        conf = f.read()
    fmt = conf[conf.index("log_format greenflow_json"):conf.index("access_log {{ nginx_lb_access_log_json }}")]
    assert '"status":"$status","request_time":"$request_time"' in fmt
    assert fmt.rstrip().endswith('"app":"$greenflow_app","pool":"$greenflow_pool"}\';')


@pytest.mark.skipif(MTAIL is None, reason="mtail not installed (Debian package mtail)")
def test_mtail_counts_requests_per_colour(tmp_path):
    progs = tmp_path / "progs"
    progs.mkdir()
    (progs / "greenflow_nginx.mtail").write_text(
        render_plain("greenflow_nginx.mtail.j2", monitoring_latency_buckets=[0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10]))
    log = tmp_path / "access.json"
    log.write_text("".join(access_log_line(e) + "\n" for e in SAMPLE_LOG))
    proc = subprocess.run([MTAIL, "--one_shot", "--progs", str(progs), "--logs", str(log), "--port", "0",
                           "--logtostderr"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads(proc.stdout)
    counts = {tuple(v["Labels"]): v["Value"]["Value"]
              for v in metrics["greenflow_http_requests_total"][0]["LabelValues"]}
    assert counts == {("shop", "blue", "200"): 2, ("shop", "green", "500"): 1}
    hist = {tuple(v["Labels"]): v["Value"] for v in metrics["greenflow_http_request_duration_seconds"][0]["LabelValues"]}
    assert hist[("shop", "blue")]["Count"] == 2 and abs(hist[("shop", "blue")]["Sum"] - 0.212) < 1e-9
    assert hist[("shop", "green")]["Buckets"]["5"] == 1


@pytest.mark.skipif(MTAIL is None, reason="mtail not installed (Debian package mtail)")
def test_a_broken_mtail_program_is_refused(tmp_path):
    progs = tmp_path / "progs"
    progs.mkdir()
    (progs / "bad.mtail").write_text("counter x by\n/(/ { x++ }\n")
    proc = subprocess.run([MTAIL, "--compile_only", "--progs", str(progs)], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0


@pytest.mark.skipif(MTAIL is None, reason="mtail not installed (Debian package mtail)")
@pytest.mark.parametrize("program,ok", [("counter x by\n/(/ { x++ }\n", False), ("counter x\n/a/ {\n  x++\n}\n", True)],
                         ids=["broken", "good"])
def test_the_roles_mtail_check_on_a_temporary_file(tmp_path, program, ok):
    """The role's validate command, on a file without the .mtail suffix (as the template module's is)."""
    with open(os.path.join(ROLE, "vars", "main.yml")) as f:
        command = yaml.safe_load(f)["__monitoring_mtail_validate"]
    candidate = tmp_path / "tmpXYZ"
    candidate.write_text(program)
    proc = subprocess.run(command.replace("%s", str(candidate)), shell=True, capture_output=True, text=True,
                          timeout=60)
    assert (proc.returncode == 0) == ok, proc.stderr[-2000:]


# --- The Grafana dashboards ---------------------------------------------------------------------------------

DASHBOARDS = os.path.join(ROLE, "files", "grafana")


def dashboard_queries():
    out = []
    for name in sorted(os.listdir(DASHBOARDS)):
        with open(os.path.join(DASHBOARDS, name)) as f:
            board = json.load(f)
        for panel in board["panels"]:
            for target in panel["targets"]:
                out.append((name, panel["title"], target["expr"]))
    return out


def test_dashboards_are_provisioning_ready():
    names = sorted(os.listdir(DASHBOARDS))
    assert names == ["greenflow-hosts.json", "greenflow-overview.json", "greenflow-postgresql.json",
                     "greenflow-releases.json"]
    uids = set()
    for name in names:
        with open(os.path.join(DASHBOARDS, name)) as f:
            board = json.load(f)
        assert board["uid"] == name[:-5] and board["uid"] not in uids
        uids.add(board["uid"])
        assert [v["name"] for v in board["templating"]["list"]] == ["datasource"]
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)) and board["panels"]
        for panel in board["panels"]:
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"])


def test_every_dashboard_query_parses(tmp_path):
    """Each panel's PromQL, as a recording rule, through `promtool check rules` (the lab test runs them)."""
    rules = [{"record": "greenflow:dashboard_query:%d" % n, "expr": expr}
             for n, (_, _, expr) in enumerate(dashboard_queries())]
    (tmp_path / "d.yml").write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    proc = promtool("check", "rules", "d.yml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
