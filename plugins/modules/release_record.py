#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: release_record
short_description: Keep the release record of an app - what is live, where a rollback goes, the history
version_added: 0.1.0
description:
  - Keeps one JSON file per app on the load balancer host with every deploy, rollback and retire attempt
    (version, image, colour, who, when, outcome, the cutover timeline).
  - Works out which release is live and which one a rollback puts back by replaying the successful
    entries as a stack (a deploy pushes, a rollback pops), so a second rollback goes one release further
    back and a rolled-back release never becomes a rollback target again.
  - An entry left C(in_progress) acts as the deploy lock - O(action=begin) refuses while one younger than
    O(stale_after) exists.
  - Writes atomically under a file lock; a record it cannot parse is never overwritten.
  - Every change of the record (not a lease renewal) also rewrites the app's release metrics for node exporter's
    textfile collector in O(metrics_dir) - the live release, where a rollback goes, the last cutover result
    (docs/monitoring.md).
author:
  - greenflow platform engineers (@greenflow)
options:
  action:
    description:
      - C(read) returns the record and changes nothing.
      - C(begin) appends an in-progress entry (the lock) and returns it with its O(id).
      - C(finish) closes entry O(id) with O(outcome). An entry already closed as failed (by the load balancer's
        watchdog, or a forced run) stays so when the run closes it as failed too - its reason first, the run's as C(run_reason).
      - C(lease) takes the cutover's lease on the in-progress entry O(id) for O(holder) (good for O(lease_ttl)
        seconds), C(renew) extends it, C(release) ends it (the cutover ended by itself). While a lease is
        held and has not run out, the load balancer's release watchdog (role C(nginx_lb)) leaves the entry
        alone; once it runs out, the watchdog puts all traffic back on the entry's O(previous_color) and
        closes the entry as failed ("controller lost"). A renewal after that is refused. docs/cutover.md.
      - C(migration) lays O(migration) over the database migration of the deploy entry O(id) (its status,
        times, output, restore point; see O(migrate)).
    type: str
    choices: [read, begin, finish, lease, renew, release, migration]
    default: read
  path:
    description: The record file. Defaults to C(/var/lib/greenflow/releases/<app>.json).
    type: path
  kind:
    description:
      - With O(action=begin), what the entry is.
      - C(retire) (retire.yml) decides under the record's lock whether the previous colour is to be scaled
        down - nothing in progress, idle (since the live release finished) for at least
        O(keep_previous_hours), not retired yet - and only then appends the entry (the lock while it is
        scaled down; O(color) and O(version) are taken from the record). RV(retire) says what was decided
        and why; with nothing to retire nothing is written and RV(entry) is empty. A retire entry leaves
        the rollback target as it was.
    type: str
    choices: [deploy, rollback, retire]
    default: deploy
  keep_previous_hours:
    description: With O(kind=retire), how long the previous colour is kept running after it went idle.
    type: float
  version:
    description: With O(action=begin), the release version.
    type: str
  image:
    description: With O(action=begin), the image reference of the release.
    type: str
  color:
    description: With O(action=begin), the colour the release runs on.
    type: str
    choices: [blue, green]
  previous_color:
    description: With O(action=begin), the colour that was live before.
    type: str
    choices: [blue, green]
  restores:
    description: With O(action=begin) and O(kind=rollback), the id of the deploy entry this rollback puts back.
    type: int
  user:
    description: Who runs it (recorded as is).
    type: str
  env:
    description:
      - With O(action=begin), the release's own environment (C(release_env)), kept so that a rollback
        can redeploy the release exactly.
      - Secrets belong in swarm secrets (C(app_release_secrets)), not here - a key that looks like a secret
        is refused, with O(action=begin) and O(kind=deploy), and also with O(action=read) (which only checks
        it, so that a playbook can refuse before it changes anything). A rollback (O(kind=rollback)) is never
        refused - it puts back a deploy that may have been recorded before this rule - but its own entry
        keeps the environment without the secret-looking keys. Looks like a secret - a word of the name (split on
        C(_), C(-), C(.)) contains C(PASSWORD), C(PASSWD), C(SECRET) or C(CREDENTIAL), is or ends with
        C(KEY) or C(TOKEN) (C(API_KEY), C(APIKEY), C(GITHUB_TOKEN), not C(KEYBOARD_LAYOUT)), or is C(PASS);
        case does not matter.
      - Returned entries (RV(live), RV(rollback_target), RV(in_progress), RV(entry), RV(history)) name the
        keys only (C(env_keys)) - C(-v) prints every result. The values come back in one place only, the
        C(target) of RV(plan)'s C(rollback), which rollback.yml redeploys exactly.
    type: dict
  backup:
    description:
      - With O(action=begin) and O(kind=deploy), the backup the release's backup gate found (what
        M(greenflow.platform.backup_gate) returns in RV(greenflow.platform.backup_gate#module:newest_verified), and C(taken_first) when the
        release took it), kept with the entry - the restore point of the release.
    type: dict
  nginx_shares:
    description:
      - nginx's current split of the app, as M(greenflow.platform.nginx_upstream) returns it when it only
        reads (its C(shares); an empty dict when nginx has no file for
        the app). Given, the module returns RV(plan), the release model's reading of record and nginx together.
      - With O(action=begin) and O(kind=deploy), planning and locking are one step, under the record's lock -
        the plan picks O(color) and O(previous_color) (they may be left out), and a deploy the plan does not
        allow (nginx does not send all traffic to the live release) is refused, changing nothing. RV(plan)
        is then the plan as it was before the new entry.
    type: dict
  migrate:
    description:
      - With O(action=begin) and O(kind=deploy), the release runs a database migration (C(release_migrate_command)).
        Decided under the record's lock, before the entry is written - a version's migration runs once - when an
        earlier entry's migration of the same version succeeded, it is skipped (the entry notes where it ran);
        when one failed or never ended, begin is refused, changing nothing, unless O(migrate_rerun).
        RV(migration) says what was decided; the entry starts with a C(migration) of status C(planned) or C(skipped).
    type: bool
    default: false
  migrate_command:
    description: With O(migrate), the command, kept with the entry.
    type: list
    elements: str
  migrate_reversible:
    description:
      - With O(migrate), whether the previous release still runs on the migrated schema. C(false) makes rollback.yml
        refuse to cross this migration unless the operator accepts the schema (C(rollback_accept_schema)).
    type: bool
    default: true
  migrate_rerun:
    description: With O(migrate), run the migration even when it ran for this version before.
    type: bool
    default: false
  migration:
    description:
      - With O(action=migration), the fields to lay over the entry's migration - C(status) (C(running),
        C(succeeded), C(failed)), C(started_at), C(finished_at), C(seconds), C(exit_code), C(output), C(job),
        C(restore_point) (C(lsn), C(backup)).
    type: dict
  id:
    description: With O(action=finish), the entry to close; with O(action=migration), the deploy entry.
    type: int
  outcome:
    description: With O(action=finish), how it ended.
    type: str
    choices: [succeeded, failed]
  reason:
    description: With O(action=finish), why it failed (or a note).
    type: str
  timeline:
    description:
      - With O(action=finish), the cutover's step timeline to keep with the entry (the per-poll details
        C(polls) and the log positions of each step are left out).
    type: list
    elements: dict
  expect_live:
    description:
      - With O(action=begin), the id of the live entry the caller planned against (C(0) - no live release),
        read from O(action=read)'s RV(live). The record is checked and written under its lock; when the live
        entry is another by then (a deploy or rollback finished in between), begin is refused and nothing
        changes - compare-and-set, so that two runs never both act on the same state.
    type: int
  holder:
    description: With O(action=lease), O(action=renew) and O(action=release), who holds the lease (the cutover's controller).
    type: str
  mirror:
    description:
      - With O(action=lease) on a second (third, ...) load balancer of the group, the primary's entry as its own
        C(lease) call returned it (RV(entry)). A copy of it is written first to the record at O(path) - this load
        balancer's lease record, C(/var/lib/greenflow/releases/peers/<app>.json) - and the lease is taken on the
        copy, so that this load balancer's watchdog puts its traffic back when the cutover's controller is lost.
        The primary's record stays the one place of truth (docs/lb-pair.md).
      - O(action=renew) and O(action=release) on the copy need only O(path) and O(id).
    type: dict
  mirror_of:
    description: With O(mirror), the primary load balancer's name, kept in the copy.
    type: str
  lease_ttl:
    description: With O(action=lease), seconds each renewal is good for (5 to 300).
    type: float
    default: 10
  lease_nginx:
    description:
      - With O(action=lease), the nginx instance the cutover switches (the options of
        M(greenflow.platform.nginx_upstream) - C(conf_path), C(nginx_conf), C(nginx_bin), ...), so that the
        watchdog puts traffic back on the same one. Empty - the module's defaults.
    type: dict
  stale_after:
    description:
      - Seconds after which an entry still in progress no longer blocks a new one, counted from its start or
        its cutover's last lease renewal, whichever is later.
    type: int
    default: 7200
  force:
    description: With O(action=begin), start even while another entry is in progress (it is closed as failed).
    type: bool
    default: false
  keep:
    description: Entries kept in the file; older ones are dropped, never one a rollback still needs.
    type: int
    default: 200
  history_limit:
    description: How many of the newest entries to return in RV(history) and RV(history_table).
    type: int
    default: 10
  metrics_dir:
    description:
      - Node exporter's textfile directory. After each change of the record (O(action=begin), O(action=finish);
        the lease actions change nothing the metrics show) the module rewrites C(greenflow_release_<app>.prom)
        there, atomically - the metrics C(greenflow_release_*) of docs/monitoring.md.
      - Written only when the directory exists (the monitoring role makes it with the node exporter); an empty
        string writes none. A failure to write them is a warning - the record is written.
    type: path
    default: /var/lib/prometheus/node-exporter
