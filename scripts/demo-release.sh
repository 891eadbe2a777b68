#!/usr/bin/env bash
# The release part of `make demo`, on the provisioned lab: load the demo app images into the swarm
# nodes, release v1 if nothing is live yet, then release the other version (2, or 1 when 2 is live)
# through the gated canary while a bounded load (127.0.0.1 only) runs through the load balancer.
set -euo pipefail
cd "$(dirname "$0")/.."
https_port="${GREENFLOW_LAB_HTTPS_PORT:-8443}"
inventory=inventories/lab

ansible-playbook -i "$inventory" lab/load-images.yml

# deploy.yml's backup gate wants a verified backup from the last 26 hours: a fresh lab has none yet
# (the lab keeps its pgBackRest repository on pg-replica-1, its pg_backup_host).
status=$(ansible -i "$inventory" pg-replica-1 -b -m ansible.builtin.command \
  -a "cat /var/lib/greenflow-pgbackrest/status.json" 2>/dev/null || true)
if ! grep -q '"newest_verified": {' <<<"$status"; then
  echo "=== A first full backup (pgBackRest, verified): deploy.yml releases only with a fresh one"
  ansible-playbook -i "$inventory" playbooks/backup.yml -e pg_backup_type=full
fi

live=$(curl -ksf --max-time 5 "https://127.0.0.1:${https_port}/version" || true)
if [ -z "$live" ]; then
  echo "=== First release: demo v1 (all traffic at once: there is nothing to shift from)"
  ansible-playbook -i "$inventory" playbooks/deploy.yml -e release_version=1
  live=1
fi
next=$([ "$live" = 2 ] && echo 1 || echo 2)

echo "=== Release demo v${next} through the canary (5 -> 25 -> 50 -> 100 %), under a bounded load"
python3 tests/lab/loadgen.py "https://127.0.0.1:${https_port}/version" --rate 100 --seconds 240 \
  >/tmp/greenflow-demo-load.json &
load_pid=$!
trap 'kill "$load_pid" 2>/dev/null || true' EXIT
sleep 2
ansible-playbook -i "$inventory" playbooks/deploy.yml -e release_version="$next" \
  -e cutover_step_seconds=10 -e cutover_min_requests=20
kill -TERM "$load_pid" 2>/dev/null || true
wait "$load_pid" || true
trap - EXIT
echo "=== The load during the release (requests, failures):"
python3 - /tmp/greenflow-demo-load.json <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
print("  " + ", ".join("%s: %s" % (k, s[k]) for k in ("requests", "ok", "failed", "stale_retries") if k in s))
PY
