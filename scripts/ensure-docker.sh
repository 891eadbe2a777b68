#!/usr/bin/env bash
# Make sure a Docker engine answers. As root with apt: install docker.io and start dockerd when none
# answers. Otherwise say what to do.
set -euo pipefail
if docker info >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
  echo "No Docker engine answers. Install and start one (Debian: sudo apt-get install docker.io;" >&2
  echo "sudo systemctl start docker), make sure your user may use it, then run make again." >&2
  exit 1
fi
"$(dirname "$0")/ensure-debian-packages.sh" docker.io
if [ -d /run/systemd/system ] && systemctl start docker 2>/dev/null; then
  :
else
  echo "Starting dockerd in the background (log: /var/log/greenflow-dockerd.log)"
  # in a session of its own: a signal to the caller's process group (a job stopped with kill -- -PGID, say)
  # must not take the engine and every lab container with it
  setsid -f dockerd >/var/log/greenflow-dockerd.log 2>&1 </dev/null
fi
for _ in $(seq 1 60); do
  docker info >/dev/null 2>&1 && exit 0
  sleep 1
done
echo "dockerd did not answer within 60 s; see /var/log/greenflow-dockerd.log" >&2
exit 1
