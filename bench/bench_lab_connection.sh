#!/usr/bin/env bash
# Benchmark: what one module run costs over the lab's connection plugin, community.docker.docker (a
# `docker exec` CLI process per run, pipelined), against community.docker.docker_api (the Engine API over
# the socket, no CLI process). Every ansible task of make test and make demo goes through it, so this is
# the most a change of the lab's connection could take off CI's CPU.
#
# Starts one throwaway container from the lab's base image (`sleep infinity`, no systemd), runs the same
# play over each connection ROUNDS times (40 stat runs and 10 copies), and prints the wall time and the
# CPU the whole machine used meanwhile (/proc/stat: the controller, dockerd, the CLI, python in the
# container). Run it on an otherwise idle machine. Removes its container; no network traffic.
#
# Usage: bench/bench_lab_connection.sh [ROUNDS (default 2)]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-2}
image=${LAB_BASE_IMAGE:-greenflow-lab/host:bookworm}
name=greenflow-bench-connection
docker image inspect "$image" >/dev/null 2>&1 || { echo "no $image: run make lab-image first" >&2; exit 1; }
work=$(mktemp -d)
trap 'docker rm -f "$name" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
cat > "$work/inventory.yml" <<INV
all:
  hosts:
    via-cli: {ansible_connection: community.docker.docker, ansible_host: $name}
    via-api: {ansible_connection: community.docker.docker_api, ansible_host: $name}
  vars: {ansible_python_interpreter: /usr/bin/python3}
INV
cat > "$work/play.yml" <<'PLAY'
- hosts: all
  gather_facts: false
  tasks:
    - name: A module run, 40 times
      ansible.builtin.stat:
        path: /etc/hostname
      loop: "{{ range(40) | list }}"
    - name: A file copy, 10 times
      ansible.builtin.copy:
        content: "x{{ item }}"
        dest: /tmp/bench-{{ item }}
        mode: "0644"
      loop: "{{ range(10) | list }}"
PLAY
docker rm -f "$name" >/dev/null 2>&1 || true
docker run -d --name "$name" --entrypoint sleep "$image" infinity >/dev/null
export ANSIBLE_CONFIG=$PWD/ansible.cfg ANSIBLE_HOME=${ANSIBLE_HOME:-$PWD/.cache/ansible-home}
playbook=${ANSIBLE_PLAYBOOK:-.venv/bin/ansible-playbook}
busy() { awk '/^cpu /{print $2+$3+$4+$7+$8}' /proc/stat; }
hz=$(getconf CLK_TCK)
for round in $(seq "$rounds"); do
  for host in via-cli via-api; do
    b0=$(busy); t0=$(date +%s%N)
    "$playbook" -i "$work/inventory.yml" "$work/play.yml" --limit "$host" >/dev/null
    b1=$(busy); t1=$(date +%s%N)
    awk -v h="$host" -v r="$round" -v w="$(( (t1 - t0) / 1000000 ))" -v c="$(( b1 - b0 ))" -v hz="$hz" \
      'BEGIN { printf "%s round %s: 50 module runs in %.1f s wall, %.1f s CPU (%.0f ms CPU per run)\n", h, r, w / 1000, c / hz, c / hz * 1000 / 50 }'
  done
done
