#!/usr/bin/env bash
# Benchmark: how long the lab hosts take to FETCH (not install) the Debian packages the roles install,
# with N hosts fetching at once as a converge does. This is the most a package cache in front of the
# lab (apt-cacher-ng, a shared archive volume) could save per lab on this machine; compare it with the
# converge's wall time before building one.
#
# Starts N throwaway containers from the lab's base image (lab/build-base-image.sh makes it) on the
# default bridge, each runs `apt-get update` and `apt-get install --download-only` of the packages the
# roles install, then prints the wall time and the bytes fetched per host. Removes its containers.
# The only traffic is the lab image's own apt traffic to the Debian mirror the control node uses.
#
# Usage: bench/bench_lab_package_fetch.sh [HOSTS (default 3)] [PACKAGE ...]
set -euo pipefail
hosts=${1:-3}
shift || true
image=${LAB_BASE_IMAGE:-greenflow-lab/host:bookworm}
# what docker_swarm, nginx_lb and postgresql install on a lab host, in one list
packages=("$@")
[ ${#packages[@]} -gt 0 ] || packages=(docker.io nginx postgresql)
docker image inspect "$image" >/dev/null 2>&1 || { echo "no $image: run make lab-image first" >&2; exit 1; }

tag="greenflow-bench-fetch-$$"
cleanup() { docker ps -aq --filter "label=$tag" | xargs -r docker rm -f >/dev/null 2>&1 || true; }
trap cleanup EXIT

out=$(mktemp -d)
started=$(date +%s.%N)
for i in $(seq 1 "$hosts"); do
  docker run --rm --label "$tag" "$image" bash -c '
    set -e
    t0=$(date +%s.%N)
    apt-get update -qq
    t1=$(date +%s.%N)
    apt-get install -y -qq --download-only '"${packages[*]}"' >/dev/null
    t2=$(date +%s.%N)
    bytes=$(du -sb /var/cache/apt/archives | cut -f1)
    echo "$t0 $t1 $t2 $bytes"' >"$out/$i" &
done
wait
ended=$(date +%s.%N)

echo "packages: ${packages[*]}; $hosts hosts fetching at once from the control node's mirror"
for i in $(seq 1 "$hosts"); do
  read -r t0 t1 t2 bytes <"$out/$i"
  awk -v i="$i" -v a="$t0" -v b="$t1" -v c="$t2" -v n="$bytes" \
    'BEGIN { printf "host %d: apt-get update %.1f s, download %.1f s, %.0f MB\n", i, b - a, c - b, n / 1e6 }'
done
awk -v a="$started" -v b="$ended" 'BEGIN { printf "wall: %.1f s for all hosts (container start included)\n", b - a }'
rm -rf "$out"