extends_documentation_fragment:
  - greenflow.platform.app
  - greenflow.platform.attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Read what is live and where a rollback would go
  greenflow.platform.release_record:
    app: demo
  register: demo_record

- name: Start a deploy (fails while another deploy of the app is in progress)
  greenflow.platform.release_record:
    app: demo
    action: begin
    kind: deploy
    version: "2"
    image: registry.example.com/demo:2
    color: green
    previous_color: blue
    user: "{{ lookup('ansible.builtin.env', 'USER') }}"
  register: demo_entry

- name: Record the outcome
  greenflow.platform.release_record:
    app: demo
    action: finish
    id: "{{ demo_entry.entry.id }}"
    outcome: succeeded

- name: The cutover's lease on entry 7 (the release_cutover action does this itself when given record_entry)
  greenflow.platform.release_record:
    app: demo
    action: lease
    id: 7
    holder: "controller-1:4242"
    lease_ttl: 10
"""

RETURN = r"""
lease_lost:
  description:
    - Set (true) when O(action=lease), O(action=renew) or O(action=release) failed because the lease is not the
      holder's any more - it ran out, and the load balancer's watchdog put traffic back.
  returned: on such a failure
  type: bool
  sample: true
live:
  description: The deploy entry serving traffic now; empty before the first successful deploy.
  returned: always
  type: dict
  sample: {"id": 3, "action": "deploy", "version": "2", "color": "green", "outcome": "succeeded"}
