#!/usr/bin/env bash
# The lab scenarios of `make test`, on one lab instead of three:
#   1. molecule: create the lab, converge it with site.yml; then idempotence and verify side by side
#      (molecule/default);
#   2. on that same converged lab (GREENFLOW_LAB_REUSE=1), side by side: releases under load
#      (tests/lab/test_release.py: the swarm and the load balancer) and backups, restores and failover
#      (tests/lab/test_data.py: the PostgreSQL hosts). They share no host. The data side's
#      controller runs at a lower CPU priority (nice), so that the release side's load generator
#      keeps its rate on a small machine (a lower CPU weight for the PostgreSQL containers as well
#      made the data side take longer than both scenarios one after the other);
#   3. the host firewall (tests/lab/test_firewall.py): the reachability matrix, restarts, a reboot;
#   4. monitoring (tests/lab/test_monitoring.py): scrapes, faults to the alert webhook, dashboards;
#   5. destroy the lab, also when a step failed or the run was interrupted.
# Each scenario can still run on a lab of its own: make molecule | test-release | test-data |
# test-firewall | test-monitoring.
#
# The lab is prefixed (GREENFLOW_SHARED_LAB_PREFIX, default ci-shared-, loopback ports 46080 / 46443),
# so `make test` never touches the default lab of `make demo`. Output lines of step 2 carry the
# scenario's name, [release] or [data] (scripts/side-by-side.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

export GREENFLOW_LAB_PREFIX="${GREENFLOW_SHARED_LAB_PREFIX:-ci-shared-}"
export GREENFLOW_LAB_HTTP_PORT="${GREENFLOW_SHARED_LAB_HTTP_PORT:-46080}"
export GREENFLOW_LAB_HTTPS_PORT="${GREENFLOW_SHARED_LAB_HTTPS_PORT:-46443}"

elapsed() { echo "--- [shared lab] $1 in $(( $(date +%s) - $2 )) s"; }

# molecule's destroy step is this same playbook, behind a quarter of a minute of molecule's start-up
lab_down() { ansible-playbook -i inventories/lab lab/lab-down.yml >/dev/null 2>&1 || true; }

destroy() {
  rc=$?
  trap - EXIT INT TERM
  started=$(date +%s)
  if [ "${GREENFLOW_KEEP_LAB:-}" = 1 ]; then
    echo "--- [shared lab] kept (GREENFLOW_KEEP_LAB=1): GREENFLOW_LAB_PREFIX=$GREENFLOW_LAB_PREFIX make lab-down removes it"
  else
    lab_down
    elapsed "destroyed" "$started"
  fi
  exit "$rc"
}

# what an interrupted earlier run may have left
lab_down
trap destroy EXIT INT TERM

started=$(date +%s)
# molecule's steps (molecule/default): create, converge; then side by side molecule's idempotence
# run (site.yml again: no host may change) and the verify playbooks (verify.yml; site.yml --check is
# verify_check_mode.yml, run by hand since stop 24). Neither changes what a role manages (verify adds a test service and a table,
# which no role manages), so they need not wait for each other: together they take about the time of
# the longer one on this 2-core machine instead of both. Each playbook run ends with its time per role
# and in total: where the minutes go.
export ANSIBLE_CALLBACKS_ENABLED=ansible.posix.profile_roles,ansible.posix.timer
# (`molecule converge` runs molecule's create step itself; the syntax check of these playbooks is
# ansible-lint's, in make lint)
molecule converge
elapsed "molecule (create, converge)" "$started"
started=$(date +%s)
scripts/side-by-side.sh \
  idempotence "molecule idempotence" \
  verify "ansible-playbook -i inventories/lab molecule/default/verify.yml"
elapsed "idempotence and verify, side by side" "$started"
unset ANSIBLE_CALLBACKS_ENABLED

started=$(date +%s)
export GREENFLOW_LAB_REUSE=1
scripts/side-by-side.sh \
  release "pytest -q -s -p no:cacheprovider --durations=12 tests/lab/test_release.py" \
  data "nice -n 10 pytest -q -s -p no:cacheprovider --durations=12 tests/lab/test_data.py"
elapsed "release and data scenarios, side by side" "$started"

# last: the firewall's reachability matrix, then Docker and nftables restarted on a worker and another
# rebooted (after the scenarios that use those hosts)
started=$(date +%s)
pytest -q -s -p no:cacheprovider --durations=12 tests/lab/test_firewall.py
elapsed "firewall (matrix, restarts, reboot)" "$started"

# monitoring: every target scraped, per-colour traffic, faults (PostgreSQL stopped, a swarm node down,
# WAL archiving broken) reaching the webhook and resolving, every dashboard query (it stops services:
# after everything else)
started=$(date +%s)
pytest -q -s -p no:cacheprovider --durations=12 tests/lab/test_monitoring.py
elapsed "monitoring (targets, traffic per colour, faults to the webhook, dashboards)" "$started"
