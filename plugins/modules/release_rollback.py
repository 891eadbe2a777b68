#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: release_rollback
short_description: Put an app's traffic back on its previous release in one step on the load balancer
version_added: 0.2.0
description:
  - The first task of rollback.yml, run on the load balancer that holds the release record. It reads the
    record and nginx's split together under the record's lock, makes the release model's plan (the release
    under the live one; after an interrupted deploy, the live release itself), takes the lock for the
    rollback and, when it can, switches all traffic in the same run - so traffic is back within one module
    run of the playbook's start. Bookkeeping and notifications come after, in the playbook.
  - B(Instant switch) when, by the record, the target's colour still holds exactly that release (no later
    entry put another image or environment there) and every server nginx has for that colour answers
    O(health_path) from the load balancer. Otherwise (the colour was scaled down, rescheduled or reused) it
    switches nothing, returns RV(instant_blocker) and the open entry, and the playbook takes the slow path -
    ask the swarm, scale up or redeploy the release, then switch with M(greenflow.platform.nginx_upstream).
  - B(Locks.) A rollback to the release under the live one appends a rollback entry
    (M(greenflow.platform.release_record) O(greenflow.platform.release_record#module:action=begin), compare-and-set on
    the live entry). After an interrupted deploy, with O(force), the entry it left open is taken over
    (C(claimed_by)) and stays the lock, now this run's; its cutover lease is lost - the watchdog leaves it
    alone and a controller that comes back cannot renew. The instant switch is done while holding the
    record's file lock, so neither another run nor the watchdog acts in between.
  - B(Refuses), changing nothing, when there is nothing to roll back to, or when an entry is in progress and
    O(force) is not set; the message says what is going on and what to do.
  - B(Database migrations.) RV(migrations) lists the migrations that ran after the target release was deployed
    (the schema it goes back to is not the one it was released on). A rollback across one marked not reversible
    (C(release_migrate_reversible=false)) is refused, changing nothing, unless O(accept_schema) - never after an
    interrupted deploy (the live release ran beside that migration all along).
  - The nginx switch is the one M(greenflow.platform.nginx_upstream) does (candidate checked with C(nginx -t)
    before it is renamed into place, graceful reload); a failed switch leaves the previous split and closes
    the entry as failed.
author:
  - greenflow platform engineers (@greenflow)
options:
  force:
    description:
      - Go ahead while an entry is in progress (a deploy or rollback whose run died - make sure it did).
        Traffic goes back to the live release and that entry is closed as failed ("interrupted").
    type: bool
    default: false
  accept_schema:
    description: Roll back across a migration marked not reversible (the operator knows the release runs on the schema as it is).
    type: bool
    default: false
  user:
    description: Who runs the rollback (recorded as is).
    type: str
    default: unknown
  reason:
    description: Why (kept in the record's entry). Default C(rollback).
    type: str
  instant:
    description: Try the instant switch. V(false) only plans and takes the lock; the playbook's slow path does the rest.
    type: bool
    default: true
  health_path:
    description: The path every server of the target colour must answer with 2xx, over plain HTTP from the load balancer.
    type: str
    default: /health
  probe_timeout:
    description: Seconds each server has to answer O(health_path).
    type: float
    default: 2.0
  path:
    description: The release record file. Defaults to C(/var/lib/greenflow/releases/<app>.json).
    type: path
  stale_after:
    description: Seconds after which an entry in progress no longer counts as running (see M(greenflow.platform.release_record)).
    type: int
    default: 7200
  history_limit:
    description: Entries of the history returned in RV(history_table).
    type: int
    default: 10
  metrics_dir:
    description:
      - Node exporter's textfile directory - when the record changes, C(greenflow_release_<app>.prom) there is
        rewritten (see M(greenflow.platform.release_record)'s O(greenflow.platform.release_record#module:metrics_dir)).
        Only when the directory exists; an empty string writes none.
    type: path
    default: /var/lib/prometheus/node-exporter
extends_documentation_fragment:
  - greenflow.platform.app
  - greenflow.platform.nginx
  - greenflow.platform.attributes
attributes:
  check_mode:
    support: full
    details: Reads, plans and probes; takes no lock and switches nothing (RV(instant_blocker) says whether it would).
  diff_mode:
    support: none
  platform:
    platforms: posix
notes:
  - docs/rollback.md has the operator's guide and the measured times.
seealso:
  - module: greenflow.platform.release_record
  - module: greenflow.platform.nginx_upstream
"""

EXAMPLES = r"""
- name: Put traffic back on the previous release (instant when its colour still runs it)
  greenflow.platform.release_rollback:
    app: demo
    user: "{{ lookup('ansible.builtin.env', 'USER') }}"
  register: rollback_fast

- name: The slow path (scale up or redeploy the colour first) when it could not switch at once
  ansible.builtin.debug:
    msg: "{{ rollback_fast.instant_blocker }}"
  when: not rollback_fast.switched
"""

RETURN = r"""
switched:
  description: True when this run moved all traffic to the target (the instant switch).
  returned: always
  type: bool
  sample: true
instant_blocker:
  description: Why the instant switch was not possible (the slow path's reason); empty when it switched.
  returned: always
  type: str
  sample: "green holds another release since (entry 7, deploy 3, failed)"
restore_live:
  description: True when the target is the live release itself (an interrupted deploy, or nginx not at 100 % on it).
  returned: always
  type: bool
target:
  description: The deploy entry traffic goes back to, with its environment (the slow path redeploys it exactly).
  returned: always
  type: dict
  sample: {"id": 3, "version": "1", "color": "blue", "image": "greenflow/demo-app:1", "env": {}}
migrations:
  description:
    - The database migrations that ran (or may have) after the target release was deployed, newest first - C(entry),
      C(version), C(status), C(reversible), C(lsn) (the primary's WAL position just before it; C(restore.yml -e
      restore_target_lsn=...) goes back to the schema before it), C(backup), C(finished_at).
  returned: always
  type: list
  elements: dict
from_color:
  description: The other colour (where traffic comes from).
  returned: always
  type: str
  sample: green
entry:
  description:
    - The entry this run took as its lock and closes (its own rollback entry, or the interrupted one it
      took over), without env values; C(outcome) is C(in_progress) when the slow path must still finish it.
      Empty when no entry is involved (record and nginx disagree and nothing is open).
  returned: always
  type: dict
live:
  description: The live release by the record before this run (no env values).
  returned: always
  type: dict
plan:
  description:
    - The release model's plan for record and nginx, without env values.
    - As M(greenflow.platform.release_record) returns it (RV(greenflow.platform.release_record#module:plan)).
  returned: always
  type: dict
shares:
  description: nginx's split after the run.
  returned: always
  type: dict
  sample: {"blue": 100, "green": 0}
previous_shares:
  description: nginx's split before the run.
  returned: always
  type: dict
pools:
  description: nginx's servers per colour (unchanged by this module).
  returned: always
  type: dict
probe:
  description: The health probe of the target colour's servers - C(servers), C(problems) (one C(server - why) each), C(seconds).
  returned: when the record allowed an instant switch
  type: dict
applied:
  description: How the instant switch reached nginx - V(live) (the reload-free split, no reload) or V(reload).
  returned: when switched
  type: str
  sample: live
timings:
  description: Seconds on the load balancer - C(probe_seconds), C(switch_seconds) (write, C(nginx -t), reload), C(total_seconds).
  returned: always
  type: dict
  sample: {"probe_seconds": 0.004, "switch_seconds": 0.16, "total_seconds": 0.19}
history_table:
  description: The newest entries as a plain-text table, after the run.
  returned: always
  type: list
  elements: str
metrics_path:
  description: The release metrics file rewritten by this run (O(metrics_dir)); empty when none was written.
  returned: success
  type: str
  sample: /var/lib/prometheus/node-exporter/greenflow_release_demo.prom
record_path:
  description: The record file.
  returned: always
  type: str
"""

import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.greenflow.platform.plugins.module_utils import _http_get as http_get
from ansible_collections.greenflow.platform.plugins.module_utils import _nginx_switch as switch
from ansible_collections.greenflow.platform.plugins.module_utils import _release_lease as lease_mod
from ansible_collections.greenflow.platform.plugins.module_utils import _release_model as model
from ansible_collections.greenflow.platform.plugins.module_utils import _release_migrations as migrations
from ansible_collections.greenflow.platform.plugins.module_utils import _release_record as rr
from ansible_collections.greenflow.platform.plugins.module_utils import _release_rollback as rb
from ansible_collections.greenflow.platform.plugins.module_utils._atomic_file import AtomicFileError
from ansible_collections.greenflow.platform.plugins.module_utils._nginx_upstream import UpstreamError
from ansible_collections.greenflow.platform.plugins.module_utils._release_store import RecordUpdate


def _fetch(url, timeout):
    return http_get.status(url, timeout)


def _no_env(entry):
    if not entry:
        return {}
    shown = dict((k, v) for k, v in entry.items() if k != "env")
    if "env" in entry:
        shown["env_keys"] = sorted(entry["env"] or {})
    return shown


def _nginx_params(p):
    np = dict(switch.DEFAULTS)
    np.update((k, p[k]) for k in switch.argument_spec())
    np.update(app=p["app"], pools=None, shares=None)
    return np


def _ms(seconds):
    return round(seconds, 3)


class Rollback(object):
    """One run: plan under the record's lock, lock, switch if it can, close the entry."""

    def __init__(self, module):
        self.module = module
        self.p = module.params
        self.started = time.monotonic()
        self.result = dict(changed=False, switched=False, instant_blocker="", restore_live=False, target={},
                           from_color="", entry={}, live={}, plan={}, timings={}, history_table=[], migrations=[],
                           record_path=self.p["path"] or model.record_path(self.p["app"]))
        self.nginx = _nginx_params(self.p)

    def fail(self, msg):
        self.module.fail_json(msg=msg, **self.result)

    def run(self):
        try:
            with RecordUpdate(self.result["record_path"], self.p["app"], dry_run=self.module.check_mode,
                              metrics_dir=self.p["metrics_dir"]) as update:
                self._under_lock(update)
        except (rr.ReleaseRecordError, AtomicFileError, UnicodeDecodeError, OSError) as exc:
            self.fail("release record %s: %s. Nothing was changed." % (self.result["record_path"], exc))
        if update.metrics_error:
            self.module.warn(update.metrics_error)
        self.result["metrics_path"] = update.metrics_path or ""
        self.result["timings"]["total_seconds"] = _ms(time.monotonic() - self.started)
        self.module.exit_json(**self.result)

    def _under_lock(self, update):
        p, record, now = self.p, update.record, time.time()
        try:
            state = switch.read(self.nginx)
        except switch.SwitchError as exc:
            self.fail("cannot read nginx's split: %s. Nothing was changed." % exc.msg)
        self.result.update(shares=state["shares"], previous_shares=state["shares"], pools=state["pools"])
        plan = rr.plan(record, state["shares"], now, p["stale_after"])
        rollback = plan["rollback"]
        self.result.update(
            plan=dict(plan, live=_no_env(plan["live"]), open_entry=_no_env(plan["open_entry"]),
                      rollback=dict(rollback, target=_no_env(rollback["target"]))),
            live=_no_env(plan["live"]), restore_live=rollback["restore_live"], target=rollback["target"],
            from_color=rollback["from_color"],
            history_table=rr.history_table(rr.history(record, p["history_limit"]), plan["live"].get("id")))
        refused = rb.refusal(plan, state["shares"], self.result["history_table"], p["force"])
        if refused:
            self.fail(refused)
        crossed = migrations.crossed(record, rollback["target"]["id"])
        self.result["migrations"] = crossed
        refused = migrations.rollback_refusal(crossed, rollback["target"].get("version"), p["accept_schema"],
                                              rollback["restore_live"])
        if refused:
            self.fail(refused)

        blocker = self._instant_blocker(record, rollback["target"], state["pools"])
        self.result["instant_blocker"] = blocker or ""
        if self.module.check_mode:
            return
        entry = rb.open_rollback(record, plan, p["user"], now, p["force"], p["stale_after"])
        self.result["changed"] = True
        if blocker:  # the slow path finishes it: the lock must be on disk now
            self.result["entry"] = _no_env(entry)
            return
        if entry is not None and not plan["rollback"]["restore_live"]:
            entry["instant"] = True  # it only switches nginx: the colour's service stays as it was
        self._switch(update, plan, entry)

    def _instant_blocker(self, record, target, pools):
        if not self.p["instant"]:
            return "instant switch not asked for (instant=false)"
        blocker = rb.instant_blocker(record, target, pools)
        if blocker:
            return blocker
        servers = pools[target["color"]]
        mark = time.monotonic()
        problems = rb.probe(servers, self.p["health_path"], self.p["probe_timeout"], _fetch)
        seconds = time.monotonic() - mark
        self.result["probe"] = dict(servers=servers, problems=problems, seconds=_ms(seconds))
        self.result["timings"]["probe_seconds"] = _ms(seconds)
        if problems:
            return "%s's servers on nginx do not all answer %s from the load balancer: %s" % (
                target["color"], self.p["health_path"], "; ".join(problems))
        return None

    def _switch(self, update, plan, entry):
        p, rollback = self.p, plan["rollback"]
        target = rollback["target"]
        nginx = dict(self.nginx, shares={target["color"]: 100})
        try:
            switch.check_params(nginx)
            done = switch.change(self.module, nginx)
        except (switch.SwitchError, UpstreamError) as exc:
            msg = exc.msg if isinstance(exc, switch.SwitchError) else str(exc)
            if entry is not None:
                why = "putting traffic back on %s (%s) failed on nginx: %s" % (target.get("version"), target["color"], msg)
                if rollback["restore_live"]:
                    why = "interrupted; " + why
                rr.finish(update.record, entry["id"], "failed", {"finished_at": lease_mod.iso_utc(time.time()), "reason": why})
                update.write()
                self.result["entry"] = _no_env(entry)
            self.fail("Rollback of %s to %s (%s) FAILED on nginx, traffic was not moved (nginx still sends %s): %s"
                      % (p["app"], target.get("version"), target["color"], rb.shares_text(self.result["previous_shares"]), msg))
        self.result.update(switched=True, shares=done.get("shares", {}), applied=done.get("applied", "reload"))
        self.result["timings"]["switch_seconds"] = done.get("timings", {}).get("total_seconds")
        how = "instant switch, %s s on nginx" % self.result["timings"]["switch_seconds"]
        if entry is not None:
            if rollback["restore_live"]:
                outcome, why = "failed", "interrupted; traffic put back on %s (%s) by rollback.yml (%s): %s" % (
                    target.get("version"), target["color"], p["user"], how)
            else:
                outcome, why = "succeeded", "%s (%s)" % (p["reason"] or "rollback", how)
            rr.finish(update.record, entry["id"], outcome, {"finished_at": lease_mod.iso_utc(time.time()), "reason": why})
            self.result["entry"] = _no_env(entry)
        self.result["history_table"] = rr.history_table(rr.history(update.record, p["history_limit"]),
                                                        (rr.live_release(update.record) or {}).get("id"))


def main():
    argument_spec = dict(
        app=dict(type="str", required=True),
        force=dict(type="bool", default=False),
        accept_schema=dict(type="bool", default=False),
        user=dict(type="str", default="unknown"),
        reason=dict(type="str"),
        instant=dict(type="bool", default=True),
        health_path=dict(type="str", default="/health"),
        probe_timeout=dict(type="float", default=2.0),
        path=dict(type="path"),
        stale_after=dict(type="int", default=7200),
        history_limit=dict(type="int", default=10),
        metrics_dir=dict(type="path", default="/var/lib/prometheus/node-exporter"),
    )
    argument_spec.update(switch.argument_spec())
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    p = module.params
    try:
        model.check_app(p["app"])
        switch.check_params(_nginx_params(p))
    except (model.ReleaseModelError, UpstreamError) as exc:
        module.fail_json(msg=str(exc))
    if not p["health_path"].startswith("/"):
        module.fail_json(msg="health_path must start with /, got %r" % p["health_path"])
    if not 0 < p["probe_timeout"] <= 30:
        module.fail_json(msg="probe_timeout must be more than 0 and at most 30 seconds, got %g" % p["probe_timeout"])
    Rollback(module).run()


if __name__ == "__main__":
    main()
