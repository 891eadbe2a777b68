# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Is a swarm service converged and healthy? Pure logic on the Docker API's service, task and node dicts.

A service is converged when as many tasks as it asks for replicas are ``running``, every one of them
runs the image asked for, and none of them belongs to an older spec. With a healthcheck in the image
or the service, swarm keeps a task in ``starting`` until the container is healthy, so ``running``
means healthy too.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import calendar
import time


def image_matches(task_image, wanted):
    """True when a task's image reference is the one wanted (a pinned ``@sha256:`` suffix aside)."""
    if not wanted:
        return True
    base = task_image.split("@", 1)[0]
    wanted_base = wanted.split("@", 1)[0]
    if ":" not in wanted_base.rsplit("/", 1)[-1]:
        wanted_base += ":latest"
    if ":" not in base.rsplit("/", 1)[-1]:
        base += ":latest"
    return base == wanted_base


def wanted_replicas(service):
    """Replicas the service asks for (None for a global service)."""
    mode = service.get("Spec", {}).get("Mode", {})
    if "Replicated" in mode:
        return int(mode["Replicated"].get("Replicas", 0))
    return None


def published_host_ports(service):
    """Ports the service publishes in host mode on the nodes that run its tasks."""
    ports = service.get("Spec", {}).get("EndpointSpec", {}).get("Ports", []) or []
    return [p["PublishedPort"] for p in ports if p.get("PublishMode") == "host" and p.get("PublishedPort")]


SPEC_KEYS = ("Env", "Args", "Command", "Healthcheck", "Mounts", "Secrets", "Configs", "User")
UPDATING = ("updating", "paused", "rollback_started", "rollback_paused")


def task_matches_spec(task, service):
    """True when a task was made from the service's current spec (same image, environment,
    command, healthcheck, ... and force-update counter). A rolling update that changes only the
    environment keeps the image: the image alone cannot tell an old task from a new one."""
    template = service.get("Spec", {}).get("TaskTemplate", {})
    if not template:
        return True  # nothing to compare with
    want, have = template.get("ContainerSpec", {}) or {}, task.get("Spec", {}).get("ContainerSpec", {}) or {}
    if want.get("Image") and not image_matches(have.get("Image", ""), want["Image"]):
        return False
    for key in SPEC_KEYS:
        if (want.get(key) or None) != (have.get(key) or None):
            return False
    return (template.get("ForceUpdate") or 0) == (task.get("Spec", {}).get("ForceUpdate") or 0)


def summarize_tasks(tasks, nodes):
    """One plain dict per task that swarm still wants running (newest first per slot)."""
    node_by_id = dict((node["ID"], node) for node in nodes)
    summary = []
    for task in tasks:
        if task.get("DesiredState") != "running":
            continue  # replaced or shut down on purpose: history, not the current state
        status = task.get("Status", {})
        node = node_by_id.get(task.get("NodeID"), {})
        summary.append({
            "id": task.get("ID", "")[:12],
            "slot": task.get("Slot"),
            "node": node.get("Description", {}).get("Hostname", task.get("NodeID", "")),
            "node_addr": node.get("Status", {}).get("Addr"),
            "state": status.get("State"),
            "message": status.get("Message", ""),
            "error": status.get("Err", ""),
            "image": task.get("Spec", {}).get("ContainerSpec", {}).get("Image", ""),
            "spec_version": task.get("Version", {}).get("Index"),
            "current_spec": True,
        })
    return sorted(summary, key=lambda t: (t["slot"] or 0, t["node"]))


