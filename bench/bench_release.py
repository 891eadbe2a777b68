#!/usr/bin/env python3
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Releases under load, gated blue/green vs. a plain rolling update: prints the figures.

    GREENFLOW_LAB_PREFIX=rel- GREENFLOW_LAB_HTTP_PORT=38080 GREENFLOW_LAB_HTTPS_PORT=38443 \\
        .venv/bin/python bench/bench_release.py [--rate 250] [--step-seconds 4]

Needs a provisioned lab with the demo images (swarm.yml, lb.yml, lab/load-images.yml); deploys v1
first if nothing is live. All load goes to https://127.0.0.1:<GREENFLOW_LAB_HTTPS_PORT>/version and
is bounded in requests and seconds (tests/lab/loadgen.py).

Cases, each under the same load:
  good       deploy.yml of the other version (2 if 1 is live), canary steps 5/25/50/100
  rollback   rollback.yml right after it (the previous colour still runs)
  bad        deploy.yml with release_env DEMO_ERROR_RATE=0.3 (aborted by the gates)
  unhealthy  deploy.yml with release_env DEMO_HEALTHY=false (never healthy)
then the same three changes as a plain `docker service update --update-order start-first` of the
live colour's service, behind the same nginx (its pool gets the manager node too, so that a
start-first task has a node with a free host port), each undone afterwards.

Per case: requests, failed requests, stale-connection retries, time to detect (gated: from the first
traffic on the new colour - or, for a release never healthy, from the start of the deploy - to the
decision; plain: until swarm paused or finished the update), time to switch (gated good: the whole
cutover; gated bad: the revert; rollback: the nginx switch task; plain: the update's duration), and
the ratio of failed requests plain / gated.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "lab"))
from loadgen import LoadGen  # noqa: E402

APP = "demo"
PREFIX = os.environ.get("GREENFLOW_LAB_PREFIX", "")
HTTPS_PORT = int(os.environ.get("GREENFLOW_LAB_HTTPS_PORT") or 8443)
BIN = os.path.dirname(sys.executable)
ENV = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), ANSIBLE_NOCOLOR="1",
           PATH=BIN + os.pathsep + os.environ.get("PATH", ""))
CASES = {
    "good": {},
    "bad": {"DEMO_ERROR_RATE": "0.3"},
    "unhealthy": {"DEMO_HEALTHY": "false"},
}


def sh(*cmd, check=True, timeout=120):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode:
        raise SystemExit("%s failed: %s" % (" ".join(cmd), proc.stderr or proc.stdout))
    return proc.stdout


def on(host, *cmd, **kw):
    return sh("docker", "exec", PREFIX + host, *cmd, **kw)


def playbook(name, *args, timeout=900):
    started = time.monotonic()
    proc = subprocess.run([os.path.join(BIN, "ansible-playbook"), "-i", "inventories/lab", name, *args],
                          cwd=REPO, env=ENV, capture_output=True, text=True, timeout=timeout)
    proc.seconds = time.monotonic() - started
    return proc


def record():
    return json.loads(on("lb-1", "cat", "/var/lib/greenflow/releases/%s.json" % APP))["releases"]


def live():
    stack = []
    for e in record():
        if e["outcome"] == "succeeded":
            if e["action"] == "deploy":
                stack.append(e)
            elif stack:
                stack.pop()
    return stack[-1] if stack else None


def loaded(args, action):
    """Run action() under load (2 s before and after); returns (result, load)."""
    load = LoadGen("https://127.0.0.1:%d/version" % HTTPS_PORT, rate=args.rate, threads=args.threads,
                   max_requests=int(args.rate * 600), max_seconds=600)
    load.start()
    time.sleep(2)
    try:
        result = action(load)
        time.sleep(2)
    finally:
        load.stop()
    return result, load


