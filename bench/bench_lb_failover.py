#!/usr/bin/env python3
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""How fast the floating address moves between two load balancers, under load: prints per round the time to
the new master, to the first answer through the address, and the failed requests.

    GREENFLOW_LAB_PREFIX=ci-lbp- .venv/bin/python bench/bench_lb_failover.py [--rounds 4] [--what nginx]

Needs a running, provisioned pair lab (inventories/lab-lbpair, docs/lb-pair.md: e.g. the lab test kept with
GREENFLOW_KEEP_LAB=1). Each round stops `--what` (nginx or keepalived) on the host that holds the address while
the lab's client container sends 40 requests/s to it (tests/lab/vip_client.py, bounded), then starts it again
there (with nopreempt the address stays on the other host, so the next round moves it back).
"""
import argparse
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "lab"))
from test_lb_pair import LBS, analyse, became_master, Client, holders, wait_for_holder  # noqa: E402


class Lab:
    """What the lab test's helpers need: container names and the floating address."""

    def __init__(self, prefix):
        self.prefix = prefix
        self.vip = subprocess.run([os.path.join(REPO, "lab", "lab-vip.sh"), prefix + "greenflow-lab"],
                                  capture_output=True, text=True, check=True, timeout=60).stdout.strip()
        # Docker does not know the address keepalived added: lab-vip.sh names the same one as at provisioning

    def container(self, host):
        return self.prefix + host

    def exec(self, host, *cmd, check=True):
        proc = subprocess.run(["docker", "exec", self.container(host), *cmd], capture_output=True, text=True,
                              timeout=60)
        if check and proc.returncode != 0:
            raise RuntimeError("%s on %s: %s" % (cmd, host, proc.stderr))
        return proc.stdout


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--what", choices=["nginx", "keepalived"], default="nginx")
    args = parser.parse_args()
    lab = Lab(os.environ.get("GREENFLOW_LAB_PREFIX", "ci-lbp-"))
    rows = []
    for number in range(1, args.rounds + 1):
        now = holders(lab)
        if len(now) != 1:
            sys.exit("the address is on %s, not on exactly one host" % now)
        master = now[0]
        other = [h for h in LBS if h != master][0]
        client = Client(lab, 16)
        time.sleep(4)
        t_event = time.time()
        lab.exec(master, "systemctl", "stop", args.what)
        wait_for_holder(lab, other)
        figures = analyse(client.result(), t_event, other)
        at = became_master(lab, other, t_event)
        lab.exec(master, "systemctl", "start", args.what)
        time.sleep(4)  # the check's rise: the old master is a healthy backup again
        rows.append((at - t_event if at else None, figures["first_answer_s"], figures["failed"]))
        print("round %d: %s %s -> %s: MASTER after %s s, first answer after %s s, failed %d of %d %s"
              % (number, args.what, master, other, None if at is None else round(at - t_event, 3),
                 figures["first_answer_s"], figures["failed"], figures["requests"], figures["failed_kinds"]))
    answers = [r[1] for r in rows if r[1] is not None]
    if answers:
        print("first answer through the address: median %.2f s, max %.2f s; failed requests: median %d, max %d"
              % (statistics.median(answers), max(answers), statistics.median([r[2] for r in rows]),
                 max(r[2] for r in rows)))


if __name__ == "__main__":
    main()