rollback_target:
  description: The deploy entry a rollback would put back; empty when there is none.
  returned: always
  type: dict
  sample: {"id": 1, "action": "deploy", "version": "1", "color": "blue", "outcome": "succeeded"}
migration:
  description:
    - With O(migrate), whether this release runs its migration - C(run) (bool), C(previous) (the entry whose
      migration of this version ran before, or null) and C(message).
  returned: when O(action=begin) with O(migrate)
  type: dict
  sample: {"run": false, "previous": 7, "message": "the migration of version 2 ran already (entry 7, ...)"}
entry:
  description: The entry begun or finished by this call.
  returned: when action is begin or finish
  type: dict
  sample: {"id": 4, "action": "deploy", "version": "3", "color": "blue", "outcome": "in_progress"}
in_progress:
  description: The entry still in progress (the lock holder), however old, if any.
  returned: always
  type: dict
history:
  description: The newest O(history_limit) entries, newest first.
  returned: always
  type: list
  elements: dict
history_table:
  description: The same entries as a plain-text table, one line each.
  returned: always
  type: list
  elements: str
  sample: ["ID  ACTION  VERSION  COLOR  OUTCOME  STARTED_AT  USER  REASON"]
plan:
  description:
    - With O(nginx_shares), what the next deploy or rollback does, from the record and nginx's split
      (the release model's C(reconcile); the playbooks follow it).
    - C(kind) - C(first_release), C(normal) (the live colour has 100 %), C(interrupted) (nginx is split
      between the colours; C(step_share) is the new colour's share), C(disagree) (the live colour has no
      100 % and nginx is not split - 100 % on the other colour, or no split at all), C(in_progress) (an entry
      is open - a run now, or a dead one), C(stale_lock) (the same, older than O(stale_after)).
    - C(from_color), C(to_color) and C(deploy_allowed) for a deploy; C(lock) (C(free), C(held), C(stale));
      C(rollback) with C(restore_live), C(target), C(from_color), C(possible), C(needs_force) and C(closes);
      C(message) for a human.
  returned: when nginx_shares is given
  type: dict
  sample: {"kind": "normal", "from_color": "blue", "to_color": "green", "deploy_allowed": true, "lock": "free",
           "rollback": {"restore_live": false, "possible": true, "target": {"id": 1, "color": "green"},
                        "from_color": "blue", "needs_force": false, "closes": 0},
           "message": "2 on blue is live with all traffic; a deploy goes to green. A rollback goes to 1 on green."}
retire:
  description:
    - With O(kind=retire), the decision - C(retire) (bool), C(color) and C(version) (the previous colour
      and the release it holds), C(idle_seconds), C(live) (the live entry's id) and C(message).
  returned: with O(kind=retire)
  type: dict
  sample: {"retire": false, "color": "blue", "version": "4", "idle_seconds": 3600.0, "live": 12,
           "message": "blue (release 4) is idle for 1.0 h, kept for 72.0 h: not yet retired"}
path:
  description: The record file.
  returned: always
  type: str
  sample: /var/lib/greenflow/releases/demo.json
metrics_path:
  description: The release metrics file written by this call; empty when none was written.
  returned: always
  type: str
  sample: /var/lib/prometheus/node-exporter/greenflow_release_demo.prom
"""

import time
from datetime import datetime, timezone

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.greenflow.platform.plugins.module_utils import _release_model as model
from ansible_collections.greenflow.platform.plugins.module_utils import _release_lease as lease_mod
from ansible_collections.greenflow.platform.plugins.module_utils import _release_migrations as migrations
from ansible_collections.greenflow.platform.plugins.module_utils import _release_record as rr
from ansible_collections.greenflow.platform.plugins.module_utils import _release_store as store
from ansible_collections.greenflow.platform.plugins.module_utils._atomic_file import AtomicFileError
from ansible_collections.greenflow.platform.plugins.module_utils._release_store import RecordUpdate


def _now_iso(now):
    return datetime.fromtimestamp(now, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _without_env(entry):
    """An entry for display: the env's keys, not its values (-v prints every result)."""
    if not entry or "env" not in entry:
        return entry
    shown = dict((k, v) for k, v in entry.items() if k != "env")
    shown["env_keys"] = sorted(entry["env"] or {})
    return shown


def _summary(record, now, params, planned=None):
    live = rr.live_release(record)
    entries = rr.history(record, params["history_limit"])
    out = {
        "live": _without_env(live) or {},
        "rollback_target": _without_env(rr.rollback_target(record)) or {},
        "in_progress": _without_env(rr.open_entry(record)) or {},
        "history": [_without_env(entry) for entry in entries],
        "history_table": rr.history_table(entries, live["id"] if live else None),
    }
    if params["nginx_shares"] is not None:
        plan = planned or rr.plan(record, params["nginx_shares"], now, params["stale_after"])
        plan["live"] = _without_env(plan["live"])
        plan["open_entry"] = _without_env(plan["open_entry"])
        out["plan"] = plan  # plan["rollback"]["target"] keeps env: rollback.yml redeploys it
    return out


def _planned_deploy(module, record, now):
    """begin of a deploy with nginx_shares: plan and lock in one step, under the record's lock. The plan
    (the release model's) picks the colours and may refuse; returns it (as it was before the begin)."""
    p = module.params
    plan = rr.plan(record, p["nginx_shares"], now, p["stale_after"])
    if not plan["deploy_allowed"]:
        raise rr.ReleaseRecordError("%s Put all traffic back with rollback.yml first. Nothing was changed." % plan["message"])
    for name, chosen in (("color", plan["to_color"]), ("previous_color", plan["from_color"] or None)):
        if p[name] and p[name] != chosen:
            raise rr.ReleaseRecordError("%s %s was asked for, but the plan says %s: %s Nothing was changed."
                                        % (name, p[name], chosen, plan["message"]))
        p[name] = chosen
    return plan


def _change(module, record, now):
    p = module.params
    if p["action"] == "begin":
        planned = None
        if p["kind"] == "deploy" and p["nginx_shares"] is not None:
            planned = _planned_deploy(module, record, now)
        if p["kind"] == "retire":
            return _begin_retire(module, record, now), None
        missing = [name for name in ("version", "color") if not p[name]]
        if missing:
            module.fail_json(msg="action=begin needs %s" % " and ".join(missing))
        if p["kind"] == "rollback" and p["restores"] is None:
            module.fail_json(msg="kind=rollback needs restores (the id of the deploy entry it puts back)")
        fields = dict((name, p[name]) for name in ("version", "image", "color", "previous_color", "user", "restores", "env"))
        if p["backup"] and p["kind"] == "deploy":
            fields["backup"] = p["backup"]
        if p["migrate"] and p["kind"] == "deploy":
            try:  # before the entry: a refusal changes nothing
                module.migration = migrations.decide(record, p["version"], p["migrate_rerun"])
            except migrations.MigrationError as exc:
                raise rr.ReleaseRecordError(str(exc))
            fields["migration"] = migrations.planned(module.migration, p["migrate_command"], p["migrate_reversible"])
        fields["started_at"] = _now_iso(now)
        return rr.begin(record, p["kind"], fields, now, p["stale_after"], p["force"], p["expect_live"]), planned
    if p["action"] == "migration":
        if p["id"] is None or not p["migration"]:
            module.fail_json(msg="action=migration needs id and migration")
        try:
            migrations.update(rr.entry(record, p["id"]), p["migration"])
        except migrations.MigrationError as exc:
            raise rr.ReleaseRecordError(str(exc))
        return rr.entry(record, p["id"]), None
    if p["action"] in ("lease", "renew", "release"):
        return _lease(module, record, now), None
    if p["id"] is None or not p["outcome"]:
        module.fail_json(msg="action=finish needs id and outcome")
    fields = {"finished_at": _now_iso(now), "finished_epoch": round(now, 3), "reason": p["reason"]}
    if p["timeline"] is not None:
        # the per-poll details of a cutover step are for the run's output, not for the record
        fields["timeline"] = [dict((k, v) for k, v in event.items() if k not in ("polls", "position", "end_position"))
                              for event in p["timeline"]]
    return rr.finish(record, p["id"], p["outcome"], fields), None


def _begin_retire(module, record, now):
    """begin of a retire: decided under the record's lock (nothing in progress, idle long enough); the
    entry is the lock while retire.yml scales the colour down. None (and nothing written) when there is
    nothing to retire."""
    p = module.params
    if p["keep_previous_hours"] is None or p["keep_previous_hours"] < 0:
        module.fail_json(msg="kind=retire needs keep_previous_hours >= 0, got %r" % (p["keep_previous_hours"],))
    decision = rr.retire_plan(record, now, p["keep_previous_hours"] * 3600.0)
    module.retire = decision
    if not decision["retire"]:
        return None
    previous = rr.rollback_target(record) or {}
    fields = {"version": decision["version"] or "-", "color": decision["color"], "user": p["user"],
              "image": previous.get("image") if previous.get("color") == decision["color"] else None,
              "started_at": _now_iso(now), "idle_seconds": decision["idle_seconds"]}
    return rr.begin(record, "retire", fields, now, p["stale_after"])


def _lease(module, record, now):
    p = module.params
    if p["id"] is None or not p["holder"]:
        module.fail_json(msg="action=%s needs id and holder" % p["action"])
    if p["mirror"] is not None:
        if p["action"] == "lease":
            rr.mirror(record, p["mirror"], p["mirror_of"] or "the first load balancer")
        elif p["mirror"].get("id") != p["id"]:
            module.fail_json(msg="mirror is the entry %r, but id is %r" % (p["mirror"].get("id"), p["id"]))
    entry = rr.entry(record, p["id"])
    if p["action"] == "lease":
        if not entry.get("previous_color"):
            raise lease_mod.LeaseError("entry %s has no previous colour: a first release holds no lease" % p["id"])
        lease_mod.grant(entry, p["holder"], entry["previous_color"], entry["color"], p["lease_ttl"], now)
        entry["lease"]["nginx"] = dict(p["lease_nginx"] or {})
    elif p["action"] == "renew":
        lease_mod.renew(entry, p["holder"], now)
    else:
        lease_mod.finish(entry, p["holder"], now)
    return entry


def main():
    module = AnsibleModule(
        argument_spec=dict(
            app=dict(type="str", required=True),
            action=dict(type="str", choices=["read", "begin", "finish", "lease", "renew", "release", "migration"],
                        default="read"),
            path=dict(type="path"),
            kind=dict(type="str", choices=["deploy", "rollback", "retire"], default="deploy"),
            keep_previous_hours=dict(type="float"),
            version=dict(type="str"),
            image=dict(type="str"),
            color=dict(type="str", choices=["blue", "green"]),
            previous_color=dict(type="str", choices=["blue", "green"]),
            restores=dict(type="int"),
            user=dict(type="str"),
            env=dict(type="dict"),
            backup=dict(type="dict"),
            migrate=dict(type="bool", default=False),
            migrate_command=dict(type="list", elements="str"),
            migrate_reversible=dict(type="bool", default=True),
            migrate_rerun=dict(type="bool", default=False),
            migration=dict(type="dict"),
            nginx_shares=dict(type="dict"),
            id=dict(type="int"),
            outcome=dict(type="str", choices=["succeeded", "failed"]),
            reason=dict(type="str"),
            timeline=dict(type="list", elements="dict"),
            expect_live=dict(type="int"),
            holder=dict(type="str"),
            lease_ttl=dict(type="float", default=10),
            lease_nginx=dict(type="dict"),
            mirror=dict(type="dict"),
            mirror_of=dict(type="str"),
            stale_after=dict(type="int", default=7200),
            force=dict(type="bool", default=False),
            keep=dict(type="int", default=200),
            history_limit=dict(type="int", default=10),
            metrics_dir=dict(type="path", default="/var/lib/prometheus/node-exporter"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    try:
        model.check_app(p["app"])
        if p["action"] == "read" or (p["action"] == "begin" and p["kind"] == "deploy"):
            model.check_release_env(p["env"])  # before anything else: nothing is read or changed with a secret
    except model.ReleaseModelError as exc:
        module.fail_json(msg=str(exc))
    if p["keep"] < 10:
        module.fail_json(msg="keep must be at least 10, got %d" % p["keep"])
    path = p["path"] or model.record_path(p["app"])
    now = time.time()

    if p["action"] == "read":
        try:
            record = store.read(path, p["app"])
        except (rr.ReleaseRecordError, AtomicFileError, UnicodeDecodeError) as exc:
            module.fail_json(msg="cannot read the release record %s: %s" % (path, exc))
        module.exit_json(changed=False, path=path, metrics_path="", **_summary(record, now, p))

    module.retire = None
    module.migration = None
    # the lease actions change nothing the metrics show: a cutover renews its lease every few seconds
    metrics_dir = None if p["action"] in ("lease", "renew", "release") else p["metrics_dir"]
    try:
        # check mode reads without the lock and writes nothing
        with RecordUpdate(path, p["app"], keep=p["keep"], dry_run=module.check_mode, metrics_dir=metrics_dir) as update:
            record = update.record
            entry, planned = _change(module, record, now)
            if entry is None:  # a retire with nothing to retire: leave the file as it is
                update.dry_run = True
    except lease_mod.LeaseError as exc:
        module.fail_json(msg="release record %s: %s" % (path, exc), lease_lost=True)
    except (rr.ReleaseRecordError, AtomicFileError, OSError) as exc:
        module.fail_json(msg="release record %s: %s" % (path, exc))
    extra = {"retire": module.retire} if module.retire is not None else {}
    if module.migration is not None:
        extra["migration"] = module.migration
    if update.metrics_error:
        module.warn(update.metrics_error)
    module.exit_json(changed=entry is not None, path=path, entry=_without_env(entry) or {},
                     metrics_path=update.metrics_path or "",
                     **dict(_summary(record, now, p, planned), **extra))


if __name__ == "__main__":
    main()
