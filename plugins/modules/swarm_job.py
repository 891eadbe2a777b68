#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: greenflow platform engineers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: swarm_job
short_description: Run a command once on Docker Swarm as a one-off job and wait for its end
version_added: 0.2.0
description:
  - Creates a C(replicated-job) service that runs O(command) once in O(image), never restarted (a failing
    job fails once), waits until its task ends, reads its output and removes the service.
  - Runs on a swarm manager. What C(deploy.yml) runs a release's database migration with (C(release_migrate_command)),
    with the release's image, environment, secrets and networks.
  - Fails when the job ends with an exit code other than 0, when swarm rejects or ends its task, and when it
    has not ended within O(timeout) seconds (the service is removed then, which stops its container). The
    failure message carries the end of the output.
  - Checks every secret by name first; when one is missing nothing is created.
  - In check mode nothing is created or run.
author:
  - greenflow platform engineers (@greenflow)
options:
  name:
    description:
      - The job's service name, unique per run (C(deploy.yml) takes C(<app>-migrate-<record entry id>)).
      - A leftover job service of the same name (label C(greenflow.job)) is removed first; any other service
        of that name is a refusal.
    type: str
    required: true
  image:
    description: The image to run.
    type: str
    required: true
  command:
    description: The command, as a list; it replaces the image's C(CMD) and keeps its C(ENTRYPOINT) (like C(docker run IMAGE COMMAND)).
    type: list
    elements: str
    required: true
  env:
    description: The job's environment.
    type: dict
    default: {}
  secrets:
    description: Names of existing swarm secrets, mounted at C(/run/secrets/<name>).
    type: list
    elements: str
    default: []
  networks:
    description: Networks (names or ids) the job's task joins.
    type: list
    elements: str
    default: []
  constraints:
    description: Placement constraints, e.g. C(node.role == worker).
    type: list
    elements: str
    default: []
  limits:
    description: C(cpus) (cores) and C(memory) (e.g. C(256M)) the task may use.
    type: dict
    default: {}
  labels:
    description: Labels of the service (C(greenflow.job=true) is always added).
    type: dict
    default: {}
  timeout:
    description: Seconds the job may take, from its creation to its end (including the wait for a node).
    type: int
    default: 600
  poll:
    description: Seconds between two looks at the job's task.
    type: float
    default: 1.0
  output_lines:
    description: Lines of output kept in RV(output) (its end).
    type: int
    default: 200
  keep:
    description: Keep the service after the job ended (for inspection; remove it by hand).
    type: bool
    default: false
  docker_host:
    description: The Docker API to talk to.
    type: str
    default: unix:///var/run/docker.sock
requirements:
  - docker (the Python SDK; Debian's python3-docker) on the swarm manager
notes:
  - Swarm has no "run once" for a plain service; a C(replicated-job) service with restart condition C(none)
    is that. Needs Docker 20.10 (API 1.41) or newer.
  - The image's C(HEALTHCHECK) is switched off for the job (it checks a server; swarm would end a long job as
    unhealthy).
"""

EXAMPLES = r"""
- name: Migrate the database with the new release's image
  greenflow.platform.swarm_job:
    name: "demo-migrate-42"
    image: greenflow/demo-app:2
    command: [python3, /opt/demo/app.py, migrate]
    env: {DEMO_DB_HOST: 10.0.0.5, DEMO_DB_PASSWORD_FILE: /run/secrets/demo_db_password}
    secrets: [demo_db_password]
    constraints: ["node.role == worker"]
    timeout: 300
  delegate_to: swarm-manager-1
  register: migration
"""

RETURN = r"""
ok:
  description: The job ended with exit code 0.
  returned: always
  type: bool
exit_code:
  description: The job's exit code (null when its command never started or was stopped at the timeout).
  returned: always
  type: int
started:
  description:
    - Its command started (a container ran). False when swarm rejected the task (no such image, no node that fits)
      or the timeout came first - then nothing of the job ran.
  returned: always
  type: bool
state:
  description: The last state of the job's task (C(complete), C(failed), C(rejected), ...).
  returned: always
  type: str
  sample: complete
error:
  description: Swarm's word on a failed task, or why the job did not end.
  returned: always
  type: str
timed_out:
  description: The job had not ended within O(timeout).
  returned: always
  type: bool
seconds:
  description: From the job's creation to its end.
  returned: always
  type: float
output:
  description: The end of the job's output (stdout and stderr, O(output_lines) lines at most).
  returned: always
  type: str
output_lines_total:
  description: Lines of output in all.
  returned: always
  type: int
node:
  description: The id of the node that ran the job.
  returned: always
  type: str
