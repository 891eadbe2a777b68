#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: swarm_service_wait
short_description: Wait until a swarm service runs the wanted image on every replica, healthy
version_added: 0.1.0
description:
  - Runs on a swarm manager. Polls the service's tasks until as many tasks as the service asks for are
    C(running), all of them on the wanted O(image), or until O(timeout).
  - With a healthcheck (in the image or the service), swarm holds a task in C(starting) until the
    container is healthy, so C(running) means healthy.
  - On timeout it fails and lists the tasks that are not right, with their state and last error, and the
    newest failed or rejected tasks (the reason a service does not converge is usually there).
  - Returns RV(endpoints), the C(node address:published port) pairs of the running tasks for ports
    published in host mode - the servers a load balancer should target.
  - Reads only; it never changes the service.
author:
  - greenflow platform engineers (@greenflow)
requirements:
  - Docker SDK for Python on the manager (Debian package C(python3-docker))
options:
  name:
    description: The service.
    type: str
    required: true
  image:
    description: The image every task must run. Without it, any image counts.
    type: str
  timeout:
    description: Seconds to wait for convergence. C(0) reads the state once and does not fail when not converged.
    type: int
    default: 120
  max_failures:
    description:
      - Fail before O(timeout) once this many tasks of the service's current spec have ended
        (failed, rejected, or stopped by swarm after a failed healthcheck) since this wait began (30 s slack) - a
        release that cannot get healthy is named at once instead of at the timeout. C(0) waits
        for the timeout.
    type: int
    default: 0
  poll:
    description: Seconds between two reads.
    type: float
    default: 1.0
  docker_host:
    description: The Docker API to talk to.
    type: str
    default: unix:///var/run/docker.sock
extends_documentation_fragment:
  - greenflow.platform.attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Wait until the green colour of demo runs version 2 on every replica
  greenflow.platform.swarm_service_wait:
    name: demo-green
    image: registry.example.com/demo:2
    timeout: 120
  register: demo_green

- name: Read the state once, whatever it is
  greenflow.platform.swarm_service_wait:
    name: demo-blue
    timeout: 0
  register: demo_blue
"""

RETURN = r"""
converged:
  description: Whether every wanted replica runs the wanted image, healthy.
  returned: always
  type: bool
  sample: true
exists:
  description: Whether the service exists.
  returned: always
  type: bool
  sample: true
replicas:
  description: Replicas the service asks for (null for a global service).
  returned: always
  type: int
  sample: 2
image:
  description: The image of the service's spec (the image reference given to swarm, maybe pinned by digest).
  returned: when the service exists
  type: str
  sample: registry.example.com/demo:2
labels:
  description: The service's labels.
  returned: always
  type: dict
  sample: {"greenflow.version": "2"}
running:
  description: Tasks running the wanted image.
  returned: always
  type: int
  sample: 2
endpoints:
  description: C(address:port) of every running task for each port published in host mode.
  returned: always
  type: list
  elements: str
  sample: ["172.18.0.6:8002", "172.18.0.7:8002"]
tasks:
  description: The tasks swarm wants running, with node, state, image and error.
  returned: always
  type: list
  elements: dict
problems:
  description: What keeps the service from being converged, one line each.
  returned: always
  type: list
  elements: str
  sample: ["task 4f2a1c0e9b7d on swarm-worker-1 is starting"]
failed_current:
  description: Tasks of the current spec that ended (failed, rejected, or completed) since the wait began (30 s slack).
  returned: always
  type: int
  sample: 0
recent_failures:
  description: The newest failed or rejected tasks with their error.
  returned: always
  type: list
  elements: dict
waited:
  description: Seconds spent waiting.
  returned: always
  type: float
  sample: 4.2
"""

import time

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.greenflow.platform.plugins.module_utils._swarm_tasks import assess

try:
    import docker
    from docker.errors import APIError, DockerException, NotFound
    HAS_DOCKER = True
except ImportError:
    HAS_DOCKER = False


def _read(api, name, image, failures_since=None):
    try:
        service = api.inspect_service(name)
    except NotFound:
        return None
    tasks = api.tasks(filters={"service": service["ID"]})
    nodes = api.nodes()
    return assess(service, tasks, nodes, image, failures_since)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type="str", required=True),
            image=dict(type="str"),
            timeout=dict(type="int", default=120),
            poll=dict(type="float", default=1.0),
            max_failures=dict(type="int", default=0),
            docker_host=dict(type="str", default="unix:///var/run/docker.sock"),
        ),
        supports_check_mode=True,
    )
    if not HAS_DOCKER:
        module.fail_json(msg=missing_required_lib("docker (python3-docker)"))
    p = module.params
    if p["timeout"] < 0 or p["poll"] <= 0:
        module.fail_json(msg="timeout must be >= 0 and poll > 0")
    try:
        api = docker.APIClient(base_url=p["docker_host"], version="auto")
    except DockerException as exc:
        module.fail_json(msg="cannot reach Docker at %s: %s" % (p["docker_host"], exc))

    started = time.monotonic()
    started_epoch = time.time()
    deadline = started + p["timeout"]
    while True:
        try:
            # failures older than this run (30 s slack: the update began just before) are history
            state = _read(api, p["name"], p["image"], started_epoch - 30)
        except (APIError, DockerException) as exc:
            module.fail_json(msg="cannot read service %s: %s" % (p["name"], exc))
        if state is None:
            if p["timeout"] == 0 or time.monotonic() >= deadline:
                result = dict(exists=False, converged=False, replicas=0, running=0, endpoints=[], tasks=[], labels={}, failed_current=0,
                              problems=["service %s does not exist" % p["name"]], recent_failures=[],
                              waited=round(time.monotonic() - started, 1))
                if p["timeout"] == 0:
                    module.exit_json(changed=False, **result)
                module.fail_json(msg="service %s does not exist" % p["name"], **result)
        elif state["converged"] or p["timeout"] == 0:
            module.exit_json(changed=False, exists=True, waited=round(time.monotonic() - started, 1), **state)
        elif time.monotonic() >= deadline or (p["max_failures"] and state["failed_current"] >= p["max_failures"]):
            failures = ["%s on %s: %s" % (f["state"], f["node"], f["error"]) for f in state["recent_failures"]]
            why = ("did not converge within %ds" % p["timeout"] if time.monotonic() >= deadline else
                   "will not converge: %d tasks of its current spec ended (failed, or killed as unhealthy) within %.0fs" % (
                       state["failed_current"], time.monotonic() - started))
            module.fail_json(
                msg="service %s %s: %s%s" % (
                    p["name"], why, "; ".join(state["problems"]),
                    (" | recent failures: " + "; ".join(failures)) if failures else ""),
                exists=True, waited=round(time.monotonic() - started, 1), **state)
        time.sleep(p["poll"])


if __name__ == "__main__":
    main()
