"""The app_release role checks app names with the release model's rule (the same pattern, matched whole)."""
import os

import pytest
import yaml
from ansible.plugins.test.core import regex

from ansible_collections.greenflow.platform.plugins.module_utils import _release_model as model

ROLE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                    "roles", "app_release")


def _load(*path):
    with open(os.path.join(ROLE, *path)) as handle:
        return yaml.safe_load(handle)


def test_the_roles_pattern_is_the_models():
    assert _load("vars", "main.yml")["app_release_name_pattern"] == model.APP_NAME_PATTERN


def test_validate_matches_the_whole_name_with_that_pattern():
    that = _load("tasks", "validate.yml")[0]["ansible.builtin.assert"]["that"]
    assert "app_release_name is regex(app_release_name_pattern, match_type='fullmatch')" in that
    assert not [cond for cond in that if "app_release_name is match" in cond]


@pytest.mark.parametrize("app", ["demo", "my-shop", "my_shop", "x" * 48, "x" * 49, "Demo", "1app", "demo\n", "-x", ""])
def test_the_roles_check_agrees_with_the_model(app):
    try:
        model.check_app(app)
        valid = True
    except model.ReleaseModelError:
        valid = False
    assert regex(app, model.APP_NAME_PATTERN, match_type="fullmatch") is valid


def test_the_roles_service_name_is_the_models():
    # the role writes the model's rule once, in Jinja: <app>-<colour>
    assert _load("vars", "main.yml")["app_release_service_name"] == "{{ app_release_name }}-{{ app_release_color }}"
    assert model.service_name("my-shop", "green") == "my-shop-green"
    for name in ("status.yml", "scale.yml", "main.yml"):
        with open(os.path.join(ROLE, "tasks", name)) as handle:
            assert "{{ app_release_name }}-{{ app_release_color }}" not in handle.read(), name


def test_the_load_balancer_role_has_the_same_rule_and_nginx_ids():
    lb = os.path.join(os.path.dirname(ROLE), "nginx_lb")
    with open(os.path.join(lb, "vars", "main.yml")) as handle:
        assert yaml.safe_load(handle)["__nginx_lb_name_pattern"] == model.APP_NAME_PATTERN
    with open(os.path.join(lb, "tasks", "validate.yml")) as handle:
        assert "is regex(__nginx_lb_name_pattern, match_type='fullmatch')" in handle.read()
    # every nginx name and file name the role builds from an app name goes through the model's nginx_id
    for path in ("templates/vhost.conf.j2", "templates/nginx.conf.j2", "tasks/upstream.yml", "tasks/split_mode.yml",
                 "tasks/configure.yml"):
        with open(os.path.join(lb, path)) as handle:
            text = handle.read()
        assert "greenflow-upstream-{{ nginx_lb_app.name }}" not in text and "${{ app.name }}" not in text, path
    assert model.nginx_id("my-shop") == "my_shop" and model.nginx_conf_name("my-shop") == "greenflow-upstream-my_shop.conf"
