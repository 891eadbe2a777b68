"""The release model: names, the secret rule, gate defaults and the plan from record + nginx."""
import pytest

from ansible_collections.greenflow.platform.plugins.module_utils import _release_model as model
from ansible_collections.greenflow.platform.plugins.module_utils import _release_record as rr

NOW = 1_800_000_000.0
STALE = 7200


# ----------------------------------------------------------------- colours and names


def test_other_colour():
    assert model.other("blue") == "green"
    assert model.other("green") == "blue"
    with pytest.raises(model.ReleaseModelError, match="blue or green"):
        model.other("red")


@pytest.mark.parametrize("app", ["demo", "a", "my-shop", "my_shop", "shop-api-2", "x" * 48])
def test_app_names_ok(app):
    assert model.check_app(app) == app


@pytest.mark.parametrize("app", ["", "Demo", "1app", "-x", "_x", "de mo", "demo;", "x" * 49, "demo\n", "dé", None, 5])
def test_app_names_refused(app):
    with pytest.raises(model.ReleaseModelError, match="not a valid name"):
        model.check_app(app)


def test_names_derived_from_the_app():
    assert model.service_name("my-shop", "green") == "my-shop-green"
    assert model.upstream_name("my-shop", "blue") == "my_shop_blue"
    assert model.backend_variable("my-shop") == "$my_shop_backend"
    assert model.nginx_conf_name("my-shop") == "greenflow-upstream-my_shop.conf"
    assert model.record_path("my-shop") == "/var/lib/greenflow/releases/my-shop.json"
    assert model.record_path("demo", "/srv/r/") == "/srv/r/demo.json"
    # names without '-' are what they were before '-' was allowed
    assert model.upstream_name("demo", "green") == "demo_green"
    assert model.nginx_conf_name("demo") == "greenflow-upstream-demo.conf"


def test_an_nginx_id_clash_is_refused_by_the_owner_check():
    assert model.nginx_id("my-shop") == model.nginx_id("my_shop")
    with pytest.raises(model.ReleaseModelError, match="both become 'my_shop' in nginx names"):
        model.check_owner("my_shop", "my-shop")
    with pytest.raises(model.ReleaseModelError, match="belongs to app 'other'"):
        model.check_owner("other", "my-shop")
    model.check_owner(None, "my-shop")
    model.check_owner("my-shop", "my-shop")


# ----------------------------------------------------------------- secrets in release_env


@pytest.mark.parametrize("key", [
    "DB_PASSWORD", "password", "dbPassword", "PASSWD", "MYSQL_PASSWD", "SECRET_KEY_BASE", "client_secret",
    "MYSECRETS", "API_KEY", "APIKEY", "apiKey", "api-key", "AWS_ACCESS_KEY_ID", "PRIVATE_KEY", "GITHUB_TOKEN",
    "ACCESSTOKEN", "token", "DB_PASS", "GCP_CREDENTIALS", "jwt.signing.key",
])
def test_secret_looking_keys(key):
    assert model.looks_secret(key)


@pytest.mark.parametrize("key", [
    "KEYBOARD_LAYOUT", "TOKENIZER_MODEL", "KEYCLOAK_URL", "DEMO_ERROR_RATE", "FEATURE_X", "BYPASS_CACHE",
    "COMPASS_URL", "PWD", "PASSENGER_MODE", "LOG_LEVEL",
])
def test_keys_that_are_not_secrets(key):
    assert not model.looks_secret(key)


def test_release_env_with_secrets_is_refused_naming_them_and_the_way_out():
    with pytest.raises(model.ReleaseModelError) as err:
        model.check_release_env({"FEATURE_X": "on", "DB_PASSWORD": "x", "API_KEY": "y"})
    msg = str(err.value)
    assert "API_KEY, DB_PASSWORD" in msg and "app_release_secrets" in msg and "Nothing was changed" in msg
    assert "'x'" not in msg and "'y'" not in msg  # the values never reach the message


def test_release_env_without_secrets_passes():
    assert model.check_release_env({"FEATURE_X": "on"}) == {"FEATURE_X": "on"}
    assert model.check_release_env(None) == {}
    assert model.secret_keys({"b_token": 1, "a_key": 2, "c": 3}) == ["a_key", "b_token"]
    with pytest.raises(model.ReleaseModelError, match="must be a dict"):
        model.check_release_env(["DB_PASSWORD"])


def test_the_record_refuses_to_store_a_secret():
    record = rr.empty_record("demo")
    with pytest.raises(rr.ReleaseRecordError, match="DB_PASSWORD"):
        rr.begin(record, "deploy", {"version": "1", "color": "blue", "env": {"DB_PASSWORD": "x"}}, NOW, STALE)
    assert record["releases"] == []


