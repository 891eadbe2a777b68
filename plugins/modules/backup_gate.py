#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: greenflow platform engineers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: backup_gate
short_description: Decide whether a fresh verified PostgreSQL backup allows a release
version_added: 0.2.0
description:
  - Reads the backup status file that C(greenflow-pgbackrest) (role C(greenflow.platform.pgbackrest))
    writes on the repository host after every run, and decides whether a release may go on - the
    newest verified backup finished no more than O(max_age_hours) ago, and the last backup run did not fail.
  - Never fails for a refusal - RV(ok) says the decision and RV(reason) why, so that the caller can refuse
    with its own words (C(deploy.yml) does, before anything changes). Fails only when the status file
    cannot be read or parsed, or on a bad O(max_age_hours).
  - A missing status file is a refusal (no backup has run on this repository).
  - Only reads; changes nothing.
author:
  - greenflow platform engineers (@greenflow)
options:
  status_file:
    description: The status file of C(greenflow-pgbackrest) (the role's C(pgbackrest_status_file)).
    type: path
    default: /var/lib/greenflow-pgbackrest/status.json
  max_age_hours:
    description: The newest verified backup may be this old, in hours (above 0).
    type: float
    default: 26
extends_documentation_fragment:
  - greenflow.platform.attributes
attributes:
  check_mode:
    support: full
    details: It only reads; it runs in check mode too.
  diff_mode:
    support: none
seealso:
  - module: greenflow.platform.release_record
"""

EXAMPLES = r"""
- name: Is there a verified backup from the last 26 hours?
  greenflow.platform.backup_gate:
    max_age_hours: 26
  delegate_to: "{{ pg_backup_host }}"
  register: backup

- name: Refuse the release without one
  ansible.builtin.assert:
    that: backup.ok
    fail_msg: "No release without a fresh backup: {{ backup.reason }}"
"""

RETURN = r"""
ok:
  description: Whether the release may go on.
  returned: always
  type: bool
reason:
  description: Why it may not (or, when it may, which backup allows it).
  returned: always
  type: str
  sample: the newest verified backup 20270115-060000F finished 2027-01-15T06:00:00Z, 30.0 h ago; older than 26 h
newest_verified:
  description: The newest verified backup - label, type, stop (epoch), stop_at, age_hours - or null.
  returned: always
  type: dict
  sample: {"label": "20270115-060000F", "type": "full", "stop": 1800000000, "stop_at": "2027-01-15T08:00:00Z",
           "age_hours": 2.5}
last_backup:
  description: What the status says of the last backup run (result, type, started, finished, label), or null.
  returned: always
  type: dict
status_file:
  description: The status file read.
  returned: always
  type: str
"""

import os
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.greenflow.platform.plugins.module_utils import _backup_gate as gate


def main():
    module = AnsibleModule(
        argument_spec=dict(
            status_file=dict(type="path", default="/var/lib/greenflow-pgbackrest/status.json"),
            max_age_hours=dict(type="float", default=26.0),
        ),
        supports_check_mode=True,
    )
    path = module.params["status_file"]
    status = None
    if os.path.exists(path):
        try:
            with open(path) as handle:
                status = gate.parse_status(handle.read())
        except (OSError, IOError) as exc:
            module.fail_json(msg="cannot read the backup status %s: %s" % (path, exc), status_file=path)
        except gate.BackupGateError as exc:
            module.fail_json(msg="%s: %s" % (path, exc), status_file=path)
    try:
        result = gate.evaluate(status, time.time(), module.params["max_age_hours"])
    except gate.BackupGateError as exc:
        module.fail_json(msg="%s: %s" % (path, exc), status_file=path)
    if status is None:
        result["reason"] += " (%s does not exist)" % path
    module.exit_json(changed=False, status_file=path, ok=result["ok"], reason=result["reason"],
                     newest_verified=result["newest_verified"], last_backup=result["last_backup"])


if __name__ == "__main__":
    main()
