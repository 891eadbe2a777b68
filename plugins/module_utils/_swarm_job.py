# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A one-off job on Docker Swarm (a ``replicated-job`` service that runs one task once): pure logic of the
swarm_job module - the service's spec, the outcome read from its task, the output cut to size.

Swarm has no "run once" for a plain service: a replicated job runs its task to completion and is never
restarted here (restart condition ``none``), so a failing job fails once, and its exit code tells.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

# task states (Docker's swarm API), in the order a task goes through them
WAITING = ("new", "allocated", "pending", "assigned", "accepted", "preparing", "ready", "starting")
RUNNING = "running"
COMPLETE = "complete"
ENDED_BADLY = ("failed", "rejected", "shutdown", "orphaned", "remove")

_MEMORY_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3, "t": 1024 ** 4}


class SwarmJobError(Exception):
    pass


def memory_bytes(value):
    """Bytes of a memory size as Docker and compose write it (``256M``, ``1g``, ``512MiB``, ``1048576``)."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value <= 0:
            raise SwarmJobError("a memory limit must be more than 0, got %r" % (value,))
        return value
    match = _MEMORY_RE.match(str(value))
    if not match:
        raise SwarmJobError("cannot read the memory size %r (write it like 256M or 1G)" % (value,))
    size = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if size <= 0:
        raise SwarmJobError("a memory limit must be more than 0, got %r" % (value,))
    return size


def resources(limits):
    """The service's Resources.Limits from ``{cpus: 0.5, memory: 256M}`` (either may be missing)."""
    out = {}
    limits = limits or {}
    unknown = sorted(set(limits) - {"cpus", "memory"})
    if unknown:
        raise SwarmJobError("limits takes cpus and memory, not %s" % ", ".join(unknown))
    if limits.get("cpus") not in (None, ""):
        try:
            cpus = float(limits["cpus"])
        except (TypeError, ValueError):
            raise SwarmJobError("limits.cpus must be a number of cores, got %r" % (limits["cpus"],))
        if cpus <= 0:
            raise SwarmJobError("limits.cpus must be more than 0, got %r" % (limits["cpus"],))
        out["NanoCPUs"] = int(round(cpus * 1e9))
    if limits.get("memory") not in (None, ""):
        out["MemoryBytes"] = memory_bytes(limits["memory"])
    return {"Limits": out} if out else {}


def service_spec(image, command, env=None, secrets=None, constraints=None, limits=None, networks=None):
    """The task template and the mode of a job that runs ``command`` once in ``image``.

    ``command`` replaces the image's CMD and keeps its ENTRYPOINT (like ``docker run IMAGE COMMAND``).
    ``secrets`` are ``{"id", "name"}`` of existing swarm secrets, mounted at /run/secrets/<name> as the
    app's service mounts them. The image's HEALTHCHECK is off for the job: it checks a server, and a job
    is no server (swarm would end a long job as unhealthy)."""
    if not image:
        raise SwarmJobError("the job needs an image")
    if not isinstance(command, (list, tuple)) or not command or not all(isinstance(arg, str) and arg for arg in command):
        raise SwarmJobError("the job's command must be a list of non-empty strings, got %r" % (command,))
    container = {
        "Image": image,
        "Args": list(command),
        "Env": ["%s=%s" % (key, "" if value is None else value) for key, value in sorted((env or {}).items())],
        "Healthcheck": {"Test": ["NONE"]},
    }
    if secrets:
        container["Secrets"] = [
            {"SecretID": s["id"], "SecretName": s["name"],
             "File": {"Name": s["name"], "UID": "0", "GID": "0", "Mode": 0o444}}
            for s in secrets]
    template = {
        "ContainerSpec": container,
        "RestartPolicy": {"Condition": "none", "MaxAttempts": 0},
        "Resources": resources(limits),
    }
    if networks:
        template["Networks"] = [{"Target": network} for network in networks]
    if constraints:
        template["Placement"] = {"Constraints": list(constraints)}
    mode = {"ReplicatedJob": {"MaxConcurrent": 1, "TotalCompletions": 1}}
    return template, mode


def outcome(tasks):
    """Where the job is, from its service's tasks (Docker's task dicts): a dict with ``done`` (it ended),
    ``ok`` (it ended with exit code 0), ``state``, ``exit_code`` (None until it ended, and when its command never
    started), ``started`` (its command started: a container ran), ``error`` (swarm's word on a failure) and
    ``node`` (the node's id)."""
    if not tasks:
        return {"done": False, "ok": False, "state": "no task yet", "exit_code": None, "started": False, "error": "",
                "node": ""}
    # the newest task: with restart condition none there is one, but a rejected one may be followed by none
    task = sorted(tasks, key=lambda t: (t.get("CreatedAt") or "", t.get("ID") or ""))[-1]
    status = task.get("Status") or {}
    state = status.get("State") or "unknown"
    container = status.get("ContainerStatus") or {}
    done = state == COMPLETE or state in ENDED_BADLY
    # did its command start? Not when swarm rejected the task (no such image, no node fits) or it never got a
    # container: then nothing of the job ran, and it is safe to run again
    started = state in (RUNNING, COMPLETE) or (state != "rejected" and bool(container.get("ContainerID")))
    exit_code = container.get("ExitCode") if done and started else None
    if state == COMPLETE and exit_code is None:
        exit_code = 0
    return {"done": done, "ok": state == COMPLETE and not exit_code, "state": state, "exit_code": exit_code,
            "started": started, "error": status.get("Err") or "", "node": task.get("NodeID") or ""}


def tail(text, max_lines=200, max_chars=20000):
    """The end of a job's output: at most ``max_lines`` lines and ``max_chars`` characters, and how many lines
    there were in all. Returns (text, total_lines)."""
    lines = (text or "").splitlines()
    kept = lines[-max_lines:] if max_lines > 0 else []
    out = "\n".join(kept)
    if len(out) > max_chars:
        out = out[-max_chars:]
    return out, len(lines)