def gated(args, name, version, env):
    extra = ["-e", "release_version=%s" % version, "-e", "cutover_step_seconds=%s" % args.step_seconds,
             "-e", "cutover_min_requests=20", "-e", "app_release_wait_timeout=40"]
    if env:
        extra += ["-e", json.dumps({"release_env": env})]
    proc, load = loaded(args, lambda _load: playbook("playbooks/deploy.yml", *extra))
    entry = record()[-1]
    steps = [e for e in entry.get("timeline") or [] if e.get("event") == "step"]
    revert = [e for e in entry.get("timeline") or [] if e.get("event") == "revert"]
    row = {"case": name, "how": "gated", "rc": proc.returncode, "outcome": entry["outcome"],
           "wall_s": round(proc.seconds, 1)}
    if steps and not revert:  # passed: switching took the whole cutover
        row["switch_s"] = round(steps[-1]["ended_epoch"] - steps[0]["started_epoch"], 1)
    if revert:
        row["detect_s"] = round(steps[-1]["seconds"], 1)
        row["switch_s"] = revert[0]["seconds"]
    if not steps and entry["outcome"] == "failed":  # never got traffic: detected by the wait
        row["detect_s"] = round(proc.seconds, 1)
        row["switch_s"] = 0.0
    return row, load


def rollback(args):
    proc, load = loaded(args, lambda _load: playbook("playbooks/rollback.yml"))
    flat = " ".join(proc.stdout.split())  # the YAML callback folds long messages
    switch = re.search(r"switch on the load balancer ([0-9.]+) s", flat)
    on_nginx = re.search(r"nginx -t \+ switch ([0-9.]+) s", flat)
    row = {"case": "rollback", "how": "gated", "rc": proc.returncode, "outcome": record()[-1]["outcome"],
           "wall_s": round(proc.seconds, 1), "switch_s": float(switch.group(1)) if switch else None,
           "switch_on_nginx_s": float(on_nginx.group(1)) if on_nginx else None}
    return row, load


def service(colour):
    return "%s-%s" % (APP, colour)


def update_state(svc):
    out = on("swarm-manager-1", "docker", "service", "inspect", svc, "--format",
             "{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}").strip()
    return out


def plain(args, name, svc, image, env):
    """docker service update --update-order start-first of the live service under load, until swarm
    finishes (or pauses / rolls back) the update, bounded; then undone without load."""
    cmd = ["docker", "service", "update", "--detach", "--update-order", "start-first",
           "--update-parallelism", "1", "--update-delay", "2s", "--image", image]
    for key, value in env.items():
        cmd += ["--env-add", "%s=%s" % (key, value)]

    def action(load):
        t0 = time.monotonic()
        on("swarm-manager-1", *cmd, svc)
        state, deadline = "", t0 + args.plain_timeout
        while time.monotonic() < deadline:
            time.sleep(1)
            state = update_state(svc)
            if state in ("completed", "paused", "rollback_completed", "rollback_paused"):
                break
        detected = time.monotonic() - t0
        time.sleep(args.observe)  # what users see afterwards
        return state, detected

    (state, detected), load = loaded(args, action)
    row = {"case": name, "how": "plain", "outcome": state or "timeout", "switch_s": round(detected, 1)}
    if state in ("paused", "rollback_completed", "rollback_paused"):
        row["detect_s"] = round(detected, 1)
    # undo without load: back to the spec before this update
    on("swarm-manager-1", "docker", "service", "rollback", "--detach", svc, check=False)
    wait_converged(svc)
    return row, load


