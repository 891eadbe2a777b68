"""The monitoring role's alert rules, checked and unit-tested with promtool (Debian's prometheus package).

The rule template is rendered with the role's defaults (its [[ ]] / [% %] delimiters, as the role's
template task does), then `promtool check rules` and `promtool test rules` run on it: every alert fires on
a series past its threshold only after its `for:`, and stays silent on a healthy one
(tests/integration/monitoring/rules_test.yml). Skipped when promtool is not installed.
"""
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
    assert "SUCCESS: 16 rules found" in proc.stdout


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
                                           monitoring_alert_down_for="20s"))
    proc = promtool("check", "rules", "r.yml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rules = yaml.safe_load((tmp_path / "r.yml").read_text())
    fors = {r["alert"]: r["for"] for g in rules["groups"] for r in g["rules"]}
    assert fors["HttpErrorRateHigh"] == "10s" and fors["CpuBusy"] == "30s" and fors["PostgresqlDown"] == "10s"


def test_extra_rule_groups_are_appended(tmp_path):
    extra = [{"name": "mine", "rules": [{"alert": "Mine", "expr": "vector(1) > 0", "labels": {"severity": "warning"}}]}]
    (tmp_path / "r.yml").write_text(render(monitoring_extra_rule_groups=extra))
    proc = promtool("check", "rules", "r.yml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "17 rules found" in proc.stdout


def test_a_broken_expression_is_refused(tmp_path):
    (tmp_path / "r.yml").write_text(render(monitoring_alert_latency_seconds="3 +"))
    proc = promtool("check", "rules", "r.yml", cwd=tmp_path)
    assert proc.returncode != 0