def recent_failures(tasks, nodes, limit=5):
    """The newest tasks that failed or were rejected, with their error: why a service does not converge."""
    node_by_id = dict((node["ID"], node) for node in nodes)
    failed = [t for t in tasks if t.get("Status", {}).get("State") in ("failed", "rejected")]
    failed.sort(key=lambda t: t.get("Status", {}).get("Timestamp", ""), reverse=True)
    return [{
        "id": t.get("ID", "")[:12],
        "node": node_by_id.get(t.get("NodeID"), {}).get("Description", {}).get("Hostname", t.get("NodeID", "")),
        "state": t["Status"]["State"],
        "error": t["Status"].get("Err") or t["Status"].get("Message", ""),
        "at": t["Status"].get("Timestamp", ""),
    } for t in failed[:limit]]


def timestamp_epoch(text):
    """Seconds since the epoch of a Docker API timestamp (RFC 3339, UTC, nanoseconds), or None."""
    try:
        return calendar.timegm(time.strptime(text[:19], "%Y-%m-%dT%H:%M:%S"))
    except (TypeError, ValueError):
        return None


def failed_current(tasks, service, since=None):
    """How many tasks of the service's current spec have ended - failed, rejected, or completed
    although a service task should run for ever - (since the epoch
    ``since``, if given). Swarm keeps replacing them: a release that can never become healthy
    shows here long before a timeout."""
    count = 0
    for t in tasks:
        status = t.get("Status", {})
        # "complete": the app exited 0 on swarm's SIGTERM, e.g. after its healthcheck failed
        if status.get("State") not in ("failed", "rejected", "complete") or not task_matches_spec(t, service):
            continue
        if since is not None:
            at = timestamp_epoch(status.get("Timestamp"))
            if at is None or at < since:
                continue
        count += 1
    return count


def assess(service, tasks, nodes, image=None, failures_since=None):
    """The service's state: converged or not, its tasks, the endpoints nginx can target, and why not."""
    replicas = wanted_replicas(service)
    current = summarize_tasks(tasks, nodes)
    outdated = set(t.get("ID", "")[:12] for t in tasks if not task_matches_spec(t, service))
    for task in current:
        task["current_spec"] = task["id"] not in outdated
    running = [t for t in current if t["state"] == "running" and image_matches(t["image"], image)
               and t["current_spec"]]
    problems = []
    update = service.get("UpdateStatus") or {}
    if update.get("State") in UPDATING:
        problems.append("swarm is still rolling an update out (%s%s)" % (
            update["State"], ": " + update["Message"] if update.get("Message") else ""))
    elif update.get("State") == "rollback_completed":
        problems.append("swarm rolled the last update back%s" % (
            ": " + update["Message"] if update.get("Message") else ""))
    for task in current:
        if not task["current_spec"]:
            problems.append("task %s on %s is %s with an older spec of the service" % (
                task["id"], task["node"] or "no node", task["state"]))
        elif task["state"] != "running":
            problems.append("task %s on %s is %s%s" % (
                task["id"], task["node"] or "no node", task["state"],
                ": " + (task["error"] or task["message"]) if (task["error"] or task["message"]) else ""))
        elif not image_matches(task["image"], image):
            problems.append("task %s on %s runs %s, not %s" % (task["id"], task["node"], task["image"], image))
    if replicas is not None and len(running) < replicas:
        problems.append("%d of %d replicas running and healthy" % (len(running), replicas))
    if replicas is not None and replicas == 0 and current:
        problems.append("%d task(s) still running for a service scaled to 0" % len(current))
    ports = published_host_ports(service)
    endpoints = sorted(set(
        "%s:%d" % (t["node_addr"], port) for t in running if t["node_addr"] for port in ports))
    converged = not problems and (replicas is None or len(running) == replicas)
    spec = service.get("Spec", {})
    return {
        "converged": converged,
        "replicas": replicas,
        "image": spec.get("TaskTemplate", {}).get("ContainerSpec", {}).get("Image", ""),
        "labels": dict(spec.get("Labels") or {}),
        "running": len(running),
        "tasks": current,
        "endpoints": endpoints,
        "problems": problems,
        "recent_failures": recent_failures(tasks, nodes),
        "failed_current": failed_current(tasks, service, failures_since),
    }