def test_a_rollback_is_never_refused_but_its_entry_drops_secret_looking_keys():
    record = rr.empty_record("demo")
    _deploy(record, "1", "blue")
    record["releases"][0]["env"] = {"DB_PASSWORD": "old", "FEATURE_X": "on"}  # recorded before the rule
    _deploy(record, "2", "green")
    entry = rr.begin(record, "rollback", {"version": "1", "color": "blue", "restores": 1,
                                          "env": dict(record["releases"][0]["env"])}, NOW, STALE)
    assert entry["env"] == {"FEATURE_X": "on"}


# ----------------------------------------------------------------- gates


def test_gate_defaults_and_spec():
    assert model.gate_defaults()["steps"] == [5, 25, 50, 100]
    assert model.gate_defaults(["min_requests"]) == {"min_requests": 50}
    spec = model.gate_argument_spec()
    assert spec["steps"] == {"type": "list", "elements": "int", "default": [5, 25, 50, 100]}
    spec["steps"]["default"].append(7)  # copies: nobody changes the model by accident
    assert model.GATE_SPEC["steps"]["default"] == [5, 25, 50, 100]
    assert set(model.JUDGING_GATES) <= set(model.GATE_SPEC)


# ----------------------------------------------------------------- reconcile


def _deploy(record, version, color, outcome="succeeded", now=NOW):
    entry = rr.begin(record, "deploy", {"version": version, "color": color, "user": "ann"}, now, STALE)
    if outcome:
        rr.finish(record, entry["id"], outcome, {})
    return entry


def _rollback(record, now=NOW):
    target = rr.rollback_target(record)
    entry = rr.begin(record, "rollback", {"version": target["version"], "color": target["color"],
                                          "restores": target["id"]}, now, STALE)
    rr.finish(record, entry["id"], "succeeded", {})


def _two_releases():
    record = rr.empty_record("demo")
    _deploy(record, "1", "blue")
    _deploy(record, "2", "green")
    return record


def test_first_release():
    plan = rr.plan(rr.empty_record("demo"), {}, NOW, STALE)
    assert plan["kind"] == model.FIRST_RELEASE
    assert (plan["from_color"], plan["to_color"], plan["deploy_allowed"], plan["lock"]) == ("", "blue", True, "free")
    assert plan["rollback"]["possible"] is False and plan["rollback"]["target"] == {}
    assert "first one goes to blue" in plan["message"]


def test_first_release_over_a_split_nginx_already_has():
    plan = rr.plan(rr.empty_record("demo"), {"blue": 100, "green": 0}, NOW, STALE)
    assert plan["kind"] == model.FIRST_RELEASE and plan["deploy_allowed"]
    assert "nginx already has a split" in plan["message"]


def test_normal_one_release_nowhere_to_roll_back():
    record = rr.empty_record("demo")
    _deploy(record, "1", "blue")
    plan = rr.plan(record, {"blue": 100, "green": 0}, NOW, STALE)
    assert plan["kind"] == model.NORMAL
    assert (plan["from_color"], plan["to_color"], plan["deploy_allowed"]) == ("blue", "green", True)
    assert plan["rollback"]["possible"] is False
    assert "no earlier release" in plan["message"]


def test_normal_rollback_goes_to_the_release_under_the_live_one():
    plan = rr.plan(_two_releases(), {"green": 100}, NOW, STALE)
    assert plan["kind"] == model.NORMAL
    assert (plan["from_color"], plan["to_color"]) == ("green", "blue")
    rb = plan["rollback"]
    assert rb["possible"] and not rb["restore_live"] and not rb["needs_force"] and rb["closes"] == 0
    assert (rb["target"]["version"], rb["target"]["color"], rb["from_color"]) == ("1", "blue", "green")
    assert "A rollback goes to 1 on blue" in plan["message"]


def test_normal_after_a_rollback_the_next_rollback_goes_further_back():
    record = _two_releases()
    _deploy(record, "3", "blue")
    _rollback(record)  # back on 2, green
    plan = rr.plan(record, {"green": 100, "blue": 0}, NOW, STALE)
    assert plan["kind"] == model.NORMAL and plan["rollback"]["target"]["version"] == "1"


def test_a_rollback_target_on_the_live_colour_is_not_possible():
    record = rr.empty_record("demo")
    _deploy(record, "1", "blue")
    _deploy(record, "2", "green")
    _deploy(record, "3", "green", outcome=None)  # never happens through deploy.yml, but a record can say so
    record["releases"][-1]["outcome"] = "succeeded"
    plan = rr.plan(record, {"green": 100}, NOW, STALE)
    assert plan["rollback"]["target"]["color"] == "green" and plan["rollback"]["possible"] is False