"""

import time

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.greenflow.platform.plugins.module_utils import _swarm_job as job

try:
    import docker
    from docker.errors import APIError, DockerException, NotFound
    HAS_DOCKER = True
except ImportError:
    HAS_DOCKER = False


def _secret_refs(api, names):
    refs, missing = [], []
    for name in names:
        found = [s for s in api.secrets(filters={"name": name}) if s.get("Spec", {}).get("Name") == name]
        if found:
            refs.append({"id": found[0]["ID"], "name": name})
        else:
            missing.append(name)
    if missing:
        raise job.SwarmJobError("no swarm secret named %s (docker secret create ...). Nothing was run"
                                % ", ".join(missing))
    return refs


def _clear_leftover(api, name):
    try:
        service = api.inspect_service(name)
    except NotFound:
        return
    if "greenflow.job" not in (service.get("Spec", {}).get("Labels") or {}):
        raise job.SwarmJobError("a service named %s exists and is no job of this module: refusing to touch it. "
                                "Nothing was run" % name)
    api.remove_service(service["ID"])


def _logs(api, service_id, wait=5.0):
    """The job's output; swarm may need a moment after the task ended to hand it over."""
    deadline = time.monotonic() + wait
    while True:
        try:
            raw = api.service_logs(service_id, stdout=True, stderr=True, timestamps=False, is_tty=False)
        except (APIError, DockerException) as exc:
            return "(the job's output could not be read: %s)" % exc
        if not isinstance(raw, bytes):
            raw = b"".join(raw)
        if raw or time.monotonic() >= deadline:
            return raw.decode("utf-8", "replace")
        time.sleep(0.5)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type="str", required=True),
            image=dict(type="str", required=True),
            command=dict(type="list", elements="str", required=True),
            env=dict(type="dict", default={}),
            secrets=dict(type="list", elements="str", default=[], no_log=False),
            networks=dict(type="list", elements="str", default=[]),
            constraints=dict(type="list", elements="str", default=[]),
            limits=dict(type="dict", default={}),
            labels=dict(type="dict", default={}),
            timeout=dict(type="int", default=600),
            poll=dict(type="float", default=1.0),
            output_lines=dict(type="int", default=200),
            keep=dict(type="bool", default=False),
            docker_host=dict(type="str", default="unix:///var/run/docker.sock"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    result = dict(changed=False, ok=False, exit_code=None, started=False, state="", error="", timed_out=False, seconds=0.0,
                  output="", output_lines_total=0, node="")
    if p["timeout"] <= 0 or p["poll"] <= 0 or p["output_lines"] < 0:
        module.fail_json(msg="timeout and poll must be more than 0 and output_lines at least 0", **result)
    env = dict((str(k), "" if v is None else str(v)) for k, v in p["env"].items())
    try:
        template, mode = job.service_spec(p["image"], p["command"], env, None, p["constraints"], p["limits"], p["networks"])
    except job.SwarmJobError as exc:
        module.fail_json(msg=str(exc), **result)
    if not HAS_DOCKER:
        module.fail_json(msg=missing_required_lib("docker (python3-docker)"), **result)
    try:
        api = docker.APIClient(base_url=p["docker_host"], version="auto")
        refs = _secret_refs(api, p["secrets"])
        if module.check_mode:
            result["state"] = "not run (check mode)"
            module.exit_json(**result)
        _clear_leftover(api, p["name"])
        template, mode = job.service_spec(p["image"], p["command"], env, refs, p["constraints"], p["limits"], p["networks"])
        labels = dict((str(k), str(v)) for k, v in p["labels"].items())
        labels["greenflow.job"] = "true"
        started = time.monotonic()
        created = api.create_service(template, name=p["name"], labels=labels, mode=mode)
    except job.SwarmJobError as exc:
        module.fail_json(msg=str(exc), **result)
    except (APIError, DockerException) as exc:
        module.fail_json(msg="cannot create the job %s: %s. Nothing was run" % (p["name"], exc), **result)
    result["changed"] = True
    service_id = created["ID"]
    state = job.outcome([])
    try:
        while True:
            state = job.outcome(api.tasks(filters={"service": service_id}))
            if state["done"] or time.monotonic() - started >= p["timeout"]:
                break
            time.sleep(p["poll"])
        result["seconds"] = round(time.monotonic() - started, 1)
        output = _logs(api, service_id, wait=5.0 if state["done"] else 1.0)
    except (APIError, DockerException) as exc:
        output = "(lost the job while waiting: %s)" % exc
        state = dict(state, error=str(exc))
    finally:
        if not p["keep"]:
            try:
                api.remove_service(service_id)  # also stops a job that ran out of time
            except (APIError, DockerException) as exc:
                module.warn("could not remove the job's service %s: %s" % (p["name"], exc))
    result["output"], result["output_lines_total"] = job.tail(output, p["output_lines"])
    result.update(ok=state["ok"], exit_code=state["exit_code"], started=state["started"], state=state["state"],
                  node=state["node"], error=state["error"], timed_out=not state["done"])
    if result["ok"]:
        module.exit_json(**result)
    last = job.tail(output, 20, 3000)[0]
    if not state["done"]:
        result["error"] = "no end within %d s (it was %s); its service was removed, which stops it" % (p["timeout"], state["state"])
        why = result["error"]
    elif state["exit_code"] not in (None, 0):
        why = "exit code %s" % state["exit_code"]
    else:
        why = "its task ended %s%s" % (state["state"], (": " + state["error"]) if state["error"] else "")
    module.fail_json(msg="job %s failed after %.1f s: %s. Its output ends with:\n%s"
                     % (p["name"], result["seconds"], why, last or "(no output)"), **result)


if __name__ == "__main__":
    main()
