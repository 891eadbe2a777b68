# -*- coding: utf-8 -*-
# Copyright: greenflow platform engineers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The release model: every rule of a blue/green release in one place, without I/O.

Private to this collection (the leading underscore): no stable API promise outside it.

- colours: ``blue`` and ``green``, ``other(colour)``;
- the app-name rule, and every name derived from it (swarm services, nginx upstreams and variable,
  the managed nginx file, the release record's file);
- the gate defaults of the cutover (``GATE_SPEC``), which the action plugin, ``_cutover_gates`` and the
  doc fragment ``greenflow.platform.gates`` follow;
- the secret rule for ``release_env`` (the release record keeps that environment, so it must not hold
  secrets);
- ``reconcile``: the plan derived from the release record and nginx's split (what deploy.yml and
  rollback.yml do next).

Modules, the action plugin and the playbooks (through ``release_record``'s ``plan``) read these rules;
nobody writes a copy of them. The role's ``validate.yml`` holds the name pattern in Jinja; a unit test
keeps it equal to ``APP_NAME_PATTERN``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

BLUE = "blue"
GREEN = "green"
COLOURS = (BLUE, GREEN)


class ReleaseModelError(ValueError):
    """Input that breaks a release rule; the message is meant for the operator."""


def other(colour):
    """The other colour: blue <-> green."""
    if colour not in COLOURS:
        raise ReleaseModelError("colour must be blue or green, got %r" % (colour,))
    return GREEN if colour == BLUE else BLUE


# ---------------------------------------------------------------- app names

# One rule for every place that takes an app name (role, record, nginx, cutover). Lowercase only: the
# name becomes docker service names, nginx names and file names, and two names that differ only in case
# would be the same app on a case-insensitive file system. 48 characters leave room for the longest
# derived name ("<app>-green": 54 of docker's 63). Used with re.fullmatch, so no anchors: "$" would let
# a trailing newline through.
APP_NAME_MAX = 48
APP_NAME_PATTERN = r"[a-z][a-z0-9_-]{0,%d}" % (APP_NAME_MAX - 1)
_APP_NAME_RE = re.compile(APP_NAME_PATTERN)
APP_NAME_RULE = ("1-%d lowercase letters, digits, '-' and '_', starting with a letter" % APP_NAME_MAX)


def check_app(app):
    """Return ``app`` when it follows the name rule, else raise ReleaseModelError."""
    if not isinstance(app, str) or not _APP_NAME_RE.fullmatch(app):
        raise ReleaseModelError("app %r is not a valid name: use %s" % (app, APP_NAME_RULE))
    return app


def nginx_id(app):
    """The app's name as nginx identifiers can take it.

    nginx variable names allow letters, digits and '_' only, so '-' becomes '_'. The mapping is not
    one-to-one ('my-shop' and 'my_shop' both give 'my_shop'); two apps that meet there would share
    upstream and variable names. They also share the managed file (``nginx_conf_name`` is built from this
    id), whose header names the app that owns it, so the second one is refused with a clear message
    (``check_owner``) instead of nginx failing on a duplicate upstream. Names without '-' are unchanged,
    so files and vhosts written before '-' was allowed keep their names.
    """
    return check_app(app).replace("-", "_")


def check_owner(file_app, app):
    """Refuse to manage an nginx file that belongs to another app; ``file_app`` None: a new file."""
    if file_app is None or file_app == app:
        return
    if _valid(file_app) and nginx_id(file_app) == nginx_id(app):
        raise ReleaseModelError(
            "app %r and app %r both become %r in nginx names (nginx names cannot take '-'); they cannot "
            "share one nginx: rename one of them" % (app, file_app, nginx_id(app)))
    raise ReleaseModelError("the file belongs to app %r, not %r; use one conf_path per app" % (file_app, app))


def _valid(app):
    return isinstance(app, str) and bool(_APP_NAME_RE.fullmatch(app))


def service_name(app, colour):
    """The swarm service of one colour: ``<app>-<colour>``."""
    other(colour)
    return "%s-%s" % (check_app(app), colour)


def upstream_name(app, colour):
    """The nginx upstream block of one colour (also what nginx logs as upstream_addr without a server)."""
    other(colour)
    return "%s_%s" % (nginx_id(app), colour)


def backend_variable(app):
    """The nginx variable split_clients sets; the app's vhost proxies to it."""
    return "$%s_backend" % nginx_id(app)


def nginx_conf_name(app):
    """The file name of the generated nginx file (one per nginx id, see ``nginx_id``)."""
    return "greenflow-upstream-%s.conf" % nginx_id(app)


RECORD_DIR = "/var/lib/greenflow/releases"


def record_path(app, directory=RECORD_DIR):
    """The release record's file (named by the app itself: file names take '-')."""
    return "%s/%s.json" % (directory.rstrip("/"), check_app(app))


# On the other load balancers of the group (the first one holds the record), the cutover's lease lives in a
# copy of the entry in this subdirectory of the records' one; each load balancer's watchdog reads both.
PEER_SUBDIR = "peers"


def peer_record_path(app, primary_path=None):
    """Where a second load balancer keeps its copy of the lease, beside (under) the primary's record path."""
    path = primary_path or record_path(app)
    directory, name = path.rsplit("/", 1) if "/" in path else (".", path)
    return "%s/%s/%s" % (directory, PEER_SUBDIR, name)


# ---------------------------------------------------------------- cutover gates

# Every knob of the cutover with its type and default, once. The action plugin's argument spec is built
# from it, _cutover_gates.DEFAULT_GATES is its judging part, the doc fragment greenflow.platform.gates
# documents it (a unit test compares the defaults), and deploy.yml passes only what the operator set.
GATE_SPEC = {
    "steps": {"type": "list", "elements": "int", "default": [5, 25, 50, 100]},
    # one dwell for every step, or a list with one per step (check with step_dwells)
    "step_seconds": {"type": "raw", "default": 60.0},
    "poll_seconds": {"type": "float", "default": 2.0},
    "max_wait_seconds": {"type": "float", "default": 300.0},
    "min_requests": {"type": "int", "default": 50},
    "max_error_rate": {"type": "float", "default": 0.01},
    "max_p95_ms": {"type": "float", "default": 500.0},
    "abort_error_rate": {"type": "float", "default": 0.05},
    "abort_p95_ms": {"type": "float", "default": 1000.0},
    "abort_min_failures": {"type": "int", "default": 5},
    # the watch after the last step (0: none), judged on a rolling window of its last seconds
    "watch_seconds": {"type": "float", "default": 0.0},
    "watch_window_seconds": {"type": "float", "default": 30.0},
    # resource lines (abort only; 0: off), judged when the cutover is given the new colour's node exporters
    "abort_cpu_percent": {"type": "float", "default": 80.0},
    "abort_memory_percent": {"type": "float", "default": 85.0},
    "abort_resource_samples": {"type": "int", "default": 3},
}
# The longest dwell of one step and the longest watch (a bounded task: an hour each at most).
MAX_STEP_SECONDS = 3600.0
MAX_WATCH_SECONDS = 86400.0
# The gates that judge a step's numbers (the rest shape the steps and their timing).
JUDGING_GATES = ("max_error_rate", "max_p95_ms", "abort_error_rate", "abort_p95_ms", "min_requests",
                 "abort_min_failures", "abort_cpu_percent", "abort_memory_percent", "abort_resource_samples")
# Upper bounds of the resource lines: CPU is a percent of the task's limit (of one core without one: a
# task without a limit may use several), memory a percent of its limit.
MAX_CPU_PERCENT = 6400.0
MAX_MEMORY_PERCENT = 100.0


def gate_defaults(names=None):
    """Defaults of the named gates (all by default), as fresh copies (steps is a list)."""
    names = names or GATE_SPEC.keys()
    return dict((name, _copy(GATE_SPEC[name]["default"])) for name in names)


def gate_argument_spec():
    """The gates as AnsibleModule/validate_argument_spec options (fresh copies)."""
    return dict((name, dict((k, _copy(v)) for k, v in spec.items())) for name, spec in GATE_SPEC.items())


def step_dwells(step_seconds, steps):
    """The dwell of each step, in seconds: ``step_seconds`` is one number for every step or a list
    with one number per step (the runbooks' pacing: a short first look, longer ones later).
    Raises ReleaseModelError naming what is wrong."""
    count = len(steps or [])
    if isinstance(step_seconds, (list, tuple)):
        if len(step_seconds) != count:
            raise ReleaseModelError("step_seconds has %d values for %d steps %r: give one number, or one "
                                    "per step" % (len(step_seconds), count, list(steps or [])))
        values = list(step_seconds)
    else:
        values = [step_seconds] * count
    out = []
    for value in values:
        try:
            if isinstance(value, bool):
                raise ValueError()
            seconds = float(value)
        except (TypeError, ValueError):
            raise ReleaseModelError("step_seconds must be a number of seconds or a list of them, got %r"
                                    % (step_seconds,))
        if not 0 < seconds <= MAX_STEP_SECONDS:
            raise ReleaseModelError("every step's dwell must be > 0 and <= %g seconds, got %r"
                                    % (MAX_STEP_SECONDS, value))
        out.append(seconds)
    return out


def _copy(value):
    return list(value) if isinstance(value, list) else value


# ---------------------------------------------------------------- secrets in release_env

# release_env is kept in the release record (so that a rollback redeploys a release exactly) and shown
# by -v runs: a secret there would be stored on the load balancer in clear. Keys are judged by their
# words (split on anything but letters and digits, compared in upper case):
# - a word containing PASSWORD, PASSWD, SECRET or CREDENTIAL: DB_PASSWORD, DBPASSWD, SECRET_KEY_BASE,
#   MYSECRETS, GCP_CREDENTIALS;
# - a word that is KEY or TOKEN or ends with it: API_KEY, APIKEY, apiKey, GITHUB_TOKEN, ACCESSTOKEN,
#   AWS_ACCESS_KEY_ID; but not KEYBOARD_LAYOUT, TOKENIZER or KEYCLOAK_URL (KEY/TOKEN only start
#   the word there);
# - the word PASS (DB_PASS, SMTP_PASS), but not BYPASS or COMPASS.
# PWD alone is left out (the shell's working directory). False positives (PUBLIC_KEY, MONKEY) are
# refused too: fail safe. The way out is app_release_secrets (swarm secrets) for secrets, and
# app_release_env (group_vars, never recorded) for a value that only looks like one.
_SECRET_INSIDE = ("PASSWORD", "PASSWD", "SECRET", "CREDENTIAL")
_SECRET_ENDING = ("KEY", "TOKEN")
_SECRET_WORDS = ("PASS",)
_WORD_SPLIT_RE = re.compile(r"[^A-Z0-9]+")


def looks_secret(key):
    """True when an environment variable name looks like it holds a secret (see the rule above)."""
    for word in _WORD_SPLIT_RE.split(str(key).upper()):
        if not word:
            continue
        if any(part in word for part in _SECRET_INSIDE):
            return True
        if any(word.endswith(end) for end in _SECRET_ENDING) or word in _SECRET_WORDS:
            return True
    return False


def secret_keys(env):
    """The keys of ``env`` that look like secrets, sorted."""
    return sorted(str(key) for key in (env or {}) if looks_secret(key))


def check_release_env(env):
    """Return ``env`` (a dict) when no key looks like a secret, else raise ReleaseModelError."""
    if env is None:
        return {}
    if not isinstance(env, dict):
        raise ReleaseModelError("release_env must be a dict of NAME: value, got %r" % (type(env).__name__,))
    found = secret_keys(env)
    if found:
        raise ReleaseModelError(
            "release_env holds %s, which look%s like secret%s: release_env is kept in the release record "
            "and shown in verbose output. Put secrets in swarm secrets (app_release_secrets: the service "
            "gets /run/secrets/<name>); a value that only looks like a secret can go in app_release_env "
            "(group_vars, not recorded). Nothing was changed."
            % (", ".join(found), "s" if len(found) == 1 else "", "" if len(found) == 1 else "s"))
    return env


# ---------------------------------------------------------------- the plan: record + nginx

FIRST_RELEASE = "first_release"
NORMAL = "normal"
INTERRUPTED = "interrupted"
DISAGREE = "disagree"
IN_PROGRESS = "in_progress"
STALE_LOCK = "stale_lock"
KINDS = (FIRST_RELEASE, NORMAL, INTERRUPTED, DISAGREE, IN_PROGRESS, STALE_LOCK)


def _shares(nginx_shares):
    """nginx's split as {blue: int, green: int}, or None when nginx has none for the app."""
    if not nginx_shares:
        return None
    out = dict((c, int(nginx_shares.get(c) or 0)) for c in COLOURS)
    return out if sum(out.values()) else None


def _split_text(shares):
    if shares is None:
        return "no split on nginx"
    return ", ".join("%s %d %%" % (c, shares[c]) for c in COLOURS)


def _who(entry):
    return "%s %s (entry %s, by %s, started %s)" % (
        entry.get("action"), entry.get("version"), entry.get("id"), entry.get("user") or "?",
        entry.get("started_at") or "?")


def last_seen(entry):
    """When an open entry's run last showed life: its start, its cutover's last lease renewal, or a
    rollback.yml taking it over (``claimed_by``)."""
    lease = entry.get("lease") or {}
    claimed = entry.get("claimed_by") or {}
    return max(entry.get("started_epoch") or 0, lease.get("renewed_epoch") or 0, claimed.get("epoch") or 0)


def reconcile(live, rollback_target, open_entry, nginx_shares, now, stale_after):
    """The plan for the next deploy or rollback, from the record's state and nginx's split.

    live            -- the deploy entry serving traffic by the record (None before the first one)
    rollback_target -- the deploy entry under it (None when there is none)
    open_entry      -- the newest entry still in progress, however old (None when none is)
    nginx_shares    -- nginx's split for the app ({colour: percent}; None or {} when nginx has none)
    now, stale_after -- an open entry older than stale_after seconds no longer blocks a deploy

    The record's replay (``_release_record.plan``) gives the first three. Returns a dict:

    kind        -- first_release, normal, interrupted (nginx split between the colours: a cutover
                   stopped at step_share), disagree (the record's live colour does not get 100 % and
                   nginx is not split either: 100 % on the other colour, or no split at all),
                   in_progress (record and nginx agree, an entry is in progress: a deploy running now or
                   a dead run), stale_lock (the same, but the entry is older than stale_after)
    from_color, to_color -- what a deploy moves from and to ("" from_color: the first release)
    deploy_allowed -- a deploy may start (nginx sends all traffic to the live release, or there is none);
                   the lock is checked separately (lock, and release_record's begin)
    lock        -- free, held (an entry younger than stale_after: a deploy needs force) or stale (begin
                   closes it as abandoned by itself)
    rollback    -- restore_live (after an interrupted deploy, or while nginx disagrees with the record, a
                   rollback puts traffic back on the live release, not one further back), target (the
                   deploy entry it puts back), from_color, possible, needs_force (an entry is open: make
                   sure that run is dead), closes (the open entry's id it closes as failed, or 0)
    message     -- what is going on, for a human
    """
    shares = _shares(nginx_shares)
    live_color = (live or {}).get("color") or ""
    live_share = shares[live_color] if (shares and live_color) else 0
    stale = bool(open_entry) and now - last_seen(open_entry) >= stale_after
    lock = "free" if not open_entry else ("stale" if stale else "held")

    if not live:
        kind = FIRST_RELEASE
    elif live_share == 100:
        kind = NORMAL
    elif shares and shares[other(live_color)] not in (0, 100):
        kind = INTERRUPTED
    else:
        kind = DISAGREE
    if kind in (FIRST_RELEASE, NORMAL) and open_entry:
        kind = STALE_LOCK if stale else IN_PROGRESS

    # rollback.yml's rule: an entry left open, or nginx not at 100 % on the live release, means the last
    # deploy did not finish; traffic goes back to the live release, which the record still names.
    restore_live = bool(open_entry) or (bool(live) and live_share != 100)
    target = (live if restore_live else rollback_target) or {}
    possible = bool(live) and (restore_live or bool(rollback_target and rollback_target.get("color") != live_color))
    plan = {
        "kind": kind,
        "from_color": live_color,
        "to_color": other(live_color) if live_color else BLUE,
        "deploy_allowed": not live or live_share == 100,
        "nginx_shares": shares or {},
        "step_share": shares[other(live_color)] if kind == INTERRUPTED else 0,
        "lock": lock,
        "open_entry": open_entry or {},
        "live": live or {},
        "rollback": {
            "restore_live": restore_live,
            "target": target,
            "from_color": other(target["color"]) if target.get("color") in COLOURS else "",
            "possible": possible,
            "needs_force": bool(open_entry),
            "closes": open_entry["id"] if (restore_live and open_entry) else 0,
        },
    }
    plan["message"] = _message(plan, live, rollback_target, open_entry, shares)
    return plan


def _message(plan, live, rollback_target, open_entry, shares):
    kind = plan["kind"]
    if kind == FIRST_RELEASE:
        text = "No release is live yet: the first one goes to blue and gets all traffic at once."
        if shares:
            text += " (nginx already has a split, %s, which the first release replaces.)" % _split_text(shares)
    elif kind == NORMAL:
        text = "%s on %s is live with all traffic; a deploy goes to %s." % (
            live.get("version"), live["color"], plan["to_color"])
    elif kind == INTERRUPTED:
        text = ("%s on %s is live by the record, but nginx splits %s: a cutover to %s stopped at %d %% "
                "(a deploy running now, or one that died). rollback.yml puts all traffic back on %s."
                % (live.get("version"), live["color"], _split_text(shares), other(live["color"]),
                   plan["step_share"], live["color"]))
    elif kind == DISAGREE:
        text = ("The record says %s on %s is live, but nginx has %s: record and nginx disagree. "
                "rollback.yml puts all traffic back on %s; check why first."
                % (live.get("version"), live["color"], _split_text(shares), live["color"]))
    elif kind == IN_PROGRESS:
        text = ("%s is in progress: someone is releasing now, or that run died. A deploy or rollback "
                "needs release_force=true once you know it is dead." % _who(open_entry))
    else:
        text = ("%s was never finished and is older than the lock's limit: a deploy takes the lock and "
                "closes it as failed; rollback.yml still asks for release_force=true." % _who(open_entry))
    if open_entry and kind in (INTERRUPTED, DISAGREE):
        text += " Open: %s." % _who(open_entry)
    rollback = plan["rollback"]
    if rollback["possible"]:
        target = rollback["target"]
        text += " A rollback goes to %s on %s." % (target.get("version"), target.get("color"))
    elif live:
        text += " There is no earlier release to roll back to."
    return text
