#!/usr/bin/env bash
# One line per lab host: container state, systemd state, address on the lab network, published ports.
set -uo pipefail
# Only this lab: the one named by GREENFLOW_LAB_PREFIX (none by default), as lab-up labelled it.
label="greenflow.lab=${GREENFLOW_LAB_PREFIX:-}greenflow-lab"
ids=$(docker ps -aq --filter "label=$label" 2>/dev/null)
if [ -z "$ids" ]; then
  echo "The lab is down (no container labelled $label). Start it with: make lab-up"
  exit 0
fi
printf '%-18s %-10s %-10s %-16s %s\n' HOST CONTAINER SYSTEMD ADDRESS PUBLISHED
for id in $ids; do
  name=$(docker inspect -f '{{.Name}}' "$id" | tr -d /)
  state=$(docker inspect -f '{{.State.Status}}' "$id")
  addr=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}' "$id")
  ports=$(docker port "$id" 2>/dev/null | awk '{print $3 "->" $1}' | paste -sd' ' -)
  boot="-"
  [ "$state" = running ] && boot=$(docker exec "$id" systemctl is-system-running 2>/dev/null)
  printf '%-18s %-10s %-10s %-16s %s\n' "$name" "$state" "${boot:-?}" "${addr% }" "${ports:--}"
done | sort
