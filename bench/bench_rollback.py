#!/usr/bin/env python3
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""How fast rollback.yml puts traffic back, under load: prints time-to-switch and wall per round.

    .venv/bin/python bench/bench_rollback.py [--rounds 3] [--rate 250]
    # another lab: GREENFLOW_LAB_PREFIX=rel- GREENFLOW_LAB_HTTPS_PORT=38443 ...

Needs a lab with a live release and a previous one whose colour still runs it (``make demo`` leaves
that). Each round: rollback.yml under load, then (between rounds) deploy.yml of the rolled-back version
again with short steps, so that the next round has something to roll back.

- time-to-switch: from the start of ``ansible-playbook rollback.yml`` to the first answer of the
  previous version seen by the load (https://127.0.0.1:<port>/version, bounded: tests/lab/loadgen.py);
- wall: the whole playbook (notifications, swarm check, record);
- on LB: release_rollback's own time on the load balancer (probe, nginx -t, reload);
- failed: failed requests during the round.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "lab"))
from loadgen import LoadGen  # noqa: E402

PREFIX = os.environ.get("GREENFLOW_LAB_PREFIX", "")
HTTPS_PORT = int(os.environ.get("GREENFLOW_LAB_HTTPS_PORT") or 8443)
BIN = os.path.dirname(sys.executable)
ENV = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), ANSIBLE_NOCOLOR="1",
           PATH=BIN + os.pathsep + os.environ.get("PATH", ""))


def playbook(name, *args, timeout=900):
    proc = subprocess.run([os.path.join(BIN, "ansible-playbook"), "-i", "inventories/lab", name, *args],
                          cwd=REPO, env=ENV, capture_output=True, text=True, timeout=timeout)
    if proc.returncode:
        raise SystemExit("%s failed:\n%s" % (name, proc.stdout[-4000:]))
    return proc


def live_and_previous():
    out = subprocess.run(["docker", "exec", PREFIX + "lb-1", "cat", "/var/lib/greenflow/releases/demo.json"],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    stack = []
    for entry in json.loads(out)["releases"]:
        if entry["outcome"] == "succeeded":
            if entry["action"] == "deploy":
                stack.append(entry)
            elif stack:
                stack.pop()
    if len(stack) < 2:
        raise SystemExit("nothing to roll back to: the lab needs two releases (make demo leaves them)")
    return stack[-1], stack[-2]


def one_round(args):
    now, previous = live_and_previous()
    load = LoadGen("https://127.0.0.1:%d/version" % HTTPS_PORT, rate=args.rate, threads=args.threads,
                   max_requests=int(args.rate * 120), max_seconds=120)
    load.start()
    time.sleep(2)
    try:
        started = time.monotonic() - load.t0
        proc = playbook("playbooks/rollback.yml")
        wall = time.monotonic() - load.t0 - started
        time.sleep(2)
    finally:
        load.stop()
    window = load.switch_window(now["version"], previous["version"], since=started)
    flat = " ".join(proc.stdout.split())
    on_lb = re.search(r"switch on the load balancer ([0-9.]+) s", flat)
    summary = load.summary()
    return {
        "from": "%s (%s)" % (now["version"], now["color"]), "to": "%s (%s)" % (previous["version"], previous["color"]),
        "instant": "switched at once" in flat,
        "time_to_switch_s": round(window["first_new"] - started, 2) if window else None,
        "wall_s": round(wall, 2),
        "on_lb_s": float(on_lb.group(1)) if on_lb else None,
        "requests": summary["requests"], "failed": summary["failed"], "rate": summary["rate"],
    }, now


def redeploy(entry):
    """deploy.yml of ``entry``'s release again, short steps, under light load (the gates need requests)."""
    with LoadGen("https://127.0.0.1:%d/version" % HTTPS_PORT, rate=60, threads=4, max_requests=60 * 300,
                 max_seconds=300):
        playbook("playbooks/deploy.yml", "-e", "release_version=%s" % entry["version"],
                 "-e", "release_image=%s" % entry["image"], "-e", json.dumps({"release_env": entry.get("env") or {}}),
                 "-e", "cutover_step_seconds=3", "-e", "cutover_min_requests=1")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=float, default=250.0)
    parser.add_argument("--threads", type=int, default=32)
    args = parser.parse_args()
    rows = []
    for n in range(args.rounds):
        row, rolled_back = one_round(args)
        rows.append(row)
        print(json.dumps(row), flush=True)
        if n + 1 < args.rounds:  # release the rolled-back version again, quickly, for the next round
            redeploy(rolled_back)
    switch = [r["time_to_switch_s"] for r in rows if r["time_to_switch_s"] is not None]
    walls = [r["wall_s"] for r in rows]
    print("\nrollback.yml at %g req/s, %d rounds: time-to-switch median %.2f s (max %.2f), wall median %.2f s "
          "(max %.2f), failed requests %d"
          % (args.rate, len(rows), statistics.median(switch) if switch else -1, max(switch or [-1]),
             statistics.median(walls), max(walls), sum(r["failed"] for r in rows)))


if __name__ == "__main__":
    main()