def wait_converged(svc, timeout=180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tasks = on("swarm-manager-1", "docker", "service", "ps", svc, "--filter", "desired-state=running",
                   "--format", "{{.CurrentState}}").split("\n")
        if tasks and all(t.startswith("Running") for t in tasks if t) and \
                update_state(svc) not in ("updating", "rollback_started"):
            return
        time.sleep(2)


def upstream(pools=None, shares=None):
    args = {"app": APP}
    if pools is not None:
        args["pools"] = pools
    if shares is not None:
        args["shares"] = shares
    out = subprocess.run([os.path.join(BIN, "ansible"), "lb", "-i", "inventories/lab", "-m",
                          "greenflow.platform.nginx_upstream", "-a", json.dumps(args), "-o"],
                         cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)
    if out.returncode:
        raise SystemExit("nginx_upstream failed: %s" % out.stdout)
    return json.loads(out.stdout.split("=>", 1)[1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=250.0)
    parser.add_argument("--threads", type=int, default=32)
    parser.add_argument("--step-seconds", type=float, default=4)
    parser.add_argument("--plain-timeout", type=float, default=90, help="bound of one plain update")
    parser.add_argument("--observe", type=float, default=10,
                        help="seconds of load after a plain update (gated cases: the cutover's own window)")
    args = parser.parse_args()

    rows = []
    if live() is None:
        playbook("playbooks/deploy.yml", "-e", "release_version=1")
    first = live()
    other = "2" if first["version"] != "2" else "1"
    print("live: %s on %s; the cases release %s" % (first["version"], first["color"], other), flush=True)

    for name, fn in (("good", lambda: gated(args, "good", other, {})),
                     ("rollback", lambda: rollback(args)),
                     ("bad", lambda: gated(args, "bad", other, CASES["bad"])),
                     ("unhealthy", lambda: gated(args, "unhealthy", other, CASES["unhealthy"]))):
        row, load = fn()
        row.update(_figures(load))
        rows.append(row)
        print(json.dumps(row), flush=True)

    now = live()
    svc = service(now["color"])
    image = "greenflow/demo-app:%s" % other
    state = upstream()
    manager = on("swarm-manager-1", "docker", "info", "--format", "{{.Swarm.NodeAddr}}").strip()
    port = state["pools"][now["color"]][0].rsplit(":", 1)[1]
    pools = dict(state["pools"])
    pools[now["color"]] = sorted(set(pools[now["color"]] + ["%s:%s" % (manager, port)]))
    upstream(pools=pools)
    on("swarm-manager-1", "docker", "service", "update", "--detach", "--constraint-rm", "node.role == worker", svc)
    wait_converged(svc)
    try:
        for name in ("good", "bad", "unhealthy"):
            row, load = plain(args, name, svc, image, CASES[name])
            row.update(_figures(load))
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        on("swarm-manager-1", "docker", "service", "update", "--detach", "--image", now["image"],
           "--constraint-add", "node.role == worker", svc, check=False)
        wait_converged(svc)
        upstream(pools=state["pools"])

    print()
    print("%-10s %-6s %9s %8s %6s %9s %9s %8s  %s" % ("case", "how", "requests", "failed", "stale",
                                                       "detect_s", "switch_s", "req/s", "outcome"))
    for r in rows:
        print("%-10s %-6s %9d %8d %6d %9s %9s %8.0f  %s" % (
            r["case"], r["how"], r["requests"], r["failed"], r["stale_retries"], r.get("detect_s", "-"),
            r.get("switch_s", "-"), r["rate"], r["outcome"]))
    print()
    for name in ("good", "bad", "unhealthy"):
        g = next(r for r in rows if r["case"] == name and r["how"] == "gated")
        p = next(r for r in rows if r["case"] == name and r["how"] == "plain")
        ratio = ("%.1f x" % (p["failed"] / g["failed"])) if g["failed"] else (
            "inf (gated 0)" if p["failed"] else "1 (both 0)")
        print("%-10s failed requests plain / gated: %d / %d = %s (error rate %.2f %% vs %.2f %%)" % (
            name, p["failed"], g["failed"], ratio, 100.0 * p["failed"] / max(1, p["requests"]),
            100.0 * g["failed"] / max(1, g["requests"])))


def _figures(load):
    s = load.summary()
    return {"requests": s["requests"], "failed": s["failed"], "failed_by": s["failed_by"],
            "stale_retries": s["stale_retries"], "rate": s["rate"], "versions": s["versions"]}


if __name__ == "__main__":
    main()