@pytest.mark.parametrize("green", [5, 25, 50, 95])
def test_interrupted_dead_run_at_step_k(green):
    record = _two_releases()  # 2 on green is live
    _deploy(record, "3", "blue", outcome=None)  # the cutover to blue died, its entry is open
    plan = rr.plan(record, {"blue": 100 - green, "green": green}, NOW + 60, STALE)
    assert plan["kind"] == model.INTERRUPTED and plan["step_share"] == 100 - green
    assert plan["deploy_allowed"] is False and plan["lock"] == "held"
    rb = plan["rollback"]
    assert rb["restore_live"] and rb["possible"] and rb["needs_force"]
    assert (rb["target"]["version"], rb["target"]["color"], rb["from_color"]) == ("2", "green", "blue")
    assert rb["closes"] == record["releases"][-1]["id"]
    assert "stopped at %d %%" % (100 - green) in plan["message"] and "Open: deploy 3" in plan["message"]


def test_interrupted_without_an_open_entry():
    record = _two_releases()
    plan = rr.plan(record, {"blue": 25, "green": 75}, NOW, STALE)
    assert plan["kind"] == model.INTERRUPTED and plan["lock"] == "free"
    assert plan["rollback"]["restore_live"] and not plan["rollback"]["needs_force"]
    assert plan["rollback"]["closes"] == 0 and plan["rollback"]["target"]["version"] == "2"


def test_record_and_nginx_disagree():
    record = _two_releases()  # the record: 2 on green
    plan = rr.plan(record, {"blue": 100, "green": 0}, NOW, STALE)
    assert plan["kind"] == model.DISAGREE and plan["deploy_allowed"] is False
    assert plan["rollback"]["restore_live"] and plan["rollback"]["target"]["color"] == "green"
    assert "disagree" in plan["message"]


def test_nginx_without_a_split_for_a_live_release_disagrees():
    plan = rr.plan(_two_releases(), {}, NOW, STALE)
    assert plan["kind"] == model.DISAGREE and plan["nginx_shares"] == {}
    assert "no split on nginx" in plan["message"]


def test_entry_in_progress_someone_deploying_or_dead():
    record = _two_releases()
    _deploy(record, "3", "blue", outcome=None, now=NOW)
    plan = rr.plan(record, {"green": 100}, NOW + 10, STALE)  # still starting the new colour
    assert plan["kind"] == model.IN_PROGRESS and plan["lock"] == "held"
    assert plan["deploy_allowed"] is True  # nginx is fine; release_record's begin still refuses without force
    rb = plan["rollback"]
    assert rb["restore_live"] and rb["needs_force"] and rb["target"]["version"] == "2"
    assert "release_force=true" in plan["message"] and "by ann" in plan["message"]


def test_first_release_in_progress():
    record = rr.empty_record("demo")
    _deploy(record, "1", "blue", outcome=None)
    plan = rr.plan(record, {}, NOW + 10, STALE)
    assert plan["kind"] == model.IN_PROGRESS and plan["to_color"] == "blue"
    assert plan["rollback"]["possible"] is False


def test_stale_lock():
    record = _two_releases()
    _deploy(record, "3", "blue", outcome=None, now=NOW)
    plan = rr.plan(record, {"green": 100}, NOW + STALE, STALE)
    assert plan["kind"] == model.STALE_LOCK and plan["lock"] == "stale"
    # a deploy's begin closes it by itself; rollback.yml still counts any open entry (and asks for force)
    assert plan["rollback"]["needs_force"] and plan["rollback"]["restore_live"]
    assert "never finished" in plan["message"]
    assert rr.in_progress(record, NOW + STALE, STALE) is None


@pytest.mark.parametrize("shares", [None, {}, {"blue": 0, "green": 0}])
def test_no_split_on_nginx_is_the_same_whatever_its_spelling(shares):
    assert model.reconcile(None, None, None, shares, NOW, STALE)["nginx_shares"] == {}


def test_every_kind_is_covered():
    assert set(model.KINDS) == {"first_release", "normal", "interrupted", "disagree", "in_progress", "stale_lock"}


def test_the_plan_names_the_services_of_both_colours():
    plan = rr.plan(rr.empty_record("my-shop"), {}, NOW, STALE)
    assert plan["services"] == {"blue": "my-shop-blue", "green": "my-shop-green"}


def test_step_dwells_one_number_or_one_per_step():
    assert model.step_dwells(60, [5, 25, 50, 100]) == [60.0] * 4
    assert model.step_dwells([300, 600, 900, 900], [5, 25, 50, 100]) == [300.0, 600.0, 900.0, 900.0]
    assert model.step_dwells("2.5", [100]) == [2.5]
    assert model.step_dwells(60, []) == []


@pytest.mark.parametrize("value,steps,msg", [
    ([60, 60], [5, 25, 50, 100], "2 values for 4 steps"),
    ([], [100], "0 values for 1 steps"),
    (0, [100], "> 0"),
    (-5, [100], "> 0"),
    (3600.5, [100], "<= 3600"),
    (True, [100], "must be a number"),
    ({"a": 1}, [100], "must be a number"),
    ([60, None], [50, 100], "must be a number"),
])
def test_step_dwells_refuses_what_is_not_a_dwell(value, steps, msg):
    with pytest.raises(model.ReleaseModelError) as err:
        model.step_dwells(value, steps)
    assert msg in str(err.value)
